//! Offline inspection and repair of a data directory, for `mamba log`:
//! the same scanning and recovery code the engine runs, without a broker.

use crate::batch::BatchView;
use crate::catalog::{TOPICS_DIR, TOPIC_FILE};
use crate::config::Durability;
use crate::disk::{prime_io_poll_probe, DiskStorage};
use crate::error::{EngineError, EngineResult};
use crate::ids::{Offset, PartitionId, ShardId};
use crate::partition::{LogOptions, PartitionLog};
use crate::recovery_point::{Checkpoint, PointKey, RecoveryPoint};
use crate::runtime::{self, ExecutorOptions};
use crate::scan::{scan_segment, ScanEnd};
use crate::segment::{list_segments, SegmentPaths, SegmentReport};
use crate::segment_index::{decode_offset_entries, decode_time_entries};
use crate::storage::{Storage, StorageRef};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Runs `f` on a one-off executor (DMA files need one) and returns its result.
pub fn run_offline<F, Fut, T>(dir: &Path, f: F) -> EngineResult<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = EngineResult<T>> + 'static,
    T: Send + 'static,
{
    let probe_dir = dir.to_path_buf();
    let options =
        ExecutorOptions { name: "mamba-offline".into(), core: None, io_memory_bytes: 1 << 20 };
    let thread = runtime::spawn_executor(options, move || async move {
        prime_io_poll_probe(&probe_dir).await?;
        f().await
    })
    .map_err(|e| EngineError::DataDir { path: dir.display().to_string(), reason: e.to_string() })?;
    match thread.join() {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(EngineError::DataDir { path: dir.display().to_string(), reason: e }),
        Err(_) => Err(EngineError::DataDir {
            path: dir.display().to_string(),
            reason: "offline executor panicked".into(),
        }),
    }
}

/// The partition directories under `path`: a data directory, a topic
/// directory or a partition directory.
pub fn partition_dirs(path: &Path) -> EngineResult<Vec<PathBuf>> {
    let bad = |reason: String| EngineError::DataDir { path: path.display().to_string(), reason };
    if !path.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let path = &std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let subdirs = |dir: &Path| -> EngineResult<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| bad(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        Ok(out)
    };
    let is_partition = |dir: &Path| {
        dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.parse::<u32>().is_ok())
    };
    if path.join(TOPICS_DIR).is_dir() {
        let mut out = Vec::new();
        for topic in subdirs(&path.join(TOPICS_DIR))? {
            out.extend(subdirs(&topic)?.into_iter().filter(|p| is_partition(p)));
        }
        return Ok(out);
    }
    if path.join(TOPIC_FILE).is_file() {
        return Ok(subdirs(path)?.into_iter().filter(|p| is_partition(p)).collect());
    }
    let has_logs = std::fs::read_dir(path)
        .map_err(|e| bad(e.to_string()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(crate::segment::LOG_SUFFIX));
    if has_logs || is_partition(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    Err(bad("neither a data directory, a topic directory nor a partition directory".into()))
}

/// The data directory `path` (a data, topic or partition directory) lies
/// in, if any: the nearest ancestor holding a `topics` directory.
pub fn find_data_dir(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    path.ancestors().find(|dir| dir.join(TOPICS_DIR).is_dir()).map(Path::to_path_buf)
}

/// One record, for `dump --records`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordInfo {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One batch as found in a segment file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchInfo {
    pub file: PathBuf,
    pub base_offset: u64,
    pub last_offset: u64,
    pub record_count: u32,
    pub position_bytes: u64,
    pub size_bytes: u64,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: u64,
    pub base_sequence: u32,
    pub leader_epoch: u32,
    /// The CRC32C the header carries (of everything but the base offset
    /// and the leader epoch): equal batches, byte for byte, show equal
    /// offsets, epochs and CRCs.
    pub crc: u32,
    pub crc_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordInfo>>,
}

