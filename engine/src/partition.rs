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
//! Offsets, in order: `log_start_offset <= local_high_watermark <=
//! written_offset <= next_offset`. The local high watermark is what this
//! replica holds durably under its topic's policy: under `fsync` it trails
//! the synced offset, otherwise the written one. A torn or unwritten tail
//! is never visible.
//!
//! # Replicated partitions
//!
//! A partition is replicated once the replication layer sets its high
//! watermark (`set_high_watermark`, learned from the in-sync replicas by a
//! leader, from the leader by a follower). Readers then see up to
//! `high_watermark = min(local_high_watermark, replicated_high_watermark)`
//! (never below the log start), and an offset between that and the log end
//! reads as no data rather than out of range (a consumer that moved to a
//! new leader whose high watermark lags is not reset). A partition that was
//! never given one is not replicated: readers see the local high watermark,
//! exactly as before replication existed.
//!
//! The replicated high watermark only grows (a lower value, a reordered
//! answer from the leader, changes nothing), with one exception:
//! `truncate_to` lowers it to the cut, since what lay past the cut is gone.
//! A leader change keeps it, so a new leader starts from what it knew as a
//! follower, as in Kafka. It lives in memory: after a restart (or a
//! re-hosting) the partition is not replicated until the replication layer
//! sets it again, which it must do before the partition serves readers.
//!
//! Appends complete on local durability (the local high watermark) in
//! either case: waiting for the replicas is the replication layer's part.
//! A follower's fetch from its leader reads past the replicated high
//! watermark, up to the leader's local one (`ReadLimit::LocalHighWatermark`).
//!
//! # Leader epochs
//!
//! Every batch carries the epoch of the leader that wrote it; the log keeps
//! their history (`leader_epochs.rs`). Leader appends are stamped with the
//! log's current leader epoch (`set_leader_epoch`, 0 until the replication
//! layer raises it; at open, the latest epoch of the history); follower
//! appends keep the epoch their batch carries. Neither may go below the
//! latest epoch of the history.

use crate::batch::{peek_stored_bytes, Batch, BatchHeader};
use crate::config::Durability;
use crate::error::{EngineError, EngineResult};
use crate::ids::{LeaderEpoch, Offset};
use crate::leader_epochs::{EpochCheck, EpochEnd, EpochEntry, LeaderEpochHistory, StoredHistory};
use crate::limits::{align_down, align_up, BATCH_HEADER_BYTES, BLOCK_BYTES};
use crate::metrics;
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

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLimit {
    /// Up to the high watermark: what consumers see.
    #[default]
    HighWatermark,
    /// Up to the local high watermark, past the replicated one: what a
    /// follower's fetch reads from its leader (the high watermark cannot
    /// pass what the followers do not have yet).
    LocalHighWatermark,
}

/// Stored batches returned by a read, byte for byte.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    /// Runs of whole batches, each 16-byte aligned.
    pub chunks: Vec<Bytes>,
    /// The high watermark readers see (whatever the read's limit was).
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
    /// The first offset the log holds.
    pub log_start_offset: Offset,
    /// Readers see the records below it: the local high watermark, capped
    /// by the replicated one on a replicated partition.
    pub high_watermark: Offset,
    /// The log end offset: just after the last append, written or not
    /// (Kafka's LEO).
    pub next_offset: Offset,
    /// Everything below it is synced (fdatasync'd), whatever the policy.
    pub durable_offset: Offset,
    /// Everything below it is durable under the topic's policy (`fsync`:
    /// synced; `interval:`/`none`: written); appends complete once it
    /// passes them. What a follower reports to its leader, and what a
    /// leader counts for itself in the in-sync minimum.
    pub local_high_watermark: Offset,
    /// The high watermark the replication layer set; `None` while the
    /// partition is not replicated.
    pub replicated_high_watermark: Option<Offset>,
    /// A storage error stopped the writes: appends fail until the log
    /// recovers, and `next_offset` may count appends that never reached
    /// the disk (recovery cuts them).
    pub fenced: bool,
}

