//! A cluster of three `mamba serve` processes, each in a network namespace
//! of its own behind one bridge, and the controller cut off from the other
//! voters by `iptables` (packets dropped, not refused: the worst case, a
//! silent network). The majority must elect a new controller and go on;
//! the old one must step down and never commit a change alone; after the
//! network heals, every broker must hold the same metadata. The cut-off
//! broker also leads a replicated topic (`leader.placement=primary`) and
//! a producer in its own namespace still reaches it: it must acknowledge
//! nothing with `acks=all` while cut off; the majority's new leader takes
//! writes; after the heal no acknowledged record is missing and the
//! replicas are byte for byte alike (`mamba log dump`).
//!
//! Every process, brokers and clients alike, runs inside the namespaces
//! (`ip netns exec`); nothing in the root namespace talks to their
//! addresses. Every wait is bounded (`WAIT`). The namespaces (named with
//! this process's id), the processes and the directories go when the test
//! ends, passed or failed; a failed test prints the tail of each broker's
//! log. Brokers die with the test's thread even when it is killed
//! (`PR_SET_PDEATHSIG`), and namespaces a killed run left behind are
//! removed by the next run.
//!
//! It needs root, `ip` (iproute2) and `iptables`. Where any is missing it
//! says "skipped: ..." and passes, except under CI (`CI` set), where it
//! fails: there it must really run.

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Heartbeats and sessions as in `cluster.rs`: short enough for tests,
/// long enough for a loaded 2-core machine.
const HEARTBEAT_MS: u64 = 300;
const SESSION_MS: u64 = 1_500;

/// Bound on every wait, and on every command run.
const WAIT: Duration = Duration::from_secs(20);

/// The brokers' network: 10.77.0.ID/24 on the bridge. The namespaces are
/// the test's own, so it collides with no other run or host network.
const SUBNET: &str = "10.77.0";
const CLIENT_PORT: u16 = 9400;
const CLUSTER_PORT: u16 = 9401;

/// Names of this test's namespaces: `mamba-part-PID-...`.
const NETNS_PREFIX: &str = "mamba-part-";

const BROKERS: [u32; 3] = [1, 2, 3];

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid(2) reads this process's credentials; nothing else.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and iptables need it)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("iptables", "--version")] {
        let ran = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !matches!(ran, Ok(status) if status.success()) {
            return Some(format!("`{tool}` is not installed (or does not run)"));
        }
    }
    None
}

/// Runs `ip ARGS`, which must succeed: the test's own network plumbing
/// (`ip netns exec NS iptables ...` for the rules inside a namespace).
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A command run inside namespace `ns`, killed (SIGKILL) if the thread
/// that started it ends first: a test killed outright leaves no broker.
fn in_namespace(ns: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]);
    // SAFETY: prctl(2) is async-signal-safe and touches only the child's
    // own attributes; it is kept across `ip`'s exec of the program.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Removes namespaces of earlier runs whose process is gone (a run killed
/// before its cleanup). Their brokers died with it (`in_namespace`).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name} of an earlier run (process {pid} is gone)");
            if let Err(e) = Command::new("ip").args(["netns", "del", name]).status() {
                eprintln!("ip netns del {name}: {e}");
            }
        }
    }
}

/// A hub namespace holding a bridge, and one namespace per broker with a
/// veth into it; removed when dropped.
struct Network {
    /// `mamba-part-PID`: every namespace's name starts with it.
    base: String,
    hub: String,
    /// The namespaces made so far, hub first.
    made: Vec<String>,
}

impl Network {
    fn create() -> Network {
        let base = format!("{NETNS_PREFIX}{}", std::process::id());
        let hub = format!("{base}-hub");
        let mut network = Network { base: base.clone(), hub, made: Vec::new() };
        for ns in std::iter::once(network.hub.clone()).chain(BROKERS.map(|id| ns_of(&base, id))) {
            ip(&["netns", "add", &ns]);
            network.made.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let hub = network.hub.clone();
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for id in BROKERS {
            let ns = network.ns(id);
            let port = format!("v{id}");
            // Created in the hub with its peer straight in the broker's
            // namespace: nothing appears in the root namespace.
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &port, "up"]);
            let address = format!("{}/24", ip_of(id));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        network
    }

