//! Consumer groups over the wire, against a node in this process: members
//! join and share partitions without overlap, a waiting heartbeat learns of
//! a change at once, only a partition's holder commits it, and group state
//! and offsets survive a restart.

use mamba_engine::EngineConfig;
use mamba_net::client::{block_on, Admin, Connection};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::*;
use mamba_net::server::BrokerConfig;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn start(dir: &Path, listen: SocketAddr) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig { listen, ..BrokerConfig::default() },
    })
    .expect("start node")
}

/// A member as a client keeps it.
struct Member {
    id: String,
    epoch: i32,
    owned: Vec<TopicAssignment>,
}

fn heartbeat(conn: &Connection, request: GroupHeartbeatRequest) -> GroupHeartbeatResponse {
    block_on(conn.call::<_, GroupHeartbeatResponse>(&request, &[])).expect("heartbeat").0
}

fn request(member: Option<&Member>, max_wait_ms: u32) -> GroupHeartbeatRequest {
    GroupHeartbeatRequest {
        group_id: "app".into(),
        member_id: member.map(|m| m.id.clone()).unwrap_or_default(),
        member_epoch: member.map_or(0, |m| m.epoch),
        instance_id: None,
        client_id: "test".into(),
        subscribed_topics: member.is_none().then(|| vec!["orders".to_string()]),
        assignor: None,
        owned: member.map(|m| m.owned.clone()),
        session_timeout_ms: 0,
        max_wait_ms,
    }
}

fn join(conn: &Connection) -> Member {
    let answer = heartbeat(conn, request(None, 0));
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    Member { id: answer.member_id, epoch: answer.member_epoch, owned: answer.assignment }
}

/// One heartbeat; the member takes its answer.
fn beat(conn: &Connection, m: &mut Member, max_wait_ms: u32) {
    let answer = heartbeat(conn, request(Some(m), max_wait_ms));
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    m.epoch = answer.member_epoch;
    m.owned = answer.assignment;
}

fn held(m: &Member) -> BTreeSet<u32> {
    m.owned.iter().flat_map(|t| t.partitions.iter().copied()).collect()
}

fn commit(conn: &Connection, m: &Member, partition: u32, offset: u64) -> u16 {
    let request = OffsetCommitRequest {
        group_id: "app".into(),
        member_id: m.id.clone(),
        member_epoch: m.epoch,
        offsets: vec![CommitOffset {
            topic: "orders".into(),
            partition,
            offset,
            metadata: "".into(),
        }],
    };
    let (answer, _) =
        block_on(conn.call::<_, OffsetCommitResponse>(&request, &[])).expect("commit");
    answer.partitions[0].error_code
}

fn committed(conn: &Connection, partition: u32) -> i64 {
    let request = OffsetFetchRequest {
        group_id: "app".into(),
        partitions: Some(vec![TopicAssignment {
            topic: "orders".into(),
            partitions: vec![partition],
        }]),
    };
    let (answer, _) = block_on(conn.call::<_, OffsetFetchResponse>(&request, &[])).expect("fetch");
    answer.offsets[0].offset
}