/// What an operator sees of a log (`mamba topic describe`): where it
/// starts and ends and what it holds on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    pub offsets: LogOffsets,
    /// The epoch leader appends are stamped with now.
    pub leader_epoch: LeaderEpoch,
    /// The bytes of every segment's log file (indexes not counted), up to
    /// the last append, written or not.
    pub size_bytes: u64,
    pub segment_count: usize,
}

/// How the leader epoch file stands against the history in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochFile {
    /// No file: it stands for epoch 0 from the log start, so a history of
    /// epoch 0 alone needs none.
    Absent,
    /// The file holds the history, or more entries wholly before the log
    /// start (retention does not rewrite it).
    Current,
    /// The history lost entries the file still has (truncation, recovery)
    /// or the file is damaged: it is rewritten before the log grows.
    Stale,
}

struct LogState {
    segments: VecDeque<Segment>,
    log_start_offset: Offset,
    local_high_watermark: Offset,
    /// Set by the replication layer (see the module docs).
    replicated_high_watermark: Option<Offset>,
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
    /// The leader epochs with batches in the log.
    epochs: LeaderEpochHistory,
    epoch_file: EpochFile,
    /// What leader appends are stamped with; not persisted (see the module
    /// docs).
    leader_epoch: LeaderEpoch,
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
    /// What readers see (see the module docs).
    fn high_watermark(&self) -> Offset {
        match self.replicated_high_watermark {
            None => self.local_high_watermark,
            Some(replicated) => {
                replicated.min(self.local_high_watermark).max(self.log_start_offset)
            }
        }
    }
    /// Where a read with `limit` stops.
    fn visible_end(&self, limit: ReadLimit) -> Offset {
        match limit {
            ReadLimit::HighWatermark => self.high_watermark(),
            ReadLimit::LocalHighWatermark => self.local_high_watermark,
        }
    }
    /// Fits the leader epoch history to the log's bounds: no entry at or
    /// past the log end (cut by a truncation, lost in a crash), none wholly
    /// before the log start, and none at all in an empty log (no batch, no
    /// epoch: as in Kafka, a follower that truncated its whole log starts
    /// afresh at whatever epoch its leader sends). Entries cut there may
    /// still be in the file, which is then rewritten before the log grows.
    fn fit_epochs_to_log(&mut self) {
        let (start, end) = (self.log_start_offset, self.next_offset());
        let cut_from = if start == end { Offset::ZERO } else { end };
        if self.epochs.truncate_from(cut_from) && self.epoch_file != EpochFile::Absent {
            self.epoch_file = EpochFile::Stale;
        }
        self.epochs.trim_before(start);
    }

