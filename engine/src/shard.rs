//! A shard: one executor thread, pinned to a core, that owns a set of
//! partitions and does all of their I/O.
//!
//! Requests arrive on the shard's bounded inbox (from `Engine` handles on any
//! thread, and later from other shards). Each partition has a writer task
//! fed by its own bounded queue: it takes every append that is waiting,
//! adds them to the log, and completes them all with one flush (one write
//! and, under `fsync`, one fdatasync): group commit. Reads run as separate
//! tasks next to the writer. Replies travel on one-shot channels that never
//! block the shard, so a full inbox can slow senders but never deadlock a
//! request against its own reply.
//!
//! Architecture Invariant: nothing here is shared with other threads except
//! the inbox; partition state is `!Send` and lives in this shard only.

use crate::batch::Batch;
use crate::config::{Durability, EngineConfig, StorageMode};
use crate::disk::{prime_io_poll_probe, DiskStorage};
use crate::error::{EngineError, EngineResult};
use crate::ids::{LeaderEpoch, Offset, PartitionId, ShardId};
use crate::leader_epochs::{EpochEnd, EpochEntry};
use crate::limits::PARTITION_INBOX_CAPACITY;
use crate::memfs::MemFs;
use crate::metrics::{self, EngineMetrics, PartitionMetrics, ShardMetrics};
use crate::partition::{
    AppendInfo, AppendMode, AppendWait, LogOffsets, LogOptions, LogSummary, PartitionLog,
    ReadLimit, ReadOutcome,
};
use crate::recovery_point::{Checkpoint, PointKey, RecoveryPoint, MEMORY_OFFSET_LEASE};
use crate::runtime;
use crate::segment::SegmentReport;
use crate::storage::StorageRef;
use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

pub type Reply<T> = oneshot::Sender<EngineResult<T>>;

/// Sends a reply; a caller that stopped waiting is not an error.
fn respond<T>(reply: Reply<T>, value: EngineResult<T>) {
    if reply.send(value).is_err() {
        tracing::trace!("a caller stopped waiting for its reply");
    }
}

/// Names one partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: Arc<str>,
    pub partition: PartitionId,
}

pub struct OpenSpec {
    pub key: PartitionKey,
    /// The topic's `created_ms`, which tells incarnations of a name apart.
    pub topic_created_ms: i64,
    pub dir: PathBuf,
    pub options: LogOptions,
    pub storage: StorageMode,
    /// The last checkpointed recovery point, and whether it was written by
    /// a clean shutdown.
    pub recovery_point: Option<(RecoveryPoint, bool)>,
}

/// Where an appended batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer: the partition leads, assigns the offsets and stamps its
    /// current leader epoch (`AppendMode::Leader`).
    Client,
    /// The partition's leader, to this follower: the batch keeps the
    /// offsets and epoch it carries (`AppendMode::Follower`).
    Replication,
}

/// What a shard can be asked to do.
pub enum ShardRequest {
    Open {
        spec: OpenSpec,
        reply: Reply<Vec<SegmentReport>>,
    },
    Append {
        key: PartitionKey,
        batch: Batch,
        wait: AppendWait,
        origin: AppendOrigin,
        reply: Reply<AppendInfo>,
    },
    Read {
        key: PartitionKey,
        offset: Offset,
        max_bytes: usize,
        limit: ReadLimit,
        reply: Reply<ReadOutcome>,
    },
    Offsets {
        key: PartitionKey,
        reply: Reply<LogOffsets>,
    },
    /// Offsets, size and segments; an offline partition answers its error.
    Summary {
        key: PartitionKey,
        reply: Reply<LogSummary>,
    },
    /// How many partitions this shard serves and how many are offline.
    CountPartitions {
        reply: Reply<PartitionCounts>,
    },
    /// Answer once a read with `limit` can see data at `offset` (a
    /// long-polling fetch).
    WaitForData {
        key: PartitionKey,
        offset: Offset,
        limit: ReadLimit,
        reply: Reply<()>,
    },
    /// Lead at `epoch` (see `PartitionLog::set_leader_epoch`).
    SetLeaderEpoch {
        key: PartitionKey,
        epoch: LeaderEpoch,
        reply: Reply<()>,
    },
    /// Raise the replicated high watermark (see
    /// `PartitionLog::set_high_watermark`); answers the one readers see.
    SetHighWatermark {
        key: PartitionKey,
        offset: Offset,
        reply: Reply<Offset>,
    },
    /// Forgets the replicated high watermark (`Engine::clear_high_watermark`).
    ClearHighWatermark {
        key: PartitionKey,
        reply: Reply<Offset>,
    },
    /// Where a leader epoch ends in the log (Kafka's OffsetForLeaderEpoch).
    EndOffsetForEpoch {
        key: PartitionKey,
        epoch: LeaderEpoch,
        reply: Reply<EpochEnd>,
    },
    /// The log's leader epoch history.
    LeaderEpochs {
        key: PartitionKey,
        reply: Reply<Vec<EpochEntry>>,
    },
    OffsetForTimestamp {
        key: PartitionKey,
        timestamp_ms: i64,
        reply: Reply<Option<(Offset, i64)>>,
    },
    Alter {
        key: PartitionKey,
        options: LogOptions,
        reply: Reply<()>,
    },
    Delete {
        key: PartitionKey,
        reply: Reply<()>,
    },
    /// Delete the segments holding only records before `offset` (see
    /// `PartitionLog::delete_segments_before`); answers how many went.
    DeleteSegmentsBefore {
        key: PartitionKey,
        offset: Offset,
        reply: Reply<usize>,
    },
    /// Remove every batch at or after `offset` (see
    /// `PartitionLog::truncate_to`), durable when answered.
    TruncateTo {
        key: PartitionKey,
        offset: Offset,
        /// Empty the log and start it at `offset`, past its end.
        start_over: bool,
        reply: Reply<()>,
    },
    /// Write this shard's recovery points now (after opening partitions,
    /// so they and their memory logs' offsets survive a crash).
    Checkpoint {
        reply: Reply<()>,
    },
    /// Run a task on this shard (a service of the embedding program, such
    /// as the broker's listener), next to its partitions.
    Spawn {
        task: ShardTask,
    },
    /// Flush, sync and close every partition, then stop the shard.
    Shutdown {
        reply: Reply<()>,
    },
}