#[test]
fn members_share_partitions_learn_of_changes_at_once_and_commits_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    let addr = node.client_addr().expect("listening");
    let admin = Admin::connect(&addr.to_string()).expect("admin");
    block_on(admin.create_topic("orders", 6, vec![])).expect("create");
    let conn = Connection::connect(&addr.to_string(), Duration::from_secs(5)).expect("connect");

    let mut a = join(&conn);
    assert_eq!(held(&a).len(), 6, "alone, a reads everything");
    let mut b = join(&conn);
    assert!(held(&b).is_empty(), "b waits until a gives up its share");

    // a's waiting heartbeat is answered as soon as b joined (already
    // pending), with its share taken away.
    let asked = Instant::now();
    beat(&conn, &mut a, 3000);
    assert!(asked.elapsed() < Duration::from_secs(1), "at once, not after the wait");
    assert_eq!(held(&a).len(), 3);

    // b waits; a's confirmation wakes it with the released partitions.
    let waiting = std::thread::scope(|s| {
        let b_conn = &conn;
        let b_ref = &mut b;
        let waiter = s.spawn(move || {
            let asked = Instant::now();
            beat(b_conn, b_ref, 3000);
            asked.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        beat(&conn, &mut a, 0);
        waiter.join().expect("b's heartbeat")
    });
    assert!(waiting < Duration::from_secs(2), "woken by the release: {waiting:?}");
    assert_eq!(held(&b).len(), 3);
    assert!(held(&a).is_disjoint(&held(&b)), "never one partition in two members");

    // Only a partition's holder commits it.
    let mine = *held(&a).iter().next().expect("a holds some");
    assert_eq!(commit(&conn, &b, mine, 7), ErrorCode::NotAssigned.as_u16());
    assert_eq!(commit(&conn, &a, mine, 42), 0);
    let stale =
        Member { epoch: a.epoch + 5, ..Member { id: a.id.clone(), epoch: 0, owned: vec![] } };
    assert_eq!(commit(&conn, &stale, mine, 43), ErrorCode::FencedMemberEpoch.as_u16());
    assert_eq!(committed(&conn, mine), 42);

    // A restart keeps the group and its offsets.
    drop(conn);
    node.stop().expect("stop");
    let node = start(dir.path(), addr);
    let conn = Connection::connect(&addr.to_string(), Duration::from_secs(5)).expect("connect");
    assert_eq!(committed(&conn, mine), 42);
    let describe = DescribeGroupsRequest { group_ids: vec!["app".into(), "nope".into()] };
    let (described, _) =
        block_on(conn.call::<_, DescribeGroupsResponse>(&describe, &[])).expect("describe");
    let app = &described.groups[0];
    assert_eq!((app.error_code, app.members.len(), app.state.as_str()), (0, 2, "stable"));
    assert_eq!(described.groups[1].error_code, ErrorCode::GroupNotFound.as_u16());
    beat(&conn, &mut a, 0);
    assert_eq!(held(&a).len(), 3, "a goes on with its partitions after the restart");

    // A group with members is not deleted; once they leave, it is.
    let delete = DeleteGroupsRequest { group_ids: vec!["app".into()] };
    let (deleted, _) =
        block_on(conn.call::<_, DeleteGroupsResponse>(&delete, &[])).expect("delete");
    assert_eq!(deleted.results[0].error_code, ErrorCode::GroupNotEmpty.as_u16());
    for m in [&a, &b] {
        let leave = GroupHeartbeatRequest { member_epoch: -1, ..request(Some(m), 0) };
        assert_eq!(heartbeat(&conn, leave).error_code, 0);
    }
    let (listed, _) =
        block_on(conn.call::<_, ListGroupsResponse>(&ListGroupsRequest {}, &[])).expect("list");
    assert_eq!(listed.groups.iter().map(|g| g.state.as_str()).collect::<Vec<_>>(), ["empty"]);
    let (deleted, _) =
        block_on(conn.call::<_, DeleteGroupsResponse>(&delete, &[])).expect("delete");
    assert_eq!(deleted.results[0].error_code, 0, "{}", deleted.results[0].message);
    assert_eq!(committed(&conn, mine), -1, "its offsets went with it");

    let bad = GroupHeartbeatRequest { group_id: "bad\u{7}id".into(), ..request(None, 0) };
    assert_eq!(heartbeat(&conn, bad).error_code, ErrorCode::InvalidGroupId.as_u16());
    node.stop().expect("stop");
}

mod consumers {
    use super::*;
    use mamba_net::client::{
        Consumer, ConsumerConfig, GroupOptions, OffsetReset, Producer, ProducerConfig,
        ProducerRecord,
    };
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn options() -> GroupOptions {
        GroupOptions {
            group_id: "readers".into(),
            topics: vec!["events".into()],
            instance_id: None,
            assignor: None,
            session_timeout_ms: 0,
            client_id: "test".into(),
        }
    }

    fn config() -> ConsumerConfig {
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() }
    }

    type Seen = Arc<Mutex<Vec<(u32, u64, &'static str)>>>;

    /// Polls until `stop`, recording every record with who read it and
    /// how many partitions it holds.
    fn reader(
        addr: String,
        name: &'static str,
        seen: Seen,
        held: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut consumer = Consumer::connect(&addr, config()).expect("consumer");
            consumer.subscribe(options()).expect("subscribe");
            while !stop.load(Ordering::Acquire) {
                let records = consumer.poll(Duration::from_millis(100)).expect("poll");
                let mut seen = seen.lock().expect("seen");
                seen.extend(records.iter().map(|r| (r.partition, r.offset, name)));
                held.store(consumer.assignment().len(), Ordering::Release);
            }
            let held = consumer.assignment().len();
            consumer.close().expect("close");
            held
        })
    }

    fn produce(addr: &str, from: usize, count: usize) {
        let producer = Producer::connect(addr, ProducerConfig::default()).expect("producer");
        let sent: Vec<_> = (from..from + count)
            .map(|i| {
                producer
                    .send(ProducerRecord {
                        topic: "events".into(),
                        key: Some(format!("k{i}").into_bytes()),
                        value: format!("{i}").into_bytes(),
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

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn subscribed_consumers_split_a_topic_and_read_every_record_once_across_a_join_and_a_leave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start(dir.path(), "127.0.0.1:0".parse().expect("addr"));
        let addr = node.client_addr().expect("listening").to_string();
        let admin = Admin::connect(&addr).expect("admin");
        block_on(admin.create_topic("events", 12, vec![])).expect("create");
        produce(&addr, 0, 3000);

        let seen: Seen = Arc::default();
        let (stop_a, stop_b) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (held_a, held_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let a = reader(addr.clone(), "a", seen.clone(), held_a.clone(), stop_a.clone());
        wait_until("a to read", || !seen.lock().expect("seen").is_empty());
        let b = reader(addr.clone(), "b", seen.clone(), held_b.clone(), stop_b.clone());
        // Once the two share the topic, new records reach both.
        wait_until("a and b to share the partitions", || {
            held_a.load(Ordering::Acquire) == 6 && held_b.load(Ordering::Acquire) == 6
        });
        produce(&addr, 3000, 3000);
        wait_until("every record", || seen.lock().expect("seen").len() >= 6000);
        wait_until("b to read", || seen.lock().expect("seen").iter().any(|r| r.2 == "b"));
        // a leaves: b takes its partitions and goes on from a's commits.
        stop_a.store(true, Ordering::Release);
        assert_eq!(a.join().expect("a"), 6, "a held half of the 12 partitions");
        produce(&addr, 6000, 1200);
        wait_until("the records after a left", || seen.lock().expect("seen").len() >= 7200);
        stop_b.store(true, Ordering::Release);
        assert_eq!(b.join().expect("b"), 12, "b holds everything once a left");

        let seen = seen.lock().expect("seen");
        let mut reads: BTreeMap<(u32, u64), usize> = BTreeMap::new();
        for (p, o, _) in seen.iter() {
            *reads.entry((*p, *o)).or_default() += 1;
        }
        assert_eq!(reads.len(), 7200, "every record was read");
        let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "a clean handover reads nothing twice: {twice:?}");
        node.stop().expect("stop");
    }
}