    fn ns(&self, id: u32) -> String {
        ns_of(&self.base, id)
    }

    /// The rules that cut broker `id` off from `others`, in its own
    /// namespace: `-A` adds them, `-D` deletes them.
    fn cut_rules(&self, action: &str, id: u32, others: &[u32]) {
        let ns = self.ns(id);
        for other in others {
            let peer = ip_of(*other);
            for (chain, side) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                ip(&[
                    "netns", "exec", &ns, "iptables", "-w", action, chain, side, &peer, "-j",
                    "DROP",
                ]);
            }
        }
    }

    fn cut(&self, id: u32, others: &[u32]) {
        self.cut_rules("-A", id, others);
    }

    fn heal(&self, id: u32, others: &[u32]) {
        self.cut_rules("-D", id, others);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Brokers' namespaces first, then the hub; veths and rules go
        // with them.
        for ns in self.made.iter().rev() {
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!("ip netns del {ns}: {}", String::from_utf8_lossy(&out.stderr).trim())
                }
                Err(e) => eprintln!("ip netns del {ns}: {e}"),
            }
        }
    }
}

fn ns_of(base: &str, id: u32) -> String {
    format!("{base}-n{id}")
}

fn ip_of(id: u32) -> String {
    format!("{SUBNET}.{id}")
}

fn client_of(id: u32) -> String {
    format!("{}:{CLIENT_PORT}", ip_of(id))
}

/// A command running to its end, its output collected on a thread; killed
/// if it outlives the bound its caller waits for.
struct Bounded {
    pid: u32,
    started: Instant,
    /// Its output, and how long it ran.
    output: std::sync::mpsc::Receiver<(std::io::Result<Output>, Duration)>,
    what: String,
}

impl Bounded {
    fn start(mut command: Command, what: String) -> Bounded {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let pid = child.id();
        let started = Instant::now();
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send((child.wait_with_output(), started.elapsed())).ok());
        Bounded { pid, started, output, what }
    }

    /// Its output and how long it ran, once it ended within `limit` of
    /// its start.
    fn finish(self, limit: Duration) -> (Output, Duration) {
        let left = limit.saturating_sub(self.started.elapsed());
        match self.output.recv_timeout(left) {
            Ok((output, took)) => (output.expect("output"), took),
            Err(_) => {
                // SAFETY: kill(2) on our own child's pid; no memory is involved.
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
                panic!("{} did not finish within {limit:?}", self.what);
            }
        }
    }
}

impl Bounded {
    /// Its output and run time if it ended by now (then `self` is spent:
    /// the output was taken).
    fn ended(&self) -> Option<(Output, Duration)> {
        let (output, took) = self.output.try_recv().ok()?;
        Some((output.expect("output"), took))
    }

    /// Its output if it ends within `limit` of its start; else it is
    /// killed and `None`.
    fn finish_or_kill(self, limit: Duration) -> Option<(Output, Duration)> {
        let left = limit.saturating_sub(self.started.elapsed());
        match self.output.recv_timeout(left) {
            Ok((output, took)) => Some((output.expect("output"), took)),
            Err(_) => {
                // SAFETY: kill(2) on our own child's pid; no memory is involved.
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
                None
            }
        }
    }
}

/// One broker's process, logging to a file; killed when dropped.
struct Broker {
    child: common::KillOnDrop,
    log: PathBuf,
}

