//! Consumer groups under faults, with real processes: `mamba consume
//! --group` members that join, stop on SIGINT and are killed with SIGKILL
//! while records stream in; a broker killed with SIGKILL while a member
//! commits; a group's offsets reset, kept across a restart, and read from.

mod common;
use common::*;
use mamba_net::client::{
    block_on, Admin, Consumer, ConsumerConfig, GroupOptions, OffsetReset, Producer, ProducerConfig,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on every wait of these tests.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(rc, 0, "signal {signal} to {}", child.id());
}

/// Waits (bounded) for `child` to exit.
fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `mamba consume TOPIC --group G -o json` process writing to a file;
/// killed when dropped.
struct Member {
    name: &'static str,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Complete lines read so far, and how many bytes they took.
    printed: Vec<(u32, u64, String)>,
    read_bytes: usize,
}

impl Member {
    fn start(addr: &str, topic: &str, group: &str, dir: &Path, name: &'static str) -> Member {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_mamba"))
            .args(["consume", topic, "--group", group, "-o", "json", "--brokers", addr])
            // A killed member's partitions move after 2 s, not 10.
            .args(["--session-timeout", "2s"])
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start mamba consume");
        Member { name, child, stdout, stderr, printed: Vec::new(), read_bytes: 0 }
    }

    /// Reads the lines printed since the last call.
    fn refresh(&mut self) -> &[(u32, u64, String)] {
        let mut bytes = Vec::new();
        let mut file = std::fs::File::open(&self.stdout).expect("open stdout");
        file.read_to_end(&mut bytes).expect("read stdout");
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in bytes[self.read_bytes.min(complete)..complete].split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("{}: {e}: {}", self.name, String::from_utf8_lossy(line))
            });
            let partition = v["partition"].as_u64().expect("partition") as u32;
            let offset = v["offset"].as_u64().expect("offset");
            self.printed.push((partition, offset, v["value"].as_str().expect("value").into()));
        }
        self.read_bytes = complete;
        &self.printed
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGINT: the member must commit, leave and exit 0.
    fn interrupt(&mut self) {
        signal(&self.child, libc::SIGINT);
        let status = wait_exit(&mut self.child, self.name);
        assert!(
            status.success(),
            "{} after SIGINT: {status}; stderr: {}",
            self.name,
            self.errors()
        );
    }

    /// SIGKILL just after the member printed a poll's records: it flushes
    /// them before it commits them, so the kill most likely lands before
    /// the commit (the window a killed member can print twice).
    fn kill9_while_printing(&mut self) {
        let size = || std::fs::metadata(&self.stdout).map_or(0, |m| m.len());
        let before = size();
        let deadline = Instant::now() + WAIT_TIMEOUT;
        while size() == before {
            assert!(Instant::now() < deadline, "{} printed nothing more", self.name);
            std::thread::yield_now();
        }
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(e) = self.child.kill() {
                eprintln!("killing {}: {e}", self.name);
            }
            let _reaped = self.child.wait();
        }
    }
}

const RECORDS: usize = 200_000;
const CHUNK: usize = 5_000;

/// Produces `RECORDS` keyed records in chunks, counting the acknowledged
/// ones in `acked`; returns (partition, offset, value) of each.
fn produce_paced(addr: String, acked: Arc<AtomicUsize>) -> Vec<(u32, u64, String)> {
    let producer = Producer::connect(&addr, ProducerConfig::default()).expect("producer");
    let mut produced = Vec::with_capacity(RECORDS);
    for chunk in 0..RECORDS / CHUNK {
        let sent: Vec<_> = (chunk * CHUNK..(chunk + 1) * CHUNK)
            .map(|i| {
                let value = i.to_string();
                let send = producer.send(record("load", Some(&format!("k{i}")), &value));
                (value, send.expect("send"))
            })
            .collect();
        producer.flush();
        for (value, ack) in sent {
            let meta = block_on(ack).expect("ack");
            produced.push((meta.partition, meta.offset.expect("acks=all gives offsets"), value));
        }
        acked.fetch_add(CHUNK, Ordering::Release);
        // Pacing, not synchronization: the stream lasts long enough for
        // members to come and go in the middle of it.
        std::thread::sleep(Duration::from_millis(50));
    }
    producer.close();
    produced
}

