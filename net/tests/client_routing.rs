//! Clients send each partition's requests to its leader and each group's
//! to its coordinator.
//!
//! One broker answers both for itself (its metadata names it leader of
//! everything, `find_coordinator` names it). Routing across brokers is
//! shown with a fake bootstrap broker in this process: a TCP listener
//! speaking the frame protocol whose metadata names two real single-node
//! brokers (each holding a topic of the same name) as the leaders of the
//! topic's two partitions, and itself as a stale leader that answers `not
//! leader`.

use mamba_engine::EngineConfig;
use mamba_net::client::{
    block_on, Admin, ClientError, Consumer, ConsumerConfig, GroupOptions, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, Route, SeekTo,
};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::*;
use mamba_net::server::BrokerConfig;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start_node(dir: &Path, node_id: u32) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig {
            node_id,
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..BrokerConfig::default()
        },
    })
    .expect("start node")
}

fn addr(node: &Node) -> String {
    node.client_addr().expect("listening").to_string()
}

/// Sends `values` to `partition` of `topic` and waits for every ack.
fn produce(producer: &Producer, topic: &str, partition: u32, values: &[String]) -> Vec<u64> {
    let sent: Vec<_> = values
        .iter()
        .map(|v| {
            let record = ProducerRecord {
                topic: topic.into(),
                partition: Some(partition),
                value: v.as_bytes().to_vec(),
                ..ProducerRecord::default()
            };
            producer.send(record).expect("send")
        })
        .collect();
    producer.flush();
    sent.into_iter()
        .map(|s| block_on(s).expect("acknowledged").offset.expect("acks=all gives offsets"))
        .collect()
}

/// Polls until `count` records came, or 20 s passed: (partition, value)
/// in the order handed over.
fn poll_values(consumer: &mut Consumer, count: usize) -> Vec<(u32, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => got.extend(
                records
                    .into_iter()
                    .map(|r| (r.partition, String::from_utf8(r.value).expect("utf8"))),
            ),
            Err(e) if e.is_retriable() => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("poll failed: {e}"),
        }
    }
    got
}

fn by_partition(records: &[(u32, String)]) -> BTreeMap<u32, Vec<String>> {
    let mut split: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (partition, value) in records {
        split.entry(*partition).or_default().push(value.clone());
    }
    split
}

#[test]
fn one_broker_coordinates_its_groups_and_leads_every_partition_of_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(dir.path(), 7);
    let addr = addr(&node);
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("solo", 3, vec![])).expect("create");

    let cluster = block_on(admin.cluster()).expect("metadata");
    assert_eq!(cluster.controller_id(), Some(7));
    let brokers: Vec<(u32, &str)> =
        cluster.brokers().map(|b| (b.node_id, b.status.as_str())).collect();
    assert_eq!(brokers, [(7, "alive")]);
    assert_eq!(cluster.broker_address(7), Some(addr.as_str()));
    for partition in 0..3 {
        assert_eq!(
            cluster.route("solo", partition),
            Route::Leader { node_id: 7, addr: &addr },
            "partition {partition}"
        );
    }
    assert_eq!(cluster.route("solo", 3), Route::Unknown);

    let coordinator = block_on(admin.find_coordinator("billing")).expect("found");
    assert_eq!((coordinator.node_id, coordinator.addr.as_str()), (7, addr.as_str()));
    match block_on(admin.find_coordinator("")) {
        Err(ClientError::Broker { code: ErrorCode::InvalidGroupId, .. }) => {}
        other => panic!("an empty group id has no coordinator: {other:?}"),
    }

    // The routed clients: records to their leader, commits and offset
    // fetches to the coordinator, admin group calls too.
    let producer = Producer::connect(&addr, ProducerConfig::default()).expect("producer");
    let values: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    for partition in 0..3 {
        assert_eq!(produce(&producer, "solo", partition, &values[..1]), [0]);
    }
    producer.close();
    let config =
        ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&addr, config).expect("consumer");
    let options = GroupOptions {
        group_id: "billing".into(),
        topics: vec!["solo".into()],
        instance_id: None,
        assignor: None,
        session_timeout_ms: 0,
        client_id: "routing-test".into(),
    };
    consumer.subscribe(options).expect("subscribe");
    assert_eq!(poll_values(&mut consumer, 3).len(), 3);
    consumer.commit_sync().expect("commit at the coordinator");
    assert_eq!(consumer.committed("solo", 2).expect("committed"), Some(1));
    let described =
        block_on(admin.describe_groups(&["billing".into(), "nope".into(), "billing".into()]))
            .expect("describe");
    let ids: Vec<(&str, u16)> =
        described.iter().map(|g| (g.group_id.as_str(), g.error_code)).collect();
    let not_found = ErrorCode::GroupNotFound.as_u16();
    assert_eq!(ids, [("billing", 0), ("nope", not_found), ("billing", 0)], "in the order asked");
    let offsets = block_on(admin.fetch_offsets("billing", None)).expect("offsets");
    assert_eq!(offsets.iter().map(|o| o.offset).collect::<Vec<_>>(), [1, 1, 1]);
    consumer.close().expect("close");
}

