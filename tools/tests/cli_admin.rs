mod common;
use common::*;

// The operator surface through the real `mamba` binary against a real
// broker: topic describe/list/offsets, growing a topic, broker info and
// health.

use mamba_net::client::{block_on, ProducerRecord};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sends `values` to one partition, each with its timestamp, and waits
/// for every acknowledgement.
fn produce(broker: &Broker, topic: &str, partition: u32, values: &[(String, i64)]) {
    let producer = producer(broker);
    let sends: Vec<_> = values
        .iter()
        .map(|(value, timestamp_ms)| {
            let record = ProducerRecord {
                topic: topic.to_string(),
                partition: Some(partition),
                value: value.as_bytes().to_vec(),
                timestamp_ms: Some(*timestamp_ms),
                ..ProducerRecord::default()
            };
            producer.send(record).expect("send")
        })
        .collect();
    producer.flush();
    for send in sends {
        block_on(send).expect("acknowledged");
    }
    producer.close();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

#[test]
fn describe_and_list_show_the_offsets_sizes_and_segments_of_what_was_produced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    cli_ok(&broker.addr, &["topic", "create", "sized", "-p", "2", "--segment-bytes", "64KiB"]);
    cli_ok(&broker.addr, &["topic", "create", "empty"]);
    let now = now_ms();
    let big: Vec<_> = (0..300).map(|i| (format!("{i:04}{}", "x".repeat(996)), now)).collect();
    // In batches of about 30 KB, so 64 KiB segments roll every few.
    for chunk in big.chunks(30) {
        produce(&broker, "sized", 0, chunk);
    }
    let small: Vec<_> = (0..5).map(|i| (format!("small-{i}"), now)).collect();
    produce(&broker, "sized", 1, &small);

    let described = &cli_json(&broker.addr, &["topic", "describe", "sized"])[0];
    let p0 = partition(described, 0);
    assert_eq!(p0["status"], "online");
    assert_eq!(p0["log_start_offset"], 0);
    assert_eq!(p0["log_end_offset"], 300);
    assert_eq!(p0["high_watermark"], 300);
    assert_eq!(p0["record_count"], 300);
    let p0_bytes = p0["size_bytes"].as_u64().expect("size_bytes");
    assert!(p0_bytes >= 300 * 1000, "300 records of 1000 bytes: {p0}");
    let p0_segments = p0["segment_count"].as_u64().expect("segment_count");
    assert!(p0_segments >= 4, "300 KB in 64 KiB segments rolled: {p0}");
    let p1 = partition(described, 1);
    assert_eq!((p1["log_end_offset"].as_u64(), p1["segment_count"].as_u64()), (Some(5), Some(1)));
    let p1_bytes = p1["size_bytes"].as_u64().expect("size_bytes");
    assert!(p1_bytes > 0);
    let totals = &described["totals"];
    assert_eq!(totals["record_count"], 305);
    assert_eq!(totals["size_bytes"], p0_bytes + p1_bytes);
    assert_eq!(totals["segment_count"], p0_segments + 1);
    assert_eq!(totals["partitions_offline"], 0);

    let text = cli_ok(&broker.addr, &["topic", "describe", "sized"]);
    let line = text.lines().find(|l| l.contains("partition 0:")).expect("partition 0 line");
    assert!(
        line.contains("offsets 0..300")
            && line.contains("(high watermark 300)")
            && line.contains("KiB in")
            && line.contains(&format!("{p0_segments} segments")),
        "{text}"
    );
    let total = text.lines().find(|l| l.trim_start().starts_with("total:")).expect("totals");
    assert!(total.contains("305 records") && total.contains("segments"), "{text}");

    let listed = cli_json(&broker.addr, &["topic", "list"]);
    let sized = listed.iter().find(|t| t["name"] == "sized").expect("sized listed");
    assert_eq!(sized["partitions"], 2);
    assert_eq!(sized["record_count"], 305);
    assert_eq!(sized["size_bytes"], p0_bytes + p1_bytes);
    let empty = listed.iter().find(|t| t["name"] == "empty").expect("empty listed");
    assert_eq!((empty["record_count"].as_u64(), empty["size_bytes"].as_u64()), (Some(0), Some(0)));
    let text = cli_ok(&broker.addr, &["topic", "list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TOPIC") && lines[0].contains("RECORDS"), "{text}");
    let row = lines.iter().find(|l| l.starts_with("sized")).expect("sized row");
    // sized, 2, 101.6, KiB, 305
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "2", "{text}");
    assert_eq!(cells[3], "KiB", "sizes for people: {text}");
    assert_eq!(cells[4], "305", "{text}");
    broker.stop();
}

