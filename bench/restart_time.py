#!/usr/bin/env python3
"""Restart time against the size of the active segment, after a clean stop
and after kill -9 (issue "Single-node hardening": start-up verifies only
what lies past each partition's recovery point).

    python3 bench/restart_time.py [PRODUCE_SECONDS] [ROUNDS]   (default 4 3)

From the repository root, with release builds of mamba and mamba-bench: a
broker in a fresh directory under $MAMBA_BENCH_DIR (default
/work/benchdata), one topic of one partition filled for PRODUCE_SECONDS by
`mamba-bench produce`; then ROUNDS times: clean stop + timed start, and
kill -9 right after more produce + timed start. Prints the active segment
size and the start → ready times.
"""
import os, shutil, signal, subprocess, sys, tempfile, time

MAMBA = os.path.abspath("target/release/mamba")
BENCH = os.path.abspath("target/release/mamba-bench")
BASE = os.environ.get("MAMBA_BENCH_DIR", "/work/benchdata")
PORT = 19760


def start(data):
    t0 = time.monotonic()
    p = subprocess.Popen([MAMBA, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{PORT}"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, RUST_LOG="info"))
    for line in p.stderr:
        if "mamba broker ready" in line:
            return p, time.monotonic() - t0
    raise SystemExit("broker exited before ready")


def produce(seconds):
    subprocess.run([BENCH, "produce", "--brokers", f"127.0.0.1:{PORT}", "--topic", "big",
                    "--partitions", "1", "--duration-s", str(seconds), "--warmup-s", "0",
                    "--output", "json"], check=True, stdout=subprocess.DEVNULL)


def active_segment_mib(data):
    part = os.path.join(data, "topics", "big", "0")
    logs = sorted(f for f in os.listdir(part) if f.endswith(".log"))
    return os.path.getsize(os.path.join(part, logs[-1])) / 2**20, len(logs)


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    os.makedirs(BASE, exist_ok=True)
    data = tempfile.mkdtemp(dir=BASE, prefix="restart-")
    try:
        p, _ = start(data)
        produce(seconds)
        print("how stopped | active segment MiB | segments | start -> ready s")
        for _ in range(rounds):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=120)
            size, count = active_segment_mib(data)
            p, ready_s = start(data)
            print(f"clean stop | {size:.0f} | {count} | {ready_s:.3f}", flush=True)
            produce(2)
            p.kill()
            p.wait()
            size, count = active_segment_mib(data)
            p, ready_s = start(data)
            print(f"kill -9 | {size:.0f} | {count} | {ready_s:.3f}", flush=True)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
