//! One segment of a partition log: `<base_offset:020>.log` with its
//! `.index` and `.timeindex`.
//!
//! Lifecycle: a segment is created empty (or opened and recovered) as the
//! active segment, takes appends until the partition rolls it, then is
//! closed for writes (its appenders dropped after a final flush and sync)
//! and serves reads until retention deletes it. Owned by the partition, on
//! the partition's shard.
//!
//! Invariants: `flushed_bytes <= size_bytes`; batches are contiguous in
//! offset from `base_offset` to `next_offset`; every byte below
//! `flushed_bytes` is in the file.

use crate::appender::{write_all, Appender, FlushWork};
use crate::batch::BatchHeader;
use crate::ids::Offset;
use crate::limits::{align_down, align_up, BLOCK_BYTES, WRITE_CHUNK_BYTES};
use crate::scan::{scan_segment, ScanEnd};
use crate::segment_index::{decode_offset_entries, decode_time_entries, IndexEntry, SegmentIndex};
use crate::storage::{FileRef, Storage, StorageResult};
use std::path::{Path, PathBuf};

/// Index files grow slowly; small chunks keep their buffers small.
const INDEX_CHUNK_BYTES: usize = 16 * 1024;

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// The files of the segment starting at `base_offset` in `dir`.
#[derive(Debug, Clone)]
pub struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: Offset) -> SegmentPaths {
        let stem = format!("{:020}", base_offset.0);
        SegmentPaths {
            log: dir.join(format!("{stem}{LOG_SUFFIX}")),
            index: dir.join(format!("{stem}{INDEX_SUFFIX}")),
            time_index: dir.join(format!("{stem}{TIME_INDEX_SUFFIX}")),
        }
    }
}

/// Base offsets of the segments in a partition directory, ascending.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> StorageResult<Vec<Offset>> {
    let mut bases: Vec<Offset> = storage
        .list_files(dir)?
        .iter()
        .filter_map(|name| name.strip_suffix(LOG_SUFFIX))
        .filter(|stem| stem.len() == 20)
        .filter_map(|stem| stem.parse::<u64>().ok())
        .map(Offset)
        .collect();
    bases.sort();
    Ok(bases)
}

/// Whether recovery may change files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Truncate torn tails and rewrite stale indexes (what the engine does).
    Repair,
    /// Only report (what `mamba log check` does).
    Check,
}

/// What recovery found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub log_path: PathBuf,
    pub base_offset: Offset,
    /// Where valid data ends, and the offset after it.
    pub valid_end_bytes: u64,
    pub next_offset: Offset,
    /// Bytes of the file after the valid end that are not zero padding.
    pub torn: Option<String>,
    /// Damage or a mismatch at or before the recovery point: corruption,
    /// never cut by recovery.
    pub below_recovery_point: Option<String>,
    pub file_size_bytes: u64,
    /// The indexes were missing, stale or behind, and were rebuilt.
    pub index_rebuilt: bool,
    /// Where the verification started (the last trusted index entry).
    pub verified_from_bytes: u64,
}

pub struct Segment {
    base_offset: Offset,
    paths: SegmentPaths,
    log: FileRef,
    appender: Option<Appender>,
    index: SegmentIndex,
    size_bytes: u64,
    flushed_bytes: u64,
    next_offset: Offset,
    created_ms: i64,
    /// Ends handed out by `take_flush` to the two index files, if any.
    index_flush_ends: [Option<u64>; 2],
}

/// How much of the index files a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFlush {
    /// Only complete 4 KiB blocks (the write path).
    WholeBlocks,
    /// Everything, partial last block included (roll and close).
    All,
}

/// One segment's share of a flush.
pub struct SegmentFlush {
    pub log: FileRef,
    pub log_work: FlushWork,
    pub index: Vec<(FileRef, FlushWork)>,
}

impl SegmentFlush {
    /// Writes everything; returns the log end the writes cover.
    pub async fn write(self) -> StorageResult<u64> {
        let index_writes =
            self.index.into_iter().map(|(file, work)| async move { write_all(&file, work).await });
        let (log, index) = futures::join!(
            write_all(&self.log, self.log_work),
            futures::future::join_all(index_writes)
        );
        for result in index {
            result?;
        }
        log
    }
}