/// Partitions by state, of one shard or summed over all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionCounts {
    pub online: usize,
    /// Opened with an error (damage, unreadable files); they serve nothing
    /// until repaired.
    pub offline: usize,
}

impl std::ops::Add for PartitionCounts {
    type Output = PartitionCounts;
    fn add(self, other: PartitionCounts) -> PartitionCounts {
        PartitionCounts {
            online: self.online + other.online,
            offline: self.offline + other.offline,
        }
    }
}

/// A task to start on a shard: built there, so it may hold `!Send` state.
pub type ShardTask = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

enum WriterCommand {
    Append {
        batch: Batch,
        wait: AppendWait,
        origin: AppendOrigin,
        reply: Reply<AppendInfo>,
    },
    /// Delete the segments holding only records before `offset`.
    DeleteSegmentsBefore {
        offset: Offset,
        reply: Reply<usize>,
    },
    /// Remove every batch at or after `offset`.
    TruncateTo {
        offset: Offset,
        start_over: bool,
        /// Its recovery points are written before the writer goes on.
        shard: Rc<ShardState>,
        reply: Reply<()>,
    },
    /// Something is due (sync, retention); run a round.
    Wake,
    Close {
        reply: Reply<()>,
    },
}

/// A partition as its shard holds it.
struct Partition {
    log: Rc<PartitionLog>,
    metrics: Arc<PartitionMetrics>,
    point_key: PointKey,
    memory: bool,
    writer: async_channel::Sender<WriterCommand>,
    sync_due: Cell<bool>,
    retention_due: Cell<bool>,
    last_sync_ms: Cell<i64>,
    /// When the writer last tried to recover the fenced log: a full disk
    /// fails every try, so they are spaced `FENCED_RETRY` apart.
    last_recovery: Cell<Option<Instant>>,
    /// The timer woke the writer for a recovery it has not tried yet (one
    /// wake is enough, however long the writer is busy).
    recovery_woken: Cell<bool>,
    /// Readers waiting for data at an offset, answered when the end their
    /// limit names passes it (the high watermark moves with local writes
    /// and syncs, and with the replication layer's `set_high_watermark`).
    /// Waiters whose caller gave up are pruned on every registration, so
    /// the list stays as long as the live waits.
    watchers: RefCell<Vec<(Offset, ReadLimit, Reply<()>)>>,
    /// Commands that found the writer's queue full, in arrival order, and
    /// whether a task is sending them on (`enqueue`).
    parked: RefCell<VecDeque<WriterCommand>>,
    draining: Cell<bool>,
}

/// Where reads with each limit stop now.
fn visible_end(offsets: &LogOffsets, limit: ReadLimit) -> Offset {
    match limit {
        ReadLimit::HighWatermark => offsets.high_watermark,
        ReadLimit::LocalHighWatermark => offsets.local_high_watermark,
    }
}

impl Partition {
    /// Publishes the log's offsets and size for monitoring, each writer
    /// round; `in_flight` appends are queued or waiting for their write and
    /// sync. (The size is a sum over the segments: a few dozen additions
    /// at the usual segment counts, against a round's write and sync.)
    fn publish(&self, in_flight: usize) {
        let offsets = self.log.offsets();
        let m = &self.metrics;
        m.log_start_offset.set(offsets.log_start_offset.0);
        m.log_end_offset.set(offsets.next_offset.0);
        m.high_watermark.set(offsets.high_watermark.0);
        m.size_bytes.set(self.log.size_bytes());
        m.segments.set(self.log.segment_count() as u64);
        m.appends_in_flight.set(in_flight as u64);
    }

    fn watch(&self, offset: Offset, limit: ReadLimit, reply: Reply<()>) {
        if visible_end(&self.log.offsets(), limit) > offset {
            respond(reply, Ok(()));
            return;
        }
        let mut watchers = self.watchers.borrow_mut();
        watchers.retain(|(_, _, r)| !r.is_canceled());
        watchers.push((offset, limit, reply));
    }

    /// Wakes the readers waiting for data now visible.
    fn notify_watchers(&self) {
        let offsets = self.log.offsets();
        let ready = |offset: Offset, limit: ReadLimit| offset < visible_end(&offsets, limit);
        let mut watchers = self.watchers.borrow_mut();
        if !watchers.iter().any(|(offset, limit, _)| ready(*offset, *limit)) {
            return;
        }
        let (woken, waiting): (Vec<_>, Vec<_>) =
            watchers.drain(..).partition(|(offset, limit, _)| ready(*offset, *limit));
        *watchers = waiting;
        for (_, _, reply) in woken {
            respond(reply, Ok(()));
        }
    }

