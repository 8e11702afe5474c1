//! The real `mamba serve` binary on loopback: produce/consume through the
//! Rust client and the CLI, restarts, kill -9, hostile bytes.

use mamba_net::client::{
    block_on, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, SeekTo,
};
use mamba_net::protocol::{ConfigEntry, ErrorCode};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn keyed_records_round_trip_once_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let admin = Admin::connect(&broker.addr).expect("admin");
    block_on(admin.create_topic("keyed", 4, vec![])).expect("create");
    let producer = producer(&broker);
    let mut sends = Vec::new();
    for i in 0..400 {
        let key = format!("key-{}", i % 10);
        sends.push((
            key.clone(),
            i,
            producer.send(record("keyed", Some(&key), &format!("{key}:{i}"))).expect("send"),
        ));
    }
    producer.flush();
    let mut partition_of: HashMap<String, u32> = HashMap::new();
    for (key, _, send) in sends {
        let meta = block_on(send).expect("acknowledged");
        let p = *partition_of.entry(key).or_insert(meta.partition);
        assert_eq!(p, meta.partition, "same key, same partition");
    }
    let records = consume_all(&broker.addr, "keyed", 400);
    assert_eq!(records.len(), 400, "every record once");
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for r in &records {
        let value = String::from_utf8(r.value.clone()).expect("utf8");
        let (key, seq) = value.split_once(':').expect("key:seq");
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(partition_of[key], r.partition);
        let seq: i64 = seq.parse().expect("seq");
        let last = last_seq.entry(key.to_string()).or_insert(-1);
        assert!(seq > *last, "per-key order kept");
        *last = seq;
    }
    // Both shards own partitions: connections to either shard reach all.
    let described = block_on(admin.describe_topic("keyed")).expect("describe");
    assert!(
        described.partitions.iter().any(|p| p.shard == Some(0))
            && described.partitions.iter().any(|p| p.shard == Some(1))
    );
    producer.close();
    broker.stop();
}

#[test]
fn data_survives_a_clean_restart_and_memory_topics_start_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let admin = Admin::connect(&broker.addr).expect("admin");
    block_on(admin.create_topic("kept", 2, vec![])).expect("create");
    let memory = vec![ConfigEntry { name: "storage".into(), value: "memory".into() }];
    block_on(admin.create_topic("cache", 1, memory)).expect("create memory topic");
    let producer = producer(&broker);
    let sends: Vec<_> = (0..50)
        .map(|i| producer.send(record("kept", None, &format!("v{i}"))).expect("send"))
        .collect();
    let cached = producer.send(record("cache", None, "fleeting")).expect("send");
    producer.flush();
    for s in sends {
        block_on(s).expect("ack");
    }
    block_on(cached).expect("ack");
    assert_eq!(consume_all(&broker.addr, "cache", 1).len(), 1);
    producer.close();
    drop(admin);
    let dir_path = broker.stop();

    let broker = Broker::start(&dir_path, 2);
    let mut values: Vec<String> = consume_all(&broker.addr, "kept", 50)
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap_or(0));
    assert_eq!(values, (0..50).map(|i| format!("v{i}")).collect::<Vec<_>>());
    let mut consumer =
        Consumer::connect(&broker.addr, ConsumerConfig::default()).expect("consumer");
    consumer.assign("cache", &[], SeekTo::Earliest).expect("memory topic still exists");
    assert!(
        consumer.poll(Duration::from_millis(200)).expect("poll").is_empty(),
        "memory data is gone"
    );
    broker.stop();
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "durable", 3);
    let producer = producer(&broker);
    let mut acked = Vec::new();
    for i in 0..300 {
        let value = format!("record-{i}-{}", "z".repeat(i % 50));
        let send =
            producer.send(record("durable", Some(&format!("k{}", i % 7)), &value)).expect("send");
        acked.push((value, send));
    }
    producer.flush();
    let acked: Vec<(String, u32, u64)> = acked
        .into_iter()
        .map(|(v, s)| {
            let m = block_on(s).expect("acks=all");
            (v, m.partition, m.offset.expect("offset"))
        })
        .collect();
    let dir_path = broker.kill9();

    let broker = Broker::start(&dir_path, 2);
    let read = consume_all(&broker.addr, "durable", acked.len());
    let by_position: HashMap<(u32, u64), Vec<u8>> =
        read.into_iter().map(|r| ((r.partition, r.offset), r.value)).collect();
    for (value, partition, offset) in acked {
        assert_eq!(
            by_position.get(&(partition, offset)).map(Vec::as_slice),
            Some(value.as_bytes()),
            "acked record at {partition}/{offset}"
        );
    }
    broker.stop();
}

