#!/usr/bin/env python3
"""Cluster figures of issue 12, on a 3-voter cluster of `mamba serve`
processes on loopback (ports 19400-19421, data in a temporary directory).

  python3 bench/cluster_figures.py failover [ROUNDS]
      kill -9 of the controller leader, then `mamba topic create` through a
      survivor, retried until it succeeds: time from the kill (p50, max).
      The killed broker restarts before the next round.
  python3 bench/cluster_figures.py detect [ROUNDS]
      kill -9 of a broker that does not lead: time until the controller
      shows it fenced (`mamba cluster brokers`), p50 and max.

MAMBA (default target/release/mamba) names the binary. Metadata
propagation is `mamba-bench metadata --brokers ...` against such a cluster.
"""
import json, os, re, shutil, signal, subprocess, sys, tempfile, time

M = os.environ.get("MAMBA", "target/release/mamba")
VOTERS = "1@127.0.0.1:19401,2@127.0.0.1:19411,3@127.0.0.1:19421"
ROUND_TIMEOUT_S = 20


def client(i):
    return f"127.0.0.1:{19400 + (i - 1) * 10}"


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mamba-cluster-")
        self.procs = {}
        for i in (1, 2, 3):
            self.start(i)
        time.sleep(3)

    def log(self, i):
        return os.path.join(self.dir, f"{i}.log")

    def start(self, i):
        host, port = client(i).split(":")
        with open(self.log(i), "a") as log:
            self.procs[i] = subprocess.Popen(
                [M, "serve", "--data-dir", os.path.join(self.dir, str(i)), "--node-id", str(i),
                 "--listen", client(i), "--cluster-listen", f"{host}:{int(port) + 1}",
                 "--voters", VOTERS, "--shards", "1"],
                stdout=log, stderr=log)

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def leader(self):
        """The node whose log announced leadership last."""
        best = (None, "")
        for i in (1, 2, 3):
            with open(self.log(i)) as f:
                for line in f:
                    m = re.search(r"^(\S+).*leading the metadata quorum", line)
                    if m and m.group(1) > best[1]:
                        best = (i, m.group(1))
        return best[0]

    def close(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def cli(*args):
    return subprocess.run([M, *args], capture_output=True, text=True)


def failover(cluster, rounds):
    times = []
    for r in range(rounds):
        killed = cluster.leader()
        via = next(i for i in (1, 2, 3) if i != killed)
        cluster.kill(killed)
        t0 = time.time()
        tries = 0
        while True:
            tries += 1
            if cli("topic", "create", f"failover-{r}-{tries}", "--brokers", client(via)).returncode == 0:
                break
            if time.time() - t0 > ROUND_TIMEOUT_S:
                sys.exit(f"round {r}: no topic could be created within {ROUND_TIMEOUT_S} s")
        times.append(time.time() - t0)
        print(f"round {r}: killed {killed}, created through {via} after {times[-1] * 1000:.0f} ms")
        cluster.start(killed)
        time.sleep(1.5)
    return times


def detect(cluster, rounds):
    times = []
    for r in range(rounds):
        leader = cluster.leader()
        killed = [i for i in (1, 2, 3) if i != leader][r % 2]
        cluster.kill(killed)
        t0 = time.time()
        while time.time() - t0 < ROUND_TIMEOUT_S:
            out = cli("cluster", "brokers", "--output", "json", "--brokers", client(leader)).stdout
            status = {b.get("node_id"): b.get("status") for b in map(json.loads, out.splitlines())}
            if status.get(killed) == "fenced":
                break
            time.sleep(0.02)
        times.append(time.time() - t0)
        print(f"round {r}: killed {killed}, fenced after {times[-1] * 1000:.0f} ms")
        cluster.start(killed)
        time.sleep(2.5)
    return times


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "failover"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    cluster = Cluster()
    try:
        times = {"failover": failover, "detect": detect}[what](cluster, rounds)
    finally:
        cluster.close()
    times.sort()
    print(f"{what}: p50 {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms over {len(times)}")


if __name__ == "__main__":
    main()
