#!/usr/bin/env python3
"""Quotes the engine's throughput as a ratio of the disk's own limit.

Alternates, for ROUNDS rounds on the same directory: fio sequential O_DIRECT
writes (the reference), `mamba-bench disk`, `mamba-bench engine --durability
fsync`, `... none`, and a light-load fsync run for latency (one writer, one
append in flight). Prints medians and ratios as a markdown table.

usage: bench/vs_fio.py DATA_DIR [ROUNDS] [DURATION_S]
Needs fio (Debian: apt-get install fio) and a release build of mamba-bench.
"""
import json, os, shutil, statistics, subprocess, sys

def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)

def fio(dir_, seconds):
    path = os.path.join(dir_, "fio-reference.tmp")
    # A fresh file, large enough never to wrap within the runtime: a log
    # appends to new blocks, and overwriting allocated blocks is much faster.
    if os.path.exists(path):
        os.remove(path)
    r = run_json(["fio", "--name=ref", f"--filename={path}", "--ioengine=io_uring", "--direct=1",
                  "--rw=write", "--bs=1M", "--iodepth=4", "--size=48G", f"--runtime={seconds}",
                  "--output-format=json"])
    os.remove(path)
    return r["jobs"][0]["write"]["bw_bytes"]

def bench(binary, args):
    return run_json([binary] + args + ["--output", "json"])["result"]

def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    dir_ = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    binary = os.path.join(os.path.dirname(__file__), "..", "target", "release", "mamba-bench")
    os.makedirs(dir_, exist_ok=True)
    rows = {k: [] for k in ["fio", "disk", "fsync", "none", "fsync_p99", "none_p99", "light_p99", "light_p50", "sync_p99", "sync_p50", "read"]}
    for i in range(rounds):
        rows["fio"].append(fio(dir_, seconds))
        d = bench(binary, ["disk", "--data-dir", dir_, "--duration-s", str(seconds)])
        rows["disk"].append(d["write_bytes_per_s"])
        rows["sync_p99"].append(d["fdatasync_latency_us"]["p99"])
        rows["sync_p50"].append(d["fdatasync_latency_us"]["p50"])
        for durability in ["fsync", "none"]:
            data = os.path.join(dir_, f"engine-{durability}")
            e = bench(binary, ["engine", "--data-dir", data, "--duration-s", str(seconds), "--durability", durability])
            shutil.rmtree(data)
            rows[durability].append(e["bytes_per_s"])
            rows[f"{durability}_p99"].append(e["append_latency_us"]["p99"])
            if durability == "fsync":
                rows["read"].append(e["read_bytes_per_s"])
        data = os.path.join(dir_, "engine-light")
        e = bench(binary, ["engine", "--data-dir", data, "--duration-s", str(seconds), "--partitions", "1",
                           "--in-flight", "1", "--batch-records", "4"])
        shutil.rmtree(data)
        rows["light_p99"].append(e["append_latency_us"]["p99"])
        rows["light_p50"].append(e["append_latency_us"]["p50"])
        print(f"round {i + 1}/{rounds}: fio {rows['fio'][-1]/1e6:.0f} MB/s, fsync {rows['fsync'][-1]/1e6:.0f} MB/s, none {rows['none'][-1]/1e6:.0f} MB/s", file=sys.stderr)
    m = {k: statistics.median(v) for k, v in rows.items()}
    ratio = lambda k: statistics.median(a / b for a, b in zip(rows[k], rows["fio"]))
    print(f"| measure | median of {rounds} | ratio to fio (median of per-round ratios) |")
    print("|---|---|---|")
    print(f"| fio seq write 1 MiB qd4 | {m['fio']/1e6:.0f} MB/s | 1.00 |")
    print(f"| mamba-bench disk write | {m['disk']/1e6:.0f} MB/s | {ratio('disk'):.2f} |")
    print(f"| engine fsync, 4 partitions, 1 KiB msgs (payload) | {m['fsync']/1e6:.0f} MB/s | {ratio('fsync'):.2f} |")
    print(f"| engine none, 4 partitions, 1 KiB msgs (payload) | {m['none']/1e6:.0f} MB/s | {ratio('none'):.2f} |")
    print(f"| engine read-back (fsync run) | {m['read']/1e6:.0f} MB/s | |")
    print(f"| append p99 at saturation, fsync / none | {m['fsync_p99']:.0f} / {m['none_p99']:.0f} µs | |")
    print(f"| disk 4 KiB write+fdatasync p50 / p99 | {m['sync_p50']:.0f} / {m['sync_p99']:.0f} µs | |")
    print(f"| engine fsync append, 1 in flight, p50 / p99 | {m['light_p50']:.0f} / {m['light_p99']:.0f} µs | p99 = {m['light_p99']/m['sync_p99']:.2f}x disk fdatasync p99 |")

if __name__ == "__main__":
    main()
