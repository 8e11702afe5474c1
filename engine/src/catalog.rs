//! Topic metadata: each topic's config and, for each of its partitions, the
//! shard that owns it here or that this broker does not host it, persisted
//! as `<data-dir>/topics/<topic>/topic.json`.
//!
//! Written rarely (create, alter, sync, delete) from the caller's thread,
//! each time atomically (temporary file, fsync, rename, fsync of the
//! directory). A topic directory without `topic.json` is a deletion that
//! did not finish and is removed at open; so is a partition directory that
//! `topic.json` does not list as hosted.

use crate::config::TopicConfig;
use crate::error::{EngineError, EngineResult};
use crate::ids::{PartitionId, ShardId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const TOPICS_DIR: &str = "topics";
pub const TOPIC_FILE: &str = "topic.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub config: TopicConfig,
    /// One entry per partition (`config.partitions` of them). `Some(shard)`:
    /// this broker hosts partition `p` and `shard` owns it for as long as it
    /// does. `None`: the partition exists in the topic (other brokers hold
    /// it) but this broker has none of its data. Files written before
    /// brokers hosted parts of topics hold plain shard numbers, which read
    /// as `Some` (`null` is `None`).
    pub placement: Vec<Option<ShardId>>,
    pub created_ms: i64,
    /// The id a cluster gave this topic: a topic deleted and created again
    /// under the same name has another, so a broker that missed both can
    /// tell its files belong to the old one. `None` for a topic made
    /// without a cluster (and in files written before clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

impl TopicMeta {
    /// The shard that owns `partition` here; `None` for a partition not
    /// hosted here, or beyond the partition count.
    pub fn shard_of(&self, partition: PartitionId) -> Option<ShardId> {
        self.placement.get(partition.0 as usize).copied().flatten()
    }

    /// Whether this broker holds `partition` (false beyond the count).
    pub fn is_hosted(&self, partition: PartitionId) -> bool {
        self.shard_of(partition).is_some()
    }

    /// The hosted partitions and their shards, in partition order.
    pub fn hosted_partitions(&self) -> impl Iterator<Item = (PartitionId, ShardId)> + '_ {
        self.placement
            .iter()
            .enumerate()
            .filter_map(|(p, shard)| shard.map(|shard| (PartitionId(p as u32), shard)))
    }

    /// The set of hosted partitions (the argument `Engine::sync_topic`
    /// takes).
    pub fn hosted_set(&self) -> BTreeSet<PartitionId> {
        self.hosted_partitions().map(|(p, _)| p).collect()
    }

    /// Checks what `load` cannot trust a file for: one placement entry per
    /// partition.
    fn check(&self) -> Result<(), String> {
        if self.placement.len() != self.config.partitions as usize {
            return Err(format!(
                "placement lists {} partitions but the topic has {}",
                self.placement.len(),
                self.config.partitions
            ));
        }
        Ok(())
    }
}

/// An immutable snapshot of all topics; replaced whole on every change.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub topics: BTreeMap<String, TopicMeta>,
}

pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(TOPICS_DIR)
}

pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    topics_dir(data_dir).join(topic)
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: PartitionId) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.0.to_string())
}

fn data_dir_error(path: &Path, reason: impl std::fmt::Display) -> EngineError {
    EngineError::DataDir { path: path.display().to_string(), reason: reason.to_string() }
}

/// Writes `meta` atomically and durably.
pub fn store(data_dir: &Path, meta: &TopicMeta) -> EngineResult<()> {
    let dir = topic_dir(data_dir, &meta.name);
    std::fs::create_dir_all(&dir).map_err(|e| data_dir_error(&dir, e))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| data_dir_error(&dir, e))?;
    let tmp = dir.join(format!("{TOPIC_FILE}.tmp"));
    let path = dir.join(TOPIC_FILE);
    let mut file = std::fs::File::create(&tmp).map_err(|e| data_dir_error(&tmp, e))?;
    file.write_all(&json).map_err(|e| data_dir_error(&tmp, e))?;
    file.sync_all().map_err(|e| data_dir_error(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| data_dir_error(&path, e))?;
    sync_dir(&dir)?;
    sync_dir(&topics_dir(data_dir))
}

/// Removes a topic's metadata durably; its data goes after.
pub fn remove(data_dir: &Path, topic: &str) -> EngineResult<()> {
    let path = topic_dir(data_dir, topic).join(TOPIC_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(data_dir_error(&path, e)),
    }
    sync_dir(&topic_dir(data_dir, topic))
}

fn sync_dir(dir: &Path) -> EngineResult<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| data_dir_error(dir, e))
}

/// The partition a directory entry of a topic names, if it is one the
/// engine would have written (`0`, `1`, …: no sign, no leading zeros).
fn partition_of_entry(name: &std::ffi::OsStr) -> Option<PartitionId> {
    let name = name.to_str()?;
    let partition = name.parse::<u32>().ok()?;
    (partition.to_string() == name).then_some(PartitionId(partition))
}

