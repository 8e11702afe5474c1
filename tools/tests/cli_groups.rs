mod common;
use common::*;

// `mamba group` through the real binary against a real broker: groups made
// by committing over the wire (a standalone commit, as a consumer outside
// the group protocol does) and members joined by heartbeat.

use mamba_net::client::{block_on, Admin, Connection, ProducerRecord};
use mamba_net::protocol::*;
use serde_json::Value;
use std::time::Duration;

/// The JSON error `mamba ARGS -o json` prints on standard error.
fn cli_json_err(addr: &str, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
    let (_, stderr) = cli_err(addr, &args);
    let line = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn connect(addr: &str) -> Connection {
    Connection::connect(addr, Duration::from_secs(5)).expect("connect")
}

/// Sends `count` records to one partition, each with `timestamp_ms`, and
/// waits for every acknowledgement.
fn produce(broker: &Broker, topic: &str, partition: u32, count: usize, timestamp_ms: i64) {
    let producer = producer(broker);
    let sends: Vec<_> = (0..count)
        .map(|i| {
            let record = ProducerRecord {
                partition: Some(partition),
                timestamp_ms: Some(timestamp_ms),
                ..record(topic, None, &format!("record {i}"))
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

/// Commits as a consumer outside the group protocol (taken while the
/// group has no members).
fn commit(addr: &str, group: &str, topic: &str, offsets: &[(u32, u64)]) {
    let request = OffsetCommitRequest {
        group_id: group.into(),
        member_id: "".into(),
        member_epoch: -1,
        offsets: offsets
            .iter()
            .map(|&(partition, offset)| CommitOffset {
                topic: topic.into(),
                partition,
                offset,
                metadata: "".into(),
            })
            .collect(),
    };
    let (answer, _) =
        block_on(connect(addr).call::<_, OffsetCommitResponse>(&request, &[])).expect("commit");
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    for p in &answer.partitions {
        assert_eq!(p.error_code, 0, "{}", p.message);
    }
}

/// Joins `group` as a member subscribed to `topic`; returns its id and
/// epoch. Its session outlasts the test.
fn join(conn: &Connection, group: &str, topic: &str) -> (String, i32) {
    let request = GroupHeartbeatRequest {
        group_id: group.into(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: None,
        client_id: "cli-test".into(),
        subscribed_topics: Some(vec![topic.to_string()]),
        assignor: None,
        owned: None,
        session_timeout_ms: 120_000,
        max_wait_ms: 0,
    };
    let (answer, _) =
        block_on(conn.call::<_, GroupHeartbeatResponse>(&request, &[])).expect("heartbeat");
    assert_eq!(answer.error_code, 0, "{}", answer.message);
    (answer.member_id, answer.member_epoch)
}

fn leave(conn: &Connection, group: &str, member_id: &str) {
    let request = GroupHeartbeatRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        member_epoch: -1,
        instance_id: None,
        client_id: "cli-test".into(),
        subscribed_topics: None,
        assignor: None,
        owned: None,
        session_timeout_ms: 0,
        max_wait_ms: 0,
    };
    let (answer, _) =
        block_on(conn.call::<_, GroupHeartbeatResponse>(&request, &[])).expect("leave");
    assert_eq!(answer.error_code, 0, "{}", answer.message);
}

/// The group's committed offsets of `topic`'s partitions `0..count` (-1: none).
fn committed(addr: &str, group: &str, topic: &str, count: u32) -> Vec<i64> {
    let admin = Admin::connect(addr).expect("admin");
    let wanted = TopicAssignment { topic: topic.into(), partitions: (0..count).collect() };
    let fetched = block_on(admin.fetch_offsets(group, Some(vec![wanted]))).expect("fetch offsets");
    fetched.iter().map(|o| o.offset).collect()
}

#[test]
fn list_and_describe_show_members_committed_offsets_ends_and_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let addr = broker.addr.as_str();
    create_topic(addr, "orders", 3);
    produce(&broker, "orders", 0, 10, 1_000);
    produce(&broker, "orders", 1, 4, 1_000);
    commit(addr, "app", "orders", &[(0, 6), (1, 4)]);

    let listed = cli_json(addr, &["group", "list"]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["group_id"], "app");
    assert_eq!(listed[0]["state"], "empty");
    assert_eq!(listed[0]["member_count"], 0);
    let text = cli_ok(addr, &["group", "list"]);
    assert!(text.starts_with("GROUP") && text.contains("app") && text.contains("empty"), "{text}");

    let d = &cli_json(addr, &["group", "describe", "app"])[0];
    assert_eq!(d["state"], "empty");
    let p0 = partition(d, 0);
    assert_eq!(
        (&p0["committed_offset"], &p0["high_watermark"], &p0["lag"]),
        (&6.into(), &10.into(), &4.into())
    );
    let p1 = partition(d, 1);
    assert_eq!(
        (&p1["committed_offset"], &p1["high_watermark"], &p1["lag"]),
        (&4.into(), &4.into(), &0.into())
    );
    assert_eq!(d["total_lag"], 4);
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(2), "only what it committed: {d}");

    // A member joins and holds all three partitions, the third one
    // without a commit.
    let conn = connect(addr);
    let (member, _) = join(&conn, "app", "orders");
    let d = &cli_json(addr, &["group", "describe", "app"])[0];
    assert_eq!(d["members"][0]["member_id"], member.as_str());
    assert_eq!(d["members"][0]["client_id"], "cli-test");
    assert_eq!(d["members"][0]["assignment"][0]["partitions"], serde_json::json!([0, 1, 2]));
    let p2 = partition(d, 2);
    assert_eq!(
        (&p2["committed_offset"], &p2["high_watermark"], &p2["lag"]),
        (&Value::Null, &0.into(), &Value::Null)
    );
    for p in 0..3 {
        assert_eq!(partition(d, p)["owner"], member.as_str());
    }
    assert_eq!(d["total_lag"], 4);
    let listed = cli_json(addr, &["group", "list"]);
    assert_eq!(listed[0]["member_count"], 1);
    assert_ne!(listed[0]["state"], "empty");

    let text = cli_ok(addr, &["group", "describe", "app"]);
    assert!(text.contains("1 member") && text.contains(&member), "{text}");
    assert!(text.contains("orders:0,1,2"), "{text}");
    let row = |p: &str| {
        text.lines()
            .find(|l| l.split_whitespace().take(2).eq(["orders", p]))
            .unwrap_or_else(|| panic!("row of partition {p}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("0")[2..5], ["6", "10", "4"]);
    assert_eq!(row("2")[2..5], ["-", "0", "-"]);
    assert!(text.contains("total lag: 4 records"), "{text}");

    let (code, stderr) = cli_err(addr, &["group", "describe", "nope"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no group \"nope\"") && stderr.contains("mamba group list"),
        "{stderr}"
    );
}

#[test]
fn reset_offsets_moves_commits_to_every_form_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let addr = broker.addr.as_str();
    create_topic(addr, "orders", 2);
    // Partition 0: five old records, then five new ones; partition 1: four old.
    let (old_ms, new_ms) = (1_000_000, 2_000_000);
    produce(&broker, "orders", 0, 5, old_ms);
    produce(&broker, "orders", 0, 5, new_ms);
    produce(&broker, "orders", 1, 4, old_ms);
    commit(addr, "app", "orders", &[(0, 8)]);

    let reset = |to: &str, extra: &[&str]| {
        let mut args = vec!["group", "reset-offsets", "app", "--topic", "orders", "--to", to];
        args.extend(extra);
        cli_json(addr, &args).remove(0)
    };

    let planned = reset("earliest", &["--dry-run"]);
    assert_eq!(planned["dry_run"], true);
    assert_eq!(planned["offsets"][0]["old_offset"], 8);
    assert_eq!(planned["offsets"][0]["new_offset"], 0);
    assert_eq!(planned["offsets"][1]["old_offset"], Value::Null);
    assert_eq!(committed(addr, "app", "orders", 2), [8, -1], "a dry run changes nothing");
    let text = cli_ok(
        addr,
        &["group", "reset-offsets", "app", "--topic", "orders", "--to", "latest", "--dry-run"],
    );
    assert!(text.starts_with("TOPIC") && text.contains("dry run"), "{text}");
    assert_eq!(committed(addr, "app", "orders", 2), [8, -1], "a dry run changes nothing");

    reset("earliest", &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [0, 0]);
    reset("latest", &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [10, 4]);
    let moved =
        cli_json(addr, &["group", "reset-offsets", "app", "--topic", "orders:0", "--to", "3"]);
    assert_eq!(moved[0]["offsets"].as_array().map(Vec::len), Some(1), "only partition 0");
    assert_eq!(committed(addr, "app", "orders", 2), [3, 4]);
    // The first record at or after the time; none in partition 1: its end.
    reset(&format!("@{new_ms}"), &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [5, 4]);
    reset("shift:-2", &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [3, 2]);
    // Clamped to the log: never before its start nor past its end.
    reset("shift:-100", &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [0, 0]);
    reset("99", &[]);
    assert_eq!(committed(addr, "app", "orders", 2), [10, 4]);

    let text =
        cli_ok(addr, &["group", "reset-offsets", "app", "--topic", "orders", "--to", "earliest"]);
    assert!(text.contains("reset 2 offsets of group app"), "{text}");

    let (code, stderr) = cli_err(
        addr,
        &["group", "reset-offsets", "app", "--topic", "orders:7", "--to", "earliest"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("no partition 7"), "{stderr}");
}

#[test]
fn groups_with_members_are_neither_reset_nor_deleted_and_bad_to_values_list_the_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), 2);
    let addr = broker.addr.as_str();
    create_topic(addr, "orders", 2);
    produce(&broker, "orders", 0, 3, 1_000);
    commit(addr, "app", "orders", &[(0, 1)]);
    let conn = connect(addr);
    let (member, _) = join(&conn, "app", "orders");

    let reset = ["group", "reset-offsets", "app", "--topic", "orders", "--to", "earliest"];
    let (code, stderr) = cli_err(addr, &reset);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("has members") && stderr.contains("stop the group's consumers first"),
        "{stderr}"
    );
    let error = &cli_json_err(addr, &reset)["error"];
    assert_eq!(
        (error["code"].as_u64(), error["name"].as_str()),
        (Some(24), Some("group not empty"))
    );
    assert_eq!(committed(addr, "app", "orders", 1), [1], "nothing changed");

    let (code, stderr) = cli_err(addr, &["group", "delete", "app"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot be deleted") && stderr.contains("stop the group's consumers first"),
        "{stderr}"
    );

    leave(&conn, "app", &member);
    let deleted = cli_json(addr, &["group", "delete", "app"]);
    assert_eq!(deleted[0]["deleted"], "app");
    assert_eq!(committed(addr, "app", "orders", 1), [-1], "its offsets went with it");
    assert!(cli_json(addr, &["group", "list"]).is_empty());
    let (code, stderr) = cli_err(addr, &["group", "delete", "app"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no group \"app\"") && stderr.contains("--if-exists"), "{stderr}");
    let text = cli_ok(addr, &["group", "delete", "app", "--if-exists"]);
    assert!(text.contains("nothing changed"), "{text}");

    for bad in ["begin", "shift:two", "-3"] {
        let args = ["group", "reset-offsets", "app", "--topic", "orders", "--to", bad];
        let (code, stderr) = cli_err(addr, &args);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&format!("{bad:?}")), "{stderr}");
        for form in ["earliest", "latest", "@TIME", "shift:N"] {
            assert!(stderr.contains(form), "{form} in {stderr}");
        }
        let error = &cli_json_err(addr, &args)["error"];
        assert_eq!(error["name"], "usage");
    }
}