#[test]
fn hostile_bytes_close_only_their_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "safe", 1);

    // Random bytes.
    let mut garbage = TcpStream::connect(&broker.addr).expect("connect");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    garbage.write_all(&noise).expect("write");
    // A frame claiming a huge length: answered with an error, then closed.
    let mut huge = TcpStream::connect(&broker.addr).expect("connect");
    let mut head = [0u8; 32];
    head[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    head[8..12].copy_from_slice(&7u32.to_le_bytes());
    huge.write_all(&head).expect("write");
    huge.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = Vec::new();
    huge.read_to_end(&mut answer).expect("read until closed");
    assert!(answer.len() >= 32, "an error answer comes back before the close");
    assert_eq!(
        u32::from_le_bytes([answer[8], answer[9], answer[10], answer[11]]),
        7,
        "correlation id echoed"
    );
    assert_eq!(u16::from_le_bytes([answer[14], answer[15]]), ErrorCode::MessageTooLarge.as_u16());
    // A truncated frame, then the client goes away.
    let mut truncated = TcpStream::connect(&broker.addr).expect("connect");
    truncated.write_all(&[64, 0, 0, 0, 6, 0]).expect("write");
    drop(truncated);
    drop(garbage);

    // The broker still serves everyone else, and lost nothing.
    let producer = producer(&broker);
    send_and_wait(&producer, record("safe", None, "still here")).expect("ack");
    assert_eq!(consume_all(&broker.addr, "safe", 1)[0].value, b"still here");
    broker.stop();
}

#[test]
fn unknown_topics_and_bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let admin = Admin::connect(&broker.addr).expect("admin");
    let err = block_on(admin.describe_topic("missing")).expect_err("unknown topic");
    assert!(err.to_string().contains("unknown topic"), "{err}");
    let producer = producer(&broker);
    assert!(producer.send(record("missing", None, "x")).is_err());
    let dup = block_on(admin.create_topic("t", 1, vec![]))
        .and_then(|()| block_on(admin.create_topic("t", 1, vec![])));
    assert!(matches!(
        dup,
        Err(mamba_net::client::ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. })
    ));
    let bad = block_on(admin.create_topic(
        "u",
        1,
        vec![ConfigEntry { name: "colour".into(), value: "blue".into() }],
    ));
    assert!(matches!(
        bad,
        Err(mamba_net::client::ClientError::Broker { code: ErrorCode::InvalidConfig, .. })
    ));
    broker.stop();
}

#[test]
fn cli_produces_and_consumes_and_explains_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let mamba = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
            .args(args)
            .env("MAMBA_BROKERS", &broker.addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mamba");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin");
        child.wait_with_output().expect("output")
    };
    assert!(mamba(&["topic", "create", "cli", "--partitions", "2"], "").status.success());
    let out =
        mamba(&["produce", "cli", "--key-separator", ":", "--output", "json"], "a:1\nb:2\na:3\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let acks: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[0]["partition"], acks[2]["partition"], "same key, same partition");
    let out = mamba(&["consume", "cli", "--count", "3", "--output", "json"], "");
    assert!(out.status.success());
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(records.len(), 3);
    for key in ["partition", "offset", "timestamp_ms", "key", "value", "headers"] {
        assert!(records[0].get(key).is_some(), "missing {key}");
    }
    let out = mamba(&["consume", "nope", "--count", "1"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown topic"));
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["topic", "list", "--brokers", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "names the address tried"
    );
    broker.stop();
}

#[test]
fn a_taken_port_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("listen"), "{err}");
}

#[test]
fn a_retried_produce_is_not_written_twice_and_gaps_are_refused() {
    use mamba_engine::{BatchBuilder, NewRecord};
    use mamba_net::client::Connection;
    use mamba_net::protocol::*;

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "once", 1);
    let conn = Connection::connect(&broker.addr, Duration::from_secs(5)).expect("connect");
    let (id, _) = block_on(conn.call::<_, InitProducerIdResponse>(&InitProducerIdRequest {}, &[]))
        .expect("producer id");
    let batch = |seq: u32, values: &[&str]| {
        let mut b = BatchBuilder::new().producer(id.producer_id, id.producer_epoch, seq);
        for v in values {
            b.push(NewRecord { value: v.as_bytes().to_vec(), ..NewRecord::default() });
        }
        b.build().expect("batch")
    };
    let produce = |conn: &Connection, batch: &mamba_engine::Batch| {
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 5000,
            partitions: vec![ProducePartition {
                topic: "once".into(),
                partition: 0,
                batch: Slice { offset: 0, len: batch.as_bytes().len() as u32 },
            }],
        };
        let (answer, _) = block_on(conn.call::<_, ProduceResponse>(&request, &[batch.as_bytes()]))
            .expect("answer");
        answer.partitions.into_iter().next().expect("one partition")
    };
    let first = batch(0, &["a", "b"]);
    let original = produce(&conn, &first);
    assert_eq!((original.error_code, original.base_offset, original.last_offset), (0, 0, 1));
    let retry = produce(&conn, &first);
    assert_eq!(
        (retry.error_code, retry.base_offset, retry.last_offset),
        (0, 0, 1),
        "a retry gets the original offsets"
    );
    let next = produce(&conn, &batch(2, &["c"]));
    assert_eq!((next.error_code, next.base_offset), (0, 2));
    let gap = produce(&conn, &batch(9, &["x"]));
    assert_eq!(
        gap.error_code,
        ErrorCode::OutOfOrderSequence.as_u16(),
        "a gap is refused: {}",
        gap.message
    );

    // After a restart the broker still knows what it wrote.
    drop(conn);
    let dir_path = broker.stop();
    let broker = Broker::start(&dir_path, 2);
    let conn = Connection::connect(&broker.addr, Duration::from_secs(5)).expect("connect");
    let again = produce(&conn, &first);
    assert_eq!((again.error_code, again.base_offset), (0, 0), "still a duplicate after a restart");
    let values: Vec<Vec<u8>> =
        consume_all(&broker.addr, "once", 3).into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], "each record once");
    broker.stop();
}