fn committed(admin: &Admin, group: &str) -> BTreeMap<u32, i64> {
    block_on(admin.fetch_offsets(group, None))
        .expect("fetch offsets")
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect()
}

#[test]
fn every_record_is_printed_while_members_join_leave_and_are_killed_and_only_a_killed_members_uncommitted_tail_twice(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("output dir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "load", 12);
    let admin = Admin::connect(&broker.addr).expect("admin");

    let mut a = Member::start(&broker.addr, "load", "g", out.path(), "a");
    let mut b = Member::start(&broker.addr, "load", "g", out.path(), "b");
    let acked = Arc::new(AtomicUsize::new(0));
    let producing = {
        let (addr, acked) = (broker.addr.clone(), acked.clone());
        std::thread::spawn(move || produce_paced(addr, acked))
    };
    let progress =
        |n: usize| wait_until(&format!("{n} records acked"), || acked.load(Ordering::Acquire) >= n);

    progress(30_000);
    let mut c = Member::start(&broker.addr, "load", "g", out.path(), "c");
    progress(60_000);
    wait_until("a to print", || !a.refresh().is_empty());
    a.interrupt();
    progress(100_000);
    wait_until("b to print", || !b.refresh().is_empty());
    b.kill9_while_printing();
    // Read right after the kill: b's partitions wait for its session to end
    // (2 s) and nobody else commits them meanwhile; a commit b sent just
    // before dying could still land, which only widens the window below.
    let committed_at_kill = committed(&admin, "g");
    progress(140_000);
    let mut d = Member::start(&broker.addr, "load", "g", out.path(), "d");
    let produced = producing.join().expect("producer");
    assert_eq!(produced.len(), RECORDS);

    let printed_all =
        |members: &mut [&mut Member]| -> BTreeMap<(u32, u64), Vec<(&'static str, String)>> {
            let mut all: BTreeMap<(u32, u64), Vec<(&'static str, String)>> = BTreeMap::new();
            for m in members.iter_mut() {
                let name = m.name;
                for (p, o, v) in m.refresh() {
                    all.entry((*p, *o)).or_default().push((name, v.clone()));
                }
            }
            all
        };
    wait_until("every record printed", || {
        let all = printed_all(&mut [&mut a, &mut b, &mut c, &mut d]);
        produced.iter().all(|(p, o, _)| all.contains_key(&(*p, *o)))
    });
    c.interrupt();
    d.interrupt();
    let all = printed_all(&mut [&mut a, &mut b, &mut c, &mut d]);

    for (p, o, value) in &produced {
        let seen = &all[&(*p, *o)];
        assert!(seen.iter().all(|(_, v)| v == value), "{p}/{o} printed as {seen:?}, sent {value}");
    }
    // What b printed of each partition, and where the group's commit stood
    // when it died: the window it printed without a commit.
    let mut b_next: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, o, _) in &b.printed {
        let next = b_next.entry(*p).or_default();
        *next = (*next).max(o + 1);
    }
    let mut twice_per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for (&(p, o), seen) in &all {
        if seen.len() == 1 {
            continue;
        }
        let who: Vec<&str> = seen.iter().map(|(name, _)| *name).collect();
        assert!(
            seen.len() == 2 && who.contains(&"b") && who.iter().any(|n| *n != "b"),
            "{p}/{o} printed by {who:?}: only a killed member's records are printed twice"
        );
        let from = committed_at_kill.get(&p).copied().unwrap_or(-1).max(0) as u64;
        let to = b_next.get(&p).copied().unwrap_or(0);
        assert!(
            (from..to).contains(&o),
            "{p}/{o} printed twice outside b's uncommitted window {from}..{to}"
        );
        *twice_per_partition.entry(p).or_default() += 1;
    }
    eprintln!(
        "printed twice, by partition: {twice_per_partition:?} (b's windows from the commits {committed_at_kill:?} to {b_next:?})"
    );
    for m in [&a, &c, &d] {
        let errors = m.errors();
        assert!(!errors.contains("error"), "{}: {errors}", m.name);
    }
    // The members stopped by SIGINT committed exactly what they printed:
    // everything, so the group's commits are the partitions' ends.
    let mut ends: BTreeMap<u32, i64> = BTreeMap::new();
    for (p, o, _) in &produced {
        let end = ends.entry(*p).or_default();
        *end = (*end).max(*o as i64 + 1);
    }
    assert_eq!(committed(&admin, "g"), ends, "the group committed every partition's end");
    let described = block_on(admin.describe_groups(&["g".into()])).expect("describe");
    assert_eq!(described[0].members.len(), 0, "every member left or expired");
    broker.stop();
}

/// What a member committing in a loop saw: every acknowledged commit in
/// order, and the one whose answer never came.
struct Commits {
    acked: Vec<(u32, u64)>,
    unanswered: Option<(u32, u64)>,
}

/// Commits partition `n % 4` at offset `1 + n / 4`, for n = 0, 1, ...,
/// until a commit fails (the broker died) or `limit` commits.
fn commit_in_a_loop(consumer: &mut Consumer, count: &AtomicUsize, limit: usize) -> Commits {
    let mut commits = Commits { acked: Vec::new(), unanswered: None };
    for n in 0..limit {
        let (partition, offset) = ((n % 4) as u32, 1 + (n / 4) as u64);
        match consumer.commit_offsets(&[(("ledger".to_string(), partition), offset)]) {
            Ok(()) => commits.acked.push((partition, offset)),
            Err(e) => {
                assert!(
                    e.is_retriable(),
                    "a commit failed for another reason than the broker: {e}"
                );
                commits.unanswered = Some((partition, offset));
                break;
            }
        }
        count.fetch_add(1, Ordering::Release);
    }
    commits
}

/// A member of `ledger-readers`; with `OffsetReset::Error` it can only
/// start from the group's commits.
fn ledger_member(addr: &str, auto_offset_reset: OffsetReset) -> Consumer {
    // Commits are the test's own: nothing automatic moves them.
    let config = ConsumerConfig {
        enable_auto_commit: false,
        auto_offset_reset,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(addr, config).expect("consumer");
    consumer
        .subscribe(GroupOptions {
            group_id: "ledger-readers".into(),
            topics: vec!["ledger".into()],
            instance_id: None,
            assignor: None,
            session_timeout_ms: 0,
            client_id: "fault-test".into(),
        })
        .expect("subscribe");
    consumer
}

/// Polls (bounded) until `done`; failures while the broker comes back are
/// retried.
fn poll_until(
    consumer: &mut Consumer,
    what: &str,
    mut done: impl FnMut(&Consumer, &[mamba_net::client::ConsumerRecord]) -> bool,
) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let records = match consumer.poll(Duration::from_millis(100)) {
            Ok(records) => records,
            Err(e) if e.is_retriable() => Vec::new(),
            Err(e) => panic!("polling for {what}: {e}"),
        };
        if done(consumer, &records) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out polling for {what}");
    }
}

