#!/usr/bin/env python3
"""A real cluster under faults, checked by `mamba-bench verify`.

    python3 ci/faults/cluster.py [--brokers 3] [--duration-s 60] [--schedules 1]
                                 [--seed S] [--kinds kill,pause,...] [--bin target/debug]
                                 [--disk-full] [--heartbeat-ms MS] [--session-ms MS]
                                 [--keep DIR [--keep-failed-only]] [--summary FILE]

MAMBA_FAULT_BROKER_LOG sets the brokers' RUST_LOG (default info).

Per schedule: N brokers (3 by default, 5 supported), each in a network
namespace of its own on a bridge in a hub namespace, each with its own data
directory (with --disk-full, its own small loop-mounted ext4 file system,
so the `disk-full` fault can fill it); `mamba-bench verify` runs in a
namespace of its own and strikes faults through ci/faults/fault.py from a
seed (printed; --seed replays a schedule). After verify, the cluster is
healed, settles, and every replica of every partition is compared byte for
byte (`mamba log dump`). Nothing in the root namespace talks to the
brokers.

Everything is bounded in time and removed at the end, failed or not:
namespaces, mounts, processes, directories (--keep DIR keeps the logs and
histories there). Exit status 0 only when every schedule found no anomaly
and every replica matched.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PREFIX = "mvf"  # every namespace of a run: mvf<pid>-...
CLIENT_PORT, CLUSTER_PORT = 9400, 9401


def sh(*args, check=True, timeout=60, **kw):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.returncode}: {out.stderr.strip()}")
    return out


def ip_of(broker_id):
    return f"10.88.0.{broker_id}"


CLIENT_IP = "10.88.0.100"


def remove_leftovers():
    """Namespaces and brokers of runs that were killed before cleaning up."""
    for state in sorted(p for p in os.listdir("/tmp") if p.startswith("mamba-faults-")):
        path = os.path.join("/tmp", state, "state.json")
        try:
            pid = json.load(open(path))["harness_pid"]
            os.kill(pid, 0)
            continue  # still running
        except (OSError, ValueError, KeyError):
            pass
        try:
            cleanup(json.load(open(path)))
        except (OSError, ValueError):
            pass
        shutil.rmtree(os.path.join("/tmp", state), ignore_errors=True)
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            pid = name[len(PREFIX):].split("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                sh("ip", "netns", "del", name, check=False)


def ours(pid, broker):
    """Whether `pid` is still this broker's process (not a reused pid)."""
    try:
        return broker["data"].encode() in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def cleanup(state):
    """Kills the brokers, and whatever else runs in the run's namespaces,
    unmounts, removes namespaces; never raises."""
    pids = [b["pid"] for b in state.get("brokers", []) if b.get("pid") and ours(b["pid"], b)]
    for ns in state.get("namespaces", []):
        listed = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        pids += [int(p) for p in listed if p.isdigit()]
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
    time.sleep(0.2)
    for b in state.get("brokers", []):
        if b.get("mount"):
            sh("umount", "-l", b["mount"], check=False)
    for ns in reversed(state.get("namespaces", [])):
        sh("ip", "netns", "del", ns, check=False)


