//! Clusters of real `mamba serve` processes on loopback for the cluster
//! and replication tests: brokers started, killed, restarted and watched
//! through `mamba cluster` and `mamba topic`.
//!
//! Every wait is bounded (`WAIT`); every process is killed and every
//! directory removed when a test ends, passed or failed (a failed test
//! prints the tail of each broker's log). The tests run one at a time: on
//! a small machine several clusters at once would starve each other's
//! heartbeats and elections.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Heartbeats and sessions short enough for tests, long enough for a
/// loaded 2-core machine.
pub const HEARTBEAT_MS: u64 = 300;
pub const SESSION_MS: u64 = 1_500;

/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A test that failed poisoned it; the next one starts clean anyway.
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn mamba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba"))
}

/// `n` loopback ports free at the time of asking (held together, so
/// they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) for `child` to exit; kills it if it does not.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `mamba serve` process logging to a file; killed when dropped.
pub struct Serve {
    pub child: super::KillOnDrop,
    /// Its client address, as it announced it.
    pub client: String,
}

impl Serve {
    /// Starts `mamba serve ARGS` and waits for its ready line; `Err` with
    /// its log if it exits first.
    pub fn start(args: &[String], log: &Path) -> Result<Serve, (Option<i32>, String)> {
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the log");
        let start_at = std::fs::metadata(log).map_or(0, |m| m.len()) as usize;
        let mut child = mamba()
            .arg("serve")
            .args(args)
            .env("RUST_LOG", std::env::var("MAMBA_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("MAMBA_BROKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start mamba serve");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let text = text.get(start_at..).unwrap_or_default();
            if let Some(rest) = text.split("mamba broker ready listen=").nth(1) {
                let client = rest.split_whitespace().next().unwrap_or_default().to_string();
                return Ok(Serve { child: super::KillOnDrop(child), client });
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Err((status.code(), text.to_string()));
            }
            if Instant::now() >= deadline {
                child.kill().ok();
                child.wait().ok();
                panic!("mamba serve {args:?} was not ready within {WAIT:?}; log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

/// One broker of a test cluster: its settings survive its process.
pub struct Member {
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub cluster_address: String,
    /// `--voters ...` or `--seeds ...`.
    pub membership: Vec<String>,
    pub process: Option<Serve>,
}

/// Brokers 1..=n, all voters, on loopback; more may join.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u32, Member>,
    pub voters: String,
    /// Settings every broker of this cluster gets.
    pub extra_args: Vec<String>,
}

impl Cluster {
    pub fn start(n: u32) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Brokers 1..=n, each also given `extra_args`.
    pub fn start_with(n: u32, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(2 * n as usize);
        let cluster_port = |id: u32| ports[2 * (id as usize - 1) + 1];
        let voters = (1..=n)
            .map(|id| format!("{id}@127.0.0.1:{}", cluster_port(id)))
            .collect::<Vec<_>>()
            .join(",");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster { dir, members: BTreeMap::new(), voters, extra_args };
        for id in 1..=n {
            let member = Member {
                data_dir: cluster.dir.path().join(format!("broker-{id}")),
                client_port: ports[2 * (id as usize - 1)],
                cluster_address: format!("127.0.0.1:{}", cluster_port(id)),
                membership: vec!["--voters".into(), cluster.voters.clone()],
                process: None,
            };
            cluster.members.insert(id, member);
        }
        // All at once: the first voters wait for a majority.
        for id in 1..=n {
            cluster.launch(id);
        }
        cluster
    }

    /// Starts broker `id` with `--seeds`, joining the running cluster.
    pub fn join(&mut self, id: u32, seeds: &str) {
        let port = free_ports(2);
        let member = Member {
            data_dir: self.dir.path().join(format!("broker-{id}")),
            client_port: port[0],
            cluster_address: format!("127.0.0.1:{}", port[1]),
            membership: vec!["--seeds".into(), seeds.to_string()],
            process: None,
        };
        assert!(self.members.insert(id, member).is_none(), "broker {id} is new");
        self.launch(id);
    }

    pub fn args(&self, id: u32) -> Vec<String> {
        let m = &self.members[&id];
        let mut args: Vec<String> = [
            "--node-id",
            &id.to_string(),
            "--shards",
            "1",
            "--listen",
            &format!("127.0.0.1:{}", m.client_port),
            "--cluster-listen",
            &m.cluster_address,
            "--http",
            "127.0.0.1:0",
            "--broker-heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
            "--broker-session-timeout-ms",
            &SESSION_MS.to_string(),
            "--group-session-timeout-ms-min",
            "1s",
        ]
        .map(String::from)
        .to_vec();
        args.push("--data-dir".into());
        args.push(m.data_dir.to_string_lossy().into_owned());
        args.extend(m.membership.iter().cloned());
        args.extend(self.extra_args.iter().cloned());
        args
    }

    pub fn log_of(&self, id: u32) -> PathBuf {
        self.dir.path().join(format!("broker-{id}.log"))
    }

    pub fn launch(&mut self, id: u32) {
        let args = self.args(id);
        let serve = Serve::start(&args, &self.log_of(id))
            .unwrap_or_else(|(code, log)| panic!("broker {id} exited ({code:?}):\n{log}"));
        let member = self.members.get_mut(&id).expect("member");
        assert_eq!(serve.client, format!("127.0.0.1:{}", member.client_port));
        member.process = Some(serve);
    }

    pub fn kill9(&mut self, id: u32) {
        let member = self.members.get_mut(&id).expect("member");
        member.process.take().expect("running").kill9();
    }

    /// Stops broker `id` with SIGTERM (a controlled shutdown) and waits
    /// (bounded) for it to exit; returns how long it took.
    pub fn stop(&mut self, id: u32) -> Duration {
        let member = self.members.get_mut(&id).expect("member");
        let mut serve = member.process.take().expect("running");
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(serve.child.0.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM broker {id}");
        let status = exit_within(&mut serve.child.0, WAIT);
        assert!(status.is_some_and(|s| s.success()), "broker {id} stopped cleanly: {status:?}");
        started.elapsed()
    }

    /// The process id of broker `id` (for SIGSTOP and SIGCONT).
    pub fn pid(&self, id: u32) -> i32 {
        self.members[&id].process.as_ref().expect("running").child.0.id() as i32
    }

    /// Restarts broker `id` on its data directory and cluster address,
    /// with a new client port: once the metadata shows that port, this
    /// incarnation registered (not the old one, still unfenced).
    pub fn restart(&mut self, id: u32) {
        let member = self.members.get_mut(&id).expect("member");
        assert!(member.process.is_none(), "stopped first");
        member.client_port = free_ports(1)[0];
        self.launch(id);
    }

    pub fn client(&self, id: u32) -> String {
        format!("127.0.0.1:{}", self.members[&id].client_port)
    }

    pub fn cluster_address(&self, id: u32) -> String {
        self.members[&id].cluster_address.clone()
    }

    pub fn live(&self) -> Vec<u32> {
        self.members.iter().filter(|(_, m)| m.process.is_some()).map(|(id, _)| *id).collect()
    }

    /// `mamba cluster status --digests -o json` through broker `id`.
    pub fn status(&self, id: u32) -> Value {
        let lines = super::cli_json(&self.client(id), &["cluster", "status", "--digests"]);
        assert_eq!(lines.len(), 1, "one object: {lines:?}");
        lines.into_iter().next().expect("one")
    }

    /// The controller, once one is elected and answers for itself.
    pub fn controller(&self) -> u32 {
        let mut found = None;
        wait_until("a controller that answers", || {
            let through = self.live()[0];
            let s = self.status(through);
            found = s["controller_id"].as_u64().filter(|_| s["from_controller"] == true);
            found.is_some()
        });
        found.expect("found") as u32
    }

    /// Waits until the controller sees every running broker alive and the
    /// others fenced, every running broker has applied the same metadata
    /// (equal digests and indexes, asked through each of them), and no
    /// partition of a running broker is offline. Returns the status.
    pub fn settle(&self) -> Value {
        let live = self.live();
        let deadline = Instant::now() + WAIT;
        loop {
            let (why, last) = match self.settled(&live) {
                Ok(status) => return status,
                Err(unsettled) => unsettled,
            };
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {WAIT:?}: {why}\nlast status: {last:#}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn settled(&self, live: &[u32]) -> Result<Value, (String, Value)> {
        let mut digests = BTreeMap::new();
        let mut first = None;
        for &id in live {
            let s = self.status(id);
            let fail = |reason: String| Err((reason, s.clone()));
            if s["from_controller"] != true {
                return fail(format!("through {id}: no controller answered: {}", s["missing"]));
            }
            let brokers = s["brokers"].as_array().expect("brokers");
            for member in self.members.keys() {
                let b = brokers.iter().find(|b| b["node_id"] == *member);
                let expected = if live.contains(member) { "alive" } else { "fenced" };
                match b {
                    Some(b)
                        if expected == "alive" && b["client_address"] != self.client(*member) =>
                    {
                        return fail(format!(
                            "broker {member}'s current incarnation is not registered yet"
                        ))
                    }
                    Some(b) if b["status"] == expected => {}
                    Some(b) => return fail(format!("broker {member} is {}", b["status"])),
                    None => return fail(format!("broker {member} is not registered")),
                }
            }
            for b in brokers.iter().filter(|b| b["status"] == "alive") {
                let (Some(applied), Some(digest)) =
                    (b["applied_index"].as_u64(), b["metadata_digest"].as_str())
                else {
                    return fail(format!("broker {} gave no digest: {}", b["node_id"], b));
                };
                digests.insert(
                    (id, b["node_id"].as_u64().expect("id")),
                    (applied, digest.to_string()),
                );
            }
            if s["offline_partitions"]["count"] != 0 {
                return fail(format!("offline: {}", s["offline_partitions"]));
            }
            first.get_or_insert(s);
        }
        let distinct: std::collections::BTreeSet<_> = digests.values().collect();
        let status = first.expect("a live broker");
        if distinct.len() != 1 {
            return Err((format!("brokers differ: {digests:?}"), status));
        }
        Ok(status)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let logs: Vec<(u32, PathBuf)> =
            self.members.keys().map(|id| (*id, self.log_of(*id))).collect();
        for member in self.members.values_mut() {
            drop(member.process.take());
        }
        if std::thread::panicking() {
            super::print_log_tails(&logs);
            // `MAMBA_TEST_KEEP_LOGS=DIR` keeps every broker's whole log.
            if let Ok(keep) = std::env::var("MAMBA_TEST_KEEP_LOGS") {
                std::fs::create_dir_all(&keep).ok();
                for (id, log) in &logs {
                    std::fs::copy(log, Path::new(&keep).join(format!("broker-{id}.log"))).ok();
                }
            }
        }
    }
}

pub fn topic_leaders(addr: &str, topic: &str) -> Vec<Option<u64>> {
    let d = super::cli_json(addr, &["topic", "describe", topic]);
    d[0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["leader"].as_u64())
        .collect()
}

pub fn broker(status: &Value, id: u32) -> &Value {
    status["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .find(|b| b["node_id"] == id)
        .unwrap_or_else(|| panic!("broker {id} in {status}"))
}

pub fn role_of(status: &Value, id: u32) -> Option<String> {
    status["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .find(|v| v["node_id"] == id)
        .map(|v| v["role"].as_str().expect("role").to_string())
}

/// Runs `mamba ARGS --brokers ADDR` with `stdin`, killed after `WAIT`.
pub fn run_bounded(addr: &str, args: &[&str], stdin: &[u8]) -> Output {
    super::mamba_with_input(addr, args, stdin, WAIT)
}