    /// Whether a fenced log may try to recover now.
    fn recovery_due(&self, now: Instant) -> bool {
        self.last_recovery.get().is_none_or(|last| now.duration_since(last) >= FENCED_RETRY)
    }

    fn wake(&self) {
        // A full queue means a round is coming anyway.
        if self.writer.try_send(WriterCommand::Wake).is_err() {
            tracing::trace!("writer busy; due work runs with its next round");
        }
    }
}

/// A partition that could not be opened: every request gets its error
/// until an operator repairs it; its recovery point is kept in the
/// checkpoints, so the damage is still recognized as such next time.
struct OfflinePartition {
    error: EngineError,
    point_key: PointKey,
    point: Option<RecoveryPoint>,
}

enum Slot {
    Online(Rc<Partition>),
    Offline(OfflinePartition),
}

type Partitions = Rc<RefCell<HashMap<PartitionKey, Slot>>>;

/// What a shard's tasks share.
struct ShardState {
    id: ShardId,
    data_dir: PathBuf,
    partitions: Partitions,
    /// The engine's registry, where this shard's partitions are listed.
    metrics: Arc<EngineMetrics>,
    /// The points last written, so an idle shard writes nothing; the lock
    /// keeps one checkpoint write at a time.
    checkpointed: futures::lock::Mutex<HashMap<PointKey, RecoveryPoint>>,
}

/// Runs shard `id` until its inbox closes or it is asked to shut down.
/// `ready` learns whether the shard could start.
pub async fn run(
    id: ShardId,
    inbox: async_channel::Receiver<ShardRequest>,
    data_dir: PathBuf,
    config: EngineConfig,
    metrics: Arc<EngineMetrics>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let shard_metrics = metrics.shards()[id.0 as usize].clone();
    metrics::install(shard_metrics.clone());
    if let Err(e) = prime_io_poll_probe(&data_dir).await {
        // The receiver outlives startup; if it is gone nobody is waiting.
        ready.send(Err(e.to_string())).ok();
        return;
    }
    if let Some(open_files_max) = config.open_files_per_shard_max {
        crate::disk::set_open_files_max(open_files_max);
    }
    ready.send(Ok(())).ok();
    drop(ready);
    let shard = Rc::new(ShardState {
        id,
        data_dir,
        partitions: Rc::new(RefCell::new(HashMap::new())),
        metrics,
        checkpointed: futures::lock::Mutex::new(HashMap::new()),
    });
    let stopped = Rc::new(Cell::new(false));
    runtime::spawn_detached(timers(shard.clone(), config.clone(), stopped.clone()));
    runtime::spawn_detached(sample_busy_time(shard_metrics.clone(), stopped.clone()));
    let parked = Rc::new(Cell::new(0usize));
    let mut shutdown_reply = None;
    while let Ok(request) = inbox.recv().await {
        shard_metrics.inbox_depth.set(inbox.len() as u64);
        match request {
            ShardRequest::Shutdown { reply } => {
                shutdown_reply = Some(reply);
                break;
            }
            request => handle(request, &shard, &parked),
        }
        while parked.get() >= PARKED_APPENDS_MAX {
            runtime::sleep(Duration::from_micros(100)).await;
        }
    }
    stopped.set(true);
    let mut result = close_all(&shard.partitions).await;
    if let Err(e) = &result {
        tracing::error!(shard = %id, error = %e, "closing partitions failed");
    }
    // Only a shutdown that closed every partition is clean: memory logs
    // then continue exactly where they stopped.
    let checkpoint = checkpoint(&shard, result.is_ok()).await;
    if let Err(e) = &checkpoint {
        tracing::error!(shard = %id, error = %e, "writing the recovery points failed");
    }
    result = result.and(checkpoint);
    for key in shard.partitions.borrow_mut().drain().map(|(key, _)| key) {
        shard.metrics.unregister(&key.topic, key.partition.0);
    }
    if let Some(reply) = shutdown_reply {
        respond(reply, result);
    }
}

fn lookup(partitions: &Partitions, key: &PartitionKey) -> EngineResult<Rc<Partition>> {
    match partitions.borrow().get(key) {
        Some(Slot::Online(p)) => Ok(p.clone()),
        Some(Slot::Offline(offline)) => Err(offline.error.clone()),
        None => Err(EngineError::UnknownPartition {
            topic: key.topic.to_string(),
            partition: key.partition,
        }),
    }
}

