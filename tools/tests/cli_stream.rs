mod common;
use common::*;

// `mamba produce` and `mamba consume` as streams: consuming across a
// broker restart, `--from` forms, `--format` templates and JSON lines,
// `--value-file`.

use mamba_net::client::{block_on, ProducerRecord};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Bound on each `mamba` run fed standard input.
const INPUT_WAIT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `records` and waits for every answer.
fn send_all(broker: &Broker, records: Vec<ProducerRecord>) {
    let producer = producer(broker);
    let sent: Vec<_> = records.into_iter().map(|r| producer.send(r).expect("send")).collect();
    producer.flush();
    for s in sent {
        block_on(s).expect("acknowledged");
    }
    producer.close();
}

/// The lines of a child's output as they arrive.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_lines(rx: &Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("line {} of {n} did not come: {e}", i + 1))
        })
        .collect()
}

#[test]
fn consume_follows_across_a_broker_restart_and_prints_every_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let addr = broker.addr.clone();
    create_topic(&addr, "follow", 1);
    let values = |range: std::ops::Range<usize>| {
        range.map(|i| record("follow", None, &format!("r{i}"))).collect::<Vec<_>>()
    };
    send_all(&broker, values(0..5));
    let mut consume = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["consume", "follow", "--count", "10", "--brokers", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mamba consume");
    let stdout = lines_of(consume.stdout.take().expect("stdout"));
    let stderr = lines_of(consume.stderr.take().expect("stderr"));
    let mut seen = next_lines(&stdout, 5);

    let data_dir = broker.stop();
    let lost =
        stderr.recv_timeout(Duration::from_secs(10)).expect("a line saying it lost the broker");
    assert!(lost.contains("lost the broker") && lost.contains(&addr), "{lost}");
    let broker = Broker::start_on(&data_dir, 1, &addr);
    send_all(&broker, values(5..10));
    seen.extend(next_lines(&stdout, 5));
    let status = consume.wait().expect("wait");
    assert!(status.success(), "{status}");
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(seen, expected, "every record once, in order");
    let back: Vec<String> = stderr.iter().collect();
    assert_eq!(back.len(), 1, "one line when it is back: {back:?}");
    assert!(back[0].contains("answers again"), "{back:?}");
    broker.stop();
}

#[test]
fn consume_stops_after_the_reconnect_timeout_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    let addr = broker.addr.clone();
    create_topic(&addr, "gone", 1);
    let mut consume = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["consume", "gone", "--reconnect-timeout", "1s", "--brokers", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mamba consume");
    let stderr = lines_of(consume.stderr.take().expect("stderr"));
    // Once it has asked at least once, the broker goes away for good.
    std::thread::sleep(Duration::from_millis(300));
    broker.kill9();
    let status = consume.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    let lines: Vec<String> = stderr.iter().collect();
    assert!(lines[0].contains("lost the broker"), "{lines:?}");
    let last = lines.last().expect("an error");
    assert!(last.contains("no broker answered for 1s") && last.contains(&addr), "{last}");
}