#[test]
fn bad_configs_and_unusable_data_directories_are_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("colour"), "{err}");

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open data directory") && err.contains("not-a-dir"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn acks_1_and_0_produce_and_the_data_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "fast", 1);
    for acks in [mamba_net::client::Acks::Leader, mamba_net::client::Acks::None] {
        let config = ProducerConfig { acks, ..ProducerConfig::default() };
        let producer = Producer::connect(&broker.addr, config).expect("producer");
        let meta = send_and_wait(&producer, record("fast", None, "quick")).expect("answered");
        assert_eq!(meta.offset.is_some(), acks == mamba_net::client::Acks::Leader);
        producer.close();
    }
    assert_eq!(consume_all(&broker.addr, "fast", 2).len(), 2);
    broker.stop();
}

#[test]
fn a_long_poll_returns_data_produced_while_it_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "tail", 2);
    let mut consumer =
        Consumer::connect(&broker.addr, ConsumerConfig::default()).expect("consumer");
    consumer.assign("tail", &[], SeekTo::Latest).expect("assign");
    let addr = broker.addr.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let producer = Producer::connect(&addr, ProducerConfig::default()).expect("producer");
        send_and_wait(&producer, record("tail", Some("k"), "late")).expect("ack");
        producer.close();
    });
    // One poll with a long timeout: it must come back with the record.
    let records = consumer.poll(Duration::from_secs(30)).expect("poll");
    writer.join().expect("writer");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"late");
    broker.stop();
}

#[test]
fn a_producer_reconnects_after_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let addr = broker.addr.clone();
    create_topic(&addr, "again", 1);
    let producer = producer(&broker);
    send_and_wait(&producer, record("again", None, "before")).expect("ack");
    let dir_path = broker.stop();
    let broker = Broker::start_on(&dir_path, 1, &addr);
    let meta = send_and_wait(&producer, record("again", None, "after"))
        .expect("acknowledged after reconnecting");
    assert_eq!(meta.offset, Some(1));
    let values: Vec<Vec<u8>> =
        consume_all(&broker.addr, "again", 2).into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"before".to_vec(), b"after".to_vec()]);
    producer.close();
    broker.stop();
}

#[test]
fn an_idempotent_producer_goes_on_after_giving_up_on_a_batch() {
    // A batch whose retries run out while the broker is away may or may not
    // have been written; the batches after it must not be refused forever
    // as out of order.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let addr = broker.addr.clone();
    create_topic(&addr, "gap", 1);
    // Short timeouts: the batch is given up on in seconds, not minutes.
    let config = ProducerConfig {
        retries: 1,
        retry_backoff_ms: 10,
        request_timeout_ms: 2_000,
        delivery_timeout_ms: 4_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&addr, config).expect("producer");
    send_and_wait(&producer, record("gap", None, "before")).expect("ack");
    let dir_path = broker.stop();
    send_and_wait(&producer, record("gap", None, "while away")).expect_err("no broker to take it");
    let broker = Broker::start_on(&dir_path, 1, &addr);
    for i in 0..3 {
        send_and_wait(&producer, record("gap", None, &format!("after {i}")))
            .expect("acknowledged after giving up on the batch before");
    }
    let values: Vec<String> = consume_all(&broker.addr, "gap", 4)
        .into_iter()
        .map(|r| String::from_utf8(r.value).expect("utf8"))
        .collect();
    assert_eq!(values, ["before", "after 0", "after 1", "after 2"]);
    producer.close();
    broker.stop();
}

