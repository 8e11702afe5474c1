//! Topic metadata: each topic's config and the shard that owns each of its
//! partitions, persisted as `<data-dir>/topics/<topic>/topic.json`.
//!
//! Written rarely (create, alter, delete) from the caller's thread, each time
//! atomically (temporary file, fsync, rename, fsync of the directory). A
//! topic directory without `topic.json` is a deletion that did not finish
//! and is removed at open.

use crate::config::TopicConfig;
use crate::error::{EngineError, EngineResult};
use crate::ids::{PartitionId, ShardId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const TOPICS_DIR: &str = "topics";
pub const TOPIC_FILE: &str = "topic.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub config: TopicConfig,
    /// `placement[p]` owns partition `p` for the partition's whole life.
    pub placement: Vec<ShardId>,
    pub created_ms: i64,
}

impl TopicMeta {
    pub fn shard_of(&self, partition: PartitionId) -> Option<ShardId> {
        self.placement.get(partition.0 as usize).copied()
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

/// Removes the directories of partitions `topic.json` does not list: what
/// a growth that stopped before writing it (a crash, a failed open) left.
/// They never took a record: appends reach a partition only once the
/// catalog lists it.
fn remove_unlisted_partitions(topic_dir: &Path, meta: &TopicMeta) -> EngineResult<()> {
    let entries = std::fs::read_dir(topic_dir).map_err(|e| data_dir_error(topic_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| data_dir_error(topic_dir, e))?;
        let unlisted = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
            .is_some_and(|partition| partition >= meta.config.partitions);
        if unlisted {
            let path = entry.path();
            tracing::warn!(dir = %path.display(), partitions = meta.config.partitions, "removing a partition an unfinished growth left behind");
            std::fs::remove_dir_all(&path).map_err(|e| data_dir_error(&path, e))?;
        }
    }
    Ok(())
}

/// Reads every topic; removes directories of unfinished deletions and of
/// partitions an unfinished growth left.
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
        remove_unlisted_partitions(&path, &meta)?;
        catalog.topics.insert(meta.name.clone(), meta);
    }
    Ok(catalog)
}