/// The fake broker's node id.
const FAKE_ID: u32 = 3;

/// What the fake broker says and counts.
#[derive(Default)]
struct Script {
    /// The two real brokers: node id and address.
    leaders: Vec<(u32, SocketAddr)>,
    fake_addr: Option<SocketAddr>,
    /// Metadata names the fake as partition 0's leader (until it answered
    /// `not leader` once).
    misroute: AtomicBool,
    not_leader_answers: AtomicUsize,
}

/// A bootstrap broker that is no broker: it answers metadata (partition 0
/// led by the first real broker, 1 by the second, or 0 by itself while
/// misrouting), hands out a producer id, and refuses partition requests
/// with `not leader`.
struct FakeBroker {
    addr: SocketAddr,
    script: Arc<Script>,
}

impl FakeBroker {
    fn start(leaders: Vec<(u32, SocketAddr)>) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Script {
            leaders,
            fake_addr: Some(addr),
            misroute: AtomicBool::new(true),
            ..Script::default()
        });
        let shared = script.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let script = shared.clone();
                std::thread::spawn(move || serve(stream, &script));
            }
        });
        FakeBroker { addr, script }
    }

    fn misroute(&self) {
        self.script.misroute.store(true, Ordering::SeqCst);
    }

    fn not_leader_answers(&self) -> usize {
        self.script.not_leader_answers.load(Ordering::SeqCst)
    }
}

/// Answers one connection's requests in turn until it closes.
fn serve(mut stream: TcpStream, script: &Script) {
    while let Some(frame) = read_frame(&mut stream) {
        let (error_code, body) = answer(&frame, script);
        let header = FrameHeader {
            api_key: frame.header.api_key,
            api_version: frame.header.api_version,
            correlation_id: frame.header.correlation_id,
            flags: FLAG_RESPONSE,
            error_code,
            body_bytes: 0,
            payload_bytes: 0,
        };
        if stream.write_all(&encode_frame(header, &body, &[])).is_err() {
            return;
        }
    }
}

fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut head).ok()?;
    let header = FrameHeader::decode(&head, 64 << 20).ok()?;
    let mut bytes = head.to_vec();
    bytes.resize(header.frame_bytes(), 0);
    stream.read_exact(&mut bytes[FRAME_HEADER_BYTES..]).ok()?;
    Frame::decode(&bytes, 64 << 20).ok()
}

fn encoded(message: &impl Message) -> Vec<u8> {
    message.encode().expect("encode").to_vec()
}

/// The answer's frame error code and body.
fn answer(frame: &Frame, script: &Script) -> (u16, Vec<u8>) {
    let not_leader = |what: &str| {
        script.misroute.store(false, Ordering::SeqCst);
        script.not_leader_answers.fetch_add(1, Ordering::SeqCst);
        (ErrorCode::NotLeader.as_u16(), format!("broker {FAKE_ID} does not lead {what}"))
    };
    match ApiKey::from_u16(frame.header.api_key) {
        Some(ApiKey::Metadata) => {
            let request = MetadataRequest::decode(frame.body()).expect("metadata request");
            (0, encoded(&metadata(script, request.topics)))
        }
        Some(ApiKey::InitProducerId) => {
            let answer =
                InitProducerIdResponse { error_code: 0, producer_id: 4242, producer_epoch: 0 };
            (0, encoded(&answer))
        }
        Some(ApiKey::Produce) => {
            let request = ProduceRequest::decode(frame.body()).expect("produce request");
            let partitions = request
                .partitions
                .iter()
                .map(|p| {
                    let (error_code, message) = not_leader(&format!("{}/{}", p.topic, p.partition));
                    ProducePartitionResult {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        error_code,
                        message,
                        base_offset: 0,
                        last_offset: 0,
                    }
                })
                .collect();
            (0, encoded(&ProduceResponse { partitions }))
        }
        Some(ApiKey::Fetch) => {
            let request = FetchRequest::decode(frame.body()).expect("fetch request");
            let partitions = request
                .partitions
                .iter()
                .map(|p| {
                    let (error_code, message) = not_leader(&format!("{}/{}", p.topic, p.partition));
                    FetchPartitionResult {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        error_code,
                        message,
                        high_watermark: 0,
                        log_start_offset: 0,
                        records: Slice::default(),
                    }
                })
                .collect();
            (0, encoded(&FetchResponse { partitions }))
        }
        Some(ApiKey::ListOffsets) => {
            let request = ListOffsetsRequest::decode(frame.body()).expect("list offsets request");
            let partitions = request
                .partitions
                .iter()
                .map(|p| {
                    let (error_code, message) = not_leader(&format!("{}/{}", p.topic, p.partition));
                    ListOffsetsResult {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        error_code,
                        message,
                        offset: 0,
                        timestamp: 0,
                    }
                })
                .collect();
            (0, encoded(&ListOffsetsResponse { partitions }))
        }
        _ => {
            let message = format!("the fake broker does not speak api {}", frame.header.api_key);
            (ErrorCode::UnsupportedApi.as_u16(), encoded(&ErrorResponse { message }))
        }
    }
}

