#!/usr/bin/env bash
# Builds every fuzz target with nightly and runs each for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-8}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: SKIPPED - no nightly toolchain (rustup toolchain install nightly to enable)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    cargo +nightly fuzz run -O "$target" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096
done