fn batch_info(file: &Path, view: &BatchView<'_>, position: u64, records: bool) -> BatchInfo {
    let h = view.header();
    BatchInfo {
        file: file.to_path_buf(),
        base_offset: h.base_offset.0,
        last_offset: h.last_offset().0,
        record_count: h.record_count,
        position_bytes: position,
        size_bytes: view.as_bytes().len() as u64,
        first_timestamp_ms: h.first_timestamp_ms,
        max_timestamp_ms: h.max_timestamp_ms,
        producer_id: h.producer_id,
        base_sequence: h.base_sequence,
        leader_epoch: h.leader_epoch.0,
        crc: h.crc,
        crc_ok: true,
        records: records.then(|| {
            view.iter()
                .map(|r| RecordInfo {
                    offset: r.offset.0,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key().map(<[u8]>::to_vec),
                    value: r.value().to_vec(),
                    headers: r.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
                })
                .collect()
        }),
    }
}

/// A problem `check` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub file: PathBuf,
    /// Where valid data ends in that file, and the offset after it.
    pub valid_end_bytes: u64,
    pub valid_end_offset: u64,
    pub problem: String,
    /// True for damage that ends the log (a torn or corrupt batch); false
    /// for index files that recovery would rebuild.
    pub damaged_log: bool,
}

/// Scans every batch of every segment in `dir` from the start; calls
/// `on_batch` for each valid one and returns what is wrong.
pub async fn scan_partition(
    dir: &Path,
    records: bool,
    mut on_batch: impl FnMut(BatchInfo),
) -> EngineResult<Vec<Finding>> {
    let storage = DiskStorage;
    let mut findings = Vec::new();
    let bases = list_segments(&storage, dir)?;
    for (i, &base) in bases.iter().enumerate() {
        let paths = SegmentPaths::new(dir, base);
        let log = storage.open(&paths.log, false).await?;
        let size = log.size_bytes().await?;
        let mut starts: BTreeMap<u64, Offset> = BTreeMap::new();
        let outcome = scan_segment(&log, size, 0, base, |view, position| {
            starts.insert(position, view.header().base_offset);
            on_batch(batch_info(&paths.log, view, position, records));
        })
        .await?;
        if let ScanEnd::Torn { reason } = &outcome.end {
            // Show the bad batch too when its header is readable.
            let at = outcome.valid_end_bytes;
            let start = crate::limits::align_down(at, crate::limits::BLOCK_BYTES);
            let head = log.read_at(start, crate::limits::BLOCK_BYTES as usize * 2).await?;
            let from = (at - start) as usize;
            if let Some(h) = head
                .get(from..)
                .filter(|b| crate::batch::peek_stored_bytes(b).is_some())
                .and_then(|b| crate::batch::BatchHeader::decode(b).ok())
            {
                on_batch(BatchInfo {
                    file: paths.log.clone(),
                    base_offset: h.base_offset.0,
                    last_offset: h.base_offset.0.saturating_add(u64::from(h.last_offset_delta)),
                    record_count: h.record_count,
                    position_bytes: at,
                    size_bytes: h.stored_bytes() as u64,
                    first_timestamp_ms: h.first_timestamp_ms,
                    max_timestamp_ms: h.max_timestamp_ms,
                    producer_id: h.producer_id,
                    base_sequence: h.base_sequence,
                    leader_epoch: h.leader_epoch.0,
                    crc: h.crc,
                    crc_ok: false,
                    records: None,
                });
            }
            findings.push(Finding {
                file: paths.log.clone(),
                valid_end_bytes: outcome.valid_end_bytes,
                valid_end_offset: outcome.next_offset.0,
                problem: format!(
                    "torn or corrupt batch at byte {}: {reason}",
                    outcome.valid_end_bytes
                ),
                damaged_log: true,
            });
        }
        if let Some(&next_base) = bases.get(i + 1) {
            if outcome.next_offset != next_base && outcome.end == ScanEnd::Clean {
                findings.push(Finding {
                    file: paths.log.clone(),
                    valid_end_bytes: outcome.valid_end_bytes,
                    valid_end_offset: outcome.next_offset.0,
                    problem: format!(
                        "segment ends before offset {} but the next one starts at {next_base}",
                        outcome.next_offset
                    ),
                    damaged_log: true,
                });
            }
        }
        let index = read_all(&storage, &paths.index).await?;
        let time = read_all(&storage, &paths.time_index).await?;
        let entries = decode_offset_entries(&index.unwrap_or_default(), size);
        let times = decode_time_entries(&time.unwrap_or_default(), size);
        let bad_entry = entries.iter().find(|e| {
            starts.get(&u64::from(e.position_bytes))
                != Some(&base.plus(u64::from(e.relative_offset)))
        });
        if let Some(e) = bad_entry {
            findings.push(Finding {
                file: paths.index.clone(),
                valid_end_bytes: outcome.valid_end_bytes,
                valid_end_offset: outcome.next_offset.0,
                problem: format!(
                    "index entry for offset {} points at byte {}, which is not that batch",
                    base.0 + u64::from(e.relative_offset),
                    e.position_bytes
                ),
                damaged_log: false,
            });
        }
        if times.len() != entries.len() {
            findings.push(Finding {
                file: paths.time_index.clone(),
                valid_end_bytes: outcome.valid_end_bytes,
                valid_end_offset: outcome.next_offset.0,
                problem: format!(
                    "time index has {} entries, offset index {}",
                    times.len(),
                    entries.len()
                ),
                damaged_log: false,
            });
        }
        if outcome.end != ScanEnd::Clean {
            // Later segments cannot be trusted to continue this one.
            break;
        }
    }
    Ok(findings)
}

