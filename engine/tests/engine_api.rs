//! The embeddable API on a real data directory (O_DIRECT through io_uring).

use mamba_engine::batch::iter_batches;
use mamba_engine::{
    block_on, BatchBuilder, Durability, Engine, EngineConfig, EngineError, NewRecord, Offset,
    PartitionId, StorageMode, TopicConfig,
};

fn config() -> EngineConfig {
    EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() }
}

fn batch(values: &[&str], timestamp_ms: i64) -> mamba_engine::Batch {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(NewRecord {
            key: None,
            value: v.as_bytes().to_vec(),
            headers: vec![],
            timestamp_ms,
        });
    }
    b.build().expect("batch")
}

fn values(engine: &Engine, topic: &str, partition: u32, from: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Offset(from);
    loop {
        let read =
            block_on(engine.read(topic, PartitionId(partition), next, 1 << 16)).expect("read");
        if read.chunks.is_empty() {
            return out;
        }
        for chunk in &read.chunks {
            for b in iter_batches(chunk) {
                for r in b.expect("valid").iter() {
                    if r.offset >= next {
                        out.push(String::from_utf8_lossy(r.value()).into_owned());
                        next = r.offset.plus(1);
                    }
                }
            }
        }
    }
}

#[test]
fn engine_handle_is_send_sync_and_cloneable() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Engine>();
}

#[test]
fn data_survives_restart_and_memory_topics_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.create_topic("disk", TopicConfig { partitions: 4, ..TopicConfig::default() }))
        .expect("create");
    block_on(engine.create_topic(
        "mem",
        TopicConfig {
            partitions: 1,
            storage: StorageMode::Memory,
            durability: Durability::None,
            ..TopicConfig::default()
        },
    ))
    .expect("create");
    let placement = engine.describe_topic("disk").expect("describe").placement;
    assert!(
        placement.iter().flatten().any(|s| s.0 == 0)
            && placement.iter().flatten().any(|s| s.0 == 1),
        "spread over both shards"
    );
    for p in 0..4 {
        for i in 0..10 {
            let info = block_on(engine.append(
                "disk",
                PartitionId(p),
                batch(&[&format!("p{p}-{i}")], 1000 + i),
            ))
            .expect("append");
            assert_eq!(info.base_offset, Offset(i as u64));
        }
    }
    block_on(engine.append("mem", PartitionId(0), batch(&["volatile"], 0))).expect("append");
    assert_eq!(values(&engine, "mem", 0, 0), vec!["volatile"]);
    assert_eq!(values(&engine, "disk", 2, 7), vec!["p2-7", "p2-8", "p2-9"]);
    engine.close().expect("close");
    assert!(matches!(
        block_on(engine.list_offsets("disk", PartitionId(0))),
        Err(EngineError::ShuttingDown)
    ));

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert_eq!(
        engine.describe_topic("disk").expect("describe").placement,
        placement,
        "placement is stable"
    );
    for p in 0..4 {
        let expected: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(values(&engine, "disk", p, 0), expected);
    }
    // Memory topics start empty after a restart, where they stopped: an
    // offset once handed out never names another record.
    let mem = block_on(engine.list_offsets("mem", PartitionId(0))).expect("offsets");
    assert_eq!((mem.log_start_offset, mem.next_offset), (Offset(1), Offset(1)));
    assert!(values(&engine, "mem", 0, 1).is_empty(), "memory topics start empty after a restart");
    let info =
        block_on(engine.append("mem", PartitionId(0), batch(&["again"], 0))).expect("append");
    assert_eq!(info.base_offset, Offset(1));
    assert_eq!(
        block_on(engine.offset_for_timestamp("disk", PartitionId(1), 1005)).expect("lookup"),
        Some((Offset(5), 1005))
    );
    let offsets = block_on(engine.list_offsets("disk", PartitionId(3))).expect("offsets");
    assert_eq!((offsets.log_start_offset, offsets.high_watermark), (Offset(0), Offset(10)));
    engine.close().expect("close");
}

