//! Recovery points: for each partition, an offset below which everything is
//! known durable, with the byte position where that offset's batch starts.
//!
//! Recovery at open verifies only what lies past a partition's recovery
//! point and cuts a torn tail there. Damage below it cannot be a torn write
//! (that data was synced), so it is corruption: the partition is kept
//! offline and no file is changed. Without a recovery point (a directory
//! written by an older version) recovery falls back to verifying from the
//! last index entry.
//!
//! Each shard checkpoints the recovery points of the partitions it owns to
//! `<data-dir>/recovery-points/shard-<id>` every
//! `recovery_point_interval_ms` (when one moved) and at a clean shutdown,
//! atomically (temporary file, fdatasync, rename, directory fsync). Files
//! are plain text with a CRC32C trailer, so an operator can read them and a
//! damaged one is detected and ignored (recovery then verifies more, never
//! less). Entries carry the topic's creation time, so a topic deleted and
//! created again under the same name never inherits old points.
//!
//! Memory topics have no files; their point is their next offset, which a
//! restarted broker continues from, so consumers holding positions are not
//! fed different records under the same offsets. After a crash (no clean
//! shutdown) a memory log continues `MEMORY_OFFSET_LEASE` past its last
//! checkpointed point, which no log can reach between two checkpoints
//! (appends beyond it wait for the next checkpoint; see `PartitionLog`).

use crate::error::{EngineError, EngineResult};
use crate::ids::{Offset, PartitionId, ShardId};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const RECOVERY_POINTS_DIR: &str = "recovery-points";
const HEADER_V1: &str = "mamba recovery points v1";

/// Offsets a memory log may assign past its last checkpointed point before
/// appends must wait for the next checkpoint: 2^32, far more than any
/// partition appends in one checkpoint interval.
pub const MEMORY_OFFSET_LEASE: u64 = 1 << 32;

/// Every batch below `offset` is durable; in the segment starting at
/// `segment_base`, the batch with base `offset` starts (or the log ends) at
/// `position_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPoint {
    pub offset: Offset,
    pub segment_base: Offset,
    pub position_bytes: u64,
}

impl RecoveryPoint {
    pub const ZERO: RecoveryPoint =
        RecoveryPoint { offset: Offset::ZERO, segment_base: Offset::ZERO, position_bytes: 0 };
}

/// Names one partition of one incarnation of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PointKey {
    pub topic: String,
    /// The topic's `created_ms`: tells incarnations of a name apart.
    pub topic_created_ms: i64,
    pub partition: PartitionId,
}

/// One shard's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Written by a clean shutdown (nothing was appended after it).
    pub clean: bool,
    pub points: HashMap<PointKey, RecoveryPoint>,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RECOVERY_POINTS_DIR)
}

pub fn shard_file(data_dir: &Path, shard: ShardId) -> PathBuf {
    dir(data_dir).join(format!("shard-{}", shard.0))
}

impl Checkpoint {
    /// The file's bytes: a header line, one line per partition, and a
    /// trailer with the CRC32C of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{HEADER_V1}\nclean {}\n", self.clean);
        let mut lines: Vec<String> = self
            .points
            .iter()
            .map(|(k, p)| {
                format!(
                    "{} {} {} {} {} {}",
                    k.topic,
                    k.topic_created_ms,
                    k.partition.0,
                    p.offset.0,
                    p.segment_base.0,
                    p.position_bytes
                )
            })
            .collect();
        lines.sort();
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        let crc = crc32c::crc32c(text.as_bytes());
        let _ = writeln!(text, "crc32c {crc:08x}");
        text.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not text: {e}"))?;
        let text = text.strip_suffix('\n').ok_or("no final newline")?;
        let (body, trailer) = text.split_at(text.rfind('\n').map_or(0, |i| i + 1));
        let expected = trailer
            .strip_prefix("crc32c ")
            .filter(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or("no checksum trailer")?;
        let actual = crc32c::crc32c(body.as_bytes());
        if actual != expected {
            return Err(format!("checksum mismatch: stored {expected:08x}, computed {actual:08x}"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER_V1) {
            return Err("unknown header".into());
        }
        let clean = match lines.next() {
            Some("clean true") => true,
            Some("clean false") => false,
            other => return Err(format!("bad clean line {other:?}")),
        };
        let mut points = HashMap::new();
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let bad = || format!("bad line {line:?}");
            let [topic, created, partition, offset, base, position] = fields[..] else {
                return Err(bad());
            };
            let number = |s: &str| s.parse::<u64>().map_err(|_| bad());
            let key = PointKey {
                topic: topic.to_string(),
                topic_created_ms: created.parse().map_err(|_| bad())?,
                partition: PartitionId(partition.parse().map_err(|_| bad())?),
            };
            let point = RecoveryPoint {
                offset: Offset(number(offset)?),
                segment_base: Offset(number(base)?),
                position_bytes: number(position)?,
            };
            if point.offset < point.segment_base {
                return Err(bad());
            }
            points.insert(key, point);
        }
        Ok(Checkpoint { clean, points })
    }
}

/// Every shard's checkpoint in the data directory, merged. A partition found
/// in several files (the shard count changed) takes the entry of the file
/// written last. Unreadable files are skipped with a warning: recovery then
/// verifies those partitions from their last index entry.
pub fn load_all(data_dir: &Path) -> EngineResult<HashMap<PointKey, (RecoveryPoint, bool)>> {
    let dir = dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(EngineError::DataDir {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("shard-") || name.to_string_lossy().ends_with(".tmp")
        {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        files.push((modified, path));
    }
    files.sort();
    let mut merged = HashMap::new();
    for (_, path) in files {
        let decoded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Checkpoint::decode(&bytes));
        match decoded {
            Ok(checkpoint) => {
                for (key, point) in checkpoint.points {
                    merged.insert(key, (point, checkpoint.clean));
                }
            }
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "ignoring an unreadable recovery-point file; those partitions are verified from their last index entry")
            }
        }
    }
    Ok(merged)
}

/// Removes the files of shards `shard_count` and up (the shard count went
/// down; their partitions are in the live shards' files by now).
pub fn remove_beyond(data_dir: &Path, shard_count: usize) -> EngineResult<()> {
    let dir = dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_prefix("shard-").and_then(|id| id.parse::<usize>().ok()) else {
            continue;
        };
        if id >= shard_count {
            std::fs::remove_file(entry.path()).map_err(|e| EngineError::DataDir {
                path: entry.path().display().to_string(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut points = HashMap::new();
        points.insert(
            PointKey { topic: "orders.v2".into(), topic_created_ms: 17, partition: PartitionId(3) },
            RecoveryPoint { offset: Offset(120), segment_base: Offset(100), position_bytes: 8192 },
        );
        points.insert(
            PointKey { topic: "a".into(), topic_created_ms: 1, partition: PartitionId(0) },
            RecoveryPoint::ZERO,
        );
        Checkpoint { clean: true, points }
    }

    #[test]
    fn a_checkpoint_round_trips_and_any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(sample()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Checkpoint::decode(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(Checkpoint::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(Checkpoint::decode(b"").is_err());
    }
}
