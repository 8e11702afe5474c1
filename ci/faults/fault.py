#!/usr/bin/env python3
"""The fault command `mamba-bench verify --faults` runs against a cluster
made by ci/faults/cluster.py (whose state file $MAMBA_FAULT_STATE names
the namespaces, brokers, their commands and process ids):

    fault.py start KIND    strikes one fault; prints what it struck
    fault.py heal KIND     undoes it (every fault in force)
    fault.py heal-all      undoes every fault (rules, links, pauses, fills)

Both heals then start again any broker that is not running, as a
supervisor would (a broker whose metadata log cannot be written stops).

Kinds: kill (SIGKILL a broker; heal restarts it), kill-leader (the same
to the leader of one of the topic's partitions), kill-controller (the same
to the Raft quorum's leader), pause (SIGSTOP; heal
SIGCONT), isolate (a broker cut off from everyone, clients included),
split (a minority of brokers cut off from the majority; clients reach
both), oneway (a broker hears no other broker but still sends), linkdown
(a broker's link down), disk-full (a broker's data file system filled;
needs cluster.py --disk-full). A combination, e.g. kill-leader+isolate,
strikes each part at once, each on a broker none of the others chose.
The broker is drawn with $MAMBA_FAULT_SEED, so a schedule replays.
"""
import json, os, random, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import launch, read  # noqa: E402

KINDS = ["kill", "kill-leader", "kill-controller", "pause", "isolate", "split", "oneway", "linkdown", "disk-full"]


def sh(*args, check=True):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out


def iptables(ns, *rule):
    sh("ip", "netns", "exec", ns, "iptables", "-w", *rule)


def ip_of(broker):
    return f"10.88.0.{broker['id']}"


def load():
    path = os.environ["MAMBA_FAULT_STATE"]
    return path, json.load(open(path))


