#!/usr/bin/env python3
"""Figures of issue "HTTP API, Prometheus metrics and a built-in web
console", each a ratio of runs alternated in the same broker:

  observe  binary-protocol produce (mamba-bench produce, 1 KiB, acks=all)
           while a Prometheus-like scraper reads /metrics every second and
           an open console's requests run (/v1/stats every 2 s, /v1/cluster
           every 2 s, /readyz every 5 s), divided by the same run without.
  http     HTTP produce (POST /v1/topics/T/records, JSON arrays of 100
           records of 1 KiB, keep-alive, 16 connections, acks=all) divided by
           binary-protocol produce of the same records; p99 of both.

    python3 bench/http_figures.py observe|http [PAIRS] [SECONDS]   (default 3 10)

observe also measures the broker's CPU spent on monitoring, without load.
$MAMBA_BENCH_STORAGE=memory puts the topic in memory (no disk stalls);
$MAMBA_HTTP_CONNECTIONS sets the HTTP connections (16).

Runs target/release/mamba and mamba-bench from the repository root; one
broker (2 shards, fsync) in a fresh data directory under /work/benchdata
(or $MAMBA_BENCH_DIR), removed at the end.
"""
import http.client as httpc
import json, multiprocessing, os, shutil, statistics, subprocess, sys, tempfile, threading, time


import broker_process
from broker_process import MAMBA

BENCH = os.path.abspath("target/release/mamba-bench")
BASE = os.environ.get("MAMBA_BENCH_DIR", "/work/benchdata")
# The topic's storage ($MAMBA_BENCH_STORAGE): disk, or memory, which takes
# the disk's stalls out of a ratio that measures CPU (the observe figure).
STORAGE = os.environ.get("MAMBA_BENCH_STORAGE", "disk")
# HTTP connections at once ($MAMBA_HTTP_CONNECTIONS), each its own process.
CONNECTIONS = int(os.environ.get("MAMBA_HTTP_CONNECTIONS", "16"))


def binary_produce(brokers, topic, seconds):
    out = subprocess.run([BENCH, "produce", "--brokers", brokers, "--topics", "1", "--topic", topic,
                          "--message-bytes", "1024", "--acks", "all", "--duration-s", str(seconds + 2),
                          "--warmup-s", "2", "--output", "json"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    produce = json.loads(out)["produce"]
    return produce["bytes_per_s"], produce["latency_us"]["p99"] / 1000


class Observer:
    """Prometheus at 1 Hz plus an open console, until stopped."""

    def __init__(self, http):
        self.host, self.port = http.rsplit(":", 1)
        self.stop = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        conn = httpc.HTTPConnection(self.host, int(self.port), timeout=30)
        tick = 0
        while not self.stop.wait(1.0 if tick else 0):
            paths = ["/metrics"] + (["/v1/stats", "/v1/cluster"] if tick % 2 == 0 else []) \
                + (["/readyz"] if tick % 5 == 0 else [])
            for path in paths:
                conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
                conn.getresponse().read()
            self.scrapes += 1
            tick += 1

    def close(self):
        self.stop.set()
        self.thread.join()


def http_worker(host, port, topic, body, deadline, seconds, out):
    """One keep-alive connection posting `body` until `deadline`; puts the
    latencies of requests that began after the warm-up."""
    conn = httpc.HTTPConnection(host, int(port), timeout=60)
    latencies = []
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        conn.request("POST", f"/v1/topics/{topic}/records?acks=all", body=body,
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse().read()
        t1 = time.monotonic()
        if t0 >= deadline - seconds:
            latencies.append(t1 - t0)
    out.put(latencies)


def http_produce(http, topic, seconds, connections=CONNECTIONS, records=100):
    """Each connection in a process of its own, so the load is not held to
    one core by Python's lock."""
    host, port = http.rsplit(":", 1)
    body = json.dumps([{"value": "x" * 1024} for _ in range(records)]).encode()
    deadline = time.monotonic() + 2 + seconds  # 2 s warm-up, as the binary runs
    out = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=http_worker,
                                       args=(host, port, topic, body, deadline, seconds, out))
               for _ in range(connections)]
    for w in workers:
        w.start()
    latencies = []
    for _ in workers:
        latencies.extend(out.get())
    for w in workers:
        w.join()
    latencies.sort()
    return len(latencies) * records * 1024 / seconds, latencies[int(len(latencies) * 0.99) - 1] * 1000


def cpu_s(pid):
    """The process's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def observe_cost(pid, http, pairs, seconds):
    """The broker's CPU spent on monitoring, without the produce load's
    noise: CPU seconds per second with the observer, minus without,
    alternated; as a share of the machine's cores it bounds what
    monitoring can take from a CPU-bound producer."""
    costs = []
    for _ in range(pairs):
        used = {}
        for which in ("idle", "observed"):
            observer = Observer(http) if which == "observed" else None
            before = cpu_s(pid)
            time.sleep(seconds)
            used[which] = (cpu_s(pid) - before) / seconds
            if observer:
                observer.close()
        costs.append(used["observed"] - used["idle"])
    cost = statistics.median(costs)
    cores = os.cpu_count()
    print(f"monitoring cost: {cost * 1000:.1f} ms of broker CPU per second "
          f"(median of {pairs}: {', '.join(f'{c * 1000:.1f}' for c in costs)}), "
          f"{cost / cores:.2%} of {cores} cores: a CPU-bound produce keeps >= {1 - cost / cores:.3f}")


def main():
    figure = sys.argv[1] if len(sys.argv) > 1 else "observe"
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    os.makedirs(BASE, exist_ok=True)
    data = tempfile.mkdtemp(dir=BASE, prefix="http-")
    port = 19760
    p = None
    try:
        p, http = broker_process.start(data, port)
        brokers = f"127.0.0.1:{port}"
        # Bounded on disk (at about 1 GiB/s, ten runs would fill it) or in
        # memory.
        storage = ["--storage", "memory", "--retention-bytes", "256MiB", "--segment-bytes", "64MiB"] \
            if STORAGE == "memory" else ["--retention-bytes", "1GiB", "--segment-bytes", "256MiB"]
        subprocess.run([MAMBA, "topic", "create", "load", "--partitions", "6", "--brokers", brokers]
                       + storage, check=True, stdout=subprocess.DEVNULL)
        ratios = []
        for pair in range(pairs):
            runs = {}
            order = ["base", "other"] if pair % 2 == 0 else ["other", "base"]
            for which in order:
                if which == "base":
                    runs[which] = binary_produce(brokers, "load", seconds)
                elif figure == "observe":
                    observer = Observer(http)
                    runs[which] = binary_produce(brokers, "load", seconds)
                    observer.close()
                else:
                    runs[which] = http_produce(http, "load", seconds)
            ratio = runs["other"][0] / runs["base"][0]
            ratios.append(ratio)
            print(f"pair {pair + 1}: {figure} {runs['other'][0] / 2**20:.0f} MiB/s p99 {runs['other'][1]:.1f} ms; "
                  f"binary alone {runs['base'][0] / 2**20:.0f} MiB/s p99 {runs['base'][1]:.1f} ms; "
                  f"ratio {ratio:.3f}", flush=True)
        print(f"median ratio {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})")
        if figure == "observe":
            observe_cost(p.pid, http, pairs, seconds)
    finally:
        if p is not None:
            broker_process.stop(p)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
