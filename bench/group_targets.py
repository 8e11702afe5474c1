#!/usr/bin/env python3
"""Measures the consumer-group targets (issue 11), an embedded broker and
every member on the same machine:

1. Clean leave and join: `mamba-bench rebalance` (3 members, 12
   partitions, 20 000 msgs/s of 1 KiB, 20 events, leave and join
   alternating, one every 2 s), ROUNDS runs: per run the p50 and max, over
   its events, of the time until every partition is owned again and until
   every moved partition delivers again; medians over the runs.
2. A member killed (SIGKILL): the same load, `kill,join` repeated KILLS
   times, session timeout SESSION_MS; the time until consumption resumed,
   and how much of it lies beyond the session timeout.
3. Throughput of a group of 2 consumers / 2 consumers assigning the
   partitions themselves: `mamba-bench consume` (fill DURATION_S, then read
   it all back), the two alternating, ROUNDS pairs; median of the per-pair
   ratios. The group uses the round-robin assignor, the split the
   consumers without a group use, so both read the same partitions from
   the same shards (uniform gives {0,1},{2,3}: on 2 shards every fetch
   then needs a second shard, which costs the same with or without a
   group).
4. commit_sync at 100 commits/s under load: `mamba-bench e2e --group`
   (3 consumers, 12 partitions, 20 000 msgs/s), ROUNDS runs; medians of
   p50 / p99 / max.

usage: bench/group_targets.py [ROUNDS] [DURATION_S]
Run it from a directory on the disk to measure. Needs a release build
(MAMBA_BENCH=path overrides ../target/release/mamba-bench).
"""
import json, os, statistics, subprocess, sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
DURATION_S = int(sys.argv[2]) if len(sys.argv) > 2 else 5
KILLS = 8
SESSION_MS = 3000
BINARY = os.environ.get("MAMBA_BENCH") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "mamba-bench")

def bench(mode, args):
    cmd = [BINARY, mode, "--embedded", "--output", "json"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if not out.stdout.strip():
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    if out.returncode != 0:
        print(f"  (exit {out.returncode}: {out.stderr.strip()})", file=sys.stderr)
    return json.loads(out.stdout)

def med(values):
    return statistics.median(values) if values else float("nan")

def rebalance(extra):
    r = bench("rebalance", ["--session-timeout-ms", str(SESSION_MS)] + extra)
    d = r["delivery"]
    print(f"  delivery: acknowledged {d['acknowledged']}, lost {d['lost']}, read twice "
          f"{d['duplicated_across_rebalances']}", file=sys.stderr)
    return r

def leave_join():
    print("1. clean leave and join (p50 / max over each run's events, ms)")
    rows = {"leave": [], "join": []}
    for i in range(ROUNDS):
        r = rebalance([])
        for kind in rows:
            k = r["by_kind"][kind]
            rows[kind].append((k["owned_again_ms"]["p50"], k["owned_again_ms"]["max"],
                               k["resumed_ms"]["p50"], k["resumed_ms"]["max"], k["unsettled"],
                               k["duplicated"]))
            print(f"  run {i} {kind:<5}: owned again {rows[kind][-1][0]:.0f} / {rows[kind][-1][1]:.0f}, "
                  f"resumed {rows[kind][-1][2]:.0f} / {rows[kind][-1][3]:.0f}, unsettled "
                  f"{k['unsettled']}, read twice {k['duplicated']}")
    for kind, runs in rows.items():
        print(f"  median {kind:<5}: owned again p50 {med([x[0] for x in runs]):.0f} ms, max "
              f"{med([x[1] for x in runs]):.0f} ms; resumed p50 {med([x[2] for x in runs]):.0f} ms, "
              f"max {med([x[3] for x in runs]):.0f} ms; worst max {max(x[3] for x in runs):.0f} ms")

def kills():
    print(f"2. member killed, session timeout {SESSION_MS} ms (ms)")
    runs = []
    for i in range(ROUNDS):
        r = rebalance(["--schedule", ",".join(["kill", "join"] * KILLS)])
        k = r["by_kind"]["kill"]
        extra = k["resumed_after_session_ms"]
        runs.append((k["resumed_ms"]["p50"], k["resumed_ms"]["max"], extra["p50"], extra["max"]))
        print(f"  run {i}: resumed p50 {runs[-1][0]:.0f}, max {runs[-1][1]:.0f}; beyond the session "
              f"p50 {runs[-1][2]:.0f}, max {runs[-1][3]:.0f}; unsettled {k['unsettled']}")
    print(f"  median: resumed p50 {med([x[0] for x in runs]):.0f} ms, max {med([x[1] for x in runs]):.0f} "
          f"ms = session + p50 {med([x[2] for x in runs]):.0f} ms, max {med([x[3] for x in runs]):.0f} ms")

def throughput():
    print("3. consume throughput, group of 2 / 2 assigned")
    common = ["--consumers", "2", "--partitions", "4", "--duration-s", str(DURATION_S),
              "--warmup-s", "1"]
    ratios = []
    for i in range(ROUNDS):
        order = ["assign", "group"] if i % 2 == 0 else ["group", "assign"]
        rate = {}
        for kind in order:
            # round-robin splits the partitions as the consumers without a
            # group do: both read the same partitions from the same shards.
            extra = ["--group", "--assignor", "round-robin"] if kind == "group" else []
            rate[kind] = bench("consume", common + extra)["consume"]["bytes_per_s"]
        ratios.append(rate["group"] / rate["assign"])
        print(f"  pair {i}: assign {rate['assign'] / 1e6:.0f} MB/s, group {rate['group'] / 1e6:.0f} "
              f"MB/s, ratio {ratios[-1]:.3f}")
    print(f"  median ratio {med(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")

def commits():
    print("4. commit_sync at 100/s under 20 000 msgs/s (µs)")
    runs = []
    for i in range(ROUNDS):
        r = bench("e2e", ["--group", "--consumers", "3", "--partitions", "12", "--rate", "20000",
                          "--commit-rate", "100", "--duration-s", "20", "--warmup-s", "2"])
        c = r["commit"]["latency_us"]
        runs.append((c["p50"], c["p99"], c["max"], r["commit"]["commits_per_s"]))
        print(f"  run {i}: p50 {c['p50']}, p99 {c['p99']}, max {c['max']} ({c['count']} commits, "
              f"{runs[-1][3]:.0f}/s, failed {r['commit']['failed']}); e2e p99 "
              f"{r['e2e']['latency_us']['p99']} µs")
    print(f"  median: p50 {med([x[0] for x in runs]):.0f} µs, p99 {med([x[1] for x in runs]):.0f} µs, "
          f"max {med([x[2] for x in runs]):.0f} µs")

if __name__ == "__main__":
    wanted = os.environ.get("ONLY", "1234")
    for n, step in zip("1234", [leave_join, kills, throughput, commits]):
        if n in wanted:
            step()
            sys.stdout.flush()
