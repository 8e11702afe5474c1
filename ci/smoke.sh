#!/usr/bin/env bash
# Runs the user-facing programs briefly: the embedded example (the README's
# main job) and both benchmark modes, checking they succeed and report JSON.
# A smoke run, not a measurement: no speed is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
# The binaries and the example as the test stage built them: building them
# alone would select other features of shared dependencies and rebuild
# them (minutes on a small machine). After ci/test.sh this builds nothing.
cargo test --workspace --no-run --quiet
./target/debug/examples/embedded
./target/debug/mamba --help >/dev/null
./target/debug/mamba log --help >/dev/null
./target/debug/mamba-bench --help >/dev/null
./target/debug/mamba-bench engine --duration-s 2 --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
assert r["records"] > 0 and r["verified_records"] == r["records"], r
print("engine smoke:", r["records"], "records appended and verified")'
./target/debug/mamba-bench disk --duration-s 1 --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
assert r["write_bytes_per_s"] > 0, r
print("disk smoke: ok")'
./target/debug/mamba-bench e2e --embedded --duration-s 3 --warmup-s 1 --rate 20000 --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)
d = r["delivery"]
assert d["lost"] == 0 and d["duplicated"] == 0 and d["out_of_order"] == 0, d
assert d["acknowledged"] > 0 and d["consumed"] >= d["acknowledged"], d
for section in ("produce", "consume", "e2e"):
    for key in ("records_per_s", "bytes_per_s", "latency_us"):
        assert key in r[section], (section, key)
# consume is the delivered rate; latency belongs to produce (send to ack)
# and e2e (publish to delivery).
assert r["consume"]["latency_us"] is None, r["consume"]
for section in ("produce", "e2e"):
    for p in ("p50", "p90", "p99", "p999", "p9999", "max"):
        assert p in r[section]["latency_us"], (section, p)
print("e2e smoke:", d["acknowledged"], "messages, none lost, duplicated or out of order")'
./target/debug/mamba-bench e2e --embedded --workload bench/workloads/smoke.yaml --output json | python3 -c '
import json, sys
r = json.load(sys.stdin)
d = r["delivery"]
assert r["params"]["topics"] == 2 and r["params"]["subscriptions"] == 2, r["params"]
assert d["lost"] == 0 and d["duplicated"] == 0 and d["out_of_order"] == 0, d
assert d["acknowledged"] > 0 and d["consumed"] == d["acknowledged"], d
print("workload smoke:", d["acknowledged"], "deliveries over 2 topics x 2 subscriptions, all exactly once")'
if ./target/debug/mamba-bench e2e --embedded --workload /nonexistent/workload.yaml 2>/tmp/mamba-smoke-err; then
    echo "a missing workload file must fail"; exit 1
fi
grep -q "workload" /tmp/mamba-smoke-err
echo "bad workload smoke: one clear line"
