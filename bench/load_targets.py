#!/usr/bin/env python3
"""Measures the load generator's targets: 1 KiB messages, 4 partitions,
acks=all, an embedded broker sharing the machine with the load.

1. Produce throughput as a ratio of the disk reference measured in the same
   invocation (`mamba-bench produce --vs-disk`), fsync and none, alternating,
   ROUNDS rounds; medians of the per-run ratios.
2. The maximum end-to-end rate, per durability: the highest paced rate the
   whole path sustains. A probe at rate R is sustained when producers reach
   98 % of R, every message arrives once and in order, and the end-to-end
   p50 stays under 50 ms (a consumer that falls behind shows seconds). The
   search doubles from START_RATE until a probe fails (a failing probe is
   tried twice), then bisects BISECT_STEPS times.
3. End-to-end latency at half of that maximum: ROUNDS runs per durability,
   alternating; medians of p50 / p99 / p99.9.

usage: bench/load_targets.py [ROUNDS] [DURATION_S] [EXTRA_FLAGS...]
Run it from a directory on the disk to measure: the embedded broker's data
directory and the disk reference go there. Needs a release build.
"""
import json, os, statistics, subprocess, sys

START_RATE = 100_000
BISECT_STEPS = 3
BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "mamba-bench")

def bench(mode, args):
    out = subprocess.run([BINARY, mode, "--embedded", "--output", "json"] + args,
                         capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        sys.exit(f"mamba-bench {mode} {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)

def sustained(report, rate):
    d = report["delivery"]
    ok = d["lost"] == 0 and d["duplicated"] == 0 and d["out_of_order"] == 0
    return (ok and report["produce"]["records_per_s"] >= 0.98 * rate
            and report["e2e"]["latency_us"]["p50"] < 50_000)

def probe(durability, rate, common):
    for attempt in range(2):
        r = bench("e2e", common + ["--durability", durability, "--rate", str(rate)])
        good = sustained(r, rate)
        print(f"  probe {durability} {rate:>9.0f}/s: e2e p50 {r['e2e']['latency_us']['p50']} µs, "
              f"p99 {r['e2e']['latency_us']['p99']} µs -> {'sustained' if good else 'not sustained'}",
              file=sys.stderr)
        if good:
            return True
    return False

def max_rate(durability, common):
    good, bad = 0, START_RATE
    while probe(durability, bad, common):
        good, bad = bad, bad * 2
    for _ in range(BISECT_STEPS):
        mid = (good + bad) // 2
        if probe(durability, mid, common):
            good = mid
        else:
            bad = mid
    return good

def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    extra = sys.argv[3:]
    common = ["--duration-s", str(seconds), "--warmup-s", "2", "--partitions", "4",
              "--message-bytes", "1024", "--acks", "all"] + extra
    durabilities = ["fsync", "none"]
    ratios = {d: [] for d in durabilities}
    produced = {d: [] for d in durabilities}
    for i in range(rounds):
        for d in durabilities:
            r = bench("produce", common + ["--durability", d, "--vs-disk"])
            ratios[d].append(r["vs_disk"]["produce_ratio"])
            produced[d].append(r["produce"]["bytes_per_s"])
            print(f"round {i + 1}/{rounds} produce {d}: {r['produce']['bytes_per_s'] / 1e6:.0f} MB/s, "
                  f"disk {r['vs_disk']['disk_write_bytes_per_s'] / 1e6:.0f} MB/s, "
                  f"ratio {r['vs_disk']['produce_ratio']:.2f}", file=sys.stderr)
    maxima = {d: max_rate(d, common) for d in durabilities}
    latency = {d: {"p50": [], "p99": [], "p999": []} for d in durabilities}
    for i in range(rounds):
        for d in durabilities:
            half = maxima[d] // 2
            r = bench("e2e", common + ["--durability", d, "--rate", str(half)])
            for p in latency[d]:
                latency[d][p].append(r["e2e"]["latency_us"][p])
            print(f"round {i + 1}/{rounds} e2e {d} at {half}/s: p50 {r['e2e']['latency_us']['p50']} µs, "
                  f"p99 {r['e2e']['latency_us']['p99']} µs", file=sys.stderr)
    med = statistics.median
    print(f"| durability | produce (median of {rounds}) | produce / disk reference | max e2e rate | e2e p50 / p99 / p99.9 at half of it (median of {rounds}) |")
    print("|---|---|---|---|---|")
    for d in durabilities:
        l = latency[d]
        print(f"| {d} | {med(produced[d]) / 1e6:.0f} MB/s | {med(ratios[d]):.2f} | {maxima[d]:,} msg/s "
              f"| {med(l['p50']) / 1000:.1f} / {med(l['p99']) / 1000:.1f} / {med(l['p999']) / 1000:.1f} ms at {maxima[d] // 2:,} msg/s |")

if __name__ == "__main__":
    main()