    fn check_offsets(&self) {
        assert!(
            self.log_start_offset <= self.local_high_watermark,
            "log start above the local high watermark"
        );
        assert!(
            self.local_high_watermark <= self.written_offset,
            "local high watermark above written"
        );
        assert!(self.durable_offset <= self.written_offset, "durable above written");
        assert!(self.written_offset <= self.next_offset(), "written above log end");
        if let Some(latest) = self.epochs.latest() {
            assert!(
                latest.start_offset < self.next_offset(),
                "the latest epoch starts past the log end"
            );
        }
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
            local_high_watermark: next,
            replicated_high_watermark: None,
            written_offset: next,
            durable_offset: next,
            recovery_point: RecoveryPoint::ZERO,
            cache: TailCache::new(options.tail_cache_bytes),
            fenced: None,
            producers: ProducerStates::default(),
            corrupt_reads: 0,
            corrupt_logged: None,
            offset_lease_end: None,
            epochs: LeaderEpochHistory::default(),
            epoch_file: EpochFile::Absent,
            leader_epoch: LeaderEpoch(0),
        };
        state.check_offsets();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            storage,
            options: RefCell::new(options),
            state: RefCell::new(state),
        };
        log.state.borrow_mut().recovery_point = log.end_point();
        let stored = crate::leader_epochs::read(&*log.storage, dir).await?;
        log.recover_recent_state(stored).await?;
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
        let mut states = ProducerStates::default();
        self.for_each_recent_header(|header| states.record(header)).await?;
        self.state.borrow_mut().producers = states;
        Ok(())
    }

    /// Calls `f` with every batch header of the last two segments.
    async fn for_each_recent_header(&self, mut f: impl FnMut(&BatchHeader)) -> EngineResult<()> {
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
        for (file, end, base) in segments {
            for_each_header(&file, end, base, &mut f).await?;
        }
        Ok(())
    }

    /// At open: the producer states and the leader epoch history, from one
    /// read of the last two segments' headers (see `leader_epochs.rs` for
    /// the recovery rule).
    async fn recover_recent_state(&self, stored: StoredHistory) -> EngineResult<()> {
        let file_damaged = matches!(stored, StoredHistory::Damaged(_));
        let (mut epochs, mut epoch_file) = {
            let mut st = self.state.borrow_mut();
            (st.epochs, st.epoch_file) = match stored {
                StoredHistory::Absent => {
                    let zero =
                        LeaderEpochHistory::epoch_zero(st.log_start_offset, st.next_offset());
                    (zero, EpochFile::Absent)
                }
                StoredHistory::Intact(epochs) => (epochs, EpochFile::Current),
                // Empty: it disagrees with every batch, so it is rebuilt.
                StoredHistory::Damaged(error) => {
                    tracing::warn!(%error, "rebuilding the leader epoch history from the log");
                    (LeaderEpochHistory::default(), EpochFile::Stale)
                }
            };
            // A crash after an epoch's entry was written, before its first
            // batch was durable, left an entry past the end.
            st.fit_epochs_to_log();
            (st.epochs.clone(), st.epoch_file)
        };
        let mut producers = ProducerStates::default();
        let mut disagreement: Option<(Offset, LeaderEpoch)> = None;
        let first_known = epochs.entries().first().map_or(Offset::ZERO, |e| e.start_offset);
        self.for_each_recent_header(|header| {
            producers.record(header);
            // Before the first entry: epochs the history forgot at its size
            // limit.
            let offset = header.base_offset;
            if offset >= first_known && epochs.epoch_at(offset) != Some(header.leader_epoch) {
                disagreement.get_or_insert((offset, header.leader_epoch));
            }
        })
        .await?;
        if let Some((offset, epoch)) = disagreement {
            if !file_damaged {
                tracing::warn!(dir = %self.dir.display(), %offset, %epoch, history = ?epochs.entries(), "the leader epoch history disagrees with the batch at this offset; rebuilding it from the log");
            }
            epochs = self.epochs_from_headers().await?;
            epoch_file = match epoch_file {
                EpochFile::Absent if epochs.is_epoch_zero_only() => EpochFile::Absent,
                _ => EpochFile::Stale,
            };
        }
        {
            let mut st = self.state.borrow_mut();
            st.producers = producers;
            st.leader_epoch = epochs.latest_epoch().unwrap_or(LeaderEpoch(0));
            st.epochs = epochs;
            st.epoch_file = epoch_file;
            st.check_offsets();
        }
        self.store_epochs_if_stale().await
    }

    /// The leader epoch history read from the headers of every batch.
    /// Reads a header per batch of the whole log: only for a damaged or
    /// disagreeing file.
    async fn epochs_from_headers(&self) -> EngineResult<LeaderEpochHistory> {
        let segments: Vec<(FileRef, u64, Offset)> = {
            let st = self.state.borrow();
            st.segments
                .iter()
                .map(|s| (s.log().clone(), s.flushed_bytes(), s.base_offset()))
                .collect()
        };
        let mut epochs = LeaderEpochHistory::default();
        for (file, end, base) in segments {
            for_each_header(&file, end, base, &mut |header: &BatchHeader| {
                // A batch older than an epoch before it (`Stale`) was not
                // written by this engine, which refuses those; it counts
                // under the newer epoch.
                if epochs.check_append(header.leader_epoch) == EpochCheck::New {
                    epochs.push(EpochEntry {
                        epoch: header.leader_epoch,
                        start_offset: header.base_offset,
                    });
                }
            })
            .await?;
        }
        Ok(epochs)
    }

    /// Rewrites the leader epoch file when it holds entries the history
    /// dropped: before the log grows past them.
    async fn store_epochs_if_stale(&self) -> EngineResult<()> {
        let epochs = {
            let st = self.state.borrow();
            if st.epoch_file != EpochFile::Stale {
                return Ok(());
            }
            st.epochs.clone()
        };
        crate::leader_epochs::write(&*self.storage, &self.dir, &epochs).await?;
        self.state.borrow_mut().epoch_file = EpochFile::Current;
        Ok(())
    }

    /// Records the entry of a new epoch, durably when a file must hold it,
    /// before its first batch is appended.
    async fn record_epoch(&self, entry: EpochEntry) -> EngineResult<()> {
        let (epochs, file_needed) = {
            let st = self.state.borrow();
            let mut epochs = st.epochs.clone();
            epochs.push(entry);
            let file_needed = st.epoch_file != EpochFile::Absent || !epochs.is_epoch_zero_only();
            (epochs, file_needed)
        };
        if file_needed {
            crate::leader_epochs::write(&*self.storage, &self.dir, &epochs).await?;
        }
        let mut st = self.state.borrow_mut();
        st.epochs = epochs;
        if file_needed {
            st.epoch_file = EpochFile::Current;
        }
        Ok(())
    }

    /// The epoch leader appends are stamped with now.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.state.borrow().leader_epoch
    }

    /// Makes `epoch` the one leader appends are stamped with (this replica
    /// leads the partition at it). Refused when older than the current one
    /// or than the latest epoch of the history (`StaleLeaderEpoch`);
    /// setting the same epoch again changes nothing.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) -> EngineResult<()> {
        let mut st = self.state.borrow_mut();
        let latest = st.epochs.latest_epoch().map_or(st.leader_epoch, |e| e.max(st.leader_epoch));
        if epoch < latest {
            return Err(EngineError::StaleLeaderEpoch { epoch, latest });
        }
        st.leader_epoch = epoch;
        Ok(())
    }

    /// The leader epochs with batches in the log, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.state.borrow().epochs.entries().to_vec()
    }

    /// Where `epoch` ends in this log (Kafka's OffsetForLeaderEpoch; see
    /// `EpochEnd`). The latest epoch ends at the log end offset.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> EpochEnd {
        let st = self.state.borrow();
        st.epochs.end_offset_for(epoch, st.next_offset())
    }

    /// Raises the replicated high watermark to `offset`, making the
    /// partition replicated if it was not; a lower value changes nothing.
    /// Returns the high watermark readers see now.
    pub fn set_high_watermark(&self, offset: Offset) -> Offset {
        let mut st = self.state.borrow_mut();
        let raised = st.replicated_high_watermark.map_or(offset, |hw| hw.max(offset));
        st.replicated_high_watermark = Some(raised);
        st.high_watermark()
    }

    /// Readers see the local high watermark again (the replicated one is
    /// forgotten): a leader whose in-sync set is itself alone. Never lowers
    /// what readers see: the replicated high watermark is at most the local
    /// one.
    pub fn clear_high_watermark(&self) -> Offset {
        let mut st = self.state.borrow_mut();
        st.replicated_high_watermark = None;
        st.high_watermark()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn offsets(&self) -> LogOffsets {
        let st = self.state.borrow();
        LogOffsets {
            log_start_offset: st.log_start_offset,
            high_watermark: st.high_watermark(),
            next_offset: st.next_offset(),
            durable_offset: st.durable_offset,
            local_high_watermark: st.local_high_watermark,
            replicated_high_watermark: st.replicated_high_watermark,
            fenced: st.fenced.is_some(),
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
            leader_epoch: self.leader_epoch(),
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
    /// active segment first when it is full or old. The first batch of a
    /// new leader epoch waits for the epoch's entry to be durable.
    ///
    /// Every refusal (fenced, lease, offset, stale epoch) comes before any
    /// change: a refused append leaves the log and its files as they were.
    pub async fn append(
        &self,
        mut batch: Batch,
        mode: AppendMode,
        now_ms: i64,
    ) -> EngineResult<AppendInfo> {
        self.check_fenced()?;
        self.roll_if_needed(batch.as_bytes().len() as u64, now_ms).await?;
        let (next, new_epoch) = {
            let st = self.state.borrow();
            let next = st.next_offset();
            if let Some(end) = st.offset_lease_end {
                if next.plus(u64::from(batch.header().last_offset_delta)) >= end {
                    // The checkpoint that extends the lease is behind.
                    return Err(EngineError::Busy);
                }
            }
            let epoch = match mode {
                AppendMode::Leader { epoch } => {
                    if let SequenceCheck::Duplicate(info) = st.producers.check(batch.header())? {
                        return Ok(info);
                    }
                    epoch
                }
                AppendMode::Follower => {
                    if batch.header().base_offset != next {
                        return Err(EngineError::OffsetMismatch {
                            expected: next,
                            got: batch.header().base_offset,
                        });
                    }
                    batch.header().leader_epoch
                }
            };
            let new_epoch = match st.epochs.check_append(epoch) {
                EpochCheck::Stale { latest } => {
                    return Err(EngineError::StaleLeaderEpoch { epoch, latest })
                }
                EpochCheck::Latest => None,
                EpochCheck::New => Some(EpochEntry { epoch, start_offset: next }),
            };
            (next, new_epoch)
        };
        // The file must not hold entries past the log end once the log
        // grows past them, and must hold a new epoch before its batch.
        self.store_epochs_if_stale().await?;
        if let Some(entry) = new_epoch {
            self.record_epoch(entry).await?;
        }
        let mut st = self.state.borrow_mut();
        assert_eq!(st.next_offset(), next, "the log grew while an append waited for its epoch");
        if let AppendMode::Leader { epoch } = mode {
            batch.set_base_offset_and_epoch(next, epoch);
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
            st.local_high_watermark = target;
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
            st.local_high_watermark = st.local_high_watermark.max(target);
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
            st.local_high_watermark = next;
            st.cache.clear();
            st.fenced = None;
            // The first batches of an epoch may be among the lost ones.
            st.fit_epochs_to_log();
            st.check_offsets();
        }
        self.state.borrow_mut().recovery_point = self.end_point();
        // Batches of the failed flush may be missing: forget what the
        // producers were told and read it back from the disk.
        self.rebuild_producer_states().await?;
        self.store_epochs_if_stale().await
    }

    pub fn is_fenced(&self) -> bool {
        self.state.borrow().fenced.is_some()
    }

    /// The storage error the partition is fenced for, if it is.
    pub fn fence_error(&self) -> Option<EngineError> {
        self.state.borrow().fenced.clone().map(EngineError::Fenced)
    }

    /// Reads stored batches from the one holding `offset`, up to `max_bytes`
    /// (always at least one whole batch), never past the high watermark.
    pub async fn read(&self, offset: Offset, max_bytes: usize) -> EngineResult<ReadOutcome> {
        self.read_with(offset, max_bytes, ReadLimit::HighWatermark).await
    }

    /// `read`, never past what `limit` names. Out of range below the log
    /// start and past the log end; between the limit and the log end there
    /// is no data yet, except that a partition that is not replicated
    /// reports offsets past its high watermark as out of range, as it
    /// always did.
    pub async fn read_with(
        &self,
        offset: Offset,
        max_bytes: usize,
        limit: ReadLimit,
    ) -> EngineResult<ReadOutcome> {
        let (file, start, readable_end, visible_end, high_watermark, log_start_offset) = {
            let st = self.state.borrow();
            let (hw, start) = (st.high_watermark(), st.log_start_offset);
            let visible_end = st.visible_end(limit);
            let local_only =
                limit == ReadLimit::HighWatermark && st.replicated_high_watermark.is_none();
            let end = if local_only { visible_end } else { st.next_offset() };
            if offset < start || offset > end {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start_offset: start,
                    high_watermark: hw,
                });
            }
            let mut outcome =
                ReadOutcome { chunks: Vec::new(), high_watermark: hw, log_start_offset: start };
            if offset >= visible_end {
                return Ok(outcome);
            }
            if let Some(chunks) = st.cache.read(offset, max_bytes, visible_end) {
                metrics::on_shard(|m| {
                    m.tail_cache_hits_total.add(1);
                    m.tail_cache_hit_bytes_total.add(chunks.iter().map(|c| c.len() as u64).sum());
                });
                outcome.chunks = chunks;
                return Ok(outcome);
            }
            metrics::on_shard(|m| m.tail_cache_misses_total.add(1));
            let i = st.segments.partition_point(|s| s.base_offset() <= offset);
            let segment = &st.segments[i.saturating_sub(1)];
            let (file, located, readable_end) =
                (segment.log().clone(), segment.locate(offset), segment.flushed_bytes());
            (file, located, readable_end, visible_end, hw, start)
        };
        let chunk =
            read_from_segment(&file, start, readable_end, offset, max_bytes, visible_end).await;
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
        let high_watermark = self.state.borrow().high_watermark();
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
                    high_watermark: st.high_watermark(),
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
        {
            let mut st = self.state.borrow_mut();
            st.segments.pop_back();
            st.segments.push_back(segment);
            st.local_high_watermark = st.local_high_watermark.min(offset);
            // What lay past the cut is gone: readers must not be promised it.
            st.replicated_high_watermark = st.replicated_high_watermark.map(|hw| hw.min(offset));
            st.written_offset = offset;
            st.durable_offset = offset;
            st.cache.truncate(offset);
            st.producers.truncate(offset);
            st.fit_epochs_to_log();
            st.check_offsets();
        }
        self.state.borrow_mut().recovery_point = self.end_point();
        self.store_epochs_if_stale().await
    }

    /// Empties the log and starts it over at `start`, past its end (Kafka's
    /// truncate-fully-and-start-at): a replica whose log ends before its
    /// leader's log start — a new replica of a partition whose early
    /// records retention deleted — continues at the leader's log start.
    /// Durable on return. The old files go first (readers keep their open
    /// handles), oldest first: a crash midway leaves a shorter log, or an
    /// empty one at its old end, which the replica starts over again.
    pub async fn reset_to(&self, start: Offset, now_ms: i64) -> EngineResult<()> {
        self.flush().await?;
        self.sync().await?;
        let next = self.state.borrow().next_offset();
        if start <= next {
            return Err(EngineError::InvalidConfig(format!(
                "a log starts over only past its end ({next}); {start} is not"
            )));
        }
        let removed: Vec<_> =
            self.state.borrow().segments.iter().map(|s| s.paths().clone()).collect();
        for paths in removed {
            for path in [&paths.log, &paths.index, &paths.time_index] {
                self.storage.remove_file(path).await?;
            }
        }
        let segment =
            self.fence_on_error(Segment::create(&*self.storage, &self.dir, start, now_ms).await)?;
        {
            let mut st = self.state.borrow_mut();
            st.segments.clear();
            st.segments.push_back(segment);
            st.log_start_offset = start;
            st.local_high_watermark = start;
            st.replicated_high_watermark = st.replicated_high_watermark.map(|_| start);
            st.written_offset = start;
            st.durable_offset = start;
            st.cache.clear();
            st.producers = ProducerStates::default();
            st.fit_epochs_to_log();
            st.check_offsets();
        }
        self.state.borrow_mut().recovery_point = self.end_point();
        self.store_epochs_if_stale().await
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
                if st.segments[1].base_offset() > st.high_watermark() {
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
            // Not written for this: the file's extra entries lie before the
            // log start, and open drops them too.
            st.fit_epochs_to_log();
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
    f: &mut impl FnMut(&BatchHeader),
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