async fn read_all(storage: &DiskStorage, path: &Path) -> EngineResult<Option<Vec<u8>>> {
    let file = match storage.open(path, false).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size = file.size_bytes().await?;
    let read =
        file.read_at(0, crate::limits::align_up(size, crate::limits::BLOCK_BYTES) as usize).await?;
    Ok(Some(read[..(size as usize).min(read.len())].to_vec()))
}

/// Where a partition's recovery points are kept, if it belongs to a topic
/// of a data directory: its key, and the shard whose file holds it.
fn point_location(dir: &Path) -> Option<(PathBuf, PointKey, ShardId)> {
    let partition = PartitionId(dir.file_name()?.to_str()?.parse().ok()?);
    let topic_dir = dir.parent()?;
    let data_dir = topic_dir.parent()?.parent()?;
    let meta: crate::catalog::TopicMeta =
        serde_json::from_slice(&std::fs::read(topic_dir.join(TOPIC_FILE)).ok()?).ok()?;
    let shard = meta.shard_of(partition)?;
    let key = PointKey { topic: meta.name, topic_created_ms: meta.created_ms, partition };
    Some((data_dir.to_path_buf(), key, shard))
}

/// The damage `check` found in a partition, as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    None,
    /// Past the recovery point in the active segment: recovery cuts it.
    TornTail,
    /// In a closed segment or below the recovery point: cut only with
    /// `--force`, losing every offset from `offset` on.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// The partition's last checkpointed recovery point, if any.
fn recovery_point_of(dir: &Path) -> Option<(RecoveryPoint, bool)> {
    let (data_dir, key, _) = point_location(dir)?;
    crate::recovery_point::load_all(&data_dir).ok()?.get(&key).copied()
}

/// Classifies the first damage `findings` name, given the partition's
/// recovery point: what the engine would cut at open, and what it refuses.
pub fn classify(dir: &Path, findings: &[Finding]) -> EngineResult<Damage> {
    classify_against(dir, findings, recovery_point_of(dir).map(|(p, _)| p))
}

