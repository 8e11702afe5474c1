//! The real `mamba-bench` binary: where it finds brokers, what it says
//! before a run, and what its report lines mean.

use mamba_engine::{Engine, EngineConfig};
use mamba_net::client::{block_on, Admin};
use mamba_net::server::{Broker, BrokerConfig};
use std::process::Command;

fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mamba-bench"));
    command.env_remove("MAMBA_BROKERS");
    command
}

#[test]
fn a_bare_run_says_how_to_name_a_broker() {
    let out = bench().arg("e2e").output().expect("run mamba-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--embedded") && err.contains("MAMBA_BROKERS"), "{err}");
}

#[test]
fn mamba_brokers_names_the_target_and_an_existing_topic_keeps_its_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Engine::open(dir.path(), EngineConfig { shards: Some(1), ..EngineConfig::default() })
            .expect("engine");
    let config =
        BrokerConfig { listen: "127.0.0.1:0".parse().expect("address"), ..BrokerConfig::default() };
    let broker = Broker::start(engine.clone(), config).expect("broker");
    let addr = broker.local_addr().to_string();
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("two", 2, vec![])).expect("create");

    let out = bench()
        .args(["e2e", "--topic", "two", "--partitions", "4", "--rate", "2000"])
        .args(["--duration-s", "2", "--warmup-s", "1", "--batch-bytes", "16384"])
        .env("MAMBA_BROKERS", &addr)
        .output()
        .expect("run mamba-bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("topic two exists with 2 partitions, not --partitions 4"),
        "said before starting: {stderr}"
    );
    let line = |name: &str| {
        stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {stdout}"))
    };
    assert!(line("produce ").contains("send to ack"), "{stdout}");
    assert!(
        !line("consume ").contains("latency") && !line("consume ").contains(" p50"),
        "{stdout}"
    );
    assert!(line("e2e ").contains("publish to delivery"), "{stdout}");
    assert!(line("delivery ").contains("lost 0, duplicated 0, out of order 0"), "{stdout}");
    drop(admin);
    drop(broker);
    engine.close().expect("close");
}

#[test]
fn e2e_with_a_group_reads_every_message_once_through_the_group() {
    let out = bench()
        .args(["e2e", "--embedded", "--group", "--consumers", "2", "--partitions", "4"])
        .args(["--rate", "2000", "--duration-s", "2", "--warmup-s", "1"])
        .args(["--batch-bytes", "16384", "--commit-rate", "20"])
        .output()
        .expect("run mamba-bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let delivery = stdout.lines().find(|l| l.starts_with("delivery ")).expect(&stdout);
    assert!(delivery.contains("lost 0, duplicated 0, out of order 0"), "{stdout}");
    let commit = stdout.lines().find(|l| l.starts_with("commit ")).expect(&stdout);
    assert!(commit.contains("commit_sync p50"), "{stdout}");
}

#[test]
fn rebalance_survives_a_join_a_leave_and_a_kill_without_losing_a_record() {
    let report_dir = tempfile::tempdir().expect("tempdir");
    let out = bench()
        .args(["rebalance", "--embedded", "--schedule", "join,leave,kill"])
        .args(["--consumers", "2", "--partitions", "4", "--rate", "2000"])
        .args(["--session-timeout-ms", "1000", "--event-interval-ms", "500"])
        .args(["--batch-bytes", "16384", "--commit-rate", "10", "--output", "json"])
        .arg("--report-dir")
        .arg(report_dir.path())
        .output()
        .expect("run mamba-bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let events = report["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["join", "leave", "kill"]);
    for e in events {
        assert!(e["owned_again_ms"].is_number(), "every event settled: {e}");
        assert!(e["resumed_ms"].is_number(), "consumption resumed: {e}");
        assert!(!e["moved_partitions"].as_array().expect("moved").is_empty(), "{e}");
    }
    for kind in ["join", "leave", "kill"] {
        let k = &report["by_kind"][kind];
        assert_eq!(k["events"], 1, "{kind}: {k}");
        assert!(k["resumed_ms"]["p50"].is_number(), "{kind}: {k}");
    }
    let delivery = &report["delivery"];
    assert_eq!(delivery["lost"], 0, "{delivery}");
    assert_eq!(delivery["out_of_order"], 0, "{delivery}");
    assert!(delivery["acknowledged"].as_u64().expect("acknowledged") > 0, "{delivery}");
    assert!(report["commit"]["latency_us"]["count"].as_u64().expect("commits") > 0);
    assert!(!report["lag"].as_array().expect("lag samples").is_empty());
    assert!(report_dir.path().join("lag.svg").exists());
    assert!(report_dir.path().join("report.json").exists());
}

#[test]
fn verify_finds_nothing_wrong_with_a_broker_and_every_kind_of_anomaly_in_a_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history.jsonl");
    let out = bench()
        .current_dir(dir.path())
        .args(["verify", "--embedded", "--duration-s", "3", "--rate", "400", "--partitions", "3"])
        .arg("--history")
        .arg(&history)
        .args(["--output", "json", "--report-dir"])
        .arg(dir.path().join("report"))
        .output()
        .expect("run mamba-bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON report");
    assert_eq!(report["anomalies"], 0, "{report:#}");
    let check = &report["check"];
    let acknowledged = check["acknowledged"].as_u64().unwrap_or(0);
    assert!(acknowledged > 100, "{check:#}");
    assert!(check["commits"].as_u64().unwrap_or(0) > 0, "the group committed: {check:#}");
    // Each acknowledged record read by both readers: the assigned reader
    // and the final scan, and the group.
    assert!(check["reads"].as_u64().unwrap_or(0) >= 2 * acknowledged, "{check:#}");
    // The report directory: the same report, and the timeline drawn.
    let saved = std::fs::read_to_string(dir.path().join("report/report.json")).expect("report");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("JSON");
    assert_eq!(saved["check"], report["check"]);
    let svg = std::fs::read_to_string(dir.path().join("report/timeline.svg")).expect("timeline");
    assert!(svg.contains("<svg") && svg.contains("produces acknowledged"), "{svg:.200}");

    // The saved history, damaged: an acknowledged record's reads removed
    // (lost), and one read moved to a second offset (duplicated). Checked
    // again offline, it fails and says so.
    let text = std::fs::read_to_string(&history).expect("history");
    let mut lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let victim = lines
        .iter()
        .find(|e| e["type"] == "produce" && e["outcome"] == "ok")
        .map(|e| e["id"].clone())
        .expect("an acknowledged produce");
    lines.retain(|e| !(e["type"] == "read" && e["id"] == victim));
    let mut moved = lines.iter().rev().find(|e| e["type"] == "read").cloned().expect("a read");
    moved["offset"] = serde_json::json!(1_000_000);
    lines.push(moved);
    let damaged = dir.path().join("damaged.jsonl");
    let body: Vec<String> = lines.iter().map(|e| e.to_string()).collect();
    std::fs::write(&damaged, body.join("\n")).expect("write");
    let out = bench().args(["verify", "--check"]).arg(&damaged).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let count = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_else(|| panic!("{kind}: {stdout}"))
            .to_string()
    };
    assert_eq!(count("lost "), "1", "{stdout}");
    assert_eq!(count("duplicated "), "1", "{stdout}");
    assert_eq!(count("inconsistent "), "0", "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("anomalies in"));
}
