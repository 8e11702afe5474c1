#!/usr/bin/env bash
# A short fault schedule on every change: three brokers in network
# namespaces, RF 3, acks=all, under `mamba-bench verify` with seeded
# faults (random and targeted kills, pauses, partitions, link down, disk
# full), then every replica compared byte for byte. The long run (50
# schedules of 60 s) is the command in bench/README.md. Uses the test
# stage's debug binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p mamba-tools -p mamba-bench --bins
# A fixed seed, so a failure here replays with the same command; the long
# run explores others.
python3 ci/faults/cluster.py --schedules 1 --duration-s 45 --disk-full \
    --seed "${MAMBA_CI_FAULT_SEED:-7100}"
