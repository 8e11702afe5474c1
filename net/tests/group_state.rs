//! The life of group state in `__consumer_offsets`, against a node in this
//! process: offsets of a group without members expire after
//! `offsets_retention_ms` (a group with members keeps them), and
//! compaction keeps the log small however many commits go through it,
//! without losing a commit or a member across a restart.

use mamba_engine::{EngineConfig, PartitionId};
use mamba_net::client::{block_on, Admin, Connection};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::*;
use mamba_net::server::{BrokerConfig, GroupConfig};
use std::path::Path;
use std::time::{Duration, Instant};

const OFFSETS_TOPIC: &str = "__consumer_offsets";

fn start(dir: &Path, groups: GroupConfig) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            groups,
            ..BrokerConfig::default()
        },
    })
    .expect("start node")
}

fn addr(node: &Node) -> String {
    node.client_addr().expect("listening").to_string()
}

fn offsets(partitions: std::ops::Range<u32>, offset: u64) -> Vec<CommitOffset> {
    partitions
        .map(|partition| CommitOffset {
            topic: "orders".into(),
            partition,
            offset,
            metadata: format!("at {offset}"),
        })
        .collect()
}

/// Commits as an administrator (the group has no members).
fn reset(admin: &Admin, group: &str, partitions: std::ops::Range<u32>, offset: u64) {
    for result in block_on(admin.reset_offsets(group, offsets(partitions, offset))).expect("reset")
    {
        assert_eq!(result.error_code, 0, "{}", result.message);
    }
}

/// The group's committed offsets by partition.
fn committed(admin: &Admin, group: &str) -> Vec<(u32, i64)> {
    let mut all: Vec<(u32, i64)> = block_on(admin.fetch_offsets(group, None))
        .expect("fetch")
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    all.sort_unstable();
    all
}

/// Joins `group` as a member with a long session; returns its id and
/// epoch once it holds every partition of `orders`.
fn join(conn: &Connection, group: &str) -> (String, i32) {
    let mut request = GroupHeartbeatRequest {
        group_id: group.into(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: None,
        client_id: "test".into(),
        subscribed_topics: Some(vec!["orders".into()]),
        assignor: None,
        owned: None,
        session_timeout_ms: 60_000,
        max_wait_ms: 0,
    };
    let answer = block_on(conn.call::<_, GroupHeartbeatResponse>(&request, &[])).expect("join").0;
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    // Report the assignment as held, so commits of it are accepted.
    request.member_id = answer.member_id.clone();
    request.member_epoch = answer.member_epoch;
    request.subscribed_topics = None;
    request.owned = Some(answer.assignment);
    let again = block_on(conn.call::<_, GroupHeartbeatResponse>(&request, &[])).expect("beat").0;
    assert_eq!(again.error_code, 0, "{}", again.message);
    (answer.member_id, again.member_epoch)
}

fn member_commit(conn: &Connection, group: &str, member: &(String, i32), offset: u64) {
    let request = OffsetCommitRequest {
        group_id: group.into(),
        member_id: member.0.clone(),
        member_epoch: member.1,
        offsets: offsets(0..4, offset),
    };
    let answer = block_on(conn.call::<_, OffsetCommitResponse>(&request, &[])).expect("commit").0;
    for p in answer.partitions {
        assert_eq!(p.error_code, 0, "{}", p.message);
    }
}

/// Polls `done` every 50 ms for up to 10 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn offsets_of_a_group_without_members_expire_and_a_group_with_members_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node =
        start(dir.path(), GroupConfig { offsets_retention_ms: 1_000, ..GroupConfig::default() });
    let admin = Admin::connect(&addr(&node)).expect("admin");
    block_on(admin.create_topic("orders", 4, vec![])).expect("create");
    let conn = admin.connection().expect("connection");

    reset(&admin, "idle", 0..4, 10);
    let active = join(&conn, "active");
    member_commit(&conn, "active", &active, 20);
    assert_eq!(committed(&admin, "idle").len(), 4);

    wait_until("the idle group's offsets expired", || committed(&admin, "idle").is_empty());
    wait_until("the emptied group is gone", || {
        let listed = block_on(admin.list_groups()).expect("list");
        !listed.iter().any(|g| g.group_id == "idle")
    });
    // Well past the retention, the group with a member still has its
    // offsets (its member keeps its session: 60 s).
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(committed(&admin, "active"), (0..4).map(|p| (p, 20)).collect::<Vec<_>>());
    node.stop().expect("stop");
}

#[test]
fn compaction_bounds_the_log_and_keeps_every_commit_and_member_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segment_bytes: u64 = 64 << 10;
    // One offsets partition: every group's records share one log.
    let config = GroupConfig {
        offsets_topic_partitions: 1,
        offsets_segment_bytes: segment_bytes,
        ..GroupConfig::default()
    };
    let node = start(dir.path(), config.clone());
    let admin = Admin::connect(&addr(&node)).expect("admin");
    block_on(admin.create_topic("orders", 4, vec![])).expect("create");
    let conn = admin.connection().expect("connection");
    let member = join(&conn, "live");

    // Some 40 segments' worth of commits.
    let commits = 4_000;
    for i in 1..=commits {
        reset(&admin, "busy", 0..4, i);
        if i % 10 == 0 {
            member_commit(&conn, "live", &member, i);
        }
    }
    let summary = || {
        block_on(node.engine().describe_partition(OFFSETS_TOPIC, PartitionId(0))).expect("summary")
    };
    let written = summary().offsets.next_offset.0;
    assert!(written >= 4 * commits, "every commit was written ({written} records)");
    // The sweep compacts within a few of its rounds (250 ms each).
    wait_until("the log is compacted to a few segments", || {
        let s = summary();
        s.size_bytes <= 3 * segment_bytes && s.offsets.log_start_offset.0 > 0
    });
    let before = (committed(&admin, "busy"), committed(&admin, "live"));
    assert_eq!(before.0, (0..4).map(|p| (p, commits as i64)).collect::<Vec<_>>());
    assert_eq!(before.1, (0..4).map(|p| (p, commits as i64)).collect::<Vec<_>>());
    let describe = |admin: &Admin| {
        let mut d = block_on(admin.describe_groups(&["live".into()])).expect("describe");
        let d = d.remove(0);
        d.members.iter().map(|m| (m.member_id.clone(), m.assignment.clone())).collect::<Vec<_>>()
    };
    let members = describe(&admin);
    assert_eq!(members.len(), 1);
    node.stop().expect("stop");

    // A restart reads the compacted log back: the same commits, the same
    // member holding the same partitions.
    let node = start(dir.path(), config);
    let admin = Admin::connect(&addr(&node)).expect("admin");
    assert_eq!((committed(&admin, "busy"), committed(&admin, "live")), before);
    assert_eq!(describe(&admin), members);
    node.stop().expect("stop");
}