#[test]
fn consume_from_picks_records_by_position_and_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "pos", 3);
    // Ten records in partition 2: the first five from 2023, the rest now.
    let old_ms = 1_700_000_000_000; // 2023-11-14T22:13:20Z
    let records = (0..10)
        .map(|i| ProducerRecord {
            partition: Some(2),
            timestamp_ms: (i < 5).then_some(old_ms),
            ..record("pos", None, &format!("v{i}"))
        })
        .collect();
    send_all(&broker, records);
    let consume = |from: &str, count: &str| {
        let out = mamba_cli(
            &broker.addr,
            &[
                "consume",
                "pos",
                "-p",
                "2",
                "--from",
                from,
                "--count",
                count,
                "--timeout-ms",
                "5000",
            ],
        );
        assert!(out.status.success(), "--from {from}: {}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(consume("-3", "3"), ["v7", "v8", "v9"], "three before the end");
    assert_eq!(consume("-30", "2"), ["v0", "v1"], "not before the start");
    assert_eq!(consume("+2", "2"), ["v2", "v3"], "two after the start");
    assert_eq!(consume("4", "1"), ["v4"]);
    assert_eq!(consume("@2024-01-01T00:00:00Z", "5"), ["v5", "v6", "v7", "v8", "v9"]);
    assert_eq!(consume("@-10m", "1"), ["v5"], "ten minutes ago");
    assert_eq!(consume("@2023-01-01T00:00:00Z", "1"), ["v0"]);

    let out = mamba_cli(&broker.addr, &["consume", "pos", "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = text(&out.stderr);
    for form in ["earliest", "latest", "-N (N before the end)", "+N", "@-10m", "\"yesterday\""] {
        assert!(err.contains(form), "names {form}: {err}");
    }
    let out = mamba_cli(&broker.addr, &["consume", "pos", "-p", "2", "--from", "9000"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("partition 2 of topic pos has offsets 0..10; 9000 is beyond the end"),
        "{err}"
    );
    broker.stop();
}

#[test]
fn templates_round_trip_from_produce_to_consume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "tpl", 1);
    let out = mamba_with_input(
        &broker.addr,
        &["produce", "tpl", "--format", "%k:%v\\n"],
        b"a:1\nb:2:x\n:\xff\xfe\n",
        INPUT_WAIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out =
        mamba_cli(&broker.addr, &["consume", "tpl", "--format", "%p %o %k=%v\\n", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"0 0 a=1\n0 1 b=2:x\n0 2 =\xff\xfe\n", "{}", text(&out.stdout));

    // Text that does not follow the template stops the run at that record;
    // the ones before it are sent.
    let out = mamba_with_input(
        &broker.addr,
        &["produce", "tpl", "--format", "%k:%v\\n", "--output", "json"],
        b"c:3\nno separator\nd:4\n",
        INPUT_WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value =
        serde_json::from_str(text(&out.stderr).trim()).expect("a JSON error");
    assert_eq!(error["error"]["code"], 1004, "{error}");
    assert_eq!(error["error"]["name"], "bad input");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("record 2") && message.contains("%k"), "{message}");
    assert_eq!(consume_all(&broker.addr, "tpl", 4)[3].value, b"3", "record 1 was sent");
    // Its acknowledgement was printed before the error.
    let acks: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON ack")).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!((&acks[0]["record"], &acks[0]["offset"]), (&1.into(), &3.into()), "{acks:?}");

    // Flags that say the same thing twice are refused.
    for args in [
        &["produce", "tpl", "--format", "%k:%v\\n", "--key", "k"][..],
        &["produce", "tpl", "--format", "json", "--delimiter", "\\0"],
        &["produce", "tpl", "--format", "%v;", "--key-separator", ":"],
        &["produce", "tpl", "--format", "%k%v\\n"],
        &["consume", "tpl", "--format", "%v", "--output", "json"],
    ] {
        let out = mamba_with_input(&broker.addr, args, b"", INPUT_WAIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
    broker.stop();
}

#[test]
fn json_lines_carry_keys_headers_partitions_and_base64_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "js", 2);
    let input = br#"{"key": "k", "value": "v", "headers": {"h": "x"}, "partition": 1}
{"value_b64": "/wAB", "partition": 0, "timestamp_ms": 1700000000000}
"#;
    let out =
        mamba_with_input(&broker.addr, &["produce", "js", "--format", "json"], input, INPUT_WAIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = mamba_cli(&broker.addr, &["consume", "js", "-p", "1", "-o", "json", "--count", "1"]);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON record");
    assert_eq!(
        (&got["partition"], &got["key"], &got["value"], &got["headers"]["h"]),
        (&1.into(), &"k".into(), &"v".into(), &"x".into()),
        "{got}"
    );
    let zero = consume_all(&broker.addr, "js", 2)
        .into_iter()
        .find(|r| r.partition == 0)
        .expect("the record of partition 0");
    assert_eq!((zero.value, zero.timestamp_ms), (vec![0xff, 0, 1], 1_700_000_000_000));

    let out = mamba_with_input(
        &broker.addr,
        &["produce", "js", "--format", "json"],
        b"{\"value\": \"fine\"}\n{\"value\": 7}\n",
        INPUT_WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("line 2") && err.contains("each line is"), "{err}");
    broker.stop();
}

#[test]
fn value_files_send_each_file_as_one_binary_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "files", 1);
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let (first, second) = (dir.path().join("first.bin"), dir.path().join("second.bin"));
    std::fs::write(&first, &all_bytes).expect("write");
    std::fs::write(&second, b"\n\0\xff").expect("write");
    let (first, second) = (first.to_string_lossy(), second.to_string_lossy());
    let out = mamba_cli(
        &broker.addr,
        &["produce", "files", "--value-file", &first, "--value-file", &second, "-k", "bin"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = consume_all(&broker.addr, "files", 2);
    let got: Vec<(Option<&[u8]>, &[u8])> =
        records.iter().map(|r| (r.key.as_deref(), r.value.as_slice())).collect();
    assert_eq!(got, [(Some(&b"bin"[..]), &all_bytes[..]), (Some(b"bin"), b"\n\0\xff")]);

    let missing = dir.path().join("missing.bin");
    let out =
        mamba_cli(&broker.addr, &["produce", "files", "--value-file", &missing.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.bin"), "{}", text(&out.stderr));
    broker.stop();
}
