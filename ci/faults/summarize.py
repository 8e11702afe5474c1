#!/usr/bin/env python3
"""The figures of a long fault run, from cluster.py's --summary file:

    python3 ci/faults/summarize.py SUMMARY.jsonl [--markdown]

Schedules passed, anomalies, replica differences, and per fault kind the
share of produce attempts acknowledged while it was on and the longest
time without an acknowledgement inside its windows (the worst schedule's,
and the median over schedules).
"""
import json, statistics, sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    markdown = "--markdown" in sys.argv[2:]
    passed = sum(1 for r in rows if r["ok"])
    silent = [r["seed"] for r in rows if r.get("availability") is None]
    differing = [r["seed"] for r in rows if r["replica_differences"]]
    seeds = [r["seed"] for r in rows]
    rows = [r for r in rows if r.get("availability") is not None]
    anomalies = sum(r["anomalies"] for r in rows)
    attempts = sum(r["availability"]["attempts"] for r in rows)
    acked = sum(r["availability"]["acknowledged"] for r in rows)
    gaps = [r["availability"]["longest_gap_ms"] for r in rows]
    print(f"{len(seeds)} schedules (seeds {min(seeds)}..{max(seeds)}): {passed} passed; "
          f"{anomalies} anomalies; replicas differed in {len(differing)} {differing or ''}")
    if silent:
        print(f"verify gave no report in {len(silent)}: seeds {silent}")
    counts = {}
    for r in rows:
        for kind, n in r.get("counts", {}).items():
            counts[kind] = counts.get(kind, 0) + n
    if counts:
        print("anomalies by kind: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    print(f"produce attempts {attempts}, acknowledged {acked} ({100 * acked / max(attempts, 1):.2f}%); "
          f"longest gap without an acknowledgement: median {statistics.median(gaps):.0f} ms, "
          f"worst {max(gaps)} ms")
    kinds = {}
    for r in rows:
        for kind, load in r["availability"]["during"].items():
            k = kinds.setdefault(kind, {"windows": 0, "attempts": 0, "acknowledged": 0, "gaps": []})
            k["windows"] += load["windows"]
            k["attempts"] += load["attempts"]
            k["acknowledged"] += load["acknowledged"]
            k["gaps"].append(load["longest_gap_ms"])
    header = ["fault", "windows", "attempts during", "acknowledged", "longest gap, median", "longest gap, worst"]
    lines = [header]
    for kind, k in sorted(kinds.items()):
        lines.append([kind, str(k["windows"]), str(k["attempts"]),
                      f"{100 * k['acknowledged'] / max(k['attempts'], 1):.1f}%",
                      f"{statistics.median(k['gaps']) / 1000:.2f} s", f"{max(k['gaps']) / 1000:.2f} s"])
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))


if __name__ == "__main__":
    main()