fn classify_against(
    dir: &Path,
    findings: &[Finding],
    point: Option<RecoveryPoint>,
) -> EngineResult<Damage> {
    let Some(damage) = findings.iter().find(|f| f.damaged_log) else { return Ok(Damage::None) };
    let bases = list_segments(&DiskStorage, dir)?;
    let active = bases.last().map(|b| SegmentPaths::new(dir, *b).log);
    let corrupt = |reason: &str| {
        Ok(Damage::Corrupt {
            file: damage.file.clone(),
            offset: damage.valid_end_offset,
            reason: format!("{reason}: {}", damage.problem),
        })
    };
    if active.as_ref() != Some(&damage.file) {
        return corrupt("damage in a closed segment");
    }
    match point {
        Some(point) if Offset(damage.valid_end_offset) < point.offset => {
            corrupt(&format!("damage below the recovery point (offset {})", point.offset))
        }
        _ => Ok(Damage::TornTail),
    }
}

/// Runs the recovery the engine runs at open on one partition and closes it,
/// after verifying every batch as `check` does: a torn tail past the
/// recovery point is cut (as the engine would); other damage is refused
/// with `Corrupt` unless `force`. With `force` the log is cut at the first
/// bad batch and every later segment is deleted (data after the damage is
/// lost; the engine never does this on its own). Afterwards the
/// partition's recovery point is its new end.
pub async fn recover_partition(dir: &Path, force: bool) -> EngineResult<Vec<SegmentReport>> {
    let storage: StorageRef = Rc::new(DiskStorage);
    let findings = scan_partition(dir, false, |_| {}).await?;
    let mut point = recovery_point_of(dir);
    let damage = classify_against(dir, &findings, point.map(|(p, _)| p))?;
    let location = point_location(dir);
    if let Damage::Corrupt { file, offset, reason } = &damage {
        if !force {
            return Err(EngineError::Corrupt {
                path: file.display().to_string(),
                offset: Offset(*offset),
                position_bytes: findings
                    .iter()
                    .find(|f| f.damaged_log)
                    .map_or(0, |f| f.valid_end_bytes),
                reason: format!(
                    "{reason}; `--force` cuts the log there, losing offsets {offset} and later"
                ),
            });
        }
    }
    if damage != Damage::None && (force || point.is_none()) {
        if let Some(damage) = findings.iter().find(|f| f.damaged_log) {
            let bases = list_segments(&*storage, dir)?;
            let damaged_base =
                bases.iter().copied().rfind(|b| SegmentPaths::new(dir, *b).log == damage.file);
            if let Some(damaged_base) = damaged_base {
                for later in bases.iter().filter(|b| **b > damaged_base) {
                    let paths = SegmentPaths::new(dir, *later);
                    for path in [&paths.log, &paths.index, &paths.time_index] {
                        storage.remove_file(path).await?;
                    }
                }
                // Without its indexes the damaged segment is verified from
                // its first byte, as the last segment, and cut at the damage.
                let paths = SegmentPaths::new(dir, damaged_base);
                storage.remove_file(&paths.index).await?;
                storage.remove_file(&paths.time_index).await?;
            }
        }
        // The log now ends below its old recovery point.
        point = None;
    }
    let options = LogOptions {
        segment_bytes: u64::MAX,
        segment_ms: u64::MAX,
        retention_ms: None,
        retention_bytes: None,
        durability: Durability::Fsync,
        tail_cache_bytes: 0,
    };
    let (log, reports) =
        PartitionLog::open(storage, dir, options, point.map(|(p, _)| p), runtime::now_ms()).await?;
    log.close().await?;
    if let Some((data_dir, key, shard)) = location {
        // Everything kept is durable now: the new end is the point.
        let file = crate::recovery_point::shard_file(&data_dir, shard);
        let mut checkpoint = std::fs::read(&file)
            .ok()
            .and_then(|bytes| Checkpoint::decode(&bytes).ok())
            .unwrap_or_default();
        checkpoint.clean = false;
        checkpoint.points.insert(key, log.recovery_point());
        crate::storage::write_atomically(&DiskStorage, &file, &checkpoint.encode()).await?;
    }
    Ok(reports)
}