/// Where the verification of a segment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFrom {
    /// The last entry both index files agree on: a closed segment (synced
    /// at its roll), or a log without a recovery point.
    LastIndexEntry,
    /// The partition's recovery point lies in this segment (or before it:
    /// then offset = base, position 0): the batch at `offset` starts at
    /// `position_bytes` and everything before it is durable. Verification
    /// starts at the last index entry at or before it; damage found before
    /// the point is corruption, after it a torn tail.
    RecoveryPoint { offset: Offset, position_bytes: u64 },
}

/// A segment that `Segment::verify` read without changing anything.
pub struct VerifiedSegment {
    base_offset: Offset,
    paths: SegmentPaths,
    log: FileRef,
    index: SegmentIndex,
    report: SegmentReport,
    /// The bytes of the last partial block before the valid end.
    tail: Vec<u8>,
    from: VerifyFrom,
}

impl VerifiedSegment {
    pub fn report(&self) -> &SegmentReport {
        &self.report
    }

    /// Applies the repairs recovery decided on and returns the segment. In
    /// `Repair` mode a torn tail is cut off (and the cut made durable) and
    /// stale indexes are rewritten; `writable` resumes appends after the
    /// valid end.
    pub async fn finish(
        self,
        storage: &dyn Storage,
        mode: RecoveryMode,
        writable: bool,
        now_ms: i64,
    ) -> StorageResult<(Segment, SegmentReport)> {
        let VerifiedSegment { base_offset, paths, log, index, report, tail, from } = self;
        let valid_end = report.valid_end_bytes;
        let tail_start = align_down(valid_end, BLOCK_BYTES);
        let cut =
            report.torn.is_some() || report.file_size_bytes > align_up(valid_end, BLOCK_BYTES);
        if mode == RecoveryMode::Repair && cut {
            // Cut the file to the valid end and zero the rest of its last
            // block now, durably: bytes left after the end could otherwise
            // be taken for batches by a later recovery.
            log.truncate(align_up(valid_end, BLOCK_BYTES)).await?;
            if !tail.is_empty() {
                let mut block = log.alloc_buffer(BLOCK_BYTES as usize);
                block[..tail.len()].copy_from_slice(&tail);
                block[tail.len()..].fill(0);
                log.write_at(block, tail_start).await?;
            }
        }
        // Data up to a recovery point is known durable; anything recovery
        // verified past it (or everything, without one) may have been
        // written but not synced before a crash. Whatever recovery leaves
        // visible must be durable, or it could vanish in the next crash.
        let known_durable = match from {
            VerifyFrom::RecoveryPoint { position_bytes, .. } => !cut && valid_end == position_bytes,
            VerifyFrom::LastIndexEntry => false,
        };
        if mode == RecoveryMode::Repair && writable && !known_durable {
            log.sync().await?;
        }
        let mut appender = None;
        let mut index_files = (None, None);
        if mode == RecoveryMode::Repair {
            if report.index_rebuilt {
                rewrite_index_files(storage, &paths, &index).await?;
            }
            if writable {
                appender = Some(Appender::resume(log.clone(), WRITE_CHUNK_BYTES, valid_end, &tail));
                let (offsets_bytes, times_bytes) = index.encoded();
                let index_file = storage.open(&paths.index, true).await?;
                let time_file = storage.open(&paths.time_index, true).await?;
                index_files = (
                    Some(resume_at_end(index_file, &offsets_bytes)),
                    Some(resume_at_end(time_file, &times_bytes)),
                );
            }
        }
        let mut with_files = SegmentIndex::new(index_files.0, index_files.1);
        with_files.load(index.offsets().to_vec(), index.times().to_vec());
        if index.max_timestamp_ms() > with_files.max_timestamp_ms() {
            // The running maximum covers batches after the last entry too.
            with_files.raise_max_timestamp(index.max_timestamp_ms());
        }
        let segment = Segment {
            base_offset,
            paths,
            log,
            appender,
            index: with_files,
            size_bytes: valid_end,
            flushed_bytes: valid_end,
            next_offset: report.next_offset,
            created_ms: now_ms,
            index_flush_ends: [None, None],
        };
        Ok((segment, report))
    }
}

/// Whether `file` holds exactly `expected` followed by nothing but zeros.
fn holds_exactly(file: &[u8], expected: &[u8]) -> bool {
    file.len() >= expected.len()
        && file[..expected.len()] == *expected
        && file[expected.len()..].iter().all(|&b| b == 0)
}

