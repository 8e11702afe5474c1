//! A partition log: an ordered list of segments with one active (writable)
//! segment at the end.
//!
//! Lifecycle: `open` recovers the log from its directory (or starts it
//! empty); the partition's writer on its shard then calls `append`, `flush`,
//! `sync`, `truncate_to` and `apply_retention` one at a time; any number of
//! readers call `read` and `offset_for_timestamp` concurrently with it; `close`
//! flushes and syncs. Owned by one shard (`!Send`); state lives in a
//! `RefCell` that is never borrowed across an await.
//!
//! Offsets, in order: `log_start_offset <= high_watermark <= written_offset
//! <= next_offset`. The high watermark is what readers see: under `fsync`
//! it trails the synced offset, otherwise the written one. A torn or
//! unwritten tail is never visible.

use crate::batch::{peek_stored_bytes, Batch, BatchHeader};
use crate::config::Durability;
use crate::error::{EngineError, EngineResult};
use crate::ids::{LeaderEpoch, Offset};
use crate::limits::{align_down, align_up, BATCH_HEADER_BYTES, BLOCK_BYTES};
use crate::producer_state::{ProducerStates, SequenceCheck};
use crate::recovery_point::RecoveryPoint;
use crate::scan::Window;
use crate::segment::{
    list_segments, IndexFlush, RecoveryMode, Segment, SegmentReport, VerifiedSegment, VerifyFrom,
};
use crate::storage::{FileRef, StorageError, StorageRef};
use crate::tail_cache::TailCache;
use bytes::Bytes;
use rkyv::util::AlignedVec;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The settings a log needs (from the topic config and the engine config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub durability: Durability,
    /// The tail cache budget of the partition's shard; each of the shard's
    /// partitions gets an equal share (`share_tail_cache`).
    pub tail_cache_bytes: usize,
}

/// Who assigns the offsets of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// The log assigns the next offset and stamps the leader's epoch.
    Leader { epoch: LeaderEpoch },
    /// The batch carries its offsets (replicated from a leader); it must
    /// start exactly at the log end.
    Follower,
}

/// When an append is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppendWait {
    /// Once it is in the log's buffer, before any write: fastest, and lost
    /// if the process dies before the next flush (Kafka's `acks=1`).
    Appended,
    /// Once readers can see it: written, and under `fsync` synced.
    #[default]
    Visible,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// Stored batches returned by a read, byte for byte.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Runs of whole batches, each 16-byte aligned.
    pub chunks: Vec<Bytes>,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

impl ReadOutcome {
    pub fn size_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// The offsets a reader may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    pub next_offset: Offset,
    pub durable_offset: Offset,
}

/// What an operator sees of a log (`mamba topic describe`): where it
/// starts and ends and what it holds on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    pub offsets: LogOffsets,
    /// The bytes of every segment's log file (indexes not counted), up to
    /// the last append, written or not.
    pub size_bytes: u64,
    pub segment_count: usize,
}

struct LogState {
    segments: VecDeque<Segment>,
    log_start_offset: Offset,
    high_watermark: Offset,
    written_offset: Offset,
    durable_offset: Offset,
    /// Where `durable_offset` starts in the log; checkpointed by the shard.
    recovery_point: RecoveryPoint,
    cache: TailCache,
    /// Set by a failed write or sync; cleared by `recover_after_error`.
    fenced: Option<Arc<StorageError>>,
    producers: ProducerStates,
    /// Damaged batches reads ran into, and the last one logged.
    corrupt_reads: u64,
    corrupt_logged: Option<(String, u64)>,
    /// Appends may not assign offsets at or past this (memory logs).
    offset_lease_end: Option<Offset>,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.back().expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a log always has an active segment")
    }
    fn next_offset(&self) -> Offset {
        self.active().next_offset()
    }
    fn check_offsets(&self) {
        assert!(self.log_start_offset <= self.high_watermark, "log start above high watermark");
        assert!(self.high_watermark <= self.written_offset, "high watermark above written");
        assert!(self.durable_offset <= self.written_offset, "durable above written");
        assert!(self.written_offset <= self.next_offset(), "written above log end");
    }
}

