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
  python3 bench/cluster_figures.py metadata [ROUNDS]
      `mamba-bench metadata`: topic creations through broker 1, each timed
      until every broker's metadata shows it (p50, p99, max).
  python3 bench/cluster_figures.py throughput [PAIRS]
      `mamba-bench produce` (6 partitions, 1 KiB messages, acks=all,
      10 s) against one broker, then against a fresh 3-broker cluster
      (RF 1, partitions spread over the brokers), alternating the order
      each pair: the cluster's produce throughput over the single
      broker's, per pair and the median. Every broker takes the default
      shard count.

MAMBA (default target/release/mamba) and MAMBA_BENCH (default
target/release/mamba-bench) name the binaries.
"""
import json, os, re, shutil, signal, subprocess, sys, tempfile, time

M = os.environ.get("MAMBA", "target/release/mamba")
BENCH = os.environ.get("MAMBA_BENCH", "target/release/mamba-bench")
VOTERS = "1@127.0.0.1:19401,2@127.0.0.1:19411,3@127.0.0.1:19421"
ROUND_TIMEOUT_S = 20


def client(i):
    return f"127.0.0.1:{19400 + (i - 1) * 10}"


class Cluster:
    def __init__(self, nodes=(1, 2, 3), shards="1"):
        self.dir = tempfile.mkdtemp(prefix="mamba-cluster-")
        self.procs = {}
        self.nodes = nodes
        # One node alone is a one-node cluster of its own.
        self.voters = VOTERS if len(nodes) > 1 else f"1@{client(1).split(':')[0]}:19401"
        self.shards = ["--shards", shards] if shards else []
        for i in nodes:
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
                 "--voters", self.voters, *self.shards],
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


def produce_bytes_per_s(nodes, topic):
    cluster = Cluster(nodes, shards=None)
    try:
        run = subprocess.run(
            [BENCH, "produce", "--brokers", client(1), "--topic", topic, "--partitions", "6",
             "--duration-s", "10", "--warmup-s", "2", "--output", "json"],
            capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            sys.exit(f"mamba-bench failed against {len(nodes)} broker(s): {run.stderr}")
        return json.loads(run.stdout)["produce"]["bytes_per_s"]
    finally:
        cluster.close()


def throughput(pairs):
    ratios = []
    for r in range(pairs):
        order = [(1,), (1, 2, 3)] if r % 2 == 0 else [(1, 2, 3), (1,)]
        rate = {len(nodes): produce_bytes_per_s(nodes, f"throughput-{r}") for nodes in order}
        ratios.append(rate[3] / rate[1])
        print(f"pair {r}: one broker {rate[1] / 2**20:.1f} MiB/s, three brokers "
              f"{rate[3] / 2**20:.1f} MiB/s, ratio {ratios[-1]:.2f}")
    ratios.sort()
    print(f"throughput: 3 brokers / 1 broker, median {ratios[len(ratios) // 2]:.2f} "
          f"(min {ratios[0]:.2f}, max {ratios[-1]:.2f}) over {pairs} pairs")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "failover"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    if what == "throughput":
        throughput(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
        return
    if what == "metadata":
        cluster = Cluster()
        try:
            brokers = ",".join(client(i) for i in (1, 2, 3))
            subprocess.run([BENCH, "metadata", "--brokers", brokers, "--rounds", str(rounds)], check=True)
        finally:
            cluster.close()
        return
    cluster = Cluster()
    try:
        times = {"failover": failover, "detect": detect}[what](cluster, rounds)
    finally:
        cluster.close()
    times.sort()
    print(f"{what}: p50 {times[len(times) // 2] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms over {len(times)}")


if __name__ == "__main__":
    main()