#[test]
fn a_pipelined_producer_loses_nothing_and_keeps_order_across_a_kill_9() {
    use mamba_net::client::{Delivery, DeliveryHandler, SendRecord};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let addr = broker.addr.clone();
    create_topic(&addr, "piped", 2);
    // Small batches, five in flight per partition: many requests overlap.
    let config = ProducerConfig {
        batch_bytes: 4096,
        linger_ms: 1,
        max_in_flight: 5,
        retry_backoff_ms: 50,
        ..ProducerConfig::default()
    };
    let acked: Arc<Mutex<HashMap<u64, (u32, u64)>>> = Arc::default();
    let (acks, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handler: DeliveryHandler = {
        let (acked, acks, errors) = (acked.clone(), acks.clone(), errors.clone());
        Arc::new(move |d: &Delivery<'_>| match d.outcome {
            Ok(base) => {
                let base = base.expect("acks=all gives offsets");
                let mut acked = acked.lock().expect("lock");
                for &(delta, tag) in d.tagged {
                    assert!(acked.insert(tag, (d.partition, base + u64::from(delta))).is_none());
                }
                acks.fetch_add(d.tagged.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(d.tagged.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let producer = Producer::connect_with_delivery(&addr, config, handler).expect("producer");
    const RECORDS: u64 = 20_000;
    let sender = {
        let producer = producer.clone();
        std::thread::spawn(move || {
            for i in 0..RECORDS {
                let key = format!("k{}", i % 8);
                let value = format!("{key}:{i}:{}", "x".repeat(100));
                let record = SendRecord {
                    topic: "piped",
                    key: Some(key.as_bytes()),
                    value: value.as_bytes(),
                    ..SendRecord::default()
                };
                producer.send_tagged(&record, i).expect("send");
            }
            producer.flush();
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.load(Ordering::Relaxed) < RECORDS / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir_path = broker.kill9();
    let acked_at_kill = acks.load(Ordering::Relaxed);
    assert!(acked_at_kill < RECORDS, "the broker died mid-stream");
    let broker = Broker::start_on(&dir_path, 2, &addr);
    sender.join().expect("sender");
    assert_eq!(errors.load(Ordering::Relaxed), 0, "retries carried every batch through");
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len() as u64, RECORDS);
    let records = consume_all(&broker.addr, "piped", RECORDS as usize);
    if records.len() as u64 != RECORDS {
        let seen: std::collections::HashSet<(u32, u64)> =
            records.iter().map(|r| (r.partition, r.offset)).collect();
        let mut missing: Vec<(u64, (u32, u64))> =
            acked.iter().filter(|(_, at)| !seen.contains(at)).map(|(i, at)| (*i, *at)).collect();
        missing.sort();
        let ends: Vec<(u32, u64)> = (0..2)
            .map(|p| {
                (
                    p,
                    records
                        .iter()
                        .filter(|r| r.partition == p)
                        .map(|r| r.offset)
                        .max()
                        .unwrap_or(0),
                )
            })
            .collect();
        eprintln!(
            "missing {} e.g. {:?}; read up to {ends:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    assert_eq!(records.len() as u64, RECORDS, "every record exactly once");
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &records {
        let value = String::from_utf8(r.value.clone()).expect("utf8");
        let mut parts = value.split(':');
        let (key, i) = (parts.next().expect("key"), parts.next().expect("i"));
        let i: u64 = i.parse().expect("index");
        assert_eq!(acked[&i], (r.partition, r.offset), "acknowledged where it was read");
        let previous = last.insert(key.to_string(), i as i64).unwrap_or(-1);
        assert!(i as i64 > previous, "per-key order kept: {key} {i} after {previous}");
    }
    producer.close();
    broker.stop();
}

#[test]
fn a_consumer_reads_ahead_yet_seeks_and_hands_out_records_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "ahead", 1);
    let config = ProducerConfig { batch_bytes: 1024, linger_ms: 0, ..ProducerConfig::default() };
    let producer = Producer::connect(&broker.addr, config).expect("producer");
    let sends: Vec<_> = (0..300)
        .map(|i| producer.send(record("ahead", None, &format!("v{i}"))).expect("send"))
        .collect();
    producer.flush();
    for send in sends {
        block_on(send).expect("acknowledged");
    }
    // Small fetches: each poll returns part of the log and sends the next
    // fetch before returning.
    let small = ConsumerConfig { partition_max_bytes: 2048, ..ConsumerConfig::default() };
    let mut consumer = Consumer::connect(&broker.addr, small).expect("consumer");
    consumer.assign("ahead", &[0], SeekTo::Earliest).expect("assign");
    let mut offsets = Vec::new();
    while offsets.len() < 300 {
        let n = consumer
            .poll_each(Duration::from_secs(5), |d| {
                assert_eq!(d.record.value(), format!("v{}", d.record.offset.0).as_bytes());
                offsets.push(d.record.offset.0);
            })
            .expect("poll");
        assert!(n > 0, "data is there");
    }
    assert_eq!(offsets, (0..300).collect::<Vec<u64>>(), "each record once, in order");
    // A seek drops what was read ahead.
    consumer.seek("ahead", 0, SeekTo::Offset(42)).expect("seek");
    let first = consumer.poll(Duration::from_secs(5)).expect("poll");
    assert_eq!(first.first().map(|r| r.offset), Some(42));
    producer.close();
    broker.stop();
}

#[test]
fn the_broker_runs_without_transparent_huge_pages() {
    // THP stalls (2 MiB clears, compaction) showed up as tens of ms in the
    // produce latency tail; the broker turns them off for itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id()))
        .expect("proc status");
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:"));
    if let Some(line) = thp {
        assert!(line.ends_with('0'), "{line}");
    }
    broker.stop();
}

#[test]
fn the_broker_raises_its_open_file_limit() {
    // Two descriptors per connection: a soft limit of 256 would refuse
    // connections long before the configured maximum.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"ulimit -Sn 256 && exec "$@""#, "sh", env!("CARGO_BIN_EXE_mamba")])
        .args(serve_args(dir.path(), 1, "127.0.0.1:0"));
    let broker = Broker::launch(command, dir.path());
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", broker.child.id())).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    assert!(broker.ready.contains(&format!("open_files_max=Some({hard})")), "{}", broker.ready);
    broker.stop();
}

/// Sends `count` records of about 1 KiB to one partition, one batch each.
fn fill_partition(broker: &Broker, topic: &str, partition: u32, count: usize) {
    let producer = Producer::connect(
        &broker.addr,
        ProducerConfig { linger_ms: 0, ..ProducerConfig::default() },
    )
    .expect("producer");
    for i in 0..count {
        let mut r = record(topic, None, &format!("{i:04} {}", "x".repeat(1000)));
        r.partition = Some(partition);
        send_and_wait(&producer, r).expect("ack");
    }
    producer.close();
}

/// Every file of a partition directory with its bytes.
fn partition_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_damaged_partition_stays_offline_and_untouched_while_the_others_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let admin = Admin::connect(&broker.addr).expect("admin");
    let small = vec![ConfigEntry { name: "segment.bytes".into(), value: "65536".into() }];
    block_on(admin.create_topic("t", 2, small)).expect("create");
    fill_partition(&broker, "t", 0, 150);
    fill_partition(&broker, "t", 1, 10);
    drop(admin);
    let data = broker.stop();

    // A flipped byte in partition 0's first segment, closed by a roll.
    let p0 = data.join("topics/t/0");
    let segment = p0.join("00000000000000000000.log");
    assert!(p0.join("00000000000000000061.log").exists() || partition_files(&p0).len() > 3);
    let mut bytes = std::fs::read(&segment).expect("segment");
    // In its last batch: start-up verifies a closed segment from its last
    // index entry (reads find damage before it).
    let end = bytes.iter().rposition(|&b| b != 0).expect("data");
    bytes[end - 200] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");
    let before = partition_files(&p0);

    for _start in 0..2 {
        let broker = Broker::start(&data, 1);
        let describe = mamba_cli(&broker.addr, &["topic", "describe", "t"]);
        let text = String::from_utf8_lossy(&describe.stdout);
        let p0_line = text.lines().find(|l| l.contains("partition 0")).expect("partition 0");
        assert!(
            p0_line.contains("OFFLINE")
                && p0_line.contains("corrupt data at offset")
                && p0_line.contains("00000000000000000000.log"),
            "{text}"
        );
        assert!(text.lines().any(|l| l.contains("partition 1") && l.contains("offsets 0..10")));
        // The healthy partition serves reads and writes.
        let mut consumer =
            Consumer::connect(&broker.addr, ConsumerConfig::default()).expect("consumer");
        consumer.assign("t", &[1], SeekTo::Earliest).expect("assign");
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read.len() < 10 && Instant::now() < deadline {
            read.extend(consumer.poll(Duration::from_millis(200)).expect("poll"));
        }
        assert_eq!(read.len(), 10);
        let producer = producer(&broker);
        let mut r = record("t", None, "to the damaged one");
        r.partition = Some(0);
        match send_and_wait(&producer, r) {
            Err(mamba_net::client::ClientError::Broker { code, message }) => {
                assert_eq!(code, ErrorCode::CorruptData, "{message}");
            }
            other => panic!("expected corrupt data, got {other:?}"),
        }
        producer.close();
        broker.stop();
        assert_eq!(partition_files(&p0), before, "a start changed the damaged partition's files");
    }
}

#[test]
fn a_read_returns_the_records_before_damage_then_names_its_offset_and_nothing_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "t", 1);
    fill_partition(&broker, "t", 0, 20);
    let data = broker.stop();

    // Damage inside batch 5 of the active segment, after a clean stop: all
    // of it is below the recovery point, so it is corruption, never a
    // torn tail to cut (and its offsets are never handed out again).
    let segment = data.join("topics/t/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let mut position = 0usize;
    for _ in 0..5 {
        position += mamba_engine::batch::peek_stored_bytes(&bytes[position..]).expect("batch");
    }
    bytes[position + 200] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");

    let broker = Broker::start(&data, 1);
    let mut consumer =
        Consumer::connect(&broker.addr, ConsumerConfig::default()).expect("consumer");
    consumer.assign("t", &[0], SeekTo::Earliest).expect("assign");
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        assert!(Instant::now() < deadline, "no error after {} records", read.len());
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => read.extend(records),
            Err(e) => break e.to_string(),
        }
    };
    assert_eq!(read.len(), 5, "the five records before the damage");
    assert!(error.contains("corrupt data at offset 5"), "{error}");
    let check = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["log", "check", &data.to_string_lossy()])
        .output()
        .expect("check");
    assert_eq!(check.status.code(), Some(1));
    broker.stop();
    assert_eq!(std::fs::read(&segment).expect("segment"), bytes, "nothing was cut");
}

#[test]
fn a_topic_whose_partitions_cannot_open_is_reported_and_opens_once_the_disk_lets_it() {
    // In a cluster a topic exists once the controller committed it; a
    // broker that cannot open its partitions says so to the creator, and
    // opens them when it can (at the next change or start).
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    // A file where partition 7's directory must go: creating it fails part
    // way, after other partitions opened (as at an open-file limit).
    let blocked = dir.path().join("topics/big");
    std::fs::create_dir_all(&blocked).expect("mkdir");
    std::fs::write(blocked.join("7"), b"in the way").expect("blocker");
    let admin = Admin::connect(&broker.addr).expect("admin");
    let failed = block_on(admin.create_topic("big", 20, vec![]));
    let error = failed.expect_err("partition 7 cannot be created").to_string();
    assert!(error.contains("could not open") && error.contains('7'), "{error}");
    create_topic(&broker.addr, "small", 2);
    drop(admin);
    let data = broker.stop();
    // (A later retry may have cleared the way already.)
    let blocker = data.join("topics/big/7");
    if blocker.is_file() {
        std::fs::remove_file(&blocker).expect("unblock");
    }

    let broker = Broker::start(&data, 1);
    let admin = Admin::connect(&broker.addr).expect("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let topics =
            block_on(admin.describe_partitions(Some(vec!["big".into()]))).expect("describe");
        let open = topics[0].partitions.iter().filter(|p| p.error_code == 0).count();
        if open == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} of 20 partitions open");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(admin);
    broker.stop();
}

#[test]
fn a_broker_restarts_with_many_partitions_under_a_small_memlock_limit() {
    // 300 partitions under `ulimit -l 2048` made both shards panic in
    // glommio ("Buffer allocation failed") and the process hang.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "many", 400);
    let data = broker.stop();
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"ulimit -l 2048 && exec "$@""#, "sh", env!("CARGO_BIN_EXE_mamba")])
        .args(serve_args(&data, 2, "127.0.0.1:0"));
    let broker = Broker::launch(command, &data);
    // The 400 and the cluster's metadata log.
    assert!(broker.ready.contains("partitions=401"), "{}", broker.ready);
    broker.stop();
}

// Connections that hold resources without using them: stalled frames, idle
// sockets, a second broker on the port.

/// A broker on a free port with `config` (TOML) as its config file; data in
/// `dir/data`.
fn start_with_config(dir: &Path, shards: u32, config: &str) -> Broker {
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).expect("write config");
    let data_dir = dir.join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_mamba"));
    command.args(serve_args(&data_dir, shards, "127.0.0.1:0")).arg("--config").arg(&path);
    Broker::launch(command, &data_dir)
}

/// A connection the broker serves: one whole request made and answered,
/// so the broker reads what comes next as soon as it arrives.
fn served_connection(addr: &str) -> TcpStream {
    use mamba_net::protocol::{encode_frame, ApiVersionsRequest, FrameHeader, Message};
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = ApiVersionsRequest {}.encode().expect("encode");
    let header = FrameHeader {
        api_key: 0,
        api_version: 0,
        correlation_id: 1,
        flags: 0,
        error_code: 0,
        body_bytes: 0,
        payload_bytes: 0,
    };
    stream.write_all(&encode_frame(header, &body, &[])).expect("request");
    let mut head = [0u8; 32];
    stream.read_exact(&mut head).expect("answer");
    let frame_bytes = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize + 4;
    let mut rest = vec![0u8; frame_bytes - head.len()];
    stream.read_exact(&mut rest).expect("answer body");
    stream
}

/// Sends the 32-byte header of a produce request of `frame_bytes`, and
/// nothing after it.
fn stall_in_frame(stream: &mut TcpStream, frame_bytes: u32, correlation_id: u32) {
    let body_bytes = 16u32;
    let mut head = [0u8; 32];
    head[0..4].copy_from_slice(&(frame_bytes - 4).to_le_bytes());
    head[4..6].copy_from_slice(&6u16.to_le_bytes()); // produce
    head[8..12].copy_from_slice(&correlation_id.to_le_bytes());
    head[16..20].copy_from_slice(&body_bytes.to_le_bytes());
    head[20..24].copy_from_slice(&(frame_bytes - 32 - body_bytes).to_le_bytes());
    stream.write_all(&head).expect("header");
}

/// Reads until the broker closes `stream`; what it sent before, and when.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    stream.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut received = Vec::new();
    stream.read_to_end(&mut received).expect("the broker closes the connection");
    (received, Instant::now())
}

#[test]
fn headers_of_huge_frames_that_never_finish_do_not_stall_other_clients() {
    // 16 connections announcing 64 MiB frames (512 bytes sent in all) used
    // to reserve the whole request memory of both shards.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "live", 2);
    let mut stalled: Vec<TcpStream> = (0..16).map(|_| served_connection(&broker.addr)).collect();
    for (i, stream) in stalled.iter_mut().enumerate() {
        stall_in_frame(stream, 64 << 20, 100 + i as u32);
    }

    let addr = broker.addr.clone();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let producer = Producer::connect(&addr, ProducerConfig::default()).expect("producer");
        let sends: Vec<_> = (0..200)
            .map(|i| producer.send(record("live", None, &format!("v{i}"))).expect("send"))
            .collect();
        producer.flush();
        let acked = sends.into_iter().map(block_on).filter(Result::is_ok).count();
        let read = consume_all(&addr, "live", 200).len();
        producer.close();
        done.send((acked, read)).expect("report");
    });
    let (acked, read) = outcome
        .recv_timeout(Duration::from_secs(30))
        .expect("produce and consume finish while the stalled frames hang");
    assert_eq!((acked, read), (200, 200));
    for stream in &mut stalled {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let still_open =
            matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "a stalled frame is left alone until its deadline");
    }
    broker.stop();
}