#[test]
fn topic_offsets_show_where_logs_start_and_end_and_find_the_first_record_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "timed", 2);
    // An hour ago, a second apart.
    let base = now_ms() - 3_600_000;
    let records: Vec<_> = (0..3).map(|i| (format!("r{i}"), base + i * 1000)).collect();
    produce(&broker, "timed", 0, &records);

    let ends = cli_json(&broker.addr, &["topic", "offsets", "timed"]);
    assert_eq!(ends.len(), 2, "one line per partition");
    assert_eq!(
        (ends[0]["partition"].as_u64(), ends[0]["log_start_offset"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(ends[0]["high_watermark"], 3);
    assert_eq!(ends[1]["high_watermark"], 0);
    let text = cli_ok(&broker.addr, &["topic", "offsets", "timed"]);
    assert!(text.starts_with("PARTITION  START  END\n"), "{text}");
    assert!(
        text.lines().nth(1).is_some_and(|l| l.split_whitespace().eq(["0", "0", "3"])),
        "{text}"
    );

    let at = |time: String, extra: &[&str]| {
        let mut args = vec!["topic", "offsets", "timed", "--at", &time];
        args.extend_from_slice(extra);
        cli_json(&broker.addr, &args)
    };
    let exact = at(format!("@{}", base + 1000), &[]);
    assert_eq!(
        (exact[0]["offset"].as_i64(), exact[0]["timestamp_ms"].as_i64()),
        (Some(1), Some(base + 1000))
    );
    assert_eq!(exact[1]["offset"], 0, "an empty partition answers its end");
    assert!(exact[1]["timestamp_ms"].is_null(), "and no record: {}", exact[1]);
    let between = at(format!("@{}", base + 1500), &["-p", "0"]);
    assert_eq!(between.len(), 1, "-p 0 asks one partition");
    assert_eq!(between[0]["offset"], 2, "the first record at or after the time");
    let rfc3339 =
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis((base + 2000) as u64));
    assert_eq!(at(format!("@{rfc3339}"), &["-p", "0"])[0]["offset"], 2);
    let after_all = at("@-10m".to_string(), &["-p", "0"]);
    assert_eq!(after_all[0]["offset"], 3, "after every record: the end");
    assert!(after_all[0]["timestamp_ms"].is_null());
    let text = cli_ok(
        &broker.addr,
        &["topic", "offsets", "timed", "--at", &format!("@{base}"), "-p", "0"],
    );
    assert!(
        text.contains("OFFSET")
            && text.contains(
                &humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(base as u64))
                    .to_string()
            ),
        "{text}"
    );

    let (code, err) = cli_err(&broker.addr, &["topic", "offsets", "timed", "-p", "7"]);
    assert!(code == 2 && err.contains("no partition 7") && err.contains("2 partitions"), "{err}");
    let (code, err) = cli_err(&broker.addr, &["topic", "offsets", "timed", "--at", "@yesterday"]);
    assert!(code == 2 && err.contains("@-10m"), "bad times say which forms work: {err}");
    broker.stop();
}