impl Segment {
    /// Creates the files of a new, empty segment.
    pub async fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
        now_ms: i64,
    ) -> StorageResult<Segment> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = storage.open(&paths.log, true).await?;
        log.truncate(0).await?;
        let index = storage.open(&paths.index, true).await?;
        index.truncate(0).await?;
        let time = storage.open(&paths.time_index, true).await?;
        time.truncate(0).await?;
        // The new names must survive a crash before anything in them counts.
        storage.sync_dir(dir).await?;
        let appender = Appender::resume(log.clone(), WRITE_CHUNK_BYTES, 0, &[]);
        Ok(Segment {
            base_offset,
            paths,
            log,
            appender: Some(appender),
            index: SegmentIndex::new(
                Some(Appender::resume(index, INDEX_CHUNK_BYTES, 0, &[])),
                Some(Appender::resume(time, INDEX_CHUNK_BYTES, 0, &[])),
            ),
            size_bytes: 0,
            flushed_bytes: 0,
            next_offset: base_offset,
            created_ms: now_ms,
            index_flush_ends: [None, None],
        })
    }

    /// Opens an existing segment and verifies it (see `VerifyFrom`)
    /// without changing any file; `VerifiedSegment::finish` then applies
    /// what recovery decided. Verifying every segment of a log before
    /// repairing any means a log that is refused was never changed.
    pub async fn verify(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
        from: VerifyFrom,
    ) -> StorageResult<VerifiedSegment> {
        let paths = SegmentPaths::new(dir, base_offset);
        let log = storage.open(&paths.log, false).await?;
        let file_size = log.size_bytes().await?;
        let index_bytes = read_whole(storage, &paths.index).await?;
        let time_bytes = read_whole(storage, &paths.time_index).await?;
        let offsets = decode_offset_entries(&index_bytes, file_size);
        let times = decode_time_entries(&time_bytes, file_size);

        // Trust the indexes only as far as they agree with each other, and
        // (with a recovery point) only up to it: entries past it point into
        // data that is not known durable yet.
        let point_position = match from {
            VerifyFrom::LastIndexEntry => u64::MAX,
            VerifyFrom::RecoveryPoint { position_bytes, .. } => position_bytes,
        };
        let mut trusted = offsets.len().min(times.len());
        while trusted > 0
            && (offsets[trusted - 1].relative_offset != times[trusted - 1].relative_offset
                || offsets[trusted - 1].position_bytes != times[trusted - 1].position_bytes
                || u64::from(offsets[trusted - 1].position_bytes) > point_position)
        {
            trusted -= 1;
        }
        let mut index = SegmentIndex::new(None, None);
        index.load(offsets[..trusted].to_vec(), times[..trusted].to_vec());
        let start = index
            .offsets()
            .last()
            .copied()
            .unwrap_or(IndexEntry { relative_offset: 0, position_bytes: 0 });
        // Whether a batch starts at the recovery point with the offset it names.
        let mut point_seen = None;
        let mut scan = scan_segment(
            &log,
            file_size,
            u64::from(start.position_bytes),
            base_offset.plus(u64::from(start.relative_offset)),
            |view, position| {
                let h = view.header();
                if position == point_position {
                    point_seen = Some(h.base_offset);
                }
                index.on_batch(relative(base_offset, h.base_offset), position, h.max_timestamp_ms);
            },
        )
        .await?;
        let mut verified_from = u64::from(start.position_bytes);
        if trusted > 0 && scan.batch_count == 0 {
            // The last entry pointed at something that is not a batch: the
            // index is stale. Rebuild it from the start of the segment.
            index = SegmentIndex::new(None, None);
            verified_from = 0;
            point_seen = None;
            scan = scan_segment(&log, file_size, 0, base_offset, |view, position| {
                let h = view.header();
                if position == point_position {
                    point_seen = Some(h.base_offset);
                }
                index.on_batch(relative(base_offset, h.base_offset), position, h.max_timestamp_ms);
            })
            .await?;
        }
        let torn = match &scan.end {
            ScanEnd::Clean => None,
            ScanEnd::Torn { reason } => Some(reason.clone()),
        };
        let valid_end = scan.valid_end_bytes;
        let below_recovery_point = match from {
            VerifyFrom::LastIndexEntry => None,
            VerifyFrom::RecoveryPoint { offset, position_bytes } => {
                let found =
                    if valid_end == position_bytes { Some(scan.next_offset) } else { point_seen };
                if valid_end < position_bytes {
                    Some(format!(
                        "valid data ends at byte {valid_end} (offset {}), below the recovery point at byte {position_bytes} (offset {offset}): {}",
                        scan.next_offset,
                        torn.as_deref().unwrap_or("the file is shorter")
                    ))
                } else if found != Some(offset) {
                    Some(format!(
                        "the recovery point says offset {offset} starts at byte {position_bytes}, but {}",
                        match found {
                            Some(other) => format!("offset {other} starts there"),
                            None => "no batch starts there".to_string(),
                        }
                    ))
                } else {
                    None
                }
            }
        };
        // The index files are rewritten when what they hold differs from
        // what the log says they should: missing, stale, behind the log, or
        // with bytes after their valid entries.
        let (offsets_bytes, times_bytes) = index.encoded();
        let index_rebuilt = !holds_exactly(&index_bytes, &offsets_bytes)
            || !holds_exactly(&time_bytes, &times_bytes);
        let tail_start = align_down(valid_end, BLOCK_BYTES);
        let tail: Vec<u8> = if valid_end > tail_start {
            let read = log.read_at(tail_start, BLOCK_BYTES as usize).await?;
            read[..(valid_end - tail_start) as usize].to_vec()
        } else {
            Vec::new()
        };
        let report = SegmentReport {
            log_path: paths.log.clone(),
            base_offset,
            valid_end_bytes: valid_end,
            next_offset: scan.next_offset,
            torn,
            below_recovery_point,
            file_size_bytes: file_size,
            index_rebuilt,
            verified_from_bytes: verified_from,
        };
        Ok(VerifiedSegment { base_offset, paths, log, index, report, tail, from })
    }

    /// `verify` then `finish`: what `mamba log recover` and the engine's
    /// repair after an I/O error do to one segment.
    pub async fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
        mode: RecoveryMode,
        writable: bool,
        now_ms: i64,
    ) -> StorageResult<(Segment, SegmentReport)> {
        let verified =
            Segment::verify(storage, dir, base_offset, VerifyFrom::LastIndexEntry).await?;
        verified.finish(storage, mode, writable, now_ms).await
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn flushed_bytes(&self) -> u64 {
        self.flushed_bytes
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.index.max_timestamp_ms()
    }

    pub fn paths(&self) -> &SegmentPaths {
        &self.paths
    }

    pub fn log(&self) -> &FileRef {
        &self.log
    }

    pub fn index(&self) -> &SegmentIndex {
        &self.index
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Appends one stored batch whose header says it starts at `next_offset`.
    pub fn append(&mut self, stored: &[u8], header: &BatchHeader) {
        assert_eq!(header.base_offset, self.next_offset, "appends must be contiguous");
        assert_eq!(stored.len(), header.stored_bytes(), "stored length");
        let appender = self.appender.as_mut().expect("append to a segment closed for writes");
        let position = self.size_bytes;
        appender.append(stored);
        self.index.on_batch(
            relative(self.base_offset, header.base_offset),
            position,
            header.max_timestamp_ms,
        );
        self.size_bytes += stored.len() as u64;
        self.next_offset = header.last_offset().plus(1);
        assert_eq!(self.size_bytes, appender.end_bytes());
    }

    /// Takes everything appended to the log since the last flush, and the
    /// whole blocks of new index entries.
    pub fn take_flush(&mut self) -> Option<SegmentFlush> {
        let appender = self.appender.as_mut()?;
        let log_work = appender.take_flush()?;
        let log = appender.file().clone();
        let index = self.take_index_flush(IndexFlush::WholeBlocks);
        Some(SegmentFlush { log, log_work, index })
    }

    /// Takes the index files' pending entries, all of them or whole blocks.
    pub fn take_index_flush(&mut self, how: IndexFlush) -> Vec<(FileRef, FlushWork)> {
        let mut index = Vec::new();
        let (offsets, times) = self.index.files_mut();
        for (i, file) in [offsets, times].into_iter().enumerate() {
            let Some(file) = file else { continue };
            let work = match how {
                IndexFlush::WholeBlocks => file.take_whole_blocks(),
                IndexFlush::All => file.take_flush(),
            };
            if let Some(work) = work {
                self.index_flush_ends[i] = Some(work.end_bytes);
                index.push((file.file().clone(), work));
            }
        }
        index
    }

    /// Records that a flush up to `end_bytes` was written.
    pub fn flush_done(&mut self, end_bytes: u64) {
        if let Some(appender) = &mut self.appender {
            appender.flush_done(end_bytes);
        }
        self.index_flush_done();
        assert!(end_bytes >= self.flushed_bytes);
        self.flushed_bytes = end_bytes;
    }

    /// Records that the index writes handed out last completed. Entries
    /// appended while they were in flight belong to the next flush.
    pub fn index_flush_done(&mut self) {
        let ends = std::mem::take(&mut self.index_flush_ends);
        let (offsets, times) = self.index.files_mut();
        for (file, end) in [offsets, times].into_iter().zip(ends) {
            if let (Some(file), Some(end)) = (file, end) {
                file.flush_done(end);
            }
        }
    }

    /// A flush failed: nothing more may be written to this segment.
    pub fn seal_after_error(&mut self) {
        self.appender = None;
        self.index.detach_files();
    }

    /// Closes the segment for writes; the caller has flushed and synced it.
    pub fn close_for_writes(&mut self) {
        assert_eq!(self.flushed_bytes, self.size_bytes, "closing a segment with unflushed bytes");
        self.appender = None;
        self.index.detach_files();
    }

    /// Where to start scanning for `offset`: a batch boundary at or before
    /// it, and the offset of the batch that starts there.
    pub fn locate(&self, offset: Offset) -> (u64, Offset) {
        let entry = self.index.lookup_offset(relative(self.base_offset, offset));
        (u64::from(entry.position_bytes), self.base_offset.plus(u64::from(entry.relative_offset)))
    }

    /// Where to start scanning for the first record at or after `timestamp_ms`.
    pub fn locate_time(&self, timestamp_ms: i64) -> (u64, Offset) {
        let entry = self.index.lookup_time(timestamp_ms);
        (u64::from(entry.position_bytes), self.base_offset.plus(u64::from(entry.relative_offset)))
    }

    /// Index files, for syncing at close.
    pub fn index_files(&mut self) -> Vec<FileRef> {
        let (offsets, times) = self.index.files_mut();
        [offsets, times].into_iter().flatten().map(|a| a.file().clone()).collect()
    }
}

/// An offset relative to a segment base; segments hold fewer than 2^32
/// offsets because a roll happens long before.
pub fn relative(base: Offset, offset: Offset) -> u32 {
    assert!(offset >= base, "offset {offset} below segment base {base}");
    u32::try_from(offset.0 - base.0).unwrap_or(u32::MAX)
}

async fn read_whole(storage: &dyn Storage, path: &Path) -> StorageResult<Vec<u8>> {
    let file = match storage.open(path, false).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let size = file.size_bytes().await?;
    let read = file.read_at(0, align_up(size, BLOCK_BYTES) as usize).await?;
    let bytes = read[..(size as usize).min(read.len())].to_vec();
    file.close().await?;
    Ok(bytes)
}

/// An appender positioned after `written` bytes already in `file`.
fn resume_at_end(file: FileRef, written: &[u8]) -> Appender {
    let end = written.len() as u64;
    let tail = &written[align_down(end, BLOCK_BYTES) as usize..];
    Appender::resume(file, INDEX_CHUNK_BYTES, end, tail)
}

async fn rewrite_index_files(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    index: &SegmentIndex,
) -> StorageResult<()> {
    let (offsets, times) = index.encoded();
    for (path, bytes) in [(&paths.index, offsets), (&paths.time_index, times)] {
        let file = storage.open(path, true).await?;
        file.truncate(0).await?;
        let mut appender = Appender::resume(file.clone(), INDEX_CHUNK_BYTES, 0, &[]);
        appender.append(&bytes);
        if let Some(work) = appender.take_flush() {
            write_all(&file, work).await?;
        }
        file.truncate(align_up(bytes.len() as u64, BLOCK_BYTES)).await?;
        file.sync().await?;
        file.close().await?;
    }
    Ok(())
}