#[test]
fn a_stalled_frame_and_an_idle_connection_are_closed_after_their_deadlines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with_config(
        dir.path(),
        1,
        "frame_receive_timeout_ms = 500\nconnections_max_idle_ms = 1000\n",
    );
    create_topic(&broker.addr, "quiet", 1);

    let start = Instant::now();
    let mut idle = TcpStream::connect(&broker.addr).expect("connect");
    let mut stalled = served_connection(&broker.addr);
    stall_in_frame(&mut stalled, 1 << 20, 7);
    let stalled_at = Instant::now();
    let (answer, closed_at) = read_until_closed(&mut stalled);
    assert!(closed_at - stalled_at >= Duration::from_millis(500), "not before the deadline");
    assert!(answer.len() >= 32, "the broker says why it closes the connection");
    assert_eq!(u32::from_le_bytes([answer[8], answer[9], answer[10], answer[11]]), 7);
    assert_eq!(u16::from_le_bytes([answer[14], answer[15]]), ErrorCode::Timeout.as_u16());

    let (nothing, closed_at) = read_until_closed(&mut idle);
    assert!(nothing.is_empty());
    assert!(closed_at - start >= Duration::from_millis(1000), "not before the idle timeout");

    // A request in flight is not idleness: a long poll twice as long as
    // the idle timeout is answered, and the connection still serves.
    use mamba_net::client::Connection;
    use mamba_net::protocol::{FetchPartition, FetchRequest, FetchResponse};
    let conn = Connection::connect(&broker.addr, Duration::from_secs(5)).expect("connect");
    let long_poll = FetchRequest {
        max_wait_ms: 2000,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![FetchPartition {
            topic: "quiet".into(),
            partition: 0,
            offset: 0,
            max_bytes: 1 << 20,
        }],
    };
    let (answer, _) = block_on(conn.call::<_, FetchResponse>(&long_poll, &[])).expect("answered");
    assert_eq!(answer.partitions[0].error_code, 0);
    let short_poll = FetchRequest { max_wait_ms: 0, ..long_poll };
    block_on(conn.call::<_, FetchResponse>(&short_poll, &[])).expect("still connected");
    broker.stop();
}

