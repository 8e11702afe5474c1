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

/// The position of the last batch of partition `partition`, from `dump`.
fn last_batch_position(dir: &Path, partition: u32) -> usize {
    let path = segment(dir, partition);
    let dump =
        mamba(&["log", "dump", &path.parent().expect("dir").to_string_lossy(), "--output", "json"]);
    let last: serde_json::Value =
        serde_json::from_str(stdout(&dump).lines().last().expect("batches")).expect("json");
    last["position_bytes"].as_u64().expect("position") as usize
}

fn open_engine(dir: &Path) -> Engine {
    Engine::open(
        dir,
        EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
    )
    .expect("open")
}

#[test]
fn damage_in_synced_data_is_refused_by_recover_until_forced_and_then_check_agrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let data = dir.path().to_string_lossy().into_owned();
    let clean = mamba(&["log", "check", &data]);
    assert!(clean.status.success(), "fresh data is clean: {}", stdout(&clean));

    // After a clean stop every batch is below the recovery point: a flipped
    // byte in the last one is corruption, not a torn tail.
    let path = segment(dir.path(), 0);
    let position = last_batch_position(dir.path(), 0);
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes[position + 100] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");

    let damaged = mamba(&["log", "check", &data, "--output", "json"]);
    assert_eq!(damaged.status.code(), Some(1));
    let finding: serde_json::Value =
        serde_json::from_str(stdout(&damaged).lines().next().expect("finding")).expect("json");
    assert!(finding["file"].as_str().expect("file").ends_with("0/00000000000000000000.log"));
    assert_eq!(finding["valid_end_bytes"].as_u64(), Some(position as u64));
    assert_eq!(finding["valid_end_offset"].as_u64(), Some(87));
    let text = stdout(&mamba(&["log", "check", &data]));
    assert!(text.contains("corruption") && text.contains("--force"), "{text}");

    // The broker does not cut it: the partition stays offline, the other
    // one serves, and no file changed.
    let engine = open_engine(dir.path());
    let offline = &engine.open_report().offline_partitions;
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert!(offline[0].error.to_string().contains("corrupt data at offset 87"), "{:?}", offline);
    assert!(block_on(engine.list_offsets("orders", PartitionId(1))).is_ok());
    let err = block_on(engine.list_offsets("orders", PartitionId(0))).expect_err("offline");
    assert!(err.to_string().contains("00000000000000000000.log"), "{err}");
    engine.close().expect("close");
    assert_eq!(std::fs::read(&path).expect("segment"), bytes, "a refused open changed the file");

    let refused = mamba(&["log", "recover", &data]);
    assert_ne!(refused.status.code(), Some(0));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("offset 87") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&path).expect("segment"), bytes, "recover without --force cut");

    let forced = mamba(&["log", "recover", &data, "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(
        stdout(&forced).contains(&format!("truncated at byte {position} (offset 87)")),
        "{}",
        stdout(&forced)
    );
    let after = mamba(&["log", "check", &data]);
    assert!(after.status.success(), "clean after recover: {}", stdout(&after));

    // The engine opens the repaired directory and serves 87 records.
    let engine = open_engine(dir.path());
    assert!(engine.open_report().offline_partitions.is_empty());
    let offsets = block_on(engine.list_offsets("orders", PartitionId(0))).expect("offsets");
    assert_eq!(offsets.high_watermark.0, 87);
    engine.close().expect("close");
}

#[test]
fn a_torn_tail_past_the_recovery_point_is_cut_by_recover_and_check_then_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let data = dir.path().to_string_lossy().into_owned();
    // Bytes of a write that never completed, after the last batch.
    let path = segment(dir.path(), 1);
    let mut bytes = std::fs::read(&path).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
    let end = end.next_multiple_of(16);
    bytes.resize(end + 8192, 0);
    bytes[end..end + 100].fill(0x5a);
    std::fs::write(&path, &bytes).expect("write");

    let torn = mamba(&["log", "check", &data]);
    assert_eq!(torn.status.code(), Some(1));
    assert!(stdout(&torn).contains("torn tail"), "{}", stdout(&torn));
    let recover = mamba(&["log", "recover", &data]);
    assert!(recover.status.success(), "{}", String::from_utf8_lossy(&recover.stderr));
    assert!(stdout(&recover).contains("truncated"), "{}", stdout(&recover));
    let after = mamba(&["log", "check", &data]);
    assert!(after.status.success(), "clean after recover: {}", stdout(&after));
    let engine = open_engine(dir.path());
    let offsets = block_on(engine.list_offsets("orders", PartitionId(1))).expect("offsets");
    assert_eq!(offsets.high_watermark.0, 90, "nothing acknowledged was cut");
    engine.close().expect("close");
}

#[test]
fn recover_refuses_a_live_data_directory_and_check_reads_it_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let data = dir.path().to_string_lossy().into_owned();
    let engine = open_engine(dir.path());
    let recover = mamba(&["log", "recover", &data]);
    assert_eq!(recover.status.code(), Some(2));
    let err = String::from_utf8_lossy(&recover.stderr);
    assert!(err.contains("stop the broker"), "{err}");
    let check = mamba(&["log", "check", &format!("{data}/topics/orders/0")]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(String::from_utf8_lossy(&check.stderr).contains("a broker is running"));
    engine.close().expect("close");
    let recover = mamba(&["log", "recover", &data]);
    assert!(recover.status.success(), "{}", String::from_utf8_lossy(&recover.stderr));
}

#[test]
fn stale_index_entries_are_a_note_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_data(dir.path());
    let data = dir.path().to_string_lossy().into_owned();
    // A time index longer than the offset index, as a kill -9 can leave.
    let time_index = segment(dir.path(), 0).with_extension("timeindex");
    let mut bytes = std::fs::read(&time_index).expect("time index");
    let entries = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i / 16 + 1);
    assert!(entries > 0, "the segment has time-index entries");
    bytes.truncate(entries * 16 - 16);
    std::fs::write(&time_index, &bytes).expect("write");
    let check = mamba(&["log", "check", &data]);
    assert!(check.status.success(), "{}", stdout(&check));
    assert!(stdout(&check).contains("rebuilt"), "{}", stdout(&check));
}

#[test]
fn bad_paths_get_one_clear_line_and_exit_2() {
    let out = mamba(&["log", "check", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/definitely/not/here") && err.lines().count() == 1, "{err}");
}