class Cluster:
    def __init__(self, args, run_dir):
        self.args = args
        self.dir = run_dir
        self.base = f"{PREFIX}{os.getpid()}"
        self.state_path = os.path.join(run_dir, "state.json")
        self.state = {"harness_pid": os.getpid(), "namespaces": [], "brokers": [], "client_ns": None,
                      "client_port": CLIENT_PORT, "topic": None}
        self.save()

    def save(self):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_path)

    def ns_add(self, name):
        sh("ip", "netns", "add", name)
        self.state["namespaces"].append(name)
        self.save()
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def network(self):
        hub = f"{self.base}-hub"
        self.ns_add(hub)
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        members = [(i, ip_of(i)) for i in range(1, self.args.brokers + 1)] + [(100, CLIENT_IP)]
        for i, address in members:
            ns = f"{self.base}-{'c' if i == 100 else f'b{i}'}"
            self.ns_add(ns)
            port = f"v{i}"
            sh("ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", hub, "link", "set", port, "master", "br0")
            sh("ip", "-n", hub, "link", "set", port, "up")
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.state["client_ns"] = f"{self.base}-c"
        self.save()

    def start(self):
        voters = ",".join(f"{i}@{ip_of(i)}:{CLUSTER_PORT}" for i in range(1, self.args.brokers + 1))
        mamba = os.path.join(self.args.bin, "mamba")
        for i in range(1, self.args.brokers + 1):
            data = os.path.join(self.dir, f"broker-{i}")
            os.makedirs(data)
            broker = {"id": i, "ns": f"{self.base}-b{i}", "data": data, "pid": None, "mount": None,
                      "log": os.path.join(self.dir, f"broker-{i}.log")}
            if self.args.disk_full:
                image = os.path.join(self.dir, f"disk-{i}.img")
                sh("truncate", "-s", "256M", image)
                # No blocks reserved for root (the broker runs as root):
                # the disk-full fault fills the whole file system.
                sh("mkfs.ext4", "-q", "-F", "-m", "0", image)
                sh("mount", "-o", "loop", image, data)
                broker["mount"] = data
            broker["command"] = [
                "ip", "netns", "exec", broker["ns"], mamba, "serve", "--node-id", str(i), "--shards", "1",
                "--listen", f"{ip_of(i)}:{CLIENT_PORT}", "--cluster-listen", f"{ip_of(i)}:{CLUSTER_PORT}",
                "--voters", voters, "--data-dir", data]
            # The brokers' own defaults unless asked (heartbeat 500 ms,
            # session 3 s): the figures are for default settings.
            if self.args.heartbeat_ms:
                broker["command"] += ["--broker-heartbeat-interval-ms", str(self.args.heartbeat_ms)]
            if self.args.session_ms:
                broker["command"] += ["--broker-session-timeout-ms", str(self.args.session_ms)]
            self.state["brokers"].append(broker)
        for broker in self.state["brokers"]:
            launch(broker)
            self.save()
        deadline = time.monotonic() + 60
        for broker in self.state["brokers"]:
            while f"mamba broker ready listen={ip_of(broker['id'])}" not in read(broker["log"]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"broker {broker['id']} not ready in 60 s:\n{tail(broker['log'])}")
                time.sleep(0.1)

    def brokers_arg(self):
        return ",".join(f"{ip_of(b['id'])}:{CLIENT_PORT}" for b in self.state["brokers"])

    def in_client(self, *args, timeout=60, check=True):
        return sh("ip", "netns", "exec", self.state["client_ns"], *args, timeout=timeout, check=check)

    def replicas_agree(self, topic, partitions, wait_s=60):
        """Every broker's copy of every partition, byte for byte, waiting
        for followers to catch up; answers the differences left."""
        mamba = os.path.join(self.args.bin, "mamba")
        deadline = time.monotonic() + wait_s
        while True:
            differences = []
            for p in range(partitions):
                dumps = {}
                for b in self.state["brokers"]:
                    path = os.path.join(b["data"], "topics", topic, str(p))
                    if not os.path.isdir(path):
                        continue  # not a replica of this partition
                    out = sh(mamba, "log", "dump", "-o", "json", path, check=False)
                    lines = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
                    for l in lines:
                        # Where a batch sits in the segment files is not replicated
                        # (a replica that recovered from a write error continues
                        # in a new segment): every batch itself is compared.
                        l.pop("file", None)
                        l.pop("position_bytes", None)
                    dumps[b["id"]] = (out.returncode, lines)
                first = next(iter(dumps.values()), None)
                for broker_id, dump in dumps.items():
                    if dump != first:
                        differences.append(f"partition {p}: broker {broker_id} has {len(dump[1])} batches "
                                           f"(exit {dump[0]}), another {len(first[1])} (exit {first[0]})")
                if len(dumps) < min(3, self.args.brokers):
                    differences.append(f"partition {p}: {len(dumps)} replicas on disk")
            if not differences or time.monotonic() > deadline:
                if differences:
                    self.keep_dumps(topic, partitions)
                return differences
            # As a supervisor would: a broker may stop after the last heal
            # (its metadata log failed on a full disk, and it stops once
            # its controlled shutdown gives up, seconds later).
            subprocess.run([sys.executable, os.path.join(HERE, "fault.py"), "heal-all"],
                           env={**os.environ, "MAMBA_FAULT_STATE": self.state_path},
                           capture_output=True, timeout=60, check=False)
            with open(self.state_path) as f:
                self.state = json.load(f)
            time.sleep(1)


    def keep_dumps(self, topic, partitions):
        """Every replica's dump, beside the logs (--keep copies them)."""
        mamba = os.path.join(self.args.bin, "mamba")
        described = self.in_client(mamba, "topic", "describe", topic, "-o", "json", "--brokers",
                                   self.brokers_arg(), check=False, timeout=20)
        with open(os.path.join(self.dir, "describe.json"), "w") as f:
            f.write(described.stdout + described.stderr)
        for p in range(partitions):
            for b in self.state["brokers"]:
                path = os.path.join(b["data"], "topics", topic, str(p))
                if os.path.isdir(path):
                    out = sh(mamba, "log", "dump", "-o", "json", path, check=False)
                    with open(os.path.join(self.dir, f"dump-p{p}-b{b['id']}.jsonl"), "w") as f:
                        f.write(out.stdout)