#[test]
fn idle_connections_beyond_the_limit_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with_config(dir.path(), 1, "connections_per_shard_max = 8\n");
    let mut idle: Vec<TcpStream> =
        (0..40).map(|_| TcpStream::connect(&broker.addr).expect("connect")).collect();

    create_topic(&broker.addr, "open", 1);
    let producer = producer(&broker);
    send_and_wait(&producer, record("open", None, "in")).expect("acknowledged");
    assert_eq!(consume_all(&broker.addr, "open", 1).len(), 1);
    producer.close();

    // The oldest idle connections made room.
    let (nothing, _) = read_until_closed(&mut idle[0]);
    assert!(nothing.is_empty());
    broker.stop();
}

#[test]
fn a_second_broker_on_a_served_port_fails_and_the_first_keeps_serving() {
    let (dir_a, dir_b) =
        (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let first = Broker::start(dir_a.path(), 2);
    let mut second = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(serve_args(dir_b.path(), 2, &first.addr))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second mamba serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            second.kill().expect("kill the second broker");
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    second.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    let status = status.unwrap_or_else(|| panic!("the second broker kept running: {err}"));
    assert!(!status.success());
    assert!(err.to_lowercase().contains("address already in use"), "{err}");
    assert!(!err.contains("mamba broker ready"), "{err}");

    create_topic(&first.addr, "still", 2);
    let producer = producer(&first);
    for i in 0..20 {
        send_and_wait(&producer, record("still", None, &format!("v{i}"))).expect("acknowledged");
    }
    assert_eq!(consume_all(&first.addr, "still", 20).len(), 20);
    producer.close();
    first.stop();
}

#[test]
fn many_large_frames_through_a_small_request_memory_all_arrive() {
    // Frames are charged as their bytes arrive; half-received frames that
    // spend the shared pool finish one by one in the reserve instead of
    // waiting on each other forever.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with_config(
        dir.path(),
        1,
        "frame_bytes_max = 1048576\nrequest_bytes_per_shard_max = 1572864\n",
    );
    create_topic(&broker.addr, "squeezed", 4);
    const PRODUCERS: usize = 8;
    const RECORDS: usize = 2000;
    let senders: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let addr = broker.addr.clone();
            std::thread::spawn(move || {
                let config = ProducerConfig { batch_bytes: 256 << 10, ..ProducerConfig::default() };
                let producer = Producer::connect(&addr, config).expect("producer");
                let value = "x".repeat(1000);
                let sends: Vec<_> = (0..RECORDS)
                    .map(|i| {
                        let key = format!("{p}-{}", i % 4);
                        producer.send(record("squeezed", Some(&key), &value)).expect("send")
                    })
                    .collect();
                producer.flush();
                let acked = sends.into_iter().map(block_on).filter(Result::is_ok).count();
                producer.close();
                acked
            })
        })
        .collect();
    let acked: usize = senders.into_iter().map(|s| s.join().expect("producer thread")).sum();
    assert_eq!(acked, PRODUCERS * RECORDS);
    assert_eq!(consume_all(&broker.addr, "squeezed", acked).len(), acked);
    broker.stop();
}