#[test]
fn growing_a_topic_adds_partitions_that_take_records_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "grow", 2);
    produce(&broker, "grow", 1, &[("old".to_string(), now_ms())]);
    let text = cli_ok(&broker.addr, &["topic", "alter", "grow", "--set", "partitions=5"]);
    assert!(text.contains("grow now has 5 partitions") && text.contains("keyed records"), "{text}");
    let described = &cli_json(&broker.addr, &["topic", "describe", "grow"])[0];
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(5));
    let shards: Vec<u64> =
        (0..5).map(|p| partition(described, p)["shard"].as_u64().expect("shard")).collect();
    assert!(
        shards.contains(&0) && shards.contains(&1),
        "new partitions spread over shards: {shards:?}"
    );
    produce(&broker, "grow", 4, &[("new".to_string(), now_ms())]);
    let data = broker.stop();

    let broker = Broker::start(&data, 2);
    let described = &cli_json(&broker.addr, &["topic", "describe", "grow"])[0];
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(5), "the growth is durable");
    assert_eq!(partition(described, 4)["record_count"], 1);
    assert_eq!(partition(described, 1)["record_count"], 1, "old records stay where they were");
    let records = consume_all(&broker.addr, "grow", 2);
    let mut seen: Vec<(u32, String)> = records
        .iter()
        .map(|r| (r.partition, String::from_utf8_lossy(&r.value).into_owned()))
        .collect();
    seen.sort();
    assert_eq!(seen, [(1, "old".to_string()), (4, "new".to_string())]);
    let json = cli_json(&broker.addr, &["topic", "alter", "grow", "--set", "partitions=6"]);
    assert_eq!(
        (json[0]["altered"].as_str(), json[0]["partitions"].as_u64()),
        (Some("grow"), Some(6))
    );
    broker.stop();
}