pub struct PartitionLog {
    dir: PathBuf,
    storage: StorageRef,
    options: RefCell<LogOptions>,
    state: RefCell<LogState>,
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    ///
    /// Every segment is verified before any file is changed: closed
    /// segments from their last index entry (they were synced at their
    /// roll), the active one from the recovery point (or, without one,
    /// from its last index entry). Damage in a closed segment or below the
    /// recovery point is corruption: the open fails with `Corrupt` and no
    /// file was touched. Past the recovery point it is a torn tail, cut.
    pub async fn open(
        storage: StorageRef,
        dir: &Path,
        options: LogOptions,
        recovery_point: Option<RecoveryPoint>,
        now_ms: i64,
    ) -> EngineResult<(PartitionLog, Vec<SegmentReport>)> {
        storage.create_dir_all(dir).await?;
        let bases = list_segments(&*storage, dir)?;
        let mut verified: Vec<VerifiedSegment> = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let active = i + 1 == bases.len();
            let from = match recovery_point {
                Some(point) if active => active_verify_from(point, base, dir)?,
                _ => VerifyFrom::LastIndexEntry,
            };
            let segment = Segment::verify(&*storage, dir, base, from).await?;
            let report = segment.report();
            let corrupt = |position_bytes: u64, offset: Offset, reason: String| {
                Err(EngineError::Corrupt {
                    path: report.log_path.display().to_string(),
                    offset,
                    position_bytes,
                    reason,
                })
            };
            if let Some(reason) = &report.below_recovery_point {
                return corrupt(report.valid_end_bytes, report.next_offset, reason.clone());
            }
            if !active {
                if let Some(reason) = &report.torn {
                    // A closed segment was synced before the roll; damage in
                    // it is corruption, not a torn write. Cutting it would
                    // drop every later segment: an operator's decision.
                    return corrupt(
                        report.valid_end_bytes,
                        report.next_offset,
                        format!("closed segment is damaged: {reason}"),
                    );
                }
            }
            if let Some(previous) = verified.last() {
                let previous_end = previous.report().next_offset;
                if previous_end != base {
                    return corrupt(
                        0,
                        previous_end,
                        format!(
                            "segment starts at offset {base} but the previous one ends before {previous_end}"
                        ),
                    );
                }
            }
            verified.push(segment);
        }
        let mut segments = VecDeque::with_capacity(verified.len());
        let mut reports = Vec::with_capacity(verified.len());
        let count = verified.len();
        for (i, segment) in verified.into_iter().enumerate() {
            let writable = i + 1 == count;
            let (segment, report) =
                segment.finish(&*storage, RecoveryMode::Repair, writable, now_ms).await?;
            segments.push_back(segment);
            reports.push(report);
        }
        if segments.is_empty() {
            // A new log, a memory log after a restart, or a disk log whose
            // files are gone: it continues at its recovery point, so no
            // offset is ever handed out twice.
            let start = recovery_point.map_or(Offset::ZERO, |p| p.offset);
            segments.push_back(Segment::create(&*storage, dir, start, now_ms).await?);
        }
        let log_start_offset = segments.front().map_or(Offset::ZERO, Segment::base_offset);
        let next = segments.back().map_or(Offset::ZERO, Segment::next_offset);
        let state = LogState {
            segments,
            log_start_offset,
            high_watermark: next,
            written_offset: next,
            durable_offset: next,
            recovery_point: RecoveryPoint::ZERO,
            cache: TailCache::new(options.tail_cache_bytes),
            fenced: None,
            producers: ProducerStates::default(),
            corrupt_reads: 0,
            corrupt_logged: None,
            offset_lease_end: None,
        };
        state.check_offsets();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            storage,
            options: RefCell::new(options),
            state: RefCell::new(state),
        };
        log.state.borrow_mut().recovery_point = log.end_point();
        log.rebuild_producer_states().await?;
        Ok((log, reports))
    }

    /// The recovery point at the log's end, where everything appended is
    /// written and synced (after open, recovery and truncation).
    fn end_point(&self) -> RecoveryPoint {
        assert!(!self.has_unsynced() && !self.has_unflushed(), "the log end is not durable");
        self.appended_point()
    }

    /// The point at the end of everything appended (durable or not): what
    /// a memory log checkpoints, so a restart never reuses its offsets.
    pub fn appended_point(&self) -> RecoveryPoint {
        let st = self.state.borrow();
        let active = st.active();
        RecoveryPoint {
            offset: active.next_offset(),
            segment_base: active.base_offset(),
            position_bytes: active.size_bytes(),
        }
    }

    /// Bounds the offsets appends may assign (memory logs: below what the
    /// last checkpoint allows; see `recovery_point.rs`).
    pub fn set_offset_lease_end(&self, end: Offset) {
        self.state.borrow_mut().offset_lease_end = Some(end);
    }

    /// Below this point everything is durable (see `recovery_point.rs`).
    pub fn recovery_point(&self) -> RecoveryPoint {
        self.state.borrow().recovery_point
    }

    /// Rebuilds the idempotent-producer state from the last two segments
    /// (what a producer may still be retrying lies there).
    async fn rebuild_producer_states(&self) -> EngineResult<()> {
        let segments: Vec<(FileRef, u64, Offset)> = {
            let st = self.state.borrow();
            st.segments
                .iter()
                .rev()
                .take(2)
                .rev()
                .map(|s| (s.log().clone(), s.flushed_bytes(), s.base_offset()))
                .collect()
        };
        let mut states = ProducerStates::default();
        for (file, end, base) in segments {
            for_each_header(&file, end, base, |header| states.record(header)).await?;
        }
        self.state.borrow_mut().producers = states;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn offsets(&self) -> LogOffsets {
        let st = self.state.borrow();
        LogOffsets {
            log_start_offset: st.log_start_offset,
            high_watermark: st.high_watermark,
            next_offset: st.next_offset(),
            durable_offset: st.durable_offset,
        }
    }

    pub fn durability(&self) -> Durability {
        self.options.borrow().durability
    }

    /// Sizes the tail cache to this partition's share of its shard's budget.
    pub fn share_tail_cache(&self, partitions_on_shard: usize) {
        let share = self.options.borrow().tail_cache_bytes / partitions_on_shard.max(1);
        self.state.borrow_mut().cache.set_size_bytes_max(share);
    }

    pub fn set_options(&self, options: LogOptions) {
        *self.options.borrow_mut() = options;
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.iter().map(Segment::size_bytes).sum()
    }

    pub fn summary(&self) -> LogSummary {
        LogSummary {
            offsets: self.offsets(),
            size_bytes: self.size_bytes(),
            segment_count: self.segment_count(),
        }
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Whether appends are waiting to be flushed.
    pub fn has_unflushed(&self) -> bool {
        let st = self.state.borrow();
        st.written_offset < st.next_offset()
    }

    fn check_fenced(&self) -> EngineResult<()> {
        match &self.state.borrow().fenced {
            Some(e) => Err(EngineError::Fenced(e.clone())),
            None => Ok(()),
        }
    }

    /// Adds `batch` to the log (in memory; `flush` writes it). Rolls the
    /// active segment first when it is full or old.
    pub async fn append(
        &self,
        mut batch: Batch,
        mode: AppendMode,
        now_ms: i64,
    ) -> EngineResult<AppendInfo> {
        self.check_fenced()?;
        self.roll_if_needed(batch.as_bytes().len() as u64, now_ms).await?;
        let mut st = self.state.borrow_mut();
        let next = st.next_offset();
        if let Some(end) = st.offset_lease_end {
            if next.plus(u64::from(batch.header().last_offset_delta)) >= end {
                // The checkpoint that extends the lease is behind.
                return Err(EngineError::Busy);
            }
        }
        match mode {
            AppendMode::Leader { epoch } => {
                if let SequenceCheck::Duplicate(info) = st.producers.check(batch.header())? {
                    return Ok(info);
                }
                batch.set_base_offset_and_epoch(next, epoch);
            }
            AppendMode::Follower => {
                if batch.header().base_offset != next {
                    return Err(EngineError::OffsetMismatch {
                        expected: next,
                        got: batch.header().base_offset,
                    });
                }
            }
        }
        let header = *batch.header();
        st.active_mut().append(batch.as_bytes(), &header);
        st.producers.record(&header);
        st.cache.push(&header, batch.into_bytes());
        Ok(AppendInfo { base_offset: header.base_offset, last_offset: header.last_offset() })
    }

    async fn roll_if_needed(&self, incoming_bytes: u64, now_ms: i64) -> EngineResult<()> {
        if self.needs_roll(incoming_bytes, now_ms) {
            self.roll(now_ms).await?;
        }
        Ok(())
    }

    /// Closes the active segment (flushed and synced) and starts a new one.
    pub async fn roll(&self, now_ms: i64) -> EngineResult<()> {
        self.flush().await?;
        self.sync().await?;
        // Index files are written in whole blocks and not synced on the write
        // path; a closed segment's are complete and synced, so only the
        // active segment's ever need rebuilding.
        self.write_index_tails().await?;
        let next = {
            let mut st = self.state.borrow_mut();
            st.active_mut().close_for_writes();
            st.next_offset()
        };
        let segment =
            self.fence_on_error(Segment::create(&*self.storage, &self.dir, next, now_ms).await)?;
        self.state.borrow_mut().segments.push_back(segment);
        Ok(())
    }

    fn fence_on_error<T>(&self, result: Result<T, StorageError>) -> EngineResult<T> {
        result.map_err(|e| {
            let e = Arc::new(e);
            let mut st = self.state.borrow_mut();
            tracing::error!(dir = %self.dir.display(), error = %e, "partition fenced after a storage error");
            st.active_mut().seal_after_error();
            st.fenced = Some(e.clone());
            EngineError::Fenced(e)
        })
    }

    /// Writes everything appended so far; under `fsync` also syncs it. On
    /// return (Ok) every append before the call is visible to readers.
    pub async fn flush(&self) -> EngineResult<()> {
        self.write_pending().await?;
        if self.options.borrow().durability == Durability::Fsync {
            self.sync().await?;
        }
        Ok(())
    }

    /// Writes everything appended so far, without syncing. May run while a
    /// `sync` of earlier writes is in flight (the writer pipelines them),
    /// but never next to another `write_pending`, `roll` or `truncate_to`.
    pub async fn write_pending(&self) -> EngineResult<()> {
        self.check_fenced()?;
        let (work, target) = {
            let mut st = self.state.borrow_mut();
            let target = st.next_offset();
            match st.active_mut().take_flush() {
                Some(work) => (work, target),
                None => return Ok(()),
            }
        };
        let end = self.fence_on_error(work.write().await)?;
        let mut st = self.state.borrow_mut();
        st.active_mut().flush_done(end);
        st.written_offset = target;
        if self.options.borrow().durability != Durability::Fsync {
            st.high_watermark = target;
        }
        st.check_offsets();
        Ok(())
    }

    /// Whether appending `incoming_bytes` now would roll the active segment.
    pub fn needs_roll(&self, incoming_bytes: u64, now_ms: i64) -> bool {
        let st = self.state.borrow();
        let options = self.options.borrow();
        let active = st.active();
        !active.is_empty()
            && (active.size_bytes() + incoming_bytes > options.segment_bytes
                || now_ms.saturating_sub(active.created_ms()) >= options.segment_ms as i64)
    }

    /// Whether written data awaits a sync.
    pub fn has_unsynced(&self) -> bool {
        let st = self.state.borrow();
        st.durable_offset < st.written_offset
    }

    /// Syncs what has been written (fdatasync of the active segment).
    pub async fn sync(&self) -> EngineResult<()> {
        self.check_fenced()?;
        let (file, target, point) = {
            let st = self.state.borrow();
            if st.durable_offset == st.written_offset {
                return Ok(());
            }
            let active = st.active();
            let point = RecoveryPoint {
                offset: st.written_offset,
                segment_base: active.base_offset(),
                position_bytes: active.flushed_bytes(),
            };
            (active.log().clone(), st.written_offset, point)
        };
        self.fence_on_error(file.sync().await)?;
        let mut st = self.state.borrow_mut();
        st.durable_offset = st.durable_offset.max(target);
        if point.offset >= st.recovery_point.offset {
            st.recovery_point = point;
        }
        if self.options.borrow().durability == Durability::Fsync {
            st.high_watermark = st.high_watermark.max(target);
        }
        st.check_offsets();
        Ok(())
    }

    /// Re-verifies the log after an I/O error and takes writes again: the
    /// damaged segment is recovered like at open (what reached the disk
    /// intact stays, the rest is cut) and a fresh segment follows it, unless
    /// it kept nothing.
    pub async fn recover_after_error(&self, now_ms: i64) -> EngineResult<()> {
        let (base, fenced) = {
            let st = self.state.borrow();
            (st.active().base_offset(), st.fenced.clone())
        };
        if fenced.is_none() {
            return Ok(());
        }
        let (mut segment, _report) =
            Segment::open(&*self.storage, &self.dir, base, RecoveryMode::Repair, true, now_ms)
                .await?;
        let next = segment.next_offset();
        // When nothing of the segment reached the disk (a full disk fails its
        // first write, every time), a fresh one would start at the same
        // offset, in the same file: each fence would leave one more segment,
        // and descriptor, on it. Such a segment takes the writes itself.
        let fresh = if segment.is_empty() {
            None
        } else {
            segment.close_for_writes();
            Some(Segment::create(&*self.storage, &self.dir, next, now_ms).await?)
        };
        {
            let mut st = self.state.borrow_mut();
            st.segments.pop_back();
            st.segments.push_back(segment);
            st.segments.extend(fresh);
            st.written_offset = next;
            st.durable_offset = next;
            // Batches that reached the disk intact are now durable and visible.
            st.high_watermark = next;
            st.cache.clear();
            st.fenced = None;
            st.check_offsets();
        }
        self.state.borrow_mut().recovery_point = self.end_point();
        // Batches of the failed flush may be missing: forget what the
        // producers were told and read it back from the disk.
        self.rebuild_producer_states().await
    }

    pub fn is_fenced(&self) -> bool {
        self.state.borrow().fenced.is_some()
    }

    /// Reads stored batches from the one holding `offset`, up to `max_bytes`
    /// (always at least one whole batch), never past the high watermark.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> EngineResult<ReadOutcome> {
        let (file, start, readable_end, high_watermark, log_start_offset) = {
            let st = self.state.borrow();
            let (hw, start) = (st.high_watermark, st.log_start_offset);
            if offset < start || offset > hw {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start_offset: start,
                    high_watermark: hw,
                });
            }
            let mut outcome =
                ReadOutcome { chunks: Vec::new(), high_watermark: hw, log_start_offset: start };
            if offset == hw {
                return Ok(outcome);
            }
            if let Some(chunks) = st.cache.read(offset, max_bytes, hw) {
                outcome.chunks = chunks;
                return Ok(outcome);
            }
            let i = st.segments.partition_point(|s| s.base_offset() <= offset);
            let segment = &st.segments[i.saturating_sub(1)];
            (segment.log().clone(), segment.locate(offset), segment.flushed_bytes(), hw, start)
        };
        let chunk =
            read_from_segment(&file, start, readable_end, offset, max_bytes, high_watermark).await;
        let chunk = chunk.inspect_err(|e| self.on_read_error(e))?;
        Ok(ReadOutcome {
            chunks: if chunk.is_empty() { Vec::new() } else { vec![chunk] },
            high_watermark,
            log_start_offset,
        })
    }

    /// Counts damage a read ran into, and logs it the first time.
    fn on_read_error(&self, e: &EngineError) {
        let EngineError::Corrupt { position_bytes, path, .. } = e else { return };
        let mut st = self.state.borrow_mut();
        st.corrupt_reads += 1;
        let first = st.corrupt_logged.replace((path.clone(), *position_bytes))
            != Some((path.clone(), *position_bytes));
        if first {
            tracing::error!(error = %e, "a read met corrupt data; the partition serves what lies before it (`mamba log check` shows it, `mamba log recover --force` cuts it)");
        }
    }

    /// Reads that met damaged data since the log was opened.
    pub fn corrupt_reads(&self) -> u64 {
        self.state.borrow().corrupt_reads
    }

    /// The first offset whose record timestamp is at or after
    /// `timestamp_ms`, with that timestamp; `None` when every record is older.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> EngineResult<Option<(Offset, i64)>> {
        let candidates: Vec<(FileRef, (u64, Offset), u64)> = {
            let st = self.state.borrow();
            st.segments
                .iter()
                .filter(|s| s.max_timestamp_ms() >= timestamp_ms && !s.is_empty())
                .map(|s| (s.log().clone(), s.locate_time(timestamp_ms), s.flushed_bytes()))
                .collect()
        };
        let high_watermark = self.state.borrow().high_watermark;
        for (file, (mut position, mut expected), end) in candidates {
            let corrupt = |position_bytes: u64, offset: Offset, reason: String| {
                let e = EngineError::Corrupt {
                    path: file.path().display().to_string(),
                    offset,
                    position_bytes,
                    reason,
                };
                self.on_read_error(&e);
                e
            };
            let mut window = Window::new(&file, end);
            while position < end {
                let head = window.get(position, BATCH_HEADER_BYTES).await?;
                let (header, stored) = stored_header(head, expected)
                    .map_err(|reason| corrupt(position, expected, reason))?;
                if header.base_offset >= high_watermark {
                    return Ok(None);
                }
                if header.max_timestamp_ms >= timestamp_ms {
                    let bytes = window.get(position, stored).await?;
                    let view = crate::batch::BatchView::validate(bytes)
                        .map_err(|e| corrupt(position, expected, e.to_string()))?;
                    if let Some(r) = view.iter().find(|r| r.timestamp_ms >= timestamp_ms) {
                        return Ok(Some((r.offset, r.timestamp_ms)));
                    }
                }
                expected = header.last_offset().plus(1);
                position += stored as u64;
            }
        }
        Ok(None)
    }

    /// Removes every batch at or after `offset` (a batch boundary), for a
    /// follower whose log diverged from its leader's. Durable on return.
    pub async fn truncate_to(&self, offset: Offset, now_ms: i64) -> EngineResult<()> {
        self.flush().await?;
        self.sync().await?;
        let (removed, keep_base) = {
            let mut st = self.state.borrow_mut();
            if offset >= st.next_offset() {
                return Ok(());
            }
            if offset < st.log_start_offset {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start_offset: st.log_start_offset,
                    high_watermark: st.high_watermark,
                });
            }
            let keep = st.segments.partition_point(|s| s.base_offset() <= offset).max(1);
            let removed: Vec<Segment> = st.segments.drain(keep..).collect();
            (removed, st.active().base_offset())
        };
        for segment in removed {
            self.remove_segment_files(&segment).await?;
        }
        // Find where the batch at `offset` starts in the kept segment.
        let (file, start, end) = {
            let st = self.state.borrow();
            let s = st.active();
            (s.log().clone(), s.locate(offset), s.flushed_bytes())
        };
        let mut window = Window::new(&file, end);
        let (mut position, mut expected) = start;
        let mut cut = None;
        while position < end {
            let head = window.get(position, BATCH_HEADER_BYTES).await?;
            let (header, stored) =
                stored_header(head, expected).map_err(|reason| EngineError::Corrupt {
                    path: file.path().display().to_string(),
                    offset: expected,
                    position_bytes: position,
                    reason,
                })?;
            expected = header.last_offset().plus(1);
            if header.base_offset == offset {
                cut = Some(position);
                break;
            }
            if header.base_offset > offset {
                break;
            }
            position += stored as u64;
        }
        let cut = match cut {
            Some(cut) => cut,
            None if keep_base == offset => 0,
            None => {
                return Err(EngineError::InvalidConfig(format!(
                    "offset {offset} is not at a batch boundary"
                )))
            }
        };
        let tail_start = align_down(cut, BLOCK_BYTES);
        let tail: Vec<u8> = window.get(tail_start, (cut - tail_start) as usize).await?.to_vec();
        file.truncate(align_up(cut, BLOCK_BYTES)).await?;
        if !tail.is_empty() {
            let mut block = file.alloc_buffer(BLOCK_BYTES as usize);
            block[..tail.len()].copy_from_slice(&tail);
            block[tail.len()..].fill(0);
            file.write_at(block, tail_start).await?;
        }
        file.sync().await?;
        let (segment, _report) =
            Segment::open(&*self.storage, &self.dir, keep_base, RecoveryMode::Repair, true, now_ms)
                .await?;
        assert_eq!(segment.next_offset(), offset, "truncation must end the log at {offset}");
        let mut st = self.state.borrow_mut();
        st.segments.pop_back();
        st.segments.push_back(segment);
        st.high_watermark = st.high_watermark.min(offset);
        st.written_offset = offset;
        st.durable_offset = offset;
        st.cache.truncate(offset);
        st.producers.truncate(offset);
        st.check_offsets();
        drop(st);
        self.state.borrow_mut().recovery_point = self.end_point();
        Ok(())
    }

    /// Deletes closed segments past `retention_ms` (by their newest record)
    /// or beyond `retention_bytes` (oldest first). The active segment stays.
    pub async fn apply_retention(&self, now_ms: i64) -> EngineResult<usize> {
        let options = self.options.borrow().clone();
        self.delete_oldest_segments(|oldest, total_bytes| {
            let too_old = options
                .retention_ms
                .is_some_and(|ms| oldest.max_timestamp_ms() < now_ms.saturating_sub(ms as i64));
            let too_big = options
                .retention_bytes
                .is_some_and(|bytes| total_bytes.saturating_sub(oldest.size_bytes()) >= bytes);
            too_old || too_big
        })
        .await
    }

    /// Deletes the closed segments that hold only records before `offset`
    /// (whole segments: the log start becomes the base of the first segment
    /// kept). How a log whose live state was rewritten at `offset` (a
    /// compaction snapshot) gives back the space of its history.
    pub async fn delete_segments_before(&self, offset: Offset) -> EngineResult<usize> {
        let bases: Vec<Offset> =
            self.state.borrow().segments.iter().map(Segment::base_offset).collect();
        let mut next_bases = bases.into_iter().skip(1);
        self.delete_oldest_segments(|_, _| next_bases.next().is_some_and(|next| next <= offset))
            .await
    }

    /// Deletes closed segments, oldest first, while `doomed(oldest, bytes
    /// of all segments)` says so; never the active segment, nor data
    /// readers cannot see yet.
    async fn delete_oldest_segments(
        &self,
        mut doomed: impl FnMut(&Segment, u64) -> bool,
    ) -> EngineResult<usize> {
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            let mut total: u64 = st.segments.iter().map(Segment::size_bytes).sum();
            let mut removed = Vec::new();
            while st.segments.len() > 1 {
                if !doomed(&st.segments[0], total) {
                    break;
                }
                if st.segments[1].base_offset() > st.high_watermark {
                    break;
                }
                total -= st.segments[0].size_bytes();
                if let Some(s) = st.segments.pop_front() {
                    removed.push(s);
                }
            }
            if let Some(first) = st.segments.front() {
                st.log_start_offset = st.log_start_offset.max(first.base_offset());
            }
            st.check_offsets();
            removed
        };
        let count = removed.len();
        for segment in removed {
            self.remove_segment_files(&segment).await?;
        }
        Ok(count)
    }

    async fn remove_segment_files(&self, segment: &Segment) -> EngineResult<()> {
        let paths = segment.paths();
        for path in [&paths.log, &paths.index, &paths.time_index] {
            self.storage.remove_file(path).await?;
        }
        Ok(())
    }

    /// Flushes and syncs everything; the log may be reopened afterwards.
    pub async fn close(&self) -> EngineResult<()> {
        self.flush().await?;
        self.sync().await?;
        self.write_index_tails().await
    }

    /// Writes and syncs the active segment's index files completely.
    async fn write_index_tails(&self) -> EngineResult<()> {
        let (works, files) = {
            let mut st = self.state.borrow_mut();
            let active = st.active_mut();
            (active.take_index_flush(IndexFlush::All), active.index_files())
        };
        for (file, work) in works {
            self.fence_on_error(crate::appender::write_all(&file, work).await)?;
        }
        self.state.borrow_mut().active_mut().index_flush_done();
        for file in files {
            self.fence_on_error(file.sync().await)?;
        }
        Ok(())
    }

    /// Removes the log's directory and every file in it.
    pub async fn delete(&self) -> EngineResult<()> {
        self.storage.remove_dir_all(&self.dir).await?;
        Ok(())
    }
}

