//! The group consumer's API against a node in this process: pausing
//! partitions, subscribing by topic pattern (a topic created later is
//! read), seeking under a group, a rebalance listener that commits its own
//! offsets before giving partitions up, and `poll_async` waiting for an
//! assignment without holding its executor's thread.

use mamba_engine::EngineConfig;
use mamba_net::client::{
    block_on, Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, GroupOptions,
    OffsetReset, Partitions, Producer, ProducerConfig, ProducerRecord, RebalanceListener, SeekTo,
};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::server::BrokerConfig;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait in these tests ends by this bound; it fails the test, it
/// does not measure anything.
const WAIT_MAX: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

fn start(dir: &Path) -> (Node, String) {
    let node = Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..BrokerConfig::default()
        },
    })
    .expect("start node");
    let addr = node.client_addr().expect("listening").to_string();
    (node, addr)
}

fn create(addr: &str, topic: &str, partitions: u32) {
    let admin = Admin::connect(addr).expect("admin");
    block_on(admin.create_topic(topic, partitions, vec![])).expect("create");
}

/// Writes `count` records to one partition; values are `topic/partition/i`.
fn produce(addr: &str, topic: &str, partition: u32, count: usize) {
    let producer = Producer::connect(addr, ProducerConfig::default()).expect("producer");
    let sent: Vec<_> = (0..count)
        .map(|i| {
            producer
                .send(ProducerRecord {
                    topic: topic.into(),
                    partition: Some(partition),
                    value: format!("{topic}/{partition}/{i}").into_bytes(),
                    ..ProducerRecord::default()
                })
                .expect("send")
        })
        .collect();
    producer.flush();
    for s in sent {
        block_on(s).expect("ack");
    }
    producer.close();
}

fn options(group: &str, topics: &[&str]) -> GroupOptions {
    GroupOptions {
        group_id: group.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        instance_id: None,
        assignor: None,
        session_timeout_ms: 0,
        client_id: "test".into(),
    }
}

fn config() -> ConsumerConfig {
    ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() }
}

/// Records read, by (topic, partition): their offsets in the order read.
type Read = BTreeMap<(String, u32), Vec<u64>>;

fn note(read: &mut Read, records: &[ConsumerRecord]) {
    for r in records {
        read.entry((r.topic.clone(), r.partition)).or_default().push(r.offset);
    }
}

/// Polls until `done(read so far)`, failing after `WAIT_MAX`.
fn poll_until(consumer: &mut Consumer, what: &str, mut done: impl FnMut(&Read) -> bool) -> Read {
    let deadline = Instant::now() + WAIT_MAX;
    let mut read = Read::new();
    while !done(&read) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; read {read:?}; subscribed to {:?}, holding {:?}",
            consumer.subscription(),
            consumer.assignment()
        );
        note(&mut read, &consumer.poll(POLL).expect("poll"));
    }
    read
}

fn key(topic: &str, partition: u32) -> (String, u32) {
    (topic.to_string(), partition)
}

fn count(read: &Read, topic: &str, partition: u32) -> usize {
    read.get(&key(topic, partition)).map_or(0, Vec::len)
}

/// With partition 0 of `topic` paused (3 partitions, 30 records each,
/// none read yet), the others are read to the end while it delivers
/// nothing and keeps its position; after `resume` it delivers all of its
/// records.
fn paused_then_resumed(consumer: &mut Consumer, topic: &str) {
    let p0 = key(topic, 0);
    let read = poll_until(consumer, "the unpaused partitions", |r| {
        count(r, topic, 1) == 30 && count(r, topic, 2) == 30
    });
    assert_eq!(consumer.paused(), std::slice::from_ref(&p0));
    assert_eq!(count(&read, topic, 0), 0, "a paused partition delivers nothing");
    // One more poll: still nothing from it, though the others are idle.
    assert!(consumer.poll(POLL).expect("poll").is_empty());
    assert_eq!(consumer.position(topic, 0), Some(0), "its position stays");
    assert!(consumer.assignment().contains(&p0), "it stays assigned");

    consumer.resume(std::slice::from_ref(&p0)).expect("resume");
    assert!(consumer.paused().is_empty());
    let read = poll_until(consumer, "partition 0 after resume", |r| count(r, topic, 0) == 30);
    assert_eq!(read[&p0], (0..30).collect::<Vec<u64>>(), "every record, once, in order");

    let elsewhere = key("nowhere", 0);
    let refused = consumer.pause(&[elsewhere]).expect_err("not read by this consumer");
    assert!(matches!(refused, ClientError::InvalidArgument(_)), "{refused}");
}

/// Pauses partition 0 of every topic assigned.
struct PauseZero;

impl RebalanceListener for PauseZero {
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &Partitions) {
        let zeros: Vec<_> =
            partitions.iter().filter(|(_, ps)| ps.contains(&0)).map(|(t, _)| key(t, 0)).collect();
        consumer.pause(&zeros).expect("pause in on_assigned");
    }

    fn on_revoked(&mut self, _: &mut Consumer, _: &Partitions) {}
}

