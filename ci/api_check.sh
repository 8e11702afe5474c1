#!/usr/bin/env bash
# The running broker against its own OpenAPI document, with schemathesis
# (a property-based API tester from PyPI): generated requests, valid and
# not, to every operation, and stateful sequences of them. It fails on any
# 5xx, on an answer that does not match the document (status, content
# type, headers, body schema), and on a broker that stops answering.
# (Requests the document allows but the broker refuses for reasons a
# schema cannot state — a partition that does not exist, an unknown
# setting — are not failures.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'schemathesis==4.32.5'
cargo test --workspace --no-run --quiet  # as ci/test.sh built it: nothing to build
dir=$(mktemp -d)
broker=
cleanup() {
    if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
./target/debug/mamba serve --data-dir "$dir/data" --listen 127.0.0.1:0 --http 127.0.0.1:0 2>"$dir/log" &
broker=$!
http=
for _ in $(seq 1 100); do
    http=$(grep -o 'mamba broker ready.* http=[^ ]*' "$dir/log" | sed 's/.* http=//' || true)
    [ -n "$http" ] && break
    sleep 0.1
done
[ -n "$http" ] || { echo "the broker did not start:"; cat "$dir/log"; exit 1; }
# A long poll may take its whole 30 s bound.
if ! timeout 600 st run "http://$http/openapi.json" --max-examples 50 --request-timeout 40 \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance; then
    echo "--- broker log (end)"; tail -50 "$dir/log"; exit 1
fi
if grep -q panicked "$dir/log"; then echo "the broker panicked:"; grep -A5 panicked "$dir/log"; exit 1; fi
kill -0 "$broker" || { echo "the broker is gone"; exit 1; }
echo "api check: ok"
