#!/usr/bin/env python3
"""Replication figures of issue 13, on a 3-broker cluster of `mamba serve`
processes on loopback (ports 19500-19521, data in a temporary directory),
default settings (heartbeat 500 ms, session 3 s), release binaries.

  python3 bench/replication_figures.py failover [ROUNDS]
      Topic of 1 partition, replication factor 3. Each round: kill -9 of
      the partition's leader, then at once `mamba produce --acks all` of
      one record through a survivor; the time from the kill until that
      produce is acknowledged (by the new leader: the old one is dead), as
      the client sees it. The killed broker restarts and rejoins the
      in-sync replicas before the next round. p50 and max.
  python3 bench/replication_figures.py shutdown [ROUNDS]
      `mamba-bench produce` (3 partitions, replication factor 3, acks=all,
      2000 msgs/s, 16 s) while, at 6 s, the leader of partition 0 gets
      SIGTERM (a controlled shutdown): the bench's failed sends and its
      worst produce latency, per round.
  python3 bench/replication_figures.py throughput [PAIRS]
      `mamba-bench produce` as fast as it goes (6 partitions, 1 KiB
      messages, acks=all, 10 s) to a topic of replication factor 3, then
      to one of replication factor 1, on the same cluster, alternating
      the order each pair: RF 3 throughput / RF 1, per pair and median.
      Then p99 produce latency at half the RF 3 maximum rate, RF 3 and
      RF 1 (same rate).
  python3 bench/replication_figures.py catchup [ROUNDS]
      kill -9 of a follower; 2 GiB produced (acks=1, 1 MiB messages) while
      it is down; restarted, the time from its start until its log end
      reaches the leader's: bytes per second of catch-up, over the disk's
      O_DIRECT read rate (`fio --rw=read --direct=1 --bs=1M --iodepth=4`,
      3 s) measured in the same round. A fresh topic per round.

  python3 bench/replication_figures.py move [ROUNDS]
      A partition of replication factor 1 with 1 GiB (1 MiB messages)
      moved to another broker with `mamba cluster move`, first with
      replication.throttle.bytes_per_s at 40 MiB/s, then unthrottled
      (back): the copy rate of each move (bytes / the command's run time),
      the throttled one over its limit. A fresh topic per round.

MAMBA (default target/release/mamba) and MAMBA_BENCH (default
target/release/mamba-bench) name the binaries.
"""
import json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

M = os.environ.get("MAMBA", "target/release/mamba")
BENCH = os.environ.get("MAMBA_BENCH", "target/release/mamba-bench")
VOTERS = "1@127.0.0.1:19501,2@127.0.0.1:19511,3@127.0.0.1:19521"
WAIT_S = 60


def client(i):
    return f"127.0.0.1:{19500 + (i - 1) * 10}"


ALL = ",".join(client(i) for i in (1, 2, 3))


def cli(*args, stdin=None, timeout=WAIT_S):
    return subprocess.run([M, *args], input=stdin, capture_output=True, timeout=timeout)


def cli_json(*args, brokers=ALL):
    out = cli(*args, "-o", "json", "--brokers", brokers)
    if out.returncode != 0:
        raise RuntimeError(f"mamba {args}: {out.stderr.decode()}")
    return [json.loads(l) for l in out.stdout.decode().splitlines() if l.strip()]


def wait(what, done, limit_s=WAIT_S):
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if done():
                return
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, IndexError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mamba-replication-")
        self.procs = {}
        for i in (1, 2, 3):
            self.start(i)
        wait("a controller", lambda: cli_json("cluster", "status")[0].get("controller_id"))

    def start(self, i):
        host, port = client(i).split(":")
        log = open(os.path.join(self.dir, f"{i}.log"), "a")
        self.procs[i] = subprocess.Popen(
            [M, "serve", "--data-dir", os.path.join(self.dir, str(i)), "--node-id", str(i),
             "--listen", client(i), "--cluster-listen", f"{host}:{int(port) + 1}",
             "--voters", VOTERS], stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT_S
        while "mamba broker ready" not in open(os.path.join(self.dir, f"{i}.log")).read():
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker {i} not ready")
            time.sleep(0.05)

    def kill(self, i, sig=signal.SIGKILL):
        self.procs[i].send_signal(sig)
        self.procs[i].wait(timeout=WAIT_S)

    def partition(self, topic, p, through=None):
        brokers = client(through) if through else ALL
        d = cli_json("topic", "describe", topic, brokers=brokers)[0]
        return next(x for x in d["partitions"] if x["partition"] == p)

    def wait_in_sync(self, topic, partitions, rf=3):
        """Until every broker (a restarted one catches up with the metadata
        first: until then it shows the partitions as they were) shows each
        partition led, with all `rf` replicas in sync, and they agree."""
        def agreed(p):
            seen = [self.partition(topic, p, through=i) for i in (1, 2, 3)]
            views = {(x["leader"], x["leader_epoch"], tuple(sorted(x["isr"]))) for x in seen}
            return len(views) == 1 and seen[0]["leader"] is not None and len(seen[0]["isr"]) == rf
        wait(f"{topic} in sync", lambda: all(agreed(p) for p in range(partitions)))

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get("KEEP"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def create(topic, partitions, rf):
    out = cli("topic", "create", topic, "-p", str(partitions), "-r", str(rf), "--brokers", ALL)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode())


def bench_produce(topic, partitions, rate=0, duration_s=10, acks="all", message_bytes=1024):
    out = subprocess.run(
        [BENCH, "produce", "--brokers", ALL, "--topic", topic, "--partitions", str(partitions),
         "--acks", acks, "--rate", str(rate), "--duration-s", str(duration_s),
         "--message-bytes", str(message_bytes), "--output", "json"],
        capture_output=True, timeout=duration_s + WAIT_S)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode())
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def failover(cluster, rounds):
    create("failover", 1, 3)
    cluster.wait_in_sync("failover", 1)
    times = []
    for r in range(rounds):
        leader = cluster.partition("failover", 0)["leader"]
        survivors = ",".join(client(i) for i in (1, 2, 3) if i != leader)
        cluster.kill(leader)
        killed = time.monotonic()
        out = cli("produce", "failover", "--acks", "all", "--brokers", survivors,
                  stdin=f"round-{r}\n".encode())
        took = time.monotonic() - killed
        if out.returncode != 0:
            raise RuntimeError(out.stderr.decode())
        if os.environ.get("KEEP"):
            print(f"  killed at {time.time() - took:.3f} (unix), answered after {took:.3f} s")
        times.append(took)
        print(f"round {r}: leader {leader} killed; first acks=all produce acknowledged after {took * 1000:.0f} ms", flush=True)
        cluster.start(leader)
        cluster.wait_in_sync("failover", 1)
    return times


