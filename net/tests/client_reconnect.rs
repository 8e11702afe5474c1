//! The client across silent peers and broker restarts: requests time out
//! with `ClientError::Timeout`, and `Admin` and `Consumer` go on over a new
//! connection once the broker is back.

use mamba_engine::EngineConfig;
use mamba_net::client::{
    block_on, Admin, AdminConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::server::BrokerConfig;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A broker in this process; `restart` stops it and starts it again on
/// another port, so the clients, given both addresses, must move on to the
/// next broker of their list.
struct InProcessBroker {
    node: Node,
    addr: SocketAddr,
}

impl InProcessBroker {
    fn start(dir: &Path, listen: SocketAddr) -> InProcessBroker {
        let node = Node::start(NodeConfig {
            data_dir: dir.to_path_buf(),
            engine: EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
            cluster: None,
            broker: BrokerConfig { listen, ..BrokerConfig::default() },
        })
        .expect("start node");
        let addr = node.client_addr().expect("listening");
        InProcessBroker { node, addr }
    }

    fn restart(self, dir: &Path, listen: SocketAddr) -> InProcessBroker {
        self.node.stop().expect("stop");
        InProcessBroker::start(dir, listen)
    }
}

#[test]
fn a_request_to_a_peer_that_never_answers_times_out_and_the_next_uses_a_new_connection() {
    // A "broker" that accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let admin =
        Admin::connect_with(&addr, AdminConfig { request_timeout_ms: 300 }).expect("connect");
    let started = Instant::now();
    let error = block_on(admin.list_topics()).expect_err("no answer ever comes");
    let waited = started.elapsed();
    match &error {
        ClientError::Timeout { request, waited_ms, .. } => {
            assert_eq!(*request, "metadata");
            assert!(*waited_ms >= 300, "{error}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(error.is_retriable());
    assert!(error.to_string().contains("within 3"), "names the time waited: {error}");
    assert!(waited >= Duration::from_millis(300), "not before the timeout: {waited:?}");
    assert!(waited < Duration::from_secs(5), "soon after the timeout: {waited:?}");
    // The timed out connection was closed; the next request opens another.
    let again = block_on(admin.list_topics()).expect_err("still no answer");
    assert!(matches!(again, ClientError::Timeout { .. }), "{again:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one connection per timed out request");
}

#[test]
fn admin_and_consumer_go_on_after_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::start(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    // A port for the restarted broker, free now.
    let next = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let addr = format!("{},{next}", broker.addr);
    // Short timeouts, as a vanished host's silent connections need.
    let admin =
        Admin::connect_with(&addr, AdminConfig { request_timeout_ms: 1000 }).expect("admin");
    block_on(admin.create_topic("again", 1, vec![])).expect("create");
    let send = |brokers: &str, values: &[&str]| {
        let producer = Producer::connect(brokers, ProducerConfig::default()).expect("producer");
        let sent: Vec<_> = values
            .iter()
            .map(|v| {
                let record = ProducerRecord {
                    topic: "again".into(),
                    value: v.as_bytes().to_vec(),
                    ..ProducerRecord::default()
                };
                producer.send(record).expect("send")
            })
            .collect();
        producer.flush();
        for s in sent {
            block_on(s).expect("acknowledged");
        }
        producer.close();
    };
    send(&broker.addr.to_string(), &["a", "b"]);
    let config = ConsumerConfig { request_timeout_ms: 1000, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&addr, config).expect("consumer");
    consumer.assign("again", &[], SeekTo::Earliest).expect("assign");
    let mut values = Vec::new();
    let mut poll_until = |values: &mut Vec<Vec<u8>>, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while values.len() < count && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Ok(records) => values.extend(records.into_iter().map(|r| r.value)),
                Err(e) if e.is_retriable() => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("not retriable: {e}"),
            }
        }
    };
    poll_until(&mut values, 2);

    let broker = broker.restart(dir.path(), next);
    let deadline = Instant::now() + Duration::from_secs(20);
    let topics = loop {
        match block_on(admin.list_topics()) {
            Ok(topics) => break topics,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {}
            Err(e) => panic!("admin never got an answer after the restart: {e}"),
        }
    };
    assert_eq!(topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["again"]);
    send(&next.to_string(), &["c"]);
    poll_until(&mut values, 3);
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], "each record once");
    drop(broker);
}
