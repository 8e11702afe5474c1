//! A broker hosting only some partitions of a topic (`Engine::sync_topic`),
//! on a real data directory (O_DIRECT through io_uring).

use mamba_engine::batch::iter_batches;
use mamba_engine::{
    block_on, BatchBuilder, Engine, EngineConfig, EngineError, NewRecord, Offset, PartitionId,
    ShardId, StorageMode, TopicConfig,
};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn config() -> EngineConfig {
    EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() }
}

fn topic(partitions: u32) -> TopicConfig {
    TopicConfig { partitions, ..TopicConfig::default() }
}

fn hosted(partitions: &[u32]) -> BTreeSet<PartitionId> {
    partitions.iter().copied().map(PartitionId).collect()
}

fn batch(values: &[&str]) -> mamba_engine::Batch {
    let mut b = BatchBuilder::new();
    for v in values {
        b.push(NewRecord {
            key: None,
            value: v.as_bytes().to_vec(),
            headers: vec![],
            timestamp_ms: 1000,
        });
    }
    b.build().expect("batch")
}

fn append(engine: &Engine, topic: &str, partition: u32, value: &str) -> Offset {
    block_on(engine.append(topic, PartitionId(partition), batch(&[value])))
        .expect("append")
        .base_offset
}

fn values(engine: &Engine, topic: &str, partition: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Offset(0);
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

/// The partition directories of a topic on disk, sorted.
fn partition_dirs(data_dir: &Path, topic: &str) -> Vec<u32> {
    let mut dirs: Vec<u32> = std::fs::read_dir(data_dir.join("topics").join(topic))
        .expect("topic dir")
        .filter_map(|e| e.expect("entry").file_name().to_str()?.parse().ok())
        .collect();
    dirs.sort();
    dirs
}

fn is_not_hosted<T: std::fmt::Debug>(result: Result<T, EngineError>, partition: u32) -> bool {
    matches!(result, Err(EngineError::NotHosted { partition: p, .. }) if p == PartitionId(partition))
}

#[test]
fn sync_topic_opens_only_the_hosted_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let meta = block_on(engine.sync_topic("t", topic(4), &hosted(&[1, 3]), None)).expect("sync");
    assert_eq!(meta.config.partitions, 4, "the topic keeps all its partitions");
    assert_eq!(meta.placement.len(), 4);
    assert_eq!((meta.placement[0], meta.placement[2]), (None, None));
    assert_eq!(
        (meta.shard_of(PartitionId(1)), meta.shard_of(PartitionId(3))),
        (Some(ShardId(0)), Some(ShardId(1))),
        "hosted partitions spread over the least loaded shards"
    );
    assert_eq!(meta.hosted_set(), hosted(&[1, 3]));
    assert_eq!(engine.describe_topic("t").expect("describe"), meta);
    assert_eq!(partition_dirs(dir.path(), "t"), vec![1, 3], "only hosted partitions have files");
    assert_eq!(append(&engine, "t", 1, "a"), Offset(0));
    assert_eq!(values(&engine, "t", 1), vec!["a"]);

    // Every request to a partition of the topic that lives elsewhere says so.
    let p0 = PartitionId(0);
    assert!(is_not_hosted(block_on(engine.append("t", p0, batch(&["x"]))), 0));
    assert!(is_not_hosted(block_on(engine.try_append("t", p0, batch(&["x"]))), 0));
    assert!(is_not_hosted(block_on(engine.read("t", p0, Offset(0), 1 << 16)), 0));
    assert!(is_not_hosted(block_on(engine.list_offsets("t", p0)), 0));
    assert!(is_not_hosted(block_on(engine.describe_partition("t", p0)), 0));
    assert!(is_not_hosted(block_on(engine.wait_for_data("t", p0, Offset(0))), 0));
    assert!(is_not_hosted(block_on(engine.truncate_partition("t", p0, Offset(0))), 0));
    assert!(is_not_hosted(block_on(engine.delete_segments_before("t", p0, Offset(0))), 0));
    assert!(is_not_hosted(block_on(engine.offset_for_timestamp("t", p0, 0)), 0));
    assert!(is_not_hosted(engine.shard_of("t", p0), 0));
    let why = block_on(engine.list_offsets("t", PartitionId(2))).expect_err("not hosted");
    assert_eq!(why.to_string(), "topic \"t\" partition 2 is not hosted on this broker");
    // Beyond the count it is still an unknown partition.
    assert!(matches!(
        block_on(engine.list_offsets("t", PartitionId(4))),
        Err(EngineError::UnknownPartition { .. })
    ));
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!((counts.online, counts.offline), (2, 0), "counts are of hosted partitions");
    engine.close().expect("close");
}