/// Topic `routed` (two partitions) and the brokers, as the script says.
fn metadata(script: &Script, topics: Option<Vec<String>>) -> MetadataResponse {
    let broker = |node_id: u32, at: SocketAddr| BrokerMeta {
        node_id,
        host: at.ip().to_string(),
        port: at.port(),
        shards: 0,
        rack: None,
        status: "alive".into(),
    };
    let mut brokers: Vec<BrokerMeta> =
        script.leaders.iter().map(|&(id, at)| broker(id, at)).collect();
    brokers.extend(script.fake_addr.map(|at| broker(FAKE_ID, at)));
    let partition = |partition: u32, leader: u32| PartitionMeta {
        partition,
        leader: Some(leader),
        leader_epoch: 1,
        replicas: vec![leader],
        isr: vec![leader],
        target_replicas: vec![],
        shard: None,
    };
    let first_leader =
        if script.misroute.load(Ordering::SeqCst) { FAKE_ID } else { script.leaders[0].0 };
    let routed = TopicMeta {
        name: "routed".into(),
        error_code: 0,
        partitions: vec![partition(0, first_leader), partition(1, script.leaders[1].0)],
    };
    let topics = topics
        .unwrap_or_else(|| vec!["routed".into()])
        .into_iter()
        .map(|name| match name.as_str() {
            "routed" => routed.clone(),
            _ => TopicMeta {
                name,
                error_code: ErrorCode::UnknownTopicOrPartition.as_u16(),
                partitions: vec![],
            },
        })
        .collect();
    MetadataResponse { cluster_id: "fake".into(), controller_id: Some(FAKE_ID), brokers, topics }
}

#[test]
fn each_partition_goes_to_its_leader_and_a_not_leader_answer_reroutes_it_after_a_refresh() {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let (a, b) = (start_node(dir_a.path(), 1), start_node(dir_b.path(), 2));
    let (admin_a, admin_b) =
        (Admin::connect(&addr(&a)).expect("admin"), Admin::connect(&addr(&b)).expect("admin"));
    for admin in [&admin_a, &admin_b] {
        block_on(admin.create_topic("routed", 2, vec![])).expect("create");
    }
    let leaders = [&a, &b].map(|n| n.client_addr().expect("listening"));
    let fake = FakeBroker::start(vec![(1, leaders[0]), (2, leaders[1])]);
    let bootstrap = fake.addr.to_string();

    // Partition 0's first batch goes to the fake, which refuses it; after
    // a refresh it goes to broker 1. Partition 1's go to broker 2.
    let config = ProducerConfig { linger_ms: 0, ..ProducerConfig::default() };
    let producer = Producer::connect(&bootstrap, config).expect("producer");
    let values = |p: u32| (0..10).map(|i| format!("p{p}-{i}")).collect::<Vec<_>>();
    assert_eq!(produce(&producer, "routed", 0, &values(0)), (0..10).collect::<Vec<u64>>());
    assert_eq!(produce(&producer, "routed", 1, &values(1)), (0..10).collect::<Vec<u64>>());
    producer.close();
    assert!(fake.not_leader_answers() >= 1, "the stale leader was asked first");
    let end = |admin: &Admin, partition| {
        block_on(admin.list_offset("routed", partition, LATEST_TIMESTAMP)).expect("offset")
    };
    assert_eq!([end(&admin_a, 0), end(&admin_a, 1)], [10, 0], "broker 1 got partition 0 only");
    assert_eq!([end(&admin_b, 0), end(&admin_b, 1)], [0, 10], "broker 2 got partition 1 only");

    // The consumer's first fetch of partition 0 goes to the fake too:
    // refused, it is fetched from broker 1 once the view says so, from the
    // same position. Nothing is lost or read twice.
    fake.misroute();
    let before = fake.not_leader_answers();
    let config = ConsumerConfig { request_timeout_ms: 5_000, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&bootstrap, config).expect("consumer");
    consumer.assign("routed", &[], SeekTo::Offset(0)).expect("assign");
    let got = poll_values(&mut consumer, 20);
    assert_eq!(by_partition(&got), BTreeMap::from([(0, values(0)), (1, values(1))]));
    assert!(fake.not_leader_answers() > before, "the fetch met the stale leader first");

    // List offsets (a seek) is rerouted the same way.
    fake.misroute();
    let before = fake.not_leader_answers();
    let mut seeking = Consumer::connect(&bootstrap, ConsumerConfig::default()).expect("consumer");
    seeking.assign("routed", &[0], SeekTo::Latest).expect("a seek at the leader");
    assert_eq!(seeking.position("routed", 0), Some(10));
    assert!(fake.not_leader_answers() > before, "the seek met the stale leader first");
}
