//! User-facing configuration: per-topic settings and engine settings, each
//! validated once where it enters.

use crate::error::{EngineError, EngineResult};
use crate::limits::{PARTITIONS_PER_TOPIC_MAX, SEGMENT_BYTES_MIN, TOPIC_NAME_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Done after fdatasync: survives power loss.
    #[default]
    Fsync,
    /// Done after the write; fdatasync every `interval_ms`.
    Interval { interval_ms: u64 },
    /// Done after the write; synced only at segment roll and close.
    None,
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            _ => match s.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(interval_ms) if interval_ms > 0 => Ok(Durability::Interval { interval_ms }),
                    _ => Err(format!(
                        "bad interval in {s:?}: want interval:<milliseconds>, e.g. interval:100"
                    )),
                },
                None => Err(format!("unknown durability {s:?}: use fsync, interval:<ms> or none")),
            },
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Fsync => write!(f, "fsync"),
            Durability::Interval { interval_ms } => write!(f, "interval:{interval_ms}"),
            Durability::None => write!(f, "none"),
        }
    }
}

/// Where a topic's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// Segment files on the data directory's disk.
    #[default]
    Disk,
    /// Memory only: no files, lost at restart.
    Memory,
}

impl FromStr for StorageMode {
    type Err = String;
    fn from_str(s: &str) -> Result<StorageMode, String> {
        match s {
            "disk" => Ok(StorageMode::Disk),
            "memory" => Ok(StorageMode::Memory),
            _ => Err(format!("unknown storage {s:?}: use disk or memory")),
        }
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageMode::Disk => "disk",
            StorageMode::Memory => "memory",
        })
    }
}

/// A topic's settings. `None` for retention means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub partitions: u32,
    pub storage: StorageMode,
    pub durability: Durability,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    pub segment_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            partitions: 1,
            storage: StorageMode::Disk,
            durability: Durability::Fsync,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl TopicConfig {
    pub fn validate(&self) -> EngineResult<()> {
        let bad = |m: String| Err(EngineError::InvalidConfig(m));
        if self.partitions == 0 || self.partitions > PARTITIONS_PER_TOPIC_MAX {
            return bad(format!(
                "partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}, got {}",
                self.partitions
            ));
        }
        // Index entries hold 32-bit positions.
        if self.segment_bytes < SEGMENT_BYTES_MIN || self.segment_bytes > (u32::MAX as u64) / 2 {
            return bad(format!(
                "segment_bytes must be in {SEGMENT_BYTES_MIN}..={}, got {}",
                (u32::MAX as u64) / 2,
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return bad("segment_ms must be positive".into());
        }
        if self.retention_ms == Some(0) {
            return bad("retention_ms must be positive (omit it for unlimited)".into());
        }
        Ok(())
    }
}

/// Checks a topic name: it becomes a directory name.
pub fn validate_topic_name(name: &str) -> EngineResult<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty()
        || name.len() > TOPIC_NAME_BYTES_MAX
        || !ok_chars
        || name == "."
        || name == ".."
    {
        return Err(EngineError::InvalidConfig(format!(
            "bad topic name {name:?}: use 1 to {TOPIC_NAME_BYTES_MAX} characters from [a-zA-Z0-9._-]"
        )));
    }
    Ok(())
}

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Executors to run; `None`: one per available core.
    pub shards: Option<u32>,
    /// Pin shard `i` to core `i % cores`.
    pub pin_shards: bool,
    /// Recent batches kept in memory for readers that follow the log's
    /// tail, per shard; the shard's partitions share it equally.
    pub tail_cache_bytes_per_shard: usize,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// How often each shard checkpoints its partitions' recovery points
    /// (when one moved). Recovery after a crash verifies what was written
    /// since; a clean shutdown always checkpoints.
    pub recovery_point_interval_ms: u64,
    /// Descriptors of segment and index files each shard keeps open; the
    /// least recently used idle ones are closed beyond it (and reopened when
    /// needed). `None`: a quarter of the open-file limit, split over the
    /// shards (the rest is for connections).
    pub open_files_per_shard_max: Option<usize>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            shards: None,
            pin_shards: true,
            tail_cache_bytes_per_shard: 64 * 1024 * 1024,
            retention_check_interval_ms: 30_000,
            recovery_point_interval_ms: 10_000,
            open_files_per_shard_max: None,
        }
    }
}

impl EngineConfig {
    /// Settings for a guest in another program's process rather than a
    /// broker that owns the machine: one shard (one executor thread and
    /// io_uring), not pinned (the host schedules its own threads), an
    /// 8 MiB tail cache and 256 open segment files. Raise `shards` for
    /// more write throughput across partitions.
    pub fn embedded() -> EngineConfig {
        EngineConfig {
            shards: Some(1),
            pin_shards: false,
            tail_cache_bytes_per_shard: 8 << 20,
            open_files_per_shard_max: Some(256),
            ..EngineConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_its_three_forms() {
        assert_eq!("fsync".parse(), Ok(Durability::Fsync));
        assert_eq!("none".parse(), Ok(Durability::None));
        assert_eq!("interval:250".parse(), Ok(Durability::Interval { interval_ms: 250 }));
        assert!("interval:0".parse::<Durability>().is_err());
        assert!("sometimes".parse::<Durability>().is_err());
    }

    #[test]
    fn topic_names_are_safe_directory_names() {
        assert!(validate_topic_name("orders.v2_eu-1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(300)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