#[test]
fn a_zero_connection_timeout_in_the_config_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("zero.toml");
    std::fs::write(&config, "connections_max_idle_ms = 0\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zero.toml") && err.contains("connections_max_idle_ms"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn produce_prints_each_ack_as_its_line_arrives_and_takes_any_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "raw", 1);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["produce", "raw", "--output", "json", "--brokers", &broker.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mamba produce");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first acknowledgement arrives while standard input is still open.
    stdin.write_all(b"first\n").expect("write");
    stdin.flush().expect("flush");
    let ack: serde_json::Value = serde_json::from_str(
        &rx.recv_timeout(Duration::from_secs(10)).expect("an ack before the input ends"),
    )
    .expect("json ack");
    assert_eq!((ack["record"].as_u64(), ack["offset"].as_u64()), (Some(1), Some(0)), "{ack}");
    // Values are bytes, not text.
    stdin.write_all(b"\xff\xfe\nlast").expect("write");
    drop(stdin);
    let status = child.wait().expect("wait");
    assert!(status.success());
    let acks: Vec<String> = rx.iter().collect();
    assert_eq!(acks.len(), 2, "{acks:?}");
    let values: Vec<Vec<u8>> =
        consume_all(&broker.addr, "raw", 3).into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"first".to_vec(), vec![0xff, 0xfe], b"last".to_vec()]);

    // Other delimiters, and keys split from raw bytes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["produce", "raw", "--delimiter", "\\0", "--key-separator", ":"])
        .args(["--brokers", &broker.addr])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mamba produce");
    child.stdin.take().expect("stdin").write_all(b"k1:v\n1\0k2:v2\0").expect("write");
    assert!(child.wait().expect("wait").success());
    let records = consume_all(&broker.addr, "raw", 5);
    let tail: Vec<(Option<Vec<u8>>, Vec<u8>)> =
        records[3..].iter().map(|r| (r.key.clone(), r.value.clone())).collect();
    assert_eq!(
        tail,
        vec![(Some(b"k1".to_vec()), b"v\n1".to_vec()), (Some(b"k2".to_vec()), b"v2".to_vec())]
    );
    broker.stop();
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "many", 1);
    let producer = producer(&broker);
    let sends: Vec<_> = (0..2000)
        // 200 KB of output: more than a pipe holds, so the writer meets
        // the closed pipe.
        .map(|i| {
            let value = format!("record {i} {}", "x".repeat(100));
            producer.send(record("many", None, &value)).expect("send")
        })
        .collect();
    producer.flush();
    for s in sends {
        block_on(s).expect("ack");
    }
    producer.close();
    let mamba = env!("CARGO_BIN_EXE_mamba");
    let piped = |command: &str| {
        let script = format!("set -o pipefail; {command} 2>\"$0.err\" | head -2 >/dev/null");
        let err_file = dir.path().join("stderr");
        let status = Command::new("bash")
            .args(["-c", &script, &err_file.to_string_lossy()])
            .status()
            .expect("bash");
        let stderr =
            std::fs::read_to_string(format!("{}.err", err_file.display())).unwrap_or_default();
        (status, stderr)
    };
    let (status, stderr) =
        piped(&format!("{mamba} consume many --count 2000 --brokers {}", broker.addr));
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
    let data = broker.stop();
    let (status, stderr) = piped(&format!("{mamba} log dump {} --records", data.display()));
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");
}