#[test]
fn acknowledged_commits_survive_a_broker_kill_9_and_the_group_resumes_from_them() {
    const PER_PARTITION: u64 = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let addr = broker.addr.clone();
    create_topic(&addr, "ledger", 4);
    let producer = producer(&broker);
    let sent: Vec<_> = (0..4 * PER_PARTITION)
        .map(|i| {
            let mut r = record("ledger", None, &i.to_string());
            r.partition = Some((i % 4) as u32);
            producer.send(r).expect("send")
        })
        .collect();
    producer.flush();
    for s in sent {
        block_on(s).expect("ack");
    }
    producer.close();

    let mut member = ledger_member(&addr, OffsetReset::Latest);
    poll_until(&mut member, "all four partitions", |c, _| c.assignment().len() == 4);
    let count = Arc::new(AtomicUsize::new(0));
    let committing = {
        let count = count.clone();
        std::thread::spawn(move || {
            let commits = commit_in_a_loop(&mut member, &count, 4 * PER_PARTITION as usize);
            (member, commits)
        })
    };
    wait_until("100 acknowledged commits", || count.load(Ordering::Acquire) >= 100);
    let dir_path = broker.kill9();
    let (mut member, commits) = committing.join().expect("committing thread");
    assert!(commits.unanswered.is_some(), "the broker died while the member committed");
    let broker = Broker::start_on(&dir_path, 2, &addr);

    let mut last_acked: BTreeMap<u32, u64> = BTreeMap::new();
    for (p, o) in &commits.acked {
        last_acked.insert(*p, *o);
    }
    let admin = Admin::connect(&addr).expect("admin");
    let after = committed(&admin, "ledger-readers");
    for (p, acked) in &last_acked {
        let now = after.get(p).copied().unwrap_or(-1);
        // Only the commit whose answer never came may have landed after
        // the last acknowledged one.
        let allowed: Vec<i64> = match commits.unanswered {
            Some((q, offset)) if q == *p => vec![*acked as i64, offset as i64],
            _ => vec![*acked as i64],
        };
        assert!(
            allowed.contains(&now),
            "partition {p}: committed {now} after the restart, last acknowledged {acked} \
             (unanswered: {:?})",
            commits.unanswered
        );
    }
    assert_eq!(last_acked.len(), 4, "every partition was committed");
    eprintln!(
        "{} commits acknowledged before the kill, unanswered {:?}; after the restart {after:?}",
        commits.acked.len(),
        commits.unanswered
    );

    // The group re-forms around the member that was there, then a new
    // member takes over and starts at the commits.
    poll_until(&mut member, "the member back in the group", |c, _| c.assignment().len() == 4);
    wait_until("the group stable again", || {
        let described =
            block_on(admin.describe_groups(&["ledger-readers".into()])).expect("describe");
        described[0].state == "stable" && described[0].members.len() == 1
    });
    member.close().expect("leave");
    let mut next = ledger_member(&addr, OffsetReset::Error);
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    poll_until(&mut next, "a record of every partition", |_, records| {
        for r in records {
            first.entry(r.partition).or_insert(r.offset);
        }
        first.len() == 4
    });
    let resumed: BTreeMap<u32, i64> = first.iter().map(|(p, o)| (*p, *o as i64)).collect();
    assert_eq!(resumed, after, "the group resumes from its commits");
    next.close().expect("leave");
    broker.stop();
}

