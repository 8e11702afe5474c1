#!/usr/bin/env python3
"""What a Prometheus scrape of /metrics costs at many partitions (issue
"HTTP API, Prometheus metrics and a built-in web console").

    python3 bench/metrics_scrape.py [PARTITIONS] [SCRAPES]   (default 10000 20)

Runs target/release/mamba from the repository root in a fresh data
directory under /work/benchdata (or $MAMBA_BENCH_DIR): creates topics of
1000 partitions up to PARTITIONS, writes one record to every partition
(so the counters are not all zero), then scrapes /metrics SCRAPES times one
after another, as Prometheus would (plain and with Accept-Encoding: gzip).
Prints the answer's size and series count, the scrape time (median and
max, client side) and the broker's CPU time per scrape.
"""
import gzip, json, os, shutil, statistics, subprocess, sys, tempfile, time
import urllib.request


import broker_process
from broker_process import MAMBA

BASE = os.environ.get("MAMBA_BENCH_DIR", "/work/benchdata")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(url, gzipped):
    headers = {"Accept-Encoding": "gzip"} if gzipped else {}
    t0 = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        body = r.read()
        encoding = r.headers.get("Content-Encoding")
    elapsed = time.monotonic() - t0
    text = gzip.decompress(body) if encoding == "gzip" else body
    return elapsed, len(body), text.decode()


def main():
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    scrapes = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    os.makedirs(BASE, exist_ok=True)
    data = tempfile.mkdtemp(dir=BASE, prefix="scrape-")
    port = 19750
    p = None
    try:
        p, http = broker_process.start(data, port, many_files=True)
        brokers = f"127.0.0.1:{port}"
        created = 0
        while created < partitions:
            n = min(1000, partitions - created)
            topic = f"t{created}"
            subprocess.run([MAMBA, "topic", "create", topic, "--partitions", str(n),
                            "--brokers", brokers], check=True, stdout=subprocess.DEVNULL)
            lines = "".join(json.dumps({"value": "x", "partition": i}) + "\n" for i in range(n))
            subprocess.run([MAMBA, "produce", topic, "--format", "json", "--brokers", brokers],
                           input=lines, text=True, check=True, stdout=subprocess.DEVNULL)
            created += n
        time.sleep(2)
        url = f"http://{http}/metrics"
        for gzipped in (False, True):
            times, cpu0 = [], cpu_s(p.pid)
            for _ in range(scrapes):
                elapsed, size, text = scrape(url, gzipped)
                times.append(elapsed)
            cpu = (cpu_s(p.pid) - cpu0) / scrapes
            series = sum(1 for line in text.splitlines() if not line.startswith("#"))
            print(f"{partitions} partitions, {'gzip' if gzipped else 'plain'}: {size / 1e6:.2f} MB, "
                  f"{series} series; scrape median {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms; broker CPU {cpu * 1000:.0f} ms per scrape",
                  flush=True)
    finally:
        if p is not None:
            broker_process.stop(p)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
