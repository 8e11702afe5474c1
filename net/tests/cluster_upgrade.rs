//! A data directory written by a broker before clusters existed opens as
//! a one-node cluster: its topics and records are all there, led by this
//! broker, and idempotent producers keep working — the ids the old broker
//! handed out are never handed out again, and neither is any id of a
//! block a previous run of the cluster broker took.

use mamba_engine::{BatchBuilder, EngineConfig, NewRecord};
use mamba_net::client::{block_on, Admin, Connection, Consumer, ConsumerConfig, SeekTo};
use mamba_net::cluster::ClusterConfig;
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::*;
use mamba_net::server::BrokerConfig;
use std::path::Path;
use std::time::{Duration, Instant};

fn start(dir: &Path, cluster: Option<ClusterConfig>) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster,
        broker: BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..BrokerConfig::default()
        },
    })
    .expect("start node")
}

fn one_node_cluster() -> Option<ClusterConfig> {
    Some(ClusterConfig {
        cluster_listen: "127.0.0.1:0".parse().expect("addr"),
        ..ClusterConfig::default()
    })
}

fn addr(node: &Node) -> String {
    node.client_addr().expect("listening").to_string()
}

fn producer_id(conn: &Connection) -> u64 {
    let (answer, _) =
        block_on(conn.call::<_, InitProducerIdResponse>(&InitProducerIdRequest {}, &[]))
            .expect("init producer id");
    assert_eq!(answer.error_code, 0, "a producer id is handed out");
    answer.producer_id
}

/// Produces `value` as the first batch of `producer_id` to partition 0.
fn produce_first(
    conn: &Connection,
    topic: &str,
    producer_id: u64,
    value: &str,
) -> ProducePartitionResult {
    let mut batch = BatchBuilder::new().producer(producer_id, 0, 0);
    batch.push(NewRecord { value: value.as_bytes().to_vec(), ..NewRecord::default() });
    let batch = batch.build().expect("batch");
    let request = ProduceRequest {
        acks: -1,
        timeout_ms: 5000,
        partitions: vec![ProducePartition {
            topic: topic.into(),
            partition: 0,
            batch: Slice { offset: 0, len: batch.as_bytes().len() as u32 },
        }],
    };
    let (answer, _) =
        block_on(conn.call::<_, ProduceResponse>(&request, &[batch.as_bytes()])).expect("produce");
    answer.partitions.into_iter().next().expect("one partition")
}

fn values(addr: &str, topic: &str, expected: usize) -> Vec<String> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default()).expect("consumer");
    consumer.assign(topic, &[], SeekTo::Earliest).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        let records = consumer.poll(Duration::from_millis(200)).expect("poll");
        out.extend(records.into_iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()));
    }
    out.sort();
    out
}

#[test]
fn a_single_node_data_directory_opens_as_a_one_node_cluster_with_everything_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");

    // Yesterday's broker: no cluster.
    let old = start(dir.path(), None);
    let admin = Admin::connect(&addr(&old)).expect("admin");
    block_on(admin.create_topic("legacy", 3, vec![])).expect("create topic");
    let conn = Connection::connect(&addr(&old), Duration::from_secs(5)).expect("connect");
    let old_ids: Vec<u64> = (0..3).map(|_| producer_id(&conn)).collect();
    for (i, id) in old_ids.iter().enumerate() {
        let answer = produce_first(&conn, "legacy", *id, &format!("old-{i}"));
        assert_eq!(answer.error_code, 0, "{}", answer.message);
    }
    drop((conn, admin));
    old.stop().expect("stop");

    // The same directory as a one-node cluster.
    let node = start(dir.path(), one_node_cluster());
    let admin = Admin::connect(&addr(&node)).expect("admin");
    let cluster = block_on(admin.cluster()).expect("cluster metadata");
    let topic =
        cluster.topic("legacy").ok().flatten().expect("the old topic is in the cluster's metadata");
    assert_eq!(topic.partitions.len(), 3);
    assert!(
        topic.partitions.iter().all(|p| p.leader == Some(1)),
        "this broker leads every partition: {topic:?}"
    );
    assert_eq!(values(&addr(&node), "legacy", 3), vec!["old-0", "old-1", "old-2"]);

    // New producers get ids the old broker never gave out. Had one got an
    // old id, its first batch would be taken for a duplicate of the old
    // producer's and never written.
    let conn = Connection::connect(&addr(&node), Duration::from_secs(5)).expect("connect");
    let new_ids: Vec<u64> = (0..3).map(|_| producer_id(&conn)).collect();
    for (i, id) in new_ids.iter().enumerate() {
        assert!(!old_ids.contains(id), "producer id {id} handed out twice");
        let answer = produce_first(&conn, "legacy", *id, &format!("new-{i}"));
        assert_eq!(answer.error_code, 0, "{}", answer.message);
    }
    let mut distinct = new_ids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "distinct ids: {new_ids:?}");
    drop((conn, admin));
    node.stop().expect("stop");

    // A restart takes a fresh block: no id of the last run's block again.
    let node = start(dir.path(), one_node_cluster());
    let conn = Connection::connect(&addr(&node), Duration::from_secs(5)).expect("connect");
    let restarted = producer_id(&conn);
    let highest = old_ids.iter().chain(&new_ids).max().copied().unwrap_or_default();
    assert!(restarted > highest, "id {restarted} after a restart; ids so far reach {highest}");
    let answer = produce_first(&conn, "legacy", restarted, "after-restart");
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    let expected = ["after-restart", "new-0", "new-1", "new-2", "old-0", "old-1", "old-2"];
    assert_eq!(values(&addr(&node), "legacy", 7), expected);
    drop(conn);
    node.stop().expect("stop");
}