def save(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def wait_ready(broker, before, timeout_s=30):
    """Until the broker's log has one more ready line than `before`."""
    deadline = time.monotonic() + timeout_s
    while read(broker["log"]).count("mamba broker ready") <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker {broker['id']} did not restart within {timeout_s} s")
        time.sleep(0.1)


def ask(state, *args):
    """A `mamba` command's JSON answer from the brokers (this runs where
    verify does, in the client's namespace), or None."""
    mamba = os.path.join(os.path.dirname(state["brokers"][0]["command"][4]), "mamba")
    brokers = ",".join(f"{ip_of(b)}:{state['client_port']}" for b in state["brokers"])
    try:
        out = subprocess.run([mamba, *args, "--brokers", brokers, "-o", "json"],
                             capture_output=True, text=True, timeout=10)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def role_holder(state, kind, rng):
    """The broker a targeted kill aims at: a partition's leader or the
    controller, as the cluster names it now; None when it names none."""
    if kind == "kill-controller":
        status = ask(state, "cluster", "status")
        wanted = status and status.get("controller_id")
    else:
        topic = ask(state, "topic", "describe", state["topic"])
        partitions = [p for p in (topic or {}).get("partitions", []) if p.get("leader") is not None]
        wanted = rng.choice(partitions)["leader"] if partitions else None
    return next((b for b in state["brokers"] if b["id"] == wanted), None)


FILL = "fault-fill-"


def fill_disk(directory):
    """Takes every free block of the directory's file system (fill files,
    each as large as still fits, down to one block), so any write there
    fails with ENOSPC."""
    size, n = os.statvfs(directory).f_bfree * os.statvfs(directory).f_frsize, 0
    while size >= 4096:
        path = os.path.join(directory, f"{FILL}{n}")
        if sh("fallocate", "-l", str(size), path, check=False).returncode == 0:
            n += 1
            size = os.statvfs(directory).f_bfree * os.statvfs(directory).f_frsize
        else:
            if os.path.exists(path):
                os.remove(path)
            size //= 2
    if n == 0:
        raise RuntimeError(f"could not fill the file system of {directory}")


def start(state, kind, rng, taken=()):
    """Strikes `kind` (one fault) on a broker not in `taken`; answers the
    fault (its kind and brokers) and what to say of it."""
    brokers = state["brokers"]
    target = rng.choice([b for b in brokers if b["id"] not in taken] or brokers)
    said_role = ""
    if kind in ("kill-leader", "kill-controller"):
        holder = role_holder(state, kind, rng)
        if holder and holder["id"] in taken:
            holder = None
        said_role = f" ({kind[5:]})" if holder else f" (no {kind[5:]} known: at random)"
        target = holder or target
        kind = "kill"
    fault = {"kind": kind, "brokers": [target["id"]]}
    if kind == "kill":
        os.kill(target["pid"], signal.SIGKILL)
        said = f"broker {target['id']}{said_role}"
    elif kind == "pause":
        os.kill(target["pid"], signal.SIGSTOP)
        said = f"broker {target['id']}"
    elif kind == "isolate":
        iptables(target["ns"], "-A", "INPUT", "-i", "eth0", "-j", "DROP")
        iptables(target["ns"], "-A", "OUTPUT", "-o", "eth0", "-j", "DROP")
        said = f"broker {target['id']}"
    elif kind == "split":
        minority = rng.sample(brokers, (len(brokers) - 1) // 2)
        majority = [b for b in brokers if b not in minority]
        for b in minority:
            for other in majority:
                iptables(b["ns"], "-A", "INPUT", "-s", ip_of(other), "-j", "DROP")
                iptables(b["ns"], "-A", "OUTPUT", "-d", ip_of(other), "-j", "DROP")
        fault["brokers"] = [b["id"] for b in minority]
        said = f"brokers {[b['id'] for b in minority]} from {[b['id'] for b in majority]}"
    elif kind == "oneway":
        for other in brokers:
            if other is not target:
                iptables(target["ns"], "-A", "INPUT", "-s", ip_of(other), "-j", "DROP")
        said = f"broker {target['id']} hears no broker"
    elif kind == "linkdown":
        sh("ip", "-n", target["ns"], "link", "set", "eth0", "down")
        said = f"broker {target['id']}"
    elif kind == "disk-full":
        if not target.get("mount"):
            raise RuntimeError("disk-full needs cluster.py --disk-full (a file system per broker)")
        fill_disk(target["data"])
        said = f"broker {target['id']}"
    else:
        raise RuntimeError(f"unknown fault kind {kind!r}; kinds: {', '.join(KINDS)}")
    return fault, said


def start_all(state, kinds, rng):
    """Strikes every part of a combination; answers what to say."""
    faults, said = [], []
    for kind in kinds.split("+"):
        taken = {b for f in faults for b in f["brokers"]}
        fault, what = start(state, kind, rng, taken)
        faults.append(fault)
        state["faults"] = faults  # saved even if a later part fails
        said.append(f"{kind} {what}" if "+" in kinds else what)
    return "; ".join(said)


def heal_broker(state, broker, kind):
    if kind == "kill":
        before = read(broker["log"]).count("mamba broker ready")
        launch(broker)
        wait_ready(broker, before)
    elif kind == "pause":
        os.kill(broker["pid"], signal.SIGCONT)
    elif kind in ("isolate", "split", "oneway"):
        iptables(broker["ns"], "-F")
    elif kind == "linkdown":
        sh("ip", "-n", broker["ns"], "link", "set", "eth0", "up")
    elif kind == "disk-full":
        for name in os.listdir(broker["data"]):
            if name.startswith(FILL):
                os.remove(os.path.join(broker["data"], name))


def alive(pid):
    """Whether `pid` runs (a zombie does not)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def restart_exited(state):
    """Starts again every broker that is not running, as a supervisor
    (systemd's Restart=) would: a broker that cannot write its metadata
    log (a full disk) stops by itself."""
    for b in state["brokers"]:
        if not alive(b["pid"]):
            heal_broker(state, b, "kill")


def heal_all(state):
    for b in state["brokers"]:
        try:
            os.kill(b["pid"], signal.SIGCONT)
        except OSError:
            pass
        iptables(b["ns"], "-F")
        sh("ip", "-n", b["ns"], "link", "set", "eth0", "up")
        heal_broker(state, b, "disk-full")
    for fault in state.pop("faults", []):
        if fault["kind"] == "kill":
            for b in state["brokers"]:
                # A heal that failed may have restarted it already.
                if b["id"] in fault["brokers"] and not alive(b["pid"]):
                    heal_broker(state, b, "kill")
    restart_exited(state)


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("start", "heal", "heal-all"):
        sys.exit(__doc__)
    path, state = load()
    rng = random.Random(int(os.environ.get("MAMBA_FAULT_SEED", "0")))
    action = sys.argv[1]
    if action == "start":
        if state.get("faults"):
            sys.exit(f"a fault is in force already: {state['faults']}")
        try:
            said = start_all(state, sys.argv[2], rng)
        finally:
            save(path, state)
        print(said)
    elif action == "heal":
        # Every part, even after one failed (the state saved either way: a
        # restarted broker's pid is in it); kills last, so a restarted
        # broker finds its peers.
        failed = []
        try:
            for fault in sorted(state.get("faults", []), key=lambda f: f["kind"] == "kill"):
                for b in state["brokers"]:
                    if b["id"] in fault["brokers"]:
                        try:
                            heal_broker(state, b, fault["kind"])
                        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                            failed.append(f"{fault['kind']} of broker {b['id']}: {e}")
            try:
                restart_exited(state)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                failed.append(f"restart: {e}")
            if not failed:
                state.pop("faults", None)
        finally:
            save(path, state)
        if failed:
            sys.exit("heal failed: " + "; ".join(failed))
    else:
        try:
            heal_all(state)
        finally:
            save(path, state)


if __name__ == "__main__":
    main()