def launch(broker):
    log = open(broker["log"], "ab")
    env = dict(os.environ, RUST_LOG=os.environ.get("MAMBA_FAULT_BROKER_LOG", "info"))
    env.pop("MAMBA_BROKERS", None)
    p = subprocess.Popen(broker["command"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=log, env=env, start_new_session=True)
    broker["pid"] = p.pid


def read(path):
    try:
        return open(path, errors="replace").read()
    except OSError:
        return ""


def tail(path, n=40):
    return "\n".join(read(path).splitlines()[-n:])


def run_schedule(args, seed, number, keep):
    run_dir = tempfile.mkdtemp(prefix="mamba-faults-", dir="/tmp")
    cluster = Cluster(args, run_dir)
    ok = False
    try:
        cluster.network()
        cluster.start()
        topic = f"verify-{seed}"
        cluster.state["topic"] = topic
        cluster.save()
        history = os.path.join(run_dir, "history.jsonl")
        bench = os.path.join(args.bin, "mamba-bench")
        command = [bench, "verify", "--brokers", cluster.brokers_arg(), "--topic", topic,
                   "--partitions", str(args.partitions), "--replication-factor", str(min(3, args.brokers)),
                   "--duration-s", str(args.duration_s), "--rate", str(args.rate), "--history", history,
                   "--faults", os.path.join(HERE, "fault.py"), "--fault-kinds", args.kinds,
                   "--seed", str(seed), "--output", "json", "--report-dir", run_dir]
        env_state = {"MAMBA_FAULT_STATE": cluster.state_path}
        print(f"schedule {number}: seed {seed}, {args.brokers} brokers, {args.duration_s} s", flush=True)
        try:
            out = subprocess.run(["ip", "netns", "exec", cluster.state["client_ns"], "env",
                                  *[f"{k}={v}" for k, v in env_state.items()], *command],
                                 capture_output=True, text=True, timeout=args.duration_s + 600)
            exit_code, stdout = out.returncode, out.stdout
            sys.stderr.write(out.stderr)
        except subprocess.TimeoutExpired:
            exit_code, stdout = None, ""
            print(f"  verify gave no answer within {args.duration_s + 600} s: killed")
        report = json.loads(stdout) if stdout.strip().startswith("{") else None
        if report is None:
            print(f"  verify failed ({exit_code}) without a report:\n{stdout}")
        else:
            check, avail = report["check"], report["availability"]
            print(f"  anomalies {report['anomalies']}: lost {check['lost']['count']}, duplicated "
                  f"{check['duplicated']['count']}, inconsistent {check['inconsistent']['count']}, reordered "
                  f"{check['reordered']['count']}, non-monotonic {check['non_monotonic']['count']}, corrupt "
                  f"{check['corrupt']['count']}; acknowledged {check['acknowledged']} of {check['produces']}, "
                  f"unknown {check['unknown']}; longest gap {avail['longest_gap_ms']} ms; faults "
                  f"{report['run']['faults_struck'] if report.get('run') else '?'}")
            for kind, load in sorted(avail["during"].items()):
                share = load["acknowledged"] / load["attempts"] if load["attempts"] else 0
                print(f"    {kind}: {load['windows']} windows, {share:.1%} of {load['attempts']} acknowledged, "
                      f"longest gap {load['longest_gap_ms']} ms")
        differences = cluster.replicas_agree(topic, args.partitions)
        for d in differences:
            print(f"  replicas differ: {d}")
        ok = exit_code == 0 and report is not None and not differences
        if args.summary:
            # A row for every schedule, failed ones too (no report: null).
            counts = {kind: check[kind]["count"] for kind in
                      ("lost", "duplicated", "inconsistent", "reordered", "non_monotonic", "corrupt")
                      } if report is not None else None
            with open(args.summary, "a") as f:
                f.write(json.dumps({"seed": seed, "ok": ok, "exit": exit_code,
                                    "anomalies": report["anomalies"] if report else None, "counts": counts,
                                    "availability": report["availability"] if report else None,
                                    "replica_differences": differences}) + "\n")
        if not ok:
            for b in cluster.state["brokers"]:
                print(f"--- broker {b['id']} log (end)\n{tail(b['log'])}")
        return ok
    finally:
        try:
            state = json.load(open(cluster.state_path))
        except (OSError, ValueError):
            state = cluster.state
        cleanup(state)
        if keep and not (ok and args.keep_failed_only):
            dest = os.path.join(keep, f"schedule-{number}-seed-{seed}")
            os.makedirs(dest, exist_ok=True)
            for name in os.listdir(run_dir):
                if name.endswith((".log", ".jsonl", ".json", ".svg")):
                    shutil.copy(os.path.join(run_dir, name), dest)
        for b in cluster.state["brokers"]:
            if b.get("mount"):
                sh("umount", "-l", b["mount"], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brokers", type=int, default=3, choices=[3, 4, 5])
    parser.add_argument("--duration-s", type=int, default=60)
    parser.add_argument("--schedules", type=int, default=1)
    parser.add_argument("--seed", type=int, help="the first schedule's seed; the next ones follow it")
    parser.add_argument("--kinds", default="kill,kill-leader,kill-controller,pause,isolate,split,oneway,"
                        "linkdown,kill-leader+isolate,pause+oneway",
                        help="fault kinds (fault.py's; a+b strikes both at once)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--bin", default=os.path.join(REPO, "target", "debug"))
    parser.add_argument("--disk-full", action="store_true", help="loop-mounted data directories")
    parser.add_argument("--heartbeat-ms", type=int, help="brokers' heartbeat interval [their default]")
    parser.add_argument("--session-ms", type=int, help="brokers' session timeout [their default]")
    parser.add_argument("--keep", help="copy logs and histories here")
    parser.add_argument("--keep-failed-only", action="store_true", help="--keep only failed schedules")
    parser.add_argument("--summary", help="append one JSON line per schedule here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, iptables, mounts)")
    if args.disk_full and "disk-full" not in args.kinds:
        args.kinds += ",disk-full"
    remove_leftovers()
    first = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seeds {first}..{first + args.schedules - 1} (--seed {first} replays them)", flush=True)
    failed = []
    for n in range(args.schedules):
        if not run_schedule(args, first + n, n + 1, args.keep):
            failed.append(first + n)
    print(f"{args.schedules - len(failed)} of {args.schedules} schedules passed"
          + (f"; failed seeds: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