/// Writes the shard's recovery points when one moved since the last write
/// (or always, for a clean shutdown), then extends the offset lease of its
/// memory logs past what was written.
async fn checkpoint(shard: &ShardState, clean: bool) -> EngineResult<()> {
    let mut written = shard.checkpointed.lock().await;
    let mut points = HashMap::new();
    let mut memory = Vec::new();
    for slot in shard.partitions.borrow().values() {
        match slot {
            Slot::Online(p) => {
                let point = if p.memory { p.log.appended_point() } else { p.log.recovery_point() };
                if p.memory {
                    memory.push((p.clone(), point.offset));
                }
                points.insert(p.point_key.clone(), point);
            }
            Slot::Offline(offline) => {
                if let Some(point) = offline.point {
                    points.insert(offline.point_key.clone(), point);
                }
            }
        }
    }
    if !clean && points == *written {
        return Ok(());
    }
    let file = crate::recovery_point::shard_file(&shard.data_dir, shard.id);
    let bytes = Checkpoint { clean, points: points.clone() }.encode();
    crate::storage::write_atomically(&DiskStorage, &file, &bytes).await?;
    *written = points;
    for (p, offset) in memory {
        p.log.set_offset_lease_end(offset.plus(MEMORY_OFFSET_LEASE));
    }
    Ok(())
}

/// Appends waiting for room in a full partition queue, per shard.
const PARKED_APPENDS_MAX: usize = 1024;

fn fail(command: WriterCommand) {
    match command {
        WriterCommand::Append { reply, .. } => respond(reply, Err(EngineError::ShuttingDown)),
        WriterCommand::DeleteSegmentsBefore { reply, .. } => {
            respond(reply, Err(EngineError::ShuttingDown));
        }
        WriterCommand::TruncateTo { reply, .. } => respond(reply, Err(EngineError::ShuttingDown)),
        WriterCommand::Wake | WriterCommand::Close { .. } => {}
    }
}

/// Hands `command` to the partition's writer, in the order commands came:
/// straight into its queue when nothing waits before it and there is
/// room, else behind the commands already waiting (`Partition::parked`),
/// which one task sends on as room appears — so the shard keeps serving
/// other partitions, and a command never overtakes one that came first
/// (submission order is append order). Parked commands are counted; once
/// `PARKED_APPENDS_MAX` wait, the shard loop itself waits (see `run`), so
/// the shard inbox fills and senders feel the backpressure.
fn enqueue(p: Rc<Partition>, command: WriterCommand, parked: &Rc<Cell<usize>>) {
    let command = if p.draining.get() {
        command
    } else {
        match p.writer.try_send(command) {
            Ok(()) => return,
            Err(async_channel::TrySendError::Full(command)) => command,
            Err(async_channel::TrySendError::Closed(command)) => return fail(command),
        }
    };
    parked.set(parked.get() + 1);
    p.parked.borrow_mut().push_back(command);
    if p.draining.replace(true) {
        return; // the task below sends it in turn
    }
    let parked = parked.clone();
    runtime::spawn_detached(async move {
        loop {
            let next = p.parked.borrow_mut().pop_front();
            let Some(command) = next else { break };
            if let Err(async_channel::SendError(command)) = p.writer.send(command).await {
                fail(command);
            }
            parked.set(parked.get() - 1);
        }
        p.draining.set(false);
    });
}

fn handle(request: ShardRequest, shard: &Rc<ShardState>, parked: &Rc<Cell<usize>>) {
    let partitions = &shard.partitions;
    match request {
        ShardRequest::Append { key, batch, wait, origin, reply } => {
            match lookup(partitions, &key) {
                Ok(p) => {
                    let command = WriterCommand::Append { batch, wait, origin, reply };
                    enqueue(p, command, parked);
                }
                Err(e) => respond(reply, Err(e)),
            }
        }
        ShardRequest::Read { key, offset, max_bytes, limit, reply } => {
            match lookup(partitions, &key) {
                Ok(p) => runtime::spawn_detached(async move {
                    let read = p.log.read_with(offset, max_bytes, limit).await;
                    if let Ok(outcome) = &read {
                        let records: u64 = outcome.chunks.iter().map(|c| count_records(c)).sum();
                        p.metrics.records_out_total.add(records);
                        p.metrics.bytes_out_total.add(outcome.size_bytes() as u64);
                    }
                    respond(reply, read);
                }),
                Err(e) => respond(reply, Err(e)),
            }
        }
        ShardRequest::Offsets { key, reply } => {
            respond(reply, lookup(partitions, &key).map(|p| p.log.offsets()));
        }
        ShardRequest::DeleteSegmentsBefore { key, offset, reply } => {
            // The writer deletes between its writes; the command waits in
            // its queue like an append.
            match lookup(partitions, &key) {
                Ok(p) => enqueue(p, WriterCommand::DeleteSegmentsBefore { offset, reply }, parked),
                Err(e) => respond(reply, Err(e)),
            }
        }
        ShardRequest::TruncateTo { key, offset, start_over, reply } => {
            // Like a deletion: queued behind the appends before it, so it
            // cuts what they wrote, never what comes after.
            match lookup(partitions, &key) {
                Ok(p) => {
                    let shard = shard.clone();
                    let command = WriterCommand::TruncateTo { offset, start_over, shard, reply };
                    enqueue(p, command, parked)
                }
                Err(e) => respond(reply, Err(e)),
            }
        }
        ShardRequest::Summary { key, reply } => {
            respond(reply, lookup(partitions, &key).map(|p| p.log.summary()));
        }
        ShardRequest::CountPartitions { reply } => respond(reply, Ok(partition_counts(partitions))),
        ShardRequest::WaitForData { key, offset, limit, reply } => match lookup(partitions, &key) {
            Ok(p) => p.watch(offset, limit, reply),
            Err(e) => respond(reply, Err(e)),
        },
        // Leadership and the replicated high watermark change in memory at
        // once, outside the writer's queue: appends already queued are
        // stamped with the new epoch, as their offsets come after the
        // change anyway.
        ShardRequest::SetLeaderEpoch { key, epoch, reply } => {
            respond(reply, lookup(partitions, &key).and_then(|p| p.log.set_leader_epoch(epoch)));
        }
        ShardRequest::SetHighWatermark { key, offset, reply } => {
            let set = lookup(partitions, &key).map(|p| {
                let high_watermark = p.log.set_high_watermark(offset);
                p.notify_watchers();
                high_watermark
            });
            respond(reply, set);
        }
        ShardRequest::ClearHighWatermark { key, reply } => {
            let cleared = lookup(partitions, &key).map(|p| {
                let high_watermark = p.log.clear_high_watermark();
                p.notify_watchers();
                high_watermark
            });
            respond(reply, cleared);
        }
        ShardRequest::EndOffsetForEpoch { key, epoch, reply } => {
            respond(reply, lookup(partitions, &key).map(|p| p.log.end_offset_for_epoch(epoch)));
        }
        ShardRequest::LeaderEpochs { key, reply } => {
            respond(reply, lookup(partitions, &key).map(|p| p.log.leader_epochs()));
        }
        ShardRequest::OffsetForTimestamp { key, timestamp_ms, reply } => {
            match lookup(partitions, &key) {
                Ok(p) => runtime::spawn_detached(async move {
                    respond(reply, p.log.offset_for_timestamp(timestamp_ms).await);
                }),
                Err(e) => respond(reply, Err(e)),
            }
        }
        ShardRequest::Alter { key, options, reply } => {
            respond(reply, lookup(partitions, &key).map(|p| p.log.set_options(options)));
        }
        ShardRequest::Open { spec, reply } => {
            let shard = shard.clone();
            runtime::spawn_detached(async move {
                respond(reply, open(spec, &shard).await);
            });
        }
        ShardRequest::Delete { key, reply } => {
            let shard = shard.clone();
            runtime::spawn_detached(async move {
                respond(reply, delete(&key, &shard).await);
            });
        }
        ShardRequest::Checkpoint { reply } => {
            let shard = shard.clone();
            runtime::spawn_detached(async move {
                respond(reply, checkpoint(&shard, false).await);
            });
        }
        ShardRequest::Spawn { task } => runtime::spawn_detached(task()),
        ShardRequest::Shutdown { .. } => unreachable!("handled by the shard loop"),
    }
}