#[test]
fn a_paused_partition_delivers_nothing_while_the_others_go_on_and_everything_after_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, addr) = start(dir.path());
    for topic in ["assigned", "grouped"] {
        create(&addr, topic, 3);
        for p in 0..3 {
            produce(&addr, topic, p, 30);
        }
    }

    // Without a group.
    let mut consumer = Consumer::connect(&addr, config()).expect("consumer");
    consumer.assign("assigned", &[], SeekTo::Earliest).expect("assign");
    consumer.pause(&[key("assigned", 0)]).expect("pause");
    paused_then_resumed(&mut consumer, "assigned");

    // Under a group: paused as it is assigned, before any fetch.
    let mut consumer = Consumer::connect(&addr, config()).expect("consumer");
    consumer.subscribe(options("pausers", &["grouped"])).expect("subscribe");
    consumer.set_rebalance_listener(Box::new(PauseZero)).expect("listener");
    paused_then_resumed(&mut consumer, "grouped");
    consumer.close().expect("close");
    node.stop().expect("stop");
}

#[test]
fn a_pattern_subscription_reads_the_matching_topics_and_one_created_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, addr) = start(dir.path());
    create(&addr, "logs-api", 2);
    create(&addr, "metrics", 1);
    produce(&addr, "logs-api", 0, 10);
    produce(&addr, "metrics", 0, 10);

    let fast = ConsumerConfig { metadata_max_age_ms: 100, ..config() };
    let mut consumer = Consumer::connect(&addr, fast).expect("consumer");
    let mut listed = options("log-readers", &["logs-api"]);
    let refused = consumer.subscribe_pattern(listed.clone(), "logs-.*").expect_err("both");
    assert!(matches!(refused, ClientError::InvalidArgument(_)), "{refused}");
    listed.topics.clear();
    consumer.subscribe_pattern(listed, "logs-.*").expect("subscribe");
    assert_eq!(consumer.subscription(), ["logs-api"]);
    let read = poll_until(&mut consumer, "logs-api", |r| count(r, "logs-api", 0) == 10);

    create(&addr, "logs-db", 3);
    produce(&addr, "logs-db", 2, 10);
    let later =
        poll_until(&mut consumer, "logs-db, created later", |r| count(r, "logs-db", 2) == 10);
    assert_eq!(later[&key("logs-db", 2)], (0..10).collect::<Vec<u64>>());
    assert_eq!(consumer.subscription(), ["logs-api", "logs-db"]);
    for r in [&read, &later] {
        assert!(r.keys().all(|(t, _)| t.starts_with("logs-")), "only matching topics: {r:?}");
    }
    consumer.close().expect("close");
    node.stop().expect("stop");
}

#[test]
fn seek_under_a_group_moves_a_partition_it_holds_and_is_refused_for_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, addr) = start(dir.path());
    create(&addr, "clicks", 1);
    create(&addr, "views", 1);
    produce(&addr, "clicks", 0, 10);

    let mut consumer = Consumer::connect(&addr, config()).expect("consumer");
    consumer.subscribe(options("seekers", &["clicks"])).expect("subscribe");
    poll_until(&mut consumer, "the first 10", |r| count(r, "clicks", 0) == 10);
    assert_eq!(consumer.position("clicks", 0), Some(10), "the next offset to read");

    // The poll that handed the records over sent the next fetch (from 10)
    // ahead; the seek drops it.
    produce(&addr, "clicks", 0, 5);
    consumer.seek("clicks", 0, SeekTo::Offset(3)).expect("seek");
    assert_eq!(consumer.position("clicks", 0), Some(3));
    let read = poll_until(&mut consumer, "from 3", |r| count(r, "clicks", 0) == 12);
    assert_eq!(read[&key("clicks", 0)], (3..15).collect::<Vec<u64>>());

    let refused = consumer.seek("views", 0, SeekTo::Earliest).expect_err("not held");
    assert!(
        matches!(&refused, ClientError::InvalidArgument(m) if m.contains("views/0")),
        "{refused}"
    );
    assert_eq!(consumer.position("views", 0), None, "a refused seek reads nothing new");
    let refused = consumer.assign("views", &[], SeekTo::Earliest).expect_err("a group assigns");
    assert!(matches!(refused, ClientError::InvalidArgument(_)), "{refused}");
    consumer.close().expect("close");
    node.stop().expect("stop");
}

/// (partition, its position when revoked), as a listener saw them.
type Revoked = Arc<Mutex<Vec<(u32, Option<u64>)>>>;

/// Commits offset 5 of every partition it gives up, whatever was read.
struct CommitFive {
    revoked: Revoked,
}

impl RebalanceListener for CommitFive {
    fn on_assigned(&mut self, _: &mut Consumer, _: &Partitions) {}

    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &Partitions) {
        let offsets: Vec<_> =
            partitions.get("tasks").into_iter().flatten().map(|p| (key("tasks", *p), 5)).collect();
        consumer.commit_offsets(&offsets).expect("commit in on_revoked");
        let mut revoked = self.revoked.lock().expect("revoked");
        revoked.extend(offsets.iter().map(|((_, p), _)| (*p, consumer.position("tasks", *p))));
    }
}

