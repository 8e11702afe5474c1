//! `mamba log dump|check|recover` on real data directories.

use mamba_engine::{
    block_on, BatchBuilder, Engine, EngineConfig, NewRecord, PartitionId, TopicConfig,
};
use std::path::Path;
use std::process::{Command, Output};

fn mamba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamba")).args(args).output().expect("run mamba")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A data directory with one topic of two partitions and 30 batches each.
fn make_data(dir: &Path) {
    let engine = Engine::open(
        dir,
        EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
    )
    .expect("open");
    block_on(
        engine.create_topic("orders", TopicConfig { partitions: 2, ..TopicConfig::default() }),
    )
    .expect("create");
    for p in 0..2 {
        for i in 0..30 {
            let mut b = BatchBuilder::new();
            for r in 0..3 {
                b.push(NewRecord {
                    key: Some(format!("k{r}").into_bytes()),
                    value: if r == 2 {
                        vec![0xff, 0x00, b'x']
                    } else {
                        format!("p{p} b{i} r{r} {}", "y".repeat(200)).into_bytes()
                    },
                    headers: vec![("h".into(), b"v".to_vec())],
                    timestamp_ms: 1000 + i,
                });
            }
            block_on(engine.append("orders", PartitionId(p), b.build().expect("batch")))
                .expect("append");
        }
    }
    engine.close().expect("close");
}

fn segment(dir: &Path, partition: u32) -> std::path::PathBuf {
    dir.join(format!("topics/orders/{partition}/00000000000000000000.log"))
}

#[test]
fn dump_prints_one_json_line_per_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let out = mamba(&[
        "log",
        "dump",
        &dir.path().join("topics/orders/1").to_string_lossy(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 30);
    for key in [
        "file",
        "base_offset",
        "last_offset",
        "record_count",
        "position_bytes",
        "size_bytes",
        "first_timestamp_ms",
        "max_timestamp_ms",
        "crc_ok",
    ] {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(lines[29]["base_offset"], 87);
    assert_eq!(lines[29]["last_offset"], 89);
    assert_eq!(lines[29]["crc_ok"], true);

    let out = mamba(&["log", "dump", &dir.path().to_string_lossy(), "--records"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| l.contains(" crc ok")).count(), 60, "whole data dir");
    assert!(text.contains("value \\xff\\x00x"), "binary values are escaped: {text}");
}

#[test]
fn check_finds_a_torn_tail_and_recover_repairs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let data = dir.path().to_string_lossy().into_owned();
    let clean = mamba(&["log", "check", &data]);
    assert!(clean.status.success(), "fresh data is clean: {}", stdout(&clean));

    // Tear partition 0's last batch: flip bytes in its middle.
    let path = segment(dir.path(), 0);
    let dump =
        mamba(&["log", "dump", &path.parent().expect("dir").to_string_lossy(), "--output", "json"]);
    let last: serde_json::Value =
        serde_json::from_str(stdout(&dump).lines().last().expect("batches")).expect("json");
    let position = last["position_bytes"].as_u64().expect("position") as usize;
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes[position + 100] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");

    let torn = mamba(&["log", "check", &data, "--output", "json"]);
    assert_eq!(torn.status.code(), Some(1));
    let finding: serde_json::Value =
        serde_json::from_str(stdout(&torn).lines().next().expect("finding")).expect("json");
    assert!(finding["file"].as_str().expect("file").ends_with("0/00000000000000000000.log"));
    assert_eq!(finding["valid_end_bytes"].as_u64(), Some(position as u64));
    assert_eq!(finding["valid_end_offset"].as_u64(), Some(87));

    let recover = mamba(&["log", "recover", &data]);
    assert!(recover.status.success(), "{}", String::from_utf8_lossy(&recover.stderr));
    assert!(
        stdout(&recover).contains(&format!("truncated at byte {position} (offset 87)")),
        "{}",
        stdout(&recover)
    );
    let after = mamba(&["log", "check", &data]);
    assert!(after.status.success(), "clean after recover: {}", stdout(&after));

    // The engine opens the repaired directory and serves 87 records.
    let engine = Engine::open(
        dir.path(),
        EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
    )
    .expect("open");
    let offsets = block_on(engine.list_offsets("orders", PartitionId(0))).expect("offsets");
    assert_eq!(offsets.high_watermark.0, 87);
    engine.close().expect("close");
}

#[test]
fn bad_paths_get_one_clear_line_and_exit_2() {
    let out = mamba(&["log", "check", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/definitely/not/here") && err.lines().count() == 1, "{err}");
}