#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    assert!(matches!(
        block_on(engine.append("nope", PartitionId(0), batch(&["x"], 0))),
        Err(EngineError::UnknownTopic(_))
    ));
    block_on(engine.create_topic("t", TopicConfig::default())).expect("create");
    assert!(matches!(
        block_on(engine.create_topic("t", TopicConfig::default())),
        Err(EngineError::TopicExists(_))
    ));
    assert!(matches!(
        block_on(engine.append("t", PartitionId(5), batch(&["x"], 0))),
        Err(EngineError::UnknownPartition { .. })
    ));
    assert!(matches!(
        block_on(engine.read("t", PartitionId(0), Offset(3), 100)),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        block_on(engine.create_topic("../escape", TopicConfig::default())),
        Err(EngineError::InvalidConfig(_))
    ));
    assert!(matches!(
        block_on(
            engine.create_topic("zero", TopicConfig { partitions: 0, ..TopicConfig::default() })
        ),
        Err(EngineError::InvalidConfig(_))
    ));
    // A second engine on the same directory is refused.
    assert!(matches!(Engine::open(dir.path(), config()), Err(EngineError::DataDir { .. })));
    engine.close().expect("close");
}

#[test]
fn deleted_topics_are_gone_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.create_topic("gone", TopicConfig { partitions: 2, ..TopicConfig::default() }))
        .expect("create");
    block_on(engine.append("gone", PartitionId(1), batch(&["x"], 0))).expect("append");
    block_on(engine.delete_topic("gone")).expect("delete");
    assert!(engine.list_topics().is_empty());
    assert!(!dir.path().join("topics/gone").exists());
    engine.close().expect("close");
    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert!(engine.list_topics().is_empty());
    // The name can be used again, starting from offset 0.
    block_on(engine.create_topic("gone", TopicConfig::default())).expect("recreate");
    let info = block_on(engine.append("gone", PartitionId(0), batch(&["y"], 0))).expect("append");
    assert_eq!(info.base_offset, Offset(0));
    engine.close().expect("close");
}

#[test]
fn concurrent_appends_from_many_threads_all_land_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.create_topic("c", TopicConfig { partitions: 2, ..TopicConfig::default() }))
        .expect("create");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    block_on(engine.append(
                        "c",
                        PartitionId(t % 2),
                        batch(&[&format!("{t}-{i}")], 0),
                    ))
                    .expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let mut all: Vec<String> = values(&engine, "c", 0, 0);
    all.extend(values(&engine, "c", 1, 0));
    all.sort();
    let mut expected: Vec<String> =
        (0..8).flat_map(|t| (0..50).map(move |i| format!("{t}-{i}"))).collect();
    expected.sort();
    assert_eq!(all, expected);
    engine.close().expect("close");
}

/// Polls `done` every 10 ms for at most 10 s (waiting on a timer-driven
/// event of the engine, not a fixed sleep).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn interval_durability_acknowledges_at_write_and_syncs_on_the_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let durability = Durability::Interval { interval_ms: 20 };
    block_on(engine.create_topic("i", TopicConfig { durability, ..TopicConfig::default() }))
        .expect("create");
    for i in 0..20 {
        block_on(engine.append("i", PartitionId(0), batch(&[&i.to_string()], 0))).expect("append");
    }
    let offsets = block_on(engine.list_offsets("i", PartitionId(0))).expect("offsets");
    assert_eq!(offsets.high_watermark, Offset(20), "visible once written");
    assert!(
        eventually(|| {
            block_on(engine.list_offsets("i", PartitionId(0))).expect("offsets").durable_offset
                == Offset(20)
        }),
        "the interval sync makes everything durable"
    );
    engine.close().expect("close");
}

#[test]
fn retention_runs_on_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Engine::open(dir.path(), EngineConfig { retention_check_interval_ms: 20, ..config() })
            .expect("open");
    let topic = TopicConfig {
        segment_bytes: 64 * 1024,
        retention_bytes: Some(128 * 1024),
        ..TopicConfig::default()
    };
    block_on(engine.create_topic("r", topic)).expect("create");
    let value = "v".repeat(4000);
    for _ in 0..200 {
        block_on(engine.append("r", PartitionId(0), batch(&[&value], 0))).expect("append");
    }
    let segments = || {
        std::fs::read_dir(dir.path().join("topics/r/0"))
            .expect("partition dir")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
            .count()
    };
    // Retention may first run while the appends are still going: wait for
    // a round after the last of them.
    assert!(
        eventually(|| {
            block_on(engine.list_offsets("r", PartitionId(0))).expect("offsets").log_start_offset
                > Offset(0)
                && segments() <= 4
        }),
        "old segments are deleted ({} left)",
        segments()
    );
    engine.close().expect("close");
}

#[test]
fn a_relative_data_directory_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let previous = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(dir.path()).expect("cd");
    let opened = Engine::open("./relative-data", config());
    std::env::set_current_dir(previous).expect("cd back");
    let engine = opened.expect("open");
    block_on(engine.create_topic("r", TopicConfig::default()))
        .expect("create creates segment files");
    block_on(engine.append("r", PartitionId(0), batch(&["x"], 0))).expect("append");
    engine.close().expect("close");
}