#[test]
fn a_listener_commits_its_choice_before_a_revocation_and_the_next_owner_starts_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, addr) = start(dir.path());
    create(&addr, "tasks", 2);
    for p in 0..2 {
        produce(&addr, "tasks", p, 20);
    }
    let manual = ConsumerConfig { enable_auto_commit: false, ..config() };

    let mut first = Consumer::connect(&addr, manual.clone()).expect("first");
    first.subscribe(options("workers", &["tasks"])).expect("subscribe");
    let revoked = Revoked::default();
    first.set_rebalance_listener(Box::new(CommitFive { revoked: revoked.clone() })).expect("set");
    poll_until(&mut first, "all 40", |r| count(r, "tasks", 0) + count(r, "tasks", 1) == 40);

    // Both poll on this thread: the partition moves once `first` gave it
    // up at a poll.
    let mut second = Consumer::connect(&addr, manual).expect("second");
    second.subscribe(options("workers", &["tasks"])).expect("subscribe");
    let deadline = Instant::now() + WAIT_MAX;
    let mut read = Read::new();
    while read.is_empty() {
        assert!(Instant::now() < deadline, "timed out waiting for the handover");
        first.poll(POLL).expect("first polls");
        note(&mut read, &second.poll(POLL).expect("second polls"));
    }
    let revoked = revoked.lock().expect("revoked").clone();
    assert_eq!(revoked.len(), 1, "one of the two partitions moved: {revoked:?}");
    let (moved, position) = revoked[0];
    assert_eq!(position, Some(20), "on_revoked still sees the position");
    assert_eq!(second.assignment(), [key("tasks", moved)]);
    assert_eq!(second.committed("tasks", moved).expect("committed"), Some(5));
    let read = {
        let mut read = read;
        while count(&read, "tasks", moved) < 15 {
            assert!(Instant::now() < deadline, "timed out reading the moved partition");
            note(&mut read, &second.poll(POLL).expect("poll"));
        }
        read
    };
    assert_eq!(
        read[&key("tasks", moved)],
        (5..20).collect::<Vec<u64>>(),
        "the next owner starts exactly at the listener's commit"
    );
    // The other partition is still first's; seeking it from second is
    // refused.
    let kept = 1 - moved;
    let refused = second.seek("tasks", kept, SeekTo::Earliest).expect_err("first holds it");
    assert!(matches!(refused, ClientError::InvalidArgument(_)), "{refused}");
    second.close().expect("close");
    first.close().expect("close");
    node.stop().expect("stop");
}

#[test]
fn poll_async_waits_for_an_assignment_without_holding_its_executor_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, addr) = start(dir.path());
    create(&addr, "jobs", 2);
    produce(&addr, "jobs", 0, 10);
    produce(&addr, "jobs", 1, 10);

    let mut first = Consumer::connect(&addr, config()).expect("first");
    first.subscribe(options("async", &["jobs"])).expect("subscribe");
    poll_until(&mut first, "all 20", |r| count(r, "jobs", 0) + count(r, "jobs", 1) == 20);
    let mut second = Consumer::connect(&addr, config()).expect("second");
    second.subscribe(options("async", &["jobs"])).expect("subscribe");

    // One thread runs both: `second` waits for its share in one long
    // poll_async, which ends only once `first` — polling on this same
    // thread — has given a partition up. A wait that blocked the thread
    // would keep `first` from polling for the whole wait, and `second`
    // would end it with nothing.
    let second_done = Cell::new(false);
    let waiting = async {
        let records = second.poll_async(WAIT_MAX).await.expect("poll_async");
        second_done.set(true);
        assert!(records.is_empty(), "the wait only takes the assignment");
        assert_eq!(second.assignment().len(), 1, "second took a share in that one wait");
    };
    let releasing = async {
        while !second_done.get() {
            first.poll_async(POLL).await.expect("first polls");
        }
    };
    block_on(futures::future::join(waiting, releasing));
    assert_eq!(first.assignment().len(), 1, "first kept the other partition");

    // And records come through poll_async: `second` reads its partition
    // from the group's commit, which `first` made as it gave it up.
    let (topic, partition) = second.assignment()[0].clone();
    produce(&addr, &topic, partition, 5);
    let mut read = Read::new();
    let deadline = Instant::now() + WAIT_MAX;
    while count(&read, &topic, partition) < 5 {
        assert!(Instant::now() < deadline, "timed out reading through poll_async");
        note(&mut read, &block_on(second.poll_async(POLL)).expect("poll_async"));
    }
    assert_eq!(read[&key(&topic, partition)], (10..15).collect::<Vec<u64>>());
    second.close().expect("close");
    first.close().expect("close");
    node.stop().expect("stop");
}