/// Opens a partition. One that cannot be opened (damaged, unreadable) is
/// kept offline: its requests get the error, the rest of the shard serves.
async fn open(spec: OpenSpec, shard: &ShardState) -> EngineResult<Vec<SegmentReport>> {
    let partitions = &shard.partitions;
    if partitions.borrow().contains_key(&spec.key) {
        return Ok(Vec::new());
    }
    let point_key = PointKey {
        topic: spec.key.topic.to_string(),
        topic_created_ms: spec.topic_created_ms,
        partition: spec.key.partition,
    };
    let memory = spec.storage == StorageMode::Memory;
    let (storage, recovery_point): (StorageRef, _) = match spec.storage {
        StorageMode::Disk => (Rc::new(DiskStorage), spec.recovery_point.map(|(p, _)| p)),
        // A memory log starts empty where the last one stopped; after a
        // crash, past every offset it could have handed out.
        StorageMode::Memory => (
            Rc::new(MemFs::new()),
            spec.recovery_point.map(|(point, clean)| {
                let start =
                    if clean { point.offset } else { point.offset.plus(MEMORY_OFFSET_LEASE) };
                RecoveryPoint { offset: start, segment_base: start, position_bytes: 0 }
            }),
        ),
    };
    let opened =
        PartitionLog::open(storage, &spec.dir, spec.options, recovery_point, runtime::now_ms())
            .await;
    let (log, reports) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            tracing::error!(topic = %spec.key.topic, partition = %spec.key.partition, %error, "partition offline: it serves nothing until repaired; the rest of the broker serves on");
            let error = EngineError::Offline(Box::new(error));
            let offline = OfflinePartition {
                error: error.clone(),
                point_key,
                point: spec.recovery_point.map(|(p, _)| p),
            };
            put(partitions, spec.key, Slot::Offline(offline));
            return Err(error);
        }
    };
    for report in &reports {
        if let Some(reason) = &report.torn {
            tracing::warn!(
                segment = %report.log_path.display(),
                valid_end_bytes = report.valid_end_bytes,
                reason = %reason,
                "recovery cut a torn tail"
            );
        }
    }
    if memory {
        // No appends until a checkpoint records where this log starts.
        log.set_offset_lease_end(log.appended_point().offset);
    }
    let (tx, rx) = async_channel::bounded(PARTITION_INBOX_CAPACITY);
    let metrics =
        Arc::new(PartitionMetrics::new(spec.key.topic.clone(), spec.key.partition.0, shard.id));
    let partition = Rc::new(Partition {
        log: Rc::new(log),
        metrics: metrics.clone(),
        point_key,
        memory,
        writer: tx,
        sync_due: Cell::new(false),
        retention_due: Cell::new(false),
        last_sync_ms: Cell::new(runtime::now_ms()),
        last_recovery: Cell::new(None),
        recovery_woken: Cell::new(false),
        watchers: RefCell::new(Vec::new()),
        parked: RefCell::new(VecDeque::new()),
        draining: Cell::new(false),
    });
    partition.publish(0);
    shard.metrics.register(metrics);
    runtime::spawn_detached(writer(partition.clone(), rx));
    put(partitions, spec.key, Slot::Online(partition));
    share_tail_caches(partitions);
    Ok(reports)
}