#[test]
fn topic_admin_takes_human_units_short_flags_and_idempotent_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let cli = |args: &[&str]| mamba_cli(&broker.addr, args);
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let create = cli(&["topic", "create", "units", "-p", "1", "--segment-bytes", "256MiB"]);
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    assert_eq!(text(&create).trim(), "created topic units with 1 partition");
    let again = cli(&["topic", "create", "units", "--retention-ms", "7d", "-c", "segment.ms=1h"]);
    assert!(!again.status.success(), "a second create without --if-not-exists fails");
    let again = cli(&["topic", "create", "units", "--if-not-exists"]);
    assert!(again.status.success() && text(&again).contains("exists already"), "{}", text(&again));
    let alter = cli(&["topic", "alter", "units", "--set", "retention.ms=7d"]);
    assert!(alter.status.success(), "{}", String::from_utf8_lossy(&alter.stderr));
    let describe = text(&cli(&["topic", "describe", "units", "-o", "json"]));
    let described: serde_json::Value = serde_json::from_str(&describe).expect("json");
    assert_eq!(described["configs"]["segment.bytes"], "268435456");
    assert_eq!(described["configs"]["retention.ms"], "604800000");
    let bad = cli(&["topic", "alter", "units", "--set", "Retention.Bytes=lots"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("\"Retention.Bytes\""), "{err}");
    let bad = cli(&["topic", "alter", "units", "--set", "retention.bytes=12 parsecs"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("retention.bytes must be a size") && err.contains("256MiB"), "{err}");
    for expected in ["deleted topic units", "no topic units; nothing changed"] {
        let delete = cli(&["topic", "delete", "units", "--if-exists"]);
        assert!(delete.status.success());
        assert_eq!(text(&delete).trim(), expected);
    }
    broker.stop();
}

#[test]
fn broker_addresses_default_to_port_9400_and_bad_ones_are_not_blamed_on_the_broker() {
    let run = |brokers: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
            .args(["topic", "list", "-b", brokers])
            .output()
            .expect("run mamba");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Nothing listens on 127.0.0.2: the error names the port it tried.
    let refused = run("127.0.0.2");
    assert!(refused.contains("127.0.0.2:9400") && refused.contains("mamba serve"), "{refused}");
    let bad = run("no such host!");
    assert!(bad.contains("bad broker address") && !bad.contains("mamba serve"), "{bad}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    for (args, needle) in [
        (&["completions", "bash"][..], "consume"),
        (&["completions", "zsh"][..], "produce"),
        (&["man"][..], ".TH"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(needle), "{args:?}");
    }
}