/// Reads whole batches from `file` starting with the one that holds
/// `offset`, scanning from `start` (a batch boundary at or before it, with
/// the offset of the batch there). Every batch handed out is verified
/// (bounds, CRC): damage ends the read after the good batches
/// before it, and a read that starts at damage fails with `Corrupt`.
async fn read_from_segment(
    file: &FileRef,
    start: (u64, Offset),
    readable_end: u64,
    offset: Offset,
    max_bytes: usize,
    high_watermark: Offset,
) -> EngineResult<Bytes> {
    let corrupt = |position_bytes: u64, offset: Offset, reason: String| EngineError::Corrupt {
        path: file.path().display().to_string(),
        offset,
        position_bytes,
        reason,
    };
    let mut window = Window::new(file, readable_end);
    let (mut position, mut expected) = start;
    // Find the batch that holds `offset` (headers only: batches skipped
    // here are not handed out).
    loop {
        if position >= readable_end {
            return Ok(Bytes::new());
        }
        let head = window.get(position, BATCH_HEADER_BYTES).await?;
        let (header, stored) =
            stored_header(head, expected).map_err(|reason| corrupt(position, expected, reason))?;
        if header.last_offset() >= offset {
            break;
        }
        expected = header.last_offset().plus(1);
        position += stored as u64;
    }
    // Take whole batches from there, with one read for all of them.
    let first = position;
    let head = window.get(first, BATCH_HEADER_BYTES).await?;
    let (_, first_stored) =
        stored_header(head, expected).map_err(|reason| corrupt(first, expected, reason))?;
    let bytes = window.get(first, max_bytes.max(first_stored)).await?;
    let mut taken = 0usize;
    let mut damage = None;
    while taken + BATCH_HEADER_BYTES <= bytes.len() {
        let at = first + taken as u64;
        let (header, stored) = match stored_header(&bytes[taken..], expected) {
            Ok(found) => found,
            Err(reason) => {
                damage = Some(corrupt(at, expected, reason));
                break;
            }
        };
        let fits = taken + stored <= bytes.len() && (taken == 0 || taken + stored <= max_bytes);
        if header.base_offset >= high_watermark || !fits {
            break;
        }
        // CRC and bounds, not the archive: that was checked when the batch
        // was accepted, and the consumer checks it again.
        if let Err(e) = crate::batch::verify_stored(&bytes[taken..taken + stored]) {
            damage = Some(corrupt(at, expected, e.to_string()));
            break;
        }
        expected = header.last_offset().plus(1);
        taken += stored;
    }
    if taken == 0 {
        return Err(damage.unwrap_or_else(|| {
            corrupt(first, expected, format!("batch extends past the written end {readable_end}"))
        }));
    }
    let bytes = &bytes[..taken];
    let mut out = AlignedVec::<16>::with_capacity(taken);
    out.extend_from_slice(bytes);
    Ok(Bytes::from_owner(out))
}