/// Three voters, broker `id` in namespace `id`. Field order is drop
/// order: brokers, then namespaces, then their directories.
struct Cluster {
    brokers: Vec<Broker>,
    network: Network,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let network = Network::create();
        let mut cluster = Cluster { brokers: Vec::new(), network, dir };
        let voters = BROKERS
            .map(|id| format!("{id}@{}:{CLUSTER_PORT}", ip_of(id)))
            .into_iter()
            .collect::<Vec<_>>()
            .join(",");
        // All at once: the first voters wait for a majority.
        for id in BROKERS {
            let log = cluster.dir.path().join(format!("broker-{id}.log"));
            let file = std::fs::File::create(&log).expect("create the log");
            let data_dir = cluster.dir.path().join(format!("broker-{id}"));
            let mut command = in_namespace(&cluster.network.ns(id), env!("CARGO_BIN_EXE_mamba"));
            command
                .arg("serve")
                .args(["--node-id", &id.to_string(), "--shards", "1"])
                .args(["--listen", &client_of(id)])
                .args(["--cluster-listen", &format!("{}:{CLUSTER_PORT}", ip_of(id))])
                .args(["--voters", &voters])
                .args(["--broker-heartbeat-interval-ms", &HEARTBEAT_MS.to_string()])
                .args(["--broker-session-timeout-ms", &SESSION_MS.to_string()])
                .args(["--group-session-timeout-ms-min", "1s"])
                .arg("--data-dir")
                .arg(&data_dir)
                .env("RUST_LOG", "info")
                .env_remove("MAMBA_BROKERS")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(file);
            let child = command.spawn().expect("start mamba serve");
            cluster.brokers.push(Broker { child: common::KillOnDrop(child), log });
        }
        for id in BROKERS {
            cluster.wait_ready(id);
        }
        cluster
    }

    fn broker(&mut self, id: u32) -> &mut Broker {
        &mut self.brokers[id as usize - 1]
    }

    fn wait_ready(&mut self, id: u32) {
        let deadline = Instant::now() + WAIT;
        let broker = self.broker(id);
        loop {
            let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
            if text.contains(&format!("mamba broker ready listen={}", client_of(id))) {
                return;
            }
            if let Some(status) = broker.child.try_wait().expect("try_wait") {
                panic!("broker {id} exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "broker {id} was not ready within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `mamba ARGS -o json --brokers <broker id>` inside broker
    /// `id`'s namespace.
    fn cli(&self, id: u32, args: &[&str]) -> Bounded {
        let mut command = in_namespace(&self.network.ns(id), env!("CARGO_BIN_EXE_mamba"));
        command.args(args).args(["-o", "json", "--brokers", &client_of(id)]);
        Bounded::start(command, format!("mamba {} through broker {id}", args.join(" ")))
    }

    /// `cli` to its end: one JSON value per line, or the error it printed.
    fn cli_json(&self, id: u32, args: &[&str]) -> Result<Vec<Value>, String> {
        let (out, _) = self.cli(id, args).finish(WAIT);
        if !out.status.success() {
            return Err(format!(
                "mamba {} through broker {id} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
            .collect()
    }

    /// `mamba cluster status` through broker `id`, asked in its namespace.
    fn status(&self, id: u32, digests: bool) -> Result<Value, String> {
        let args: &[&str] =
            if digests { &["cluster", "status", "--digests"] } else { &["cluster", "status"] };
        let mut lines = self.cli_json(id, args)?;
        match lines.len() {
            1 => Ok(lines.remove(0)),
            n => Err(format!("{n} lines from cluster status: {lines:?}")),
        }
    }

    /// The topics broker `id` lists, asked in its namespace.
    fn topics(&self, id: u32) -> Result<BTreeSet<String>, String> {
        Ok(self
            .cli_json(id, &["topic", "list"])?
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Whether every broker, asked through itself, names the same
    /// controller that answered for itself, sees every broker alive and
    /// no partition offline, and every broker applied the same metadata
    /// (equal indexes and digests). The agreed status, or why not.
    fn agreed(&self) -> Result<Agreement, String> {
        let mut agreement: Option<Agreement> = None;
        for id in BROKERS {
            let s = self.status(id, true)?;
            if s["from_controller"] != true {
                return Err(format!("through {id}: no controller answered: {}", s["missing"]));
            }
            let brokers = s["brokers"].as_array().ok_or("no brokers")?;
            let mut applied = BTreeSet::new();
            for b in BROKERS {
                let Some(entry) = brokers.iter().find(|e| e["node_id"] == b) else {
                    return Err(format!("through {id}: broker {b} is not registered"));
                };
                if entry["status"] != "alive" {
                    return Err(format!("through {id}: broker {b} is {}", entry["status"]));
                }
                let (Some(index), Some(digest)) =
                    (entry["applied_index"].as_u64(), entry["metadata_digest"].as_str())
                else {
                    return Err(format!("through {id}: broker {b} gave no digest: {entry}"));
                };
                applied.insert((index, digest.to_string()));
            }
            if applied.len() != 1 {
                return Err(format!("through {id}: brokers applied different metadata: {s}"));
            }
            if s["offline_partitions"]["count"] != 0 {
                return Err(format!("through {id}: offline: {}", s["offline_partitions"]));
            }
            let (applied_index, metadata_digest) = applied.pop_first().expect("one");
            let this = Agreement {
                controller: s["controller_id"].as_u64().ok_or("no controller")? as u32,
                term: s["term"].as_u64().ok_or("no term")?,
                applied_index,
                metadata_digest,
            };
            match &agreement {
                None => agreement = Some(this),
                Some(first) if *first == this => {}
                Some(first) => return Err(format!("through {id}: {this:?}, elsewhere {first:?}")),
            }
        }
        Ok(agreement.expect("three brokers"))
    }

    /// `topic describe` through broker `id`: per partition its leader
    /// and in-sync replicas.
    fn leaders(&self, id: u32, topic: &str) -> Result<Vec<(Option<u64>, usize)>, String> {
        let d = self.cli_json(id, &["topic", "describe", topic])?.remove(0);
        let parts = d["partitions"].as_array().ok_or("no partitions")?;
        Ok(parts
            .iter()
            .map(|p| (p["leader"].as_u64(), p["isr"].as_array().map_or(0, Vec::len)))
            .collect())
    }

    /// `mamba produce TOPIC -p P --acks all --value-file F` through broker
    /// `id`, started.
    fn produce(&self, id: u32, topic: &str, partition: u32, value: &str) -> Bounded {
        let file = self.dir.path().join(format!("value-{value}"));
        std::fs::write(&file, value).expect("write a value file");
        let file = file.to_string_lossy().into_owned();
        let p = partition.to_string();
        self.cli(id, &["produce", topic, "-p", &p, "--acks", "all", "--value-file", &file])
    }

    /// Every value of `topic`, read through broker `id`.
    fn values(&self, id: u32, topic: &str) -> Result<BTreeSet<String>, String> {
        let args = ["consume", topic, "--from", "earliest", "--timeout-ms", "2000"];
        Ok(self
            .cli_json(id, &args)?
            .iter()
            .filter_map(|r| r["value"].as_str().map(str::to_string))
            .collect())
    }

    /// `mamba log dump` of each broker's copy of `topic/partition` (files
    /// read from here: no network), without file paths.
    fn dumps(&self, topic: &str, partition: u32) -> Vec<Vec<Value>> {
        BROKERS
            .iter()
            .map(|id| {
                let dir = self.dir.path().join(format!("broker-{id}/topics/{topic}/{partition}"));
                common::log_dump(&dir)
            })
            .collect()
    }

    fn wait_agreed(&self, what: &str) -> Agreement {
        let mut why = String::new();
        wait_until(what, &mut why, || self.agreed())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let logs: Vec<(u32, PathBuf)> =
            self.brokers.iter().zip(1..).map(|(b, id)| (id, b.log.clone())).collect();
        self.brokers.clear();
        if std::thread::panicking() {
            common::print_log_tails(&logs);
        }
    }
}

/// What all brokers agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Agreement {
    controller: u32,
    term: u64,
    applied_index: u64,
    metadata_digest: String,
}

/// Broker `id`'s status (alive, fenced, ...) in a `cluster status`.
fn status_of(status: &Value, id: u32) -> &str {
    status["brokers"]
        .as_array()
        .and_then(|brokers| brokers.iter().find(|b| b["node_id"] == id))
        .and_then(|b| b["status"].as_str())
        .unwrap_or("not registered")
}

/// Polls `check` until it gives a value, for at most `WAIT`; `why` keeps
/// the last reason it did not, for the failure message.
fn wait_until<T>(what: &str, why: &mut String, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(value) => return value,
            Err(reason) => *why = reason,
        }
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}: {why}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_controller_cut_off_by_the_network_steps_down_and_the_majority_goes_on() {
    if let Some(why) = missing_prerequisite() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test, but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    remove_stale_namespaces();
    let started = Instant::now();
    let cluster = Cluster::start();
    cluster.cli_json(1, &["topic", "create", "before-cut", "-p", "3"]).expect("create");
    let old = cluster.wait_agreed("three brokers agreeing").controller;
    // The controller also leads every partition of a replicated topic.
    let placement = format!("leader.placement=primary:{old}");
    let args = ["topic", "create", "acked", "-p", "2", "-r", "3", "--config", &placement];
    cluster.cli_json(old, &args).expect("create acked");
    let mut why = String::new();
    wait_until("the controller leading acked, all in sync", &mut why, || {
        match cluster.leaders(old, "acked")? {
            l if l.iter().all(|(leader, isr)| *leader == Some(u64::from(old)) && *isr == 3) => {
                Ok(())
            }
            l => Err(format!("leaders and in-sync counts {l:?}")),
        }
    });
    let mut acknowledged = BTreeSet::new();
    for (i, partition) in [(0, 0), (1, 1)] {
        let value = format!("before-{i}");
        let (out, _) = cluster.produce(old, "acked", partition, &value).finish(WAIT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        acknowledged.insert(value);
    }
    let before = cluster.wait_agreed("three brokers agreeing before the cut");
    assert_eq!(before.controller, old, "{before:?}");
    let majority: Vec<u32> = BROKERS.into_iter().filter(|id| *id != old).collect();
    eprintln!("{:?}: agreed {before:?}; cutting controller {old} off", started.elapsed());

    cluster.network.cut(old, &majority);
    let cut_at = Instant::now();
    // A change sent to the old controller at once, while it may still
    // believe it leads: it must not commit.
    let alone = cluster.cli(old, &["topic", "create", "t-minority", "-p", "1"]);
    // A write to the partition leader it still is, from a client that
    // still reaches it: no follower can fetch it, so it must not be
    // acknowledged while the cut lasts.
    let isolated = cluster.produce(old, "acked", 0, "isolated");

    // The majority elects one of its own, in a later term.
    let mut why = String::new();
    let new = wait_until("a new controller among the majority", &mut why, || {
        let mut seen = BTreeSet::new();
        for &id in &majority {
            let s = cluster.status(id, false)?;
            let controller = s["controller_id"].as_u64();
            let term = s["term"].as_u64().unwrap_or(0);
            if s["from_controller"] != true || term <= before.term {
                return Err(format!("through {id}: controller {controller:?}, term {term}"));
            }
            seen.insert((controller.ok_or("no controller")? as u32, term));
        }
        match seen.into_iter().collect::<Vec<_>>()[..] {
            [(controller, term)] if controller != old => Ok((controller, term)),
            ref other => Err(format!("the majority names {other:?}")),
        }
    });
    eprintln!("{:?} after the cut: controller {} in term {}", cut_at.elapsed(), new.0, new.1);

    // It fences the silent broker once its session ends, and only it:
    // the majority's brokers heartbeat the new controller by then (none
    // is still waiting on the old one). Changes go on through it.
    let fenced = wait_until("the majority fencing the old controller", &mut why, || {
        let s = cluster.status(majority[0], false)?;
        match status_of(&s, old) {
            "fenced" => Ok(s),
            other => Err(format!("broker {old} is {other}")),
        }
    });
    for id in &majority {
        assert_eq!(status_of(&fenced, *id), "alive", "broker {id}, of the majority: {fenced}");
    }
    eprintln!("{:?} after the cut: broker {old} fenced", cut_at.elapsed());
    let through = *majority.iter().find(|id| **id != new.0).expect("a follower");
    let (out, took) =
        cluster.cli(through, &["topic", "create", "after-cut", "-p", "3"]).finish(WAIT);
    assert!(
        out.status.success(),
        "a create through the majority: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("a create through broker {through} of the majority took {took:?}");

    // The majority's new leaders of acked take acks=all writes.
    wait_until("the majority leading acked", &mut why, || {
        match cluster.leaders(through, "acked")? {
            l if l.iter().all(|(leader, _)| leader.is_some_and(|id| id != u64::from(old))) => {
                Ok(())
            }
            l => Err(format!("leaders and in-sync counts {l:?}")),
        }
    });
    for (i, partition) in [(0, 0), (1, 1)] {
        let value = format!("after-{i}");
        let (out, _) = cluster.produce(through, "acked", partition, &value).finish(WAIT);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        acknowledged.insert(value);
    }

    let (out, took) = alone.finish(WAIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a create at the cut-off controller must fail: {err}");
    assert!(
        ["quorum", "not the controller", "did not commit"].iter().any(|m| err.contains(m)),
        "the error says why: {err}"
    );
    eprintln!("the create at the old controller failed after {took:?}: {}", err.trim());

    // The old controller steps down, and has applied nothing since the
    // cut (no change committed without a majority).
    let stepped_down = wait_until("the old controller stepping down", &mut why, || {
        let s = cluster.status(old, false)?;
        let applied = (s["applied_index"].as_u64(), s["metadata_digest"].as_str());
        assert_eq!(s["answered_by"], old, "its own answer: {s}");
        assert_eq!(
            applied,
            (Some(before.applied_index), Some(before.metadata_digest.as_str())),
            "the cut-off controller applied nothing alone: {s}"
        );
        match s["controller_id"].as_u64() {
            Some(id) if id == u64::from(old) => Err(format!("it still leads term {}", s["term"])),
            Some(id) => Err(format!("it names {id}, which it cannot reach")),
            None => Ok(s),
        }
    });
    assert_eq!(stepped_down["from_controller"], false, "{stepped_down}");
    eprintln!("{:?} after the cut: controller {old} stepped down", cut_at.elapsed());

    let isolated_outcome = isolated.ended();
    if let Some((out, took)) = &isolated_outcome {
        assert!(
            !out.status.success(),
            "the cut-off leader acknowledged a write after {took:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("{:?} after the cut: the cut-off leader acknowledged nothing", cut_at.elapsed());

    cluster.network.heal(old, &majority);
    let healed_at = Instant::now();
    let after = cluster.wait_agreed("three brokers agreeing after the heal");
    eprintln!("{:?} after the heal: agreed {after:?}", healed_at.elapsed());
    assert!(after.term >= new.1, "terms only grow: {after:?}, the majority's was {new:?}");
    assert!(after.applied_index > before.applied_index, "{after:?}, before {before:?}");
    for id in BROKERS {
        let topics = cluster.topics(id).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            topics.contains("before-cut") && topics.contains("after-cut"),
            "through {id}: {topics:?}"
        );
        assert!(!topics.contains("t-minority"), "through {id}: {topics:?}");
    }
    // The write sent to the cut-off leader: still waiting then, it may
    // have gone on to the new leader (its producer retries) or failed;
    // acknowledged, it must be there like every other.
    if isolated_outcome.is_none() {
        if let Some((out, _)) = isolated.finish_or_kill(WAIT) {
            if out.status.success() {
                acknowledged.insert("isolated".to_string());
            }
        }
    }
    let read = wait_until("every acknowledged record read back", &mut why, || {
        let read = cluster.values(majority[0], "acked")?;
        match acknowledged.difference(&read).collect::<Vec<_>>() {
            missing if missing.is_empty() => Ok(read),
            missing => Err(format!("missing {missing:?}; read {read:?}")),
        }
    });
    eprintln!("acknowledged {acknowledged:?}, read {read:?}");
    for partition in 0..2 {
        wait_until("the replicas of acked byte for byte alike", &mut why, || {
            let dumps = cluster.dumps("acked", partition);
            if dumps.windows(2).all(|w| w[0] == w[1]) {
                Ok(())
            } else {
                Err(format!(
                    "acked/{partition}: batches per broker {:?}",
                    dumps.iter().map(Vec::len).collect::<Vec<_>>()
                ))
            }
        });
    }
    eprintln!("{:?} in all", started.elapsed());
}
