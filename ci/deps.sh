#!/usr/bin/env bash
# System tools the tests need beyond the Rust toolchain, installed when
# missing (a new machine has neither for sure): `ip` (iproute2) and
# `iptables`, for tools/tests/cluster_partition.rs, which cuts a broker
# off the network in namespaces of its own. Under CI that test fails
# rather than skips without them.
set -euo pipefail
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
ip -V
iptables --version