#[test]
fn a_grown_topic_hosts_what_it_is_told_and_never_shrinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.sync_topic("t", topic(2), &hosted(&[0]), None)).expect("sync");
    append(&engine, "t", 0, "kept");

    let grown =
        block_on(engine.sync_topic("t", topic(5), &hosted(&[0, 1, 4]), None)).expect("grow");
    assert_eq!(grown.config.partitions, 5);
    assert_eq!(grown.hosted_set(), hosted(&[0, 1, 4]));
    assert_eq!((grown.placement[2], grown.placement[3]), (None, None));
    assert_eq!(partition_dirs(dir.path(), "t"), vec![0, 1, 4]);
    assert_eq!(append(&engine, "t", 4, "new"), Offset(0), "a new partition starts at 0");
    assert_eq!(append(&engine, "t", 1, "newly hosted"), Offset(0));
    assert!(is_not_hosted(block_on(engine.list_offsets("t", PartitionId(3))), 3));
    assert_eq!(values(&engine, "t", 0), vec!["kept"]);

    let shrink =
        block_on(engine.sync_topic("t", topic(3), &hosted(&[0]), None)).expect_err("shrink");
    assert!(matches!(
        shrink,
        EngineError::PartitionsNotIncreased { partition_count: 5, requested: 3, .. }
    ));
    let memory = TopicConfig { storage: StorageMode::Memory, ..topic(5) };
    assert!(matches!(
        block_on(engine.sync_topic("t", memory, &hosted(&[0]), None)),
        Err(EngineError::InvalidConfig(_))
    ));
    assert!(matches!(
        block_on(engine.sync_topic("t", topic(5), &hosted(&[0, 5]), None)),
        Err(EngineError::UnknownPartition { partition: PartitionId(5), .. })
    ));
    assert!(matches!(
        block_on(engine.sync_topic("bad/name", topic(1), &hosted(&[0]), None)),
        Err(EngineError::InvalidConfig(_))
    ));
    assert_eq!(engine.describe_topic("t").expect("describe"), grown, "refusals change nothing");
    assert_eq!(partition_dirs(dir.path(), "t"), vec![0, 1, 4]);
    engine.close().expect("close");
}

#[test]
fn unhosting_a_partition_removes_its_files_and_keeps_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.sync_topic("t", topic(3), &hosted(&[0, 1, 2]), None)).expect("sync");
    for p in 0..3 {
        for i in 0..5 {
            append(&engine, "t", p, &format!("p{p}-{i}"));
        }
    }
    // A long poll on the partition that goes away learns it went.
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || block_on(engine.wait_for_data("t", PartitionId(1), Offset(5))))
    };

    let meta = block_on(engine.sync_topic("t", topic(3), &hosted(&[0, 2]), None)).expect("unhost");
    assert_eq!(meta.placement[1], None);
    assert_eq!(partition_dirs(dir.path(), "t"), vec![0, 2], "the un-hosted partition's files go");
    assert!(is_not_hosted(waiter.join().expect("waiter"), 1));
    assert!(is_not_hosted(block_on(engine.read("t", PartitionId(1), Offset(0), 1 << 16)), 1));
    for p in [0, 2] {
        let expected: Vec<String> = (0..5).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(values(&engine, "t", p), expected, "partition {p} keeps its records");
    }
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!(counts.online, 2);

    // Hosted again, it starts empty: this broker keeps nothing of it.
    block_on(engine.sync_topic("t", topic(3), &hosted(&[0, 1, 2]), None)).expect("host again");
    let offsets = block_on(engine.list_offsets("t", PartitionId(1))).expect("offsets");
    assert_eq!((offsets.log_start_offset, offsets.next_offset), (Offset(0), Offset(0)));
    assert_eq!(append(&engine, "t", 1, "fresh"), Offset(0));
    engine.close().expect("close");

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert_eq!(values(&engine, "t", 1), vec!["fresh"], "no old point or record comes back");
    assert_eq!(values(&engine, "t", 2).len(), 5);
    engine.close().expect("close");
}

