#!/usr/bin/env bash
# The README's test command, `cargo test --workspace`; where cargo-nextest
# is installed, the same tests under it instead (every test binary at once,
# the cluster tests one at a time: .config/nextest.toml), then the
# doctests, which nextest does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
else
    cargo test --workspace
fi