fn partition_counts(partitions: &Partitions) -> PartitionCounts {
    partitions.borrow().values().fold(PartitionCounts::default(), |n, slot| match slot {
        Slot::Online(_) => PartitionCounts { online: n.online + 1, ..n },
        Slot::Offline(_) => PartitionCounts { offline: n.offline + 1, ..n },
    })
}

/// Puts a partition in the shard's table, keeping the published counts of
/// online and offline partitions.
fn put(partitions: &Partitions, key: PartitionKey, slot: Slot) {
    count(&slot, true);
    if let Some(replaced) = partitions.borrow_mut().insert(key, slot) {
        count(&replaced, false);
    }
}

/// Takes a partition out of the shard's table (see `put`).
fn take(partitions: &Partitions, key: &PartitionKey) -> Option<Slot> {
    let slot = partitions.borrow_mut().remove(key);
    if let Some(slot) = &slot {
        count(slot, false);
    }
    slot
}

/// A partition of `slot`'s kind comes into the shard's table or goes.
fn count(slot: &Slot, comes: bool) {
    metrics::on_shard(|m| {
        let gauge = match slot {
            Slot::Online(_) => &m.partitions_online,
            Slot::Offline(_) => &m.partitions_offline,
        };
        if comes {
            gauge.add(1);
        } else {
            gauge.sub(1);
        }
    });
}

/// Records in runs of stored batches (whole batches, as reads return them).
fn count_records(mut chunk: &[u8]) -> u64 {
    let mut records = 0;
    while let (Some(stored), Some(count)) =
        (crate::batch::peek_stored_bytes(chunk), crate::batch::peek_record_count(chunk))
    {
        records += u64::from(count);
        chunk = chunk.get(stored..).unwrap_or_default();
    }
    records
}

/// The shard's tail cache budget, shared equally by its partitions.
fn share_tail_caches(partitions: &Partitions) {
    let partitions = partitions.borrow();
    for slot in partitions.values() {
        if let Slot::Online(p) = slot {
            p.log.share_tail_cache(partitions.len());
        }
    }
}

async fn close_partition(partition: &Partition) -> EngineResult<()> {
    let (reply, done) = oneshot::channel();
    if partition.writer.send(WriterCommand::Close { reply }).await.is_err() {
        return Ok(()); // already closed
    }
    done.await.map_err(|_| EngineError::ShuttingDown)?
}

async fn delete(key: &PartitionKey, shard: &ShardState) -> EngineResult<()> {
    let partitions = &shard.partitions;
    let slot = take(partitions, key);
    share_tail_caches(partitions);
    shard.metrics.unregister(&key.topic, key.partition.0);
    match slot {
        Some(Slot::Online(partition)) => {
            // A failing disk must not keep a deleted topic around.
            if let Err(e) = close_partition(&partition).await {
                tracing::warn!(error = %e, "closing a deleted partition failed");
            }
            partition.log.delete().await?;
        }
        // The engine removes the topic's directory, damaged files included.
        Some(Slot::Offline(_)) | None => {}
    }
    Ok(())
}

/// The partitions that are open (not offline).
fn online(partitions: &Partitions) -> Vec<Rc<Partition>> {
    partitions
        .borrow()
        .values()
        .filter_map(|slot| match slot {
            Slot::Online(p) => Some(p.clone()),
            Slot::Offline(_) => None,
        })
        .collect()
}

async fn close_all(partitions: &Partitions) -> EngineResult<()> {
    let all = online(partitions);
    let results = futures::future::join_all(all.iter().map(|p| close_partition(p))).await;
    results.into_iter().collect::<EngineResult<Vec<()>>>().map(|_| ())
}

/// Most commands taken before the writer starts the next write, so the
/// first append's wait stays bounded.
const COMMANDS_PER_STEP_MAX: usize = 1024;

type Io = Pin<Box<dyn Future<Output = EngineResult<()>>>>;

/// What the writer waits for.
enum Event {
    Written(EngineResult<()>),
    Synced(EngineResult<()>),
    Command(Option<WriterCommand>),
}

/// The partition's writer. Appends are copied into the log as they arrive;
/// everything appended while the previous write was in flight goes out in
/// the next one (group commit), and under `fsync` the write of round N+1
/// overlaps the fdatasync of round N. An append is answered once the high
/// watermark passes it.
struct Writer {
    p: Rc<Partition>,
    /// Appended, not yet visible; in offset order.
    waiting: VecDeque<(Reply<AppendInfo>, AppendInfo)>,
    write: Option<Io>,
    sync: Option<Io>,
    closing: Option<Reply<()>>,
}

impl Writer {
    fn start_io(&mut self) {
        let log = self.p.log.clone();
        if log.is_fenced() {
            return;
        }
        if self.write.is_none() && log.has_unflushed() {
            let log = log.clone();
            self.write = Some(Box::pin(async move { log.write_pending().await }));
        }
        let sync_wanted = match log.durability() {
            Durability::Fsync => true,
            Durability::Interval { .. } | Durability::None => self.p.sync_due.get(),
        };
        if self.sync.is_none() && sync_wanted && log.has_unsynced() {
            if self.p.sync_due.take() {
                self.p.last_sync_ms.set(runtime::now_ms());
            }
            self.sync = Some(Box::pin(async move { log.sync().await }));
        }
    }