#[test]
fn reset_offsets_survive_a_restart_and_a_member_then_reads_from_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let addr = broker.addr.clone();
    create_topic(&addr, "work", 2);
    let producer = producer(&broker);
    for i in 0..20u32 {
        let mut r = record("work", None, &format!("v{i}"));
        r.partition = Some(i % 2);
        send_and_wait(&producer, r).expect("ack");
    }
    producer.close();
    // A first run reads and commits everything.
    let everything = cli_ok(&addr, &["consume", "work", "--group", "g", "--count", "20"]);
    assert_eq!(everything.lines().count(), 20);
    cli_ok(&addr, &["group", "reset-offsets", "g", "--topic", "work:0", "--to", "3"]);
    cli_ok(&addr, &["group", "reset-offsets", "g", "--topic", "work:1", "--to", "7"]);

    let dir_path = broker.stop();
    let broker = Broker::start_on(&dir_path, 1, &addr);
    let args = ["consume", "work", "--group", "g", "--count", "10", "--timeout-ms", "5000"];
    let printed: Vec<(u64, u64)> = cli_json(&addr, &args)
        .iter()
        .map(|v| {
            (v["partition"].as_u64().expect("partition"), v["offset"].as_u64().expect("offset"))
        })
        .collect();
    let mut printed = printed;
    printed.sort();
    let expected: Vec<(u64, u64)> =
        (3..10).map(|o| (0, o)).chain((7..10).map(|o| (1, o))).collect();
    assert_eq!(printed, expected, "the run starts at the reset offsets, kept across the restart");
    let admin = Admin::connect(&addr).expect("admin");
    assert_eq!(committed(&admin, "g"), BTreeMap::from([(0, 10), (1, 10)]));
    broker.stop();
}