#[test]
fn fewer_partitions_are_refused_with_the_reason_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "fixed", 4);
    let configs_before =
        cli_json(&broker.addr, &["topic", "describe", "fixed"])[0]["configs"].clone();

    let (code, err) = cli_err(
        &broker.addr,
        &["topic", "alter", "fixed", "--set", "partitions=2", "--set", "retention.ms=1d"],
    );
    assert_eq!(code, 1, "{err}");
    for why in ["cannot shrink to 2", "never removed", "keyed records", "offsets", "new topic"] {
        assert!(err.contains(why), "the refusal explains itself ({why}): {err}");
    }
    let out = mamba_cli(
        &broker.addr,
        &["topic", "alter", "fixed", "--set", "partitions=4", "-o", "json"],
    );
    let error: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(
        (error["error"]["code"].as_u64(), error["error"]["name"].as_str()),
        (Some(19), Some("invalid partitions"))
    );
    assert!(error["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("has 4 partitions already")));
    let (code, err) =
        cli_err(&broker.addr, &["topic", "alter", "fixed", "--set", "partitions=four"]);
    assert!(code == 2 && err.contains("\"four\""), "{err}");
    // A bad setting next to a good count: checked first, so nothing grows.
    let (_, err) = cli_err(
        &broker.addr,
        &["topic", "alter", "fixed", "--set", "partitions=6", "--set", "colour=blue"],
    );
    assert!(err.contains("\"colour\""), "{err}");

    let described = &cli_json(&broker.addr, &["topic", "describe", "fixed"])[0];
    assert_eq!(
        described["partitions"].as_array().map(Vec::len),
        Some(4),
        "no partition came or went"
    );
    assert_eq!(described["configs"], configs_before, "no setting changed either");

    let help = cli_ok(&broker.addr, &["topic", "alter", "--help"]);
    for form in ["partitions=N", "keyed records", "never removed", "Kafka"] {
        assert!(help.contains(form), "alter --help explains {form}: {help}");
    }
    broker.stop();
}

#[test]
fn broker_info_says_what_the_broker_is_and_how_full_its_disk_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    create_topic(&broker.addr, "a", 3);
    let before_ms = now_ms();
    let info = &cli_json(&broker.addr, &["broker", "info"])[0];
    assert_eq!(info["node_id"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let data_dir = std::fs::canonicalize(dir.path()).expect("canonical");
    assert_eq!(info["data_dir"], data_dir.display().to_string());
    assert_eq!(info["shards"], 2);
    assert_eq!(info["listeners"][0]["name"], "client");
    assert_eq!(info["listeners"][0]["address"], broker.addr);
    let started_ms = info["started_ms"].as_i64().expect("started_ms");
    let uptime_ms = info["uptime_ms"].as_i64().expect("uptime_ms");
    assert!(started_ms <= before_ms && before_ms - started_ms < 120_000, "{info}");
    assert!((0..120_000).contains(&uptime_ms), "{info}");
    assert_eq!((info["topics"].as_u64(), info["partitions_online"].as_u64()), (Some(1), Some(3)));
    assert_eq!(info["partitions_offline"], 0);
    let total = info["disk"]["total_bytes"].as_u64().expect("total_bytes");
    let free = info["disk"]["free_bytes"].as_u64().expect("free_bytes");
    assert!(total > 0 && free <= total, "{info}");

    let text = cli_ok(&broker.addr, &["broker", "info"]);
    assert!(text.starts_with(&format!("broker 1 (mamba {})", env!("CARGO_PKG_VERSION"))), "{text}");
    for field in ["data dir", "shards", "listeners", "started", "(up ", "3 online", "free of"] {
        assert!(text.contains(field), "{field}: {text}");
    }
    assert!(text.contains(&format!("client {}", broker.addr)), "{text}");
    broker.stop();
}

#[test]
fn health_passes_while_the_broker_serves_and_fails_when_none_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    create_topic(&broker.addr, "h", 2);
    let text = cli_ok(&broker.addr, &["health"]);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ok"));
    let summary = lines.next().expect("summary line");
    assert!(summary.contains(&broker.addr) && summary.contains("2 partitions online"), "{summary}");
    let json = &cli_json(&broker.addr, &["health", "--strict"])[0];
    assert_eq!(
        (json["status"].as_str(), json["partitions_online"].as_u64()),
        (Some("ok"), Some(2))
    );
    broker.stop();

    // No broker: nothing listens on port 1 (a port the kernel hands out,
    // like the stopped broker's, may meanwhile serve another test).
    let (code, err) = cli_err("127.0.0.1:1", &["health"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unhealthy") && err.contains("cannot connect") && err.contains("mamba serve"),
        "{err}"
    );

    // Something accepts connections but never answers: the check gives up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let started = Instant::now();
    let (code, err) = cli_err(&addr, &["health", "--timeout-ms", "300"]);
    assert_eq!(code, 1);
    assert!(err.contains("no answer") && err.contains("300 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by --timeout-ms");
}

#[test]
fn offline_partitions_keep_a_broker_healthy_unless_strict_and_show_in_list_and_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 1);
    cli_ok(&broker.addr, &["topic", "create", "dmg", "-p", "2", "--segment-bytes", "64KiB"]);
    let values: Vec<_> =
        (0..100).map(|i| (format!("{i:04}{}", "y".repeat(1996)), now_ms())).collect();
    produce(&broker, "dmg", 0, &values);
    let data = broker.stop();
    // A flipped byte in the last batch of partition 0's first, closed
    // segment: damage, so the partition stays offline.
    let segment = data.join("topics/dmg/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data");
    bytes[end - 200] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");

    let broker = Broker::start(&data, 1);
    let text = cli_ok(&broker.addr, &["health"]);
    assert!(text.starts_with("ok\n") && text.contains("1 offline"), "{text}");
    let (code, err) = cli_err(&broker.addr, &["health", "--strict"]);
    assert!(code == 1 && err.contains("--strict") && err.contains("1 offline"), "{err}");
    let info = &cli_json(&broker.addr, &["broker", "info"])[0];
    assert_eq!(
        (info["partitions_online"].as_u64(), info["partitions_offline"].as_u64()),
        (Some(1), Some(1))
    );
    let listed = &cli_json(&broker.addr, &["topic", "list"])[0];
    assert_eq!(listed["partitions_offline"], 1);
    let text = cli_ok(&broker.addr, &["topic", "list"]);
    assert!(text.contains("2 (1 offline)"), "{text}");
    let described = &cli_json(&broker.addr, &["topic", "describe", "dmg"])[0];
    let p0 = partition(described, 0);
    assert_eq!(p0["status"], "offline");
    assert!(p0["error"].as_str().is_some_and(|e| e.contains("corrupt data")), "{p0}");
    assert_eq!(described["totals"]["partitions_offline"], 1);
    broker.stop();
}

#[test]
fn help_and_the_readme_show_the_new_forms() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(top.contains("broker") && top.contains("health"), "{top}");
    let topic = help(&["topic", "--help"]);
    assert!(topic.contains("offsets"), "{topic}");
    let offsets = help(&["topic", "offsets", "--help"]);
    assert!(offsets.contains("--at") && offsets.contains("@-10m"), "{offsets}");
    let health = help(&["health", "--help"]);
    assert!(health.contains("--strict") && health.contains("offline"), "{health}");
    let readme = include_str!("../../README.md");
    for form in ["mamba topic offsets", "--set partitions=", "mamba broker info", "mamba health"] {
        assert!(readme.contains(form), "README shows {form}");
    }
}