/// Removes the directories of partitions `topic.json` does not list as
/// hosted: what a growth or a hosting that stopped before writing it left
/// (a crash, a failed open; they never took a record: appends reach a
/// partition only once the catalog lists it), and what an un-hosting that
/// stopped after writing it left. A hosted partition's directory is never
/// touched.
fn remove_unlisted_partitions(topic_dir: &Path, meta: &TopicMeta) -> EngineResult<()> {
    let entries = std::fs::read_dir(topic_dir).map_err(|e| data_dir_error(topic_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| data_dir_error(topic_dir, e))?;
        let Some(partition) = partition_of_entry(&entry.file_name()) else { continue };
        if meta.is_hosted(partition) {
            continue;
        }
        let path = entry.path();
        if partition.0 >= meta.config.partitions {
            tracing::warn!(dir = %path.display(), partitions = meta.config.partitions, "removing a partition an unfinished growth left behind");
        } else {
            tracing::warn!(dir = %path.display(), "removing a partition this broker does not host (an unfinished hosting or un-hosting)");
        }
        std::fs::remove_dir_all(&path).map_err(|e| data_dir_error(&path, e))?;
    }
    Ok(())
}

/// Reads every topic; removes directories of unfinished deletions and of
/// partitions not hosted (what an unfinished growth, hosting or un-hosting
/// left).
pub fn load(data_dir: &Path) -> EngineResult<Catalog> {
    let dir = topics_dir(data_dir);
    let mut catalog = Catalog::default();
    let entries = std::fs::read_dir(&dir).map_err(|e| data_dir_error(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| data_dir_error(&dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let file = path.join(TOPIC_FILE);
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %path.display(), "removing the data of a deleted topic");
                std::fs::remove_dir_all(&path).map_err(|e| data_dir_error(&path, e))?;
                continue;
            }
            Err(e) => return Err(data_dir_error(&file, e)),
        };
        let meta: TopicMeta = serde_json::from_slice(&bytes)
            .map_err(|e| data_dir_error(&file, format!("unreadable topic metadata: {e}")))?;
        meta.check()
            .map_err(|e| data_dir_error(&file, format!("inconsistent topic metadata: {e}")))?;
        remove_unlisted_partitions(&path, &meta)?;
        catalog.topics.insert(meta.name.clone(), meta);
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_json_of_plain_shard_numbers_reads_as_all_hosted() {
        // As written before brokers hosted parts of topics.
        let old = r#"{
          "name": "t",
          "config": {
            "partitions": 3,
            "storage": "disk",
            "durability": "fsync",
            "retention_ms": 604800000,
            "retention_bytes": null,
            "segment_bytes": 1073741824,
            "segment_ms": 604800000
          },
          "placement": [0, 1, 0],
          "created_ms": 1700000000000
        }"#;
        let meta: TopicMeta = serde_json::from_str(old).expect("old format");
        assert_eq!(meta.placement, vec![Some(ShardId(0)), Some(ShardId(1)), Some(ShardId(0))]);
        assert!(meta.check().is_ok());
        assert_eq!(meta.hosted_set().len(), 3);
        assert_eq!(meta.shard_of(PartitionId(1)), Some(ShardId(1)));
        assert_eq!(meta.shard_of(PartitionId(3)), None, "beyond the count");
    }

    #[test]
    fn unhosted_partitions_round_trip_as_null() {
        let meta = TopicMeta {
            name: "t".into(),
            config: TopicConfig { partitions: 3, ..TopicConfig::default() },
            placement: vec![None, Some(ShardId(1)), None],
            created_ms: 1,
            topic_id: None,
        };
        let json = serde_json::to_string(&meta).expect("encode");
        assert!(json.contains(r#""placement":[null,1,null]"#), "{json}");
        let back: TopicMeta = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, meta);
        assert!(!back.is_hosted(PartitionId(0)));
        assert!(back.is_hosted(PartitionId(1)));
        let hosted: Vec<_> = back.hosted_partitions().collect();
        assert_eq!(hosted, vec![(PartitionId(1), ShardId(1))]);
    }

    #[test]
    fn a_placement_not_matching_the_partition_count_is_refused() {
        let meta = TopicMeta {
            name: "t".into(),
            config: TopicConfig { partitions: 3, ..TopicConfig::default() },
            placement: vec![Some(ShardId(0))],
            created_ms: 1,
            topic_id: None,
        };
        let why = meta.check().expect_err("too short");
        assert!(why.contains("lists 1 partitions but the topic has 3"), "{why}");
    }

    #[test]
    fn only_names_the_engine_writes_are_partitions() {
        let of = |name: &str| partition_of_entry(std::ffi::OsStr::new(name));
        assert_eq!(of("0"), Some(PartitionId(0)));
        assert_eq!(of("17"), Some(PartitionId(17)));
        assert_eq!(of("017"), None);
        assert_eq!(of("+1"), None);
        assert_eq!(of("topic.json"), None);
    }
}