#[test]
fn syncing_the_same_state_twice_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let first = block_on(engine.sync_topic("t", topic(3), &hosted(&[0, 2]), None)).expect("sync");
    append(&engine, "t", 2, "x");
    let file = dir.path().join("topics/t/topic.json");
    let before = std::fs::metadata(&file).expect("topic.json");
    let bytes_before = std::fs::read(&file).expect("read");

    let second = block_on(engine.sync_topic("t", topic(3), &hosted(&[0, 2]), None)).expect("again");
    assert_eq!(second, first);
    let after = std::fs::metadata(&file).expect("topic.json");
    assert_eq!(
        after.ino(),
        before.ino(),
        "topic.json was not rewritten (it is replaced by rename)"
    );
    assert_eq!(std::fs::read(&file).expect("read"), bytes_before);
    assert_eq!(partition_dirs(dir.path(), "t"), vec![0, 2]);
    assert_eq!(values(&engine, "t", 2), vec!["x"]);

    // Only the settings changed: applied, nothing opened or removed.
    let altered = TopicConfig { retention_ms: Some(60_000), ..topic(3) };
    let meta =
        block_on(engine.sync_topic("t", altered.clone(), &hosted(&[0, 2]), None)).expect("alter");
    assert_eq!(meta.config, altered);
    assert_eq!(meta.placement, first.placement);
    assert_eq!(engine.describe_topic("t").expect("describe").config.retention_ms, Some(60_000));
    assert_eq!(values(&engine, "t", 2), vec!["x"]);
    engine.close().expect("close");
}

#[test]
fn a_restart_keeps_exactly_the_hosted_partitions_and_their_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let meta = block_on(engine.sync_topic("t", topic(4), &hosted(&[0, 2, 3]), None)).expect("sync");
    for p in [0, 2, 3] {
        append(&engine, "t", p, &format!("in {p}"));
    }
    engine.close().expect("close");
    // What a crash leaves: a hosting that stopped before `topic.json`
    // listed partition 1, or an un-hosting that stopped after it stopped
    // listing it.
    let stray = dir.path().join("topics/t/1");
    std::fs::create_dir_all(&stray).expect("mkdir");
    std::fs::write(stray.join("00000000000000000000.log"), b"junk").expect("write");

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert_eq!(engine.describe_topic("t").expect("describe"), meta, "placement is stable");
    assert_eq!(engine.open_report().partitions_opened, 3);
    assert!(engine.open_report().offline_partitions.is_empty());
    assert_eq!(partition_dirs(dir.path(), "t"), vec![0, 2, 3], "the unlisted directory went");
    for p in [0, 2, 3] {
        assert_eq!(values(&engine, "t", p), vec![format!("in {p}")]);
    }
    assert!(is_not_hosted(block_on(engine.list_offsets("t", PartitionId(1))), 1));
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!(counts.online, 3);
    engine.close().expect("close");
}

#[test]
fn a_topic_json_of_plain_shard_numbers_opens_as_all_hosted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let created = block_on(engine.create_topic("old", topic(2))).expect("create");
    append(&engine, "old", 0, "zero");
    append(&engine, "old", 1, "one");
    engine.close().expect("close");
    // `topic.json` as brokers wrote it before they hosted parts of topics.
    let old_format = format!(
        r#"{{
  "name": "old",
  "config": {{
    "partitions": 2,
    "storage": "disk",
    "durability": "fsync",
    "retention_ms": 604800000,
    "retention_bytes": null,
    "segment_bytes": 1073741824,
    "segment_ms": 604800000
  }},
  "placement": [
    0,
    1
  ],
  "created_ms": {}
}}"#,
        created.created_ms
    );
    std::fs::write(dir.path().join("topics/old/topic.json"), old_format).expect("write");

    let engine = Engine::open(dir.path(), config()).expect("reopen");
    let meta = engine.describe_topic("old").expect("describe");
    assert_eq!(meta.placement, vec![Some(ShardId(0)), Some(ShardId(1))]);
    assert_eq!(meta.hosted_set(), hosted(&[0, 1]));
    assert_eq!(values(&engine, "old", 0), vec!["zero"]);
    assert_eq!(values(&engine, "old", 1), vec!["one"]);
    assert_eq!(engine.open_report().partitions_opened, 2);
    // Synced with all hosted, it is the same topic.
    let synced =
        block_on(engine.sync_topic("old", topic(2), &hosted(&[0, 1]), None)).expect("sync");
    assert_eq!(synced, meta);
    engine.close().expect("close");
}

#[test]
fn a_topic_with_nothing_hosted_keeps_its_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let config = TopicConfig { retention_ms: Some(3_600_000), ..topic(3) };
    let meta =
        block_on(engine.sync_topic("t", config.clone(), &BTreeSet::new(), None)).expect("sync");
    assert_eq!(meta.placement, vec![None, None, None]);
    assert!(dir.path().join("topics/t/topic.json").is_file());
    assert!(partition_dirs(dir.path(), "t").is_empty());
    assert_eq!(engine.list_topics(), vec![meta.clone()], "the topic is known");
    assert!(is_not_hosted(block_on(engine.list_offsets("t", PartitionId(0))), 0));
    assert_eq!(block_on(engine.partition_counts()).expect("counts").online, 0);
    engine.close().expect("close");

    let engine = Engine::open(dir.path(), self::config()).expect("reopen");
    assert_eq!(engine.describe_topic("t").expect("describe"), meta);
    let hosting =
        block_on(engine.sync_topic("t", config.clone(), &hosted(&[1]), None)).expect("host");
    assert_eq!(hosting.config, config, "a later hosting keeps the config");
    assert_eq!(append(&engine, "t", 1, "now"), Offset(0));
    // Back to nothing hosted, then gone.
    block_on(engine.sync_topic("t", config, &BTreeSet::new(), None)).expect("unhost");
    assert!(partition_dirs(dir.path(), "t").is_empty());
    block_on(engine.delete_topic("t")).expect("delete");
    assert!(!dir.path().join("topics/t").exists());
    engine.close().expect("close");
}