    /// Answers every waiting append the local high watermark has passed
    /// (local durability: replication waits on its own), or all of them
    /// with `error`.
    fn answer(&mut self, error: Option<EngineError>) {
        match error {
            Some(e) => {
                for (reply, _) in self.waiting.drain(..) {
                    respond(reply, Err(e.clone()));
                }
            }
            None => {
                let visible = self.p.log.offsets().local_high_watermark;
                while self.waiting.front().is_some_and(|(_, info)| info.last_offset < visible) {
                    if let Some((reply, info)) = self.waiting.pop_front() {
                        respond(reply, Ok(info));
                    }
                }
            }
        }
        self.p.notify_watchers();
    }

    /// After a cut at `offset` (a truncation, or with `start_over` an
    /// emptied log): appends still waiting whose offsets it removed fail
    /// with `Truncated`; the rest are answered as usual. Left waiting, a
    /// removed append would hold up every append behind it until the log
    /// grew past its old offsets again — a follower that had just stopped
    /// leading stalled its fetcher there, waiting on its own appends.
    fn answer_cut(&mut self, offset: Offset, start_over: bool) {
        for (reply, info) in std::mem::take(&mut self.waiting) {
            if start_over || info.last_offset >= offset {
                let base_offset = info.base_offset;
                respond(reply, Err(EngineError::Truncated { base_offset, cut: offset }));
            } else {
                self.waiting.push_back((reply, info));
            }
        }
        self.answer(None);
    }

    async fn drain_io(&mut self) {
        if let Some(write) = self.write.take() {
            let result = write.await;
            self.answer(result.err());
        }
        if let Some(sync) = self.sync.take() {
            let result = sync.await;
            self.answer(result.err());
        }
    }

    async fn command(&mut self, command: WriterCommand) {
        match command {
            WriterCommand::Append { batch, wait, origin, reply } => {
                let now = runtime::now_ms();
                if self.p.log.needs_roll(batch.as_bytes().len() as u64, now) {
                    // A roll flushes and syncs the old segment itself.
                    self.drain_io().await;
                }
                let mode = match origin {
                    AppendOrigin::Client => AppendMode::Leader { epoch: self.p.log.leader_epoch() },
                    AppendOrigin::Replication => AppendMode::Follower,
                };
                let bytes = batch.as_bytes().len() as u64;
                let appended = self.p.log.append(batch, mode, now).await;
                if let Ok(info) = &appended {
                    self.p
                        .metrics
                        .records_in_total
                        .add(info.last_offset.0 - info.base_offset.0 + 1);
                    self.p.metrics.bytes_in_total.add(bytes);
                }
                match (appended, wait) {
                    (Ok(info), AppendWait::Visible) => self.waiting.push_back((reply, info)),
                    (Ok(info), AppendWait::Appended) => respond(reply, Ok(info)),
                    (Err(e), _) => respond(reply, Err(e)),
                }
            }
            WriterCommand::DeleteSegmentsBefore { offset, reply } => {
                self.drain_io().await;
                respond(reply, self.p.log.delete_segments_before(offset).await);
            }
            WriterCommand::TruncateTo { offset, start_over, shard, reply } => {
                // Writes in flight must land before the cut, or one could
                // write past it afterwards.
                self.drain_io().await;
                let mut cut = if start_over {
                    self.p.log.reset_to(offset, runtime::now_ms()).await
                } else {
                    self.p.log.truncate_to(offset, runtime::now_ms()).await
                };
                if cut.is_ok() {
                    self.answer_cut(offset, start_over);
                    // The recovery point on disk may lie past the cut: were
                    // it left there, the batches written next in place of
                    // the cut ones would look like damage below it after a
                    // crash. Lowered before anything new is appended.
                    cut = checkpoint(&shard, false).await;
                }
                respond(reply, cut);
            }
            WriterCommand::Wake => {}
            WriterCommand::Close { reply } => self.closing = Some(reply),
        }
    }

    /// Work that needs the pipeline empty: retention, recovery, closing.
    async fn housekeeping(&mut self) -> bool {
        let log = self.p.log.clone();
        if self.p.retention_due.get() || log.is_fenced() || self.closing.is_some() {
            self.drain_io().await;
        }
        if self.p.retention_due.take() {
            match log.apply_retention(runtime::now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(dir = %log.dir().display(), segments = n, "retention deleted segments")
                }
                Err(e) => {
                    tracing::error!(dir = %log.dir().display(), error = %e, "retention failed")
                }
            }
        }
        if let Some(error) = log.fence_error() {
            // Appends still waiting may never have reached the disk (a cut
            // or a roll failed before writing them), and recovery ends the
            // log at what did: they fail now, or one would wait for its
            // lost offsets in front of every append after it. (Those on
            // the disk are answered first, as usual.)
            self.answer(None);
            self.answer(Some(error));
            // Take writes again: re-verify what reached the disk and continue
            // in a fresh segment. Until that works, appends fail with the
            // storage error and reads keep working.
            // Closing tries too: a log closes cleanly only once recovered.
            if self.closing.is_some() || self.p.recovery_due(Instant::now()) {
                self.p.last_recovery.set(Some(Instant::now()));
                self.p.recovery_woken.set(false);
                if let Err(e) = log.recover_after_error(runtime::now_ms()).await {
                    tracing::warn!(dir = %log.dir().display(), error = %e, "partition still fenced; retrying in a second");
                }
            }
        }
        if let Some(reply) = self.closing.take() {
            let result = log.close().await;
            self.answer(result.as_ref().err().cloned());
            respond(reply, result);
            return true;
        }
        false
    }
}