#[test]
fn many_partitions_hold_a_bounded_number_of_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = std::fs::canonicalize(dir.path()).expect("canonical");
    let config = EngineConfig { open_files_per_shard_max: Some(64), ..config() };
    let engine = Engine::open(&data, config).expect("open");
    block_on(
        engine.create_topic("many", TopicConfig { partitions: 300, ..TopicConfig::default() }),
    )
    .expect("create");
    for p in [0, 150, 299] {
        block_on(engine.append("many", PartitionId(p), batch(&["x"], 0))).expect("append");
    }
    let descriptors = || {
        std::fs::read_dir("/proc/self/fd")
            .expect("fd dir")
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|target| target.starts_with(&data))
            .count()
    };
    assert!(eventually(|| descriptors() <= 2 * 64 + 8), "{} descriptors open", descriptors());
    assert_eq!(values(&engine, "many", 150, 0), vec!["x"]);
    engine.close().expect("close");
}

#[test]
fn partitions_grow_durably_placed_as_at_creation_and_never_shrink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.create_topic("t", TopicConfig { partitions: 2, ..TopicConfig::default() }))
        .expect("create");
    let memory = TopicConfig { storage: StorageMode::Memory, ..TopicConfig::default() };
    block_on(engine.create_topic("mem", memory)).expect("create");
    block_on(engine.append("t", PartitionId(0), batch(&["before"], 0))).expect("append");

    let grown = block_on(engine.increase_partitions_to("t", 5)).expect("grow");
    assert_eq!(grown.config.partitions, 5);
    assert_eq!(grown.placement.len(), 5);
    // Three topics' partitions (2 + 1 + 3 new) over two shards: 3 each.
    let mut per_shard = [0; 2];
    for topic in engine.list_topics() {
        for shard in topic.placement.into_iter().flatten() {
            per_shard[shard.0 as usize] += 1;
        }
    }
    assert_eq!(per_shard, [3, 3], "new partitions go to the least loaded shards");
    let info = block_on(engine.append("t", PartitionId(4), batch(&["new"], 0))).expect("append");
    assert_eq!(info.base_offset, Offset(0), "a new partition starts at offset 0");
    block_on(engine.increase_partitions_to("mem", 2)).expect("grow a memory topic");
    block_on(engine.append("mem", PartitionId(1), batch(&["fleeting"], 0))).expect("append");

    let shrink = block_on(engine.increase_partitions_to("t", 3)).expect_err("shrink");
    assert!(matches!(
        shrink,
        EngineError::PartitionsNotIncreased { partition_count: 5, requested: 3, .. }
    ));
    let why = shrink.to_string();
    assert!(why.contains("cannot shrink to 3") && why.contains("keyed records"), "{why}");
    let same = block_on(engine.increase_partitions_to("t", 5)).expect_err("same count");
    assert!(same.to_string().contains("has 5 partitions already"), "{same}");
    assert!(matches!(
        block_on(engine.increase_partitions_to("t", 1_000_000)),
        Err(EngineError::InvalidConfig(_))
    ));
    assert!(matches!(
        block_on(engine.increase_partitions_to("nope", 3)),
        Err(EngineError::UnknownTopic(_))
    ));
    assert_eq!(engine.describe_topic("t").expect("describe").config.partitions, 5, "unchanged");
    engine.close().expect("close");

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    let reopened = engine.describe_topic("t").expect("describe");
    assert_eq!(reopened.placement, grown.placement, "placement is stable");
    assert_eq!(values(&engine, "t", 0, 0), vec!["before"]);
    assert_eq!(values(&engine, "t", 4, 0), vec!["new"]);
    assert_eq!(engine.describe_topic("mem").expect("describe").config.partitions, 2);
    let mem = block_on(engine.list_offsets("mem", PartitionId(1))).expect("offsets");
    assert_eq!(mem.next_offset, Offset(1), "the new memory partition's offsets are not reused");
    engine.close().expect("close");
}

#[test]
fn partitions_an_unfinished_growth_left_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.create_topic("t", TopicConfig::default())).expect("create");
    engine.close().expect("close");
    // What a crash between opening new partitions and writing topic.json
    // leaves: a partition directory the catalog does not list.
    let stray = dir.path().join("topics/t/3");
    std::fs::create_dir_all(&stray).expect("mkdir");
    std::fs::write(stray.join("00000000000000000000.log"), b"junk").expect("write");

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert!(!stray.exists(), "an unlisted partition directory is removed");
    assert!(dir.path().join("topics/t/0").exists(), "listed ones stay");
    block_on(engine.increase_partitions_to("t", 4)).expect("grow");
    let offsets = block_on(engine.list_offsets("t", PartitionId(3))).expect("offsets");
    assert_eq!((offsets.log_start_offset, offsets.next_offset), (Offset(0), Offset(0)));
    engine.close().expect("close");
}