/// Calls `f` with every batch header of `file` below `end`, from its start
/// (offset `base`): what the producer states need, read a header per batch
/// instead of verifying every byte (recovery verified what was not known
/// durable; with 1 MiB batches this reads a 16th of the segment). Stops at
/// the first header that does not follow on: damage, which reads report.
async fn for_each_header(
    file: &FileRef,
    end: u64,
    base: Offset,
    mut f: impl FnMut(&BatchHeader),
) -> EngineResult<()> {
    let mut window = Window::new(file, end);
    let (mut position, mut expected) = (0u64, base);
    while position < end {
        let head = window.get(position, BATCH_HEADER_BYTES).await?;
        let Ok((header, stored)) = stored_header(head, expected) else { break };
        f(&header);
        expected = header.last_offset().plus(1);
        position += stored as u64;
    }
    Ok(())
}

/// The header of the stored batch at the start of `head`, which must begin
/// at offset `expected`, and its stored length.
fn stored_header(head: &[u8], expected: Offset) -> Result<(BatchHeader, usize), String> {
    let stored = peek_stored_bytes(head).ok_or("no valid batch header")?;
    let header = BatchHeader::decode(head).map_err(|e| e.to_string())?;
    if header.base_offset != expected {
        return Err(format!(
            "batch has base offset {} where offset {expected} was expected",
            header.base_offset
        ));
    }
    Ok((header, stored))
}

/// Where to verify the active segment (base `base`) from, given the
/// partition's recovery point.
fn active_verify_from(point: RecoveryPoint, base: Offset, dir: &Path) -> EngineResult<VerifyFrom> {
    if point.segment_base == base {
        return Ok(VerifyFrom::RecoveryPoint {
            offset: point.offset,
            position_bytes: point.position_bytes,
        });
    }
    if point.offset <= base {
        // The point lies in an earlier segment (synced at its roll): all of
        // the active segment is past it.
        return Ok(VerifyFrom::RecoveryPoint { offset: base, position_bytes: 0 });
    }
    Err(EngineError::Corrupt {
        path: dir.display().to_string(),
        offset: point.offset,
        position_bytes: point.position_bytes,
        reason: format!(
            "the log ends in the segment at offset {base}, below its recovery point (offset {} in the segment at offset {})",
            point.offset, point.segment_base
        ),
    })
}