#[test]
fn alter_grow_and_delete_work_on_a_partly_hosted_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    block_on(engine.sync_topic("t", topic(3), &hosted(&[1]), None)).expect("sync");
    let altered = TopicConfig { retention_ms: Some(60_000), ..topic(3) };
    let meta = block_on(engine.alter_topic("t", altered)).expect("alter");
    assert_eq!(meta.hosted_set(), hosted(&[1]));
    // Growth through the single-broker call hosts the new partitions here.
    let grown = block_on(engine.increase_partitions_to("t", 5)).expect("grow");
    assert_eq!(grown.hosted_set(), hosted(&[1, 3, 4]));
    assert_eq!(append(&engine, "t", 4, "y"), Offset(0));
    // Existing callers still create all-hosted topics.
    let all = block_on(engine.create_topic("all", topic(2))).expect("create");
    assert_eq!(all.hosted_set(), hosted(&[0, 1]));
    let counts = block_on(engine.partition_counts()).expect("counts");
    assert_eq!(counts.online, 5);
    block_on(engine.delete_topic("t")).expect("delete");
    assert!(!dir.path().join("topics/t").exists());
    assert_eq!(block_on(engine.partition_counts()).expect("counts").online, 2);
    engine.close().expect("close");
}

#[test]
fn memory_topics_are_hosted_and_unhosted_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    let memory = TopicConfig { storage: StorageMode::Memory, ..topic(2) };
    block_on(engine.sync_topic("m", memory.clone(), &hosted(&[0]), None)).expect("sync");
    assert_eq!(append(&engine, "m", 0, "a"), Offset(0));
    assert!(is_not_hosted(block_on(engine.list_offsets("m", PartitionId(1))), 1));
    block_on(engine.sync_topic("m", memory.clone(), &hosted(&[1]), None)).expect("move");
    assert!(is_not_hosted(block_on(engine.list_offsets("m", PartitionId(0))), 0));
    assert_eq!(append(&engine, "m", 1, "b"), Offset(0));
    engine.close().expect("close");
}

#[test]
fn a_topic_synced_under_another_id_replaces_the_deleted_one_of_the_same_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), config()).expect("open");
    // Made before the cluster: no id. Its first sync gives it one and
    // keeps its data.
    block_on(engine.create_topic("t", topic(2))).expect("create");
    append(&engine, "t", 0, "before-the-cluster");
    let adopted =
        block_on(engine.sync_topic("t", topic(2), &hosted(&[0, 1]), Some("a"))).expect("adopt");
    assert_eq!(adopted.topic_id.as_deref(), Some("a"));
    assert_eq!(values(&engine, "t", 0), vec!["before-the-cluster"]);
    engine.close().expect("close");

    // The id survives a restart; the same id again changes nothing.
    let engine = Engine::open(dir.path(), config()).expect("reopen");
    assert_eq!(engine.describe_topic("t").expect("describe").topic_id.as_deref(), Some("a"));
    append(&engine, "t", 1, "old-topic");
    let same =
        block_on(engine.sync_topic("t", topic(2), &hosted(&[0, 1]), Some("a"))).expect("same id");
    assert_eq!(values(&engine, "t", 1), vec!["old-topic"]);
    assert_eq!(same.topic_id.as_deref(), Some("a"));

    // The cluster deleted "t" and made a new "t" while this broker was
    // away: nothing of the old one may be served as the new one.
    let new = block_on(engine.sync_topic("t", topic(3), &hosted(&[1, 2]), Some("b")))
        .expect("another id");
    assert_eq!(new.topic_id.as_deref(), Some("b"));
    assert_eq!(new.hosted_set(), hosted(&[1, 2]));
    assert!(values(&engine, "t", 1).is_empty(), "the new topic starts empty");
    assert!(is_not_hosted(block_on(engine.list_offsets("t", PartitionId(0))), 0));
    assert_eq!(partition_dirs(dir.path(), "t"), vec![1, 2]);
    assert_eq!(append(&engine, "t", 2, "new-topic"), Offset(0));
    engine.close().expect("close");
}