#[test]
fn partition_summaries_show_offsets_bytes_and_segments_and_why_one_is_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let small_segments = TopicConfig {
        partitions: 2,
        segment_bytes: mamba_engine::limits::SEGMENT_BYTES_MIN,
        ..TopicConfig::default()
    };
    block_on(engine.create_topic("t", small_segments)).expect("create");
    let value = "v".repeat(4000);
    for i in 0..40 {
        block_on(engine.append("t", PartitionId(0), batch(&[&value], i))).expect("append");
    }
    let summary = block_on(engine.describe_partition("t", PartitionId(0))).expect("summary");
    assert_eq!(summary.offsets.log_start_offset, Offset(0));
    assert_eq!(summary.offsets.next_offset, Offset(40));
    assert_eq!(summary.offsets.high_watermark, Offset(40));
    assert!(summary.size_bytes >= 40 * 4000, "{summary:?}");
    assert!(summary.segment_count >= 3, "64 KiB segments rolled: {summary:?}");
    let empty = block_on(engine.describe_partition("t", PartitionId(1))).expect("summary");
    assert_eq!((empty.size_bytes, empty.segment_count), (0, 1));
    assert!(matches!(
        block_on(engine.describe_partition("t", PartitionId(2))),
        Err(EngineError::UnknownPartition { .. })
    ));
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!((counts.online, counts.offline), (2, 0));
    let space = engine.disk_space().expect("statvfs");
    assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes, "{space:?}");
    engine.close().expect("close");

    // A flipped byte in the first (closed) segment: damage, not a torn tail.
    let segment = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data");
    bytes[end - 200] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("write");
    let engine = Engine::open(dir.path(), config()).expect("reopen");
    let offline = block_on(engine.describe_partition("t", PartitionId(0))).expect_err("offline");
    assert!(matches!(offline, EngineError::Offline(_)), "{offline}");
    assert!(offline.to_string().contains("00000000000000000000.log"), "{offline}");
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!((counts.online, counts.offline), (1, 1));
    engine.close().expect("close");
}

#[test]
fn a_program_that_runs_twice_finds_its_topic_and_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = TopicConfig { partitions: 3, ..TopicConfig::default() };
    for run in 0..2u64 {
        let engine = Engine::open(dir.path(), EngineConfig::embedded()).expect("open");
        assert_eq!(engine.shard_count(), 1, "embedded runs one shard");
        // The second run asks for other settings: the topic keeps its own.
        let asked = TopicConfig { partitions: 3 + run as u32, ..TopicConfig::default() };
        let (topic, created) =
            block_on(engine.create_topic_if_not_exists("app", asked)).expect("create");
        assert_eq!(created, run == 0);
        assert_eq!(topic.config.partitions, first.partitions);
        let info =
            block_on(engine.append("app", PartitionId(2), batch(&["hi"], 0))).expect("append");
        assert_eq!(info.base_offset, Offset(run), "run {run} appends after the first");
        engine.close().expect("close");
    }
    let engine = Engine::open(dir.path(), EngineConfig::embedded()).expect("open");
    assert_eq!(values(&engine, "app", 2, 0), ["hi", "hi"]);
    engine.close().expect("close");
}

#[test]
fn truncated_suffix_is_gone_after_restart_and_offsets_are_reused_by_new_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = Engine::open(dir.path(), config()).expect("open");
        block_on(engine.create_topic("log", TopicConfig::default())).expect("create");
        for v in ["a", "b", "c", "d"] {
            block_on(engine.append("log", PartitionId(0), batch(&[v], 1000))).expect("append");
        }
        block_on(engine.truncate_partition("log", PartitionId(0), Offset(2))).expect("truncate");
        let offsets = block_on(engine.list_offsets("log", PartitionId(0))).expect("offsets");
        assert_eq!(offsets.next_offset, Offset(2), "the log ends at the cut");
        let info =
            block_on(engine.append("log", PartitionId(0), batch(&["x"], 1000))).expect("append");
        assert_eq!(info.base_offset, Offset(2), "the next append takes the first cut offset");
        engine.close().expect("close");
    }
    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert_eq!(values(&engine, "log", 0, 0), ["a", "b", "x"]);
    engine.close().expect("close");
}