async fn writer(p: Rc<Partition>, commands: async_channel::Receiver<WriterCommand>) {
    let mut w = Writer { p, waiting: VecDeque::new(), write: None, sync: None, closing: None };
    loop {
        let mut taken = 0;
        while w.closing.is_none() && taken < COMMANDS_PER_STEP_MAX {
            match commands.try_recv() {
                Ok(command) => w.command(command).await,
                Err(_) => break,
            }
            taken += 1;
        }
        if w.housekeeping().await {
            commands.close();
            return;
        }
        // Appends already visible (a producer's retry of a batch written
        // before) are answered without waiting for any I/O.
        w.answer(None);
        w.start_io();
        w.p.publish(commands.len() + w.waiting.len());
        let event = {
            let mut recv = std::pin::pin!(commands.recv());
            let (write, sync, closing) = (&mut w.write, &mut w.sync, w.closing.is_some());
            futures::future::poll_fn(|cx| {
                if let Some(io) = write.as_mut() {
                    if let Poll::Ready(result) = io.as_mut().poll(cx) {
                        *write = None;
                        return Poll::Ready(Event::Written(result));
                    }
                }
                if let Some(io) = sync.as_mut() {
                    if let Poll::Ready(result) = io.as_mut().poll(cx) {
                        *sync = None;
                        return Poll::Ready(Event::Synced(result));
                    }
                }
                if !closing {
                    if let Poll::Ready(command) = recv.as_mut().poll(cx) {
                        return Poll::Ready(Event::Command(command.ok()));
                    }
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Written(result) | Event::Synced(result) => w.answer(result.err()),
            Event::Command(Some(command)) => w.command(command).await,
            // Every sender is gone: close as if asked to.
            Event::Command(None) => {
                let (reply, _ignored) = oneshot::channel();
                w.closing = Some(reply);
            }
        }
        runtime::yield_if_needed().await;
    }
}

/// How often a shard's busy share is sampled.
const BUSY_SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// Publishes the executor's busy time and its share of each period.
async fn sample_busy_time(metrics: Arc<ShardMetrics>, stopped: Rc<Cell<bool>>) {
    runtime::take_busy_time();
    let mut last_at = std::time::Instant::now();
    while !stopped.get() {
        runtime::sleep(BUSY_SAMPLE_PERIOD).await;
        let (busy, at) = (runtime::take_busy_time(), std::time::Instant::now());
        let period = at.duration_since(last_at).as_secs_f64().max(1e-9);
        metrics.busy_ns_total.add(busy.as_nanos().min(u64::MAX as u128) as u64);
        metrics.busy_ppm.set(((busy.as_secs_f64() / period).min(1.0) * 1e6) as u64);
        last_at = at;
    }
}

/// How often a fenced partition tries to recover: at once after the first
/// error (a passing one), then at most this often, appends or not (a
/// follower whose last fetched batches failed to be written appends
/// nothing more until its log recovers).
const FENCED_RETRY: Duration = Duration::from_secs(1);

/// Marks periodic syncs (`interval:<ms>`) and retention checks as due,
/// wakes fenced partitions to retry their recovery, and checkpoints
/// recovery points every `recovery_point_interval_ms`.
async fn timers(shard: Rc<ShardState>, config: EngineConfig, stopped: Rc<Cell<bool>>) {
    const TICK: Duration = Duration::from_millis(5);
    let mut last_retention_ms = runtime::now_ms();
    let mut last_checkpoint_ms = runtime::now_ms();
    while !stopped.get() {
        runtime::sleep(TICK).await;
        let now = runtime::now_ms();
        let retention_due = now - last_retention_ms >= config.retention_check_interval_ms as i64;
        if retention_due {
            last_retention_ms = now;
        }
        if now - last_checkpoint_ms >= config.recovery_point_interval_ms as i64 {
            last_checkpoint_ms = now;
            let shard = shard.clone();
            runtime::spawn_detached(async move {
                if let Err(e) = checkpoint(&shard, false).await {
                    tracing::warn!(shard = %shard.id, error = %e, "writing the recovery points failed; retrying at the next interval");
                }
            });
        }
        for p in online(&shard.partitions) {
            let mut wake = false;
            if let Durability::Interval { interval_ms } = p.log.durability() {
                if now - p.last_sync_ms.get() >= interval_ms as i64 && !p.sync_due.get() {
                    p.sync_due.set(true);
                    wake = true;
                }
            }
            if retention_due {
                p.retention_due.set(true);
                wake = true;
            }
            // The writer's housekeeping retries the recovery.
            if p.log.is_fenced() && p.recovery_due(Instant::now()) && !p.recovery_woken.get() {
                p.recovery_woken.set(true);
                wake = true;
            }
            if wake {
                p.wake();
            }
        }
    }
}
