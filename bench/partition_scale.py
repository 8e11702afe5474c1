#!/usr/bin/env python3
"""Per-partition cost of an idle broker: RSS, open descriptors and restart
time at several partition counts (issue "Single-node hardening", item 10).

    python3 bench/partition_scale.py [COUNTS...]     (default 1000 5000 10000)

Runs target/release/mamba from the repository root, in a fresh data
directory under /work/benchdata (or $MAMBA_BENCH_DIR) per count: creates
topics of 1000 partitions up to the count, waits for the broker to settle,
reads VmRSS and the descriptor count from /proc, stops it (SIGTERM), starts
it again and times start -> ready, then `mamba log check` on the directory.
"""
import os, re, shutil, signal, subprocess, sys, tempfile, time

MAMBA = os.path.abspath("target/release/mamba")
BASE = os.environ.get("MAMBA_BENCH_DIR", "/work/benchdata")


def start(data, port):
    t0 = time.monotonic()
    p = subprocess.Popen([MAMBA, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, RUST_LOG="info"))
    for line in p.stderr:
        if "mamba broker ready" in line:
            return p, time.monotonic() - t0, line
    raise SystemExit("broker exited before ready")


def stop(p):
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    p.wait(timeout=300)
    return time.monotonic() - t0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    counts = [int(c) for c in sys.argv[1:]] or [1000, 5000, 10000]
    print("partitions | RSS MiB | RSS KiB/partition (over empty) | descriptors | idle CPU (cores) | restart s | stop s | log check s")
    os.makedirs(BASE, exist_ok=True)
    port = 19700
    data = tempfile.mkdtemp(dir=BASE, prefix="scale-")
    try:
        p, _, _ = start(data, port)
        time.sleep(1)
        empty_rss = rss_kib(p.pid)
        created = 0
        for count in counts:
            while created < count:
                n = min(1000, count - created)
                subprocess.run([MAMBA, "topic", "create", f"t{created}", "--partitions", str(n),
                                "--brokers", f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
                created += n
            time.sleep(3)
            cpu0 = cpu_s(p.pid)
            time.sleep(5)
            idle_cpu = (cpu_s(p.pid) - cpu0) / 5
            rss = rss_kib(p.pid)
            descriptors = fds(p.pid)
            stop_s = stop(p)
            p, restart_s, ready = start(data, port)
            assert f"partitions={count}" in ready, ready
            t0 = time.monotonic()
            check = subprocess.run([MAMBA, "log", "check", data], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            check_s = time.monotonic() - t0
            ok = "ok" if check.returncode == 0 else f"exit {check.returncode}: {check.stdout[-200:]}"
            print(f"{count} | {rss / 1024:.0f} | {(rss - empty_rss) / count:.0f} | {descriptors} | {idle_cpu:.2f} | "
                  f"{restart_s:.2f} | {stop_s:.2f} | {check_s:.1f} ({ok})", flush=True)
        stop(p)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