def shutdown(cluster, rounds):
    create("calm", 3, 3)
    cluster.wait_in_sync("calm", 3)
    results = []
    for r in range(rounds):
        leader = cluster.partition("calm", 0)["leader"]
        bench = subprocess.Popen(
            [BENCH, "produce", "--brokers", ALL, "--topic", "calm", "--partitions", "3",
             "--acks", "all", "--rate", "2000", "--duration-s", "16", "--warmup-s", "1",
             "--output", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(6)
        began = time.monotonic()
        cluster.kill(leader, signal.SIGTERM)
        took = time.monotonic() - began
        out, err = bench.communicate(timeout=WAIT_S)
        if bench.returncode != 0:
            raise RuntimeError(err.decode())
        report = json.loads(out.decode().strip().splitlines()[-1])
        lat = report["produce"]["latency_us"]
        results.append((report["errors"], lat["max"], lat["p99"], took))
        print(f"round {r}: broker {leader} stopped in {took * 1000:.0f} ms; failed sends {report['errors']}, "
              f"produce latency max {lat['max'] / 1000:.1f} ms, p99 {lat['p99'] / 1000:.1f} ms", flush=True)
        cluster.start(leader)
        cluster.wait_in_sync("calm", 3)
    return results


def fresh_run(topic, **bench_args):
    """`bench_produce` to a topic made for the run and deleted after it (a
    run writes gigabytes)."""
    rf = 3 if topic == "rf3" else 1
    create(topic, 6, rf)
    try:
        return bench_produce(topic, 6, **bench_args)["produce"]
    finally:
        cli("topic", "delete", topic, "--brokers", ALL)
        time.sleep(1)


def throughput(cluster, pairs):
    ratios, rf3_rates = [], []
    for pair in range(pairs):
        order = ["rf3", "rf1"] if pair % 2 == 0 else ["rf1", "rf3"]
        got = {t: fresh_run(t) for t in order}
        ratio = got["rf3"]["bytes_per_s"] / got["rf1"]["bytes_per_s"]
        ratios.append(ratio)
        rf3_rates.append(got["rf3"]["records_per_s"])
        print(f"pair {pair}: RF3 {got['rf3']['bytes_per_s'] / 2**20:.1f} MiB/s, RF1 "
              f"{got['rf1']['bytes_per_s'] / 2**20:.1f} MiB/s: ratio {ratio:.3f}", flush=True)
    half = int(statistics.median(rf3_rates) / 2)
    p99 = {}
    for t in ["rf3", "rf1"]:
        lat = fresh_run(t, rate=half)["latency_us"]
        p99[t] = lat["p99"]
        print(f"{t} at {half} msgs/s: p50 {lat['p50'] / 1000:.2f} ms, p99 {lat['p99'] / 1000:.2f} ms", flush=True)
    return ratios, half, p99


def fio_read_bytes_per_s(directory):
    path = os.path.join(directory, "fio-read")
    subprocess.run(["fio", "--name=w", f"--filename={path}", "--size=1G", "--rw=write", "--bs=1M",
                    "--direct=1", "--ioengine=io_uring", "--iodepth=4"], capture_output=True, check=True)
    out = subprocess.run(["fio", "--name=r", f"--filename={path}", "--size=1G", "--rw=read", "--bs=1M",
                          "--direct=1", "--ioengine=io_uring", "--iodepth=4", "--runtime=3",
                          "--time_based", "--output-format=json"], capture_output=True, check=True)
    os.remove(path)
    return json.loads(out.stdout)["jobs"][0]["read"]["bw_bytes"]


def catchup(cluster, rounds):
    ratios = []
    for r in range(rounds):
        # A fresh topic each round, deleted after it: rounds write gigabytes.
        create("catch", 1, 3)
        cluster.wait_in_sync("catch", 1)
        p = cluster.partition("catch", 0)
        follower = next(i for i in p["replicas"] if i != p["leader"])
        cluster.kill(follower)
        before = cluster.partition("catch", 0)["log_end_offset"]
        # 2 GiB: 1 MiB messages, 256 a second for 8 s.
        bench_produce("catch", 1, rate=256, duration_s=8, acks="1", message_bytes=1 << 20)
        after = cluster.partition("catch", 0)
        behind = after["log_end_offset"] - before
        bytes_behind = behind * (1 << 20)
        cluster.start(follower)
        started = time.monotonic()

        def caught_up():
            q = cluster.partition("catch", 0)
            return any(f["broker"] == follower and f["log_end_offset"] >= after["log_end_offset"]
                       for f in q.get("followers", []))
        wait("the follower caught up", caught_up, limit_s=600)
        took = time.monotonic() - started
        rate = bytes_behind / took
        disk = fio_read_bytes_per_s(cluster.dir)
        ratios.append(rate / disk)
        print(f"round {r}: follower {follower} caught up {bytes_behind / 2**30:.2f} GiB in {took:.1f} s "
              f"(from its start): {rate / 2**20:.0f} MiB/s; disk O_DIRECT read {disk / 2**20:.0f} MiB/s: "
              f"ratio {rate / disk:.2f}", flush=True)
        cluster.wait_in_sync("catch", 1)
        cli("topic", "delete", "catch", "--brokers", ALL)
        time.sleep(2)
    return ratios


def move(cluster, rounds):
    throttle = 40 << 20
    results = []
    for r in range(rounds):
        create("mv", 1, 1)
        cluster.wait_in_sync("mv", 1, rf=1)
        bench_produce("mv", 1, rate=256, duration_s=4, acks="1", message_bytes=1 << 20)
        p = cluster.partition("mv", 0)
        moved_bytes = (p["log_end_offset"] - p["log_start_offset"]) * (1 << 20)
        rates = []
        for limit in (throttle, None):
            if limit:
                cli("cluster", "config", "set", "replication.throttle.bytes_per_s", str(limit), "--brokers", ALL)
            else:
                cli("cluster", "config", "unset", "replication.throttle.bytes_per_s", "--brokers", ALL)
            src = cluster.partition("mv", 0)["replicas"][0]
            dst = next(i for i in (1, 2, 3) if i != src)
            started = time.monotonic()
            out = cli("cluster", "move", "mv:0", "--to", str(dst), "--brokers", ALL, timeout=600)
            took = time.monotonic() - started
            if out.returncode != 0:
                raise RuntimeError(out.stderr.decode())
            rates.append(moved_bytes / took)
        results.append(rates)
        print(f"round {r}: {moved_bytes / 2**30:.2f} GiB moved at {rates[0] / 2**20:.1f} MiB/s with the "
              f"throttle at {throttle / 2**20:.0f} MiB/s (ratio {rates[0] / throttle:.2f}), "
              f"{rates[1] / 2**20:.0f} MiB/s unthrottled", flush=True)
        cli("topic", "delete", "mv", "--brokers", ALL)
        time.sleep(2)
    return results, throttle


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "failover"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else {"failover": 20}.get(what, 3)
    cluster = Cluster()
    try:
        if what == "failover":
            t = sorted(failover(cluster, rounds))
            print(f"failover over {rounds} kills: p50 {statistics.median(t) * 1000:.0f} ms, "
                  f"max {t[-1] * 1000:.0f} ms")
        elif what == "shutdown":
            results = shutdown(cluster, rounds)
            print(f"controlled shutdown over {rounds} rounds: failed sends {sum(r[0] for r in results)}, "
                  f"worst produce latency {max(r[1] for r in results) / 1000:.1f} ms")
        elif what == "throughput":
            ratios, half, p99 = throughput(cluster, rounds)
            print(f"RF3/RF1 acks=all throughput: median {statistics.median(ratios):.3f} over {rounds} pairs; "
                  f"p99 at {half} msgs/s: RF3 {p99['rf3'] / 1000:.2f} ms, RF1 {p99['rf1'] / 1000:.2f} ms")
        elif what == "catchup":
            ratios = catchup(cluster, rounds)
            print(f"catch-up / disk O_DIRECT read: median {statistics.median(ratios):.2f} over {rounds} rounds")
        elif what == "move":
            results, throttle = move(cluster, rounds)
            print(f"move: throttled {statistics.median(r[0] for r in results) / 2**20:.1f} MiB/s "
                  f"(limit {throttle / 2**20:.0f} MiB/s), unthrottled "
                  f"{statistics.median(r[1] for r in results) / 2**20:.0f} MiB/s, medians over {rounds} rounds")
        else:
            sys.exit(f"unknown figure {what!r}: failover, shutdown, throughput, catchup or move")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
