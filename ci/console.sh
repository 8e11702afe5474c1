#!/usr/bin/env bash
# The web console in a real browser (ci/console/test.mjs): Debian's
# Chromium, driven by playwright-core from the npm registry (no browser
# download), against three `mamba serve` processes on loopback. Screenshots
# of every page land in target/console-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    echo "installing chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
(cd ci/console && npm ci --no-audit --no-fund --silent)
cargo test --workspace --no-run --quiet  # as ci/test.sh built it: nothing to build
node ci/console/test.mjs
