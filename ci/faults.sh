#!/usr/bin/env bash
# A short fault schedule on every change: three brokers in network
# namespaces, RF 3, acks=all, under `mamba-bench verify` with seeded
# faults (random and targeted kills, pauses, partitions, link down, disk
# full), then every replica compared byte for byte. The long run (50
# schedules of 60 s) is the command in bench/README.md. Uses the test
# stage's debug binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test stage built them (`cargo build -p …` alone would pick other
# dependency features and build again for minutes).
cargo test --workspace --no-run --quiet
# A fixed seed, so a failure here replays with the same command; the long
# run explores others.
# disk-full needs a loop-mounted file system per broker.
disk_full=--disk-full
if [ ! -e /dev/loop-control ] || ! command -v mkfs.ext4 >/dev/null || ! command -v fallocate >/dev/null; then
    echo "faults: no loop devices, mkfs.ext4 or fallocate here: the disk-full fault is left out"
    disk_full=
fi
python3 ci/faults/cluster.py --schedules 1 --duration-s 45 $disk_full \
    --seed "${MAMBA_CI_FAULT_SEED:-7100}"
