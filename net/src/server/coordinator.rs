//! Where consumer groups live: each group belongs to one partition of the
//! internal topic `__consumer_offsets` (its id hashed over the
//! partitions), and the shard that owns that partition runs the group's
//! coordinator (`group::Group`, a state machine) and appends its state
//! changes there as records (`group::records`) before answering.
//!
//! Lifecycle: a partition's groups are read from its log on first use on
//! its shard (`load`); every operation on them holds that partition's
//! lock, so the log order is the order of the changes. A sweep per shard
//! ends silent members' sessions, expires the offsets of groups without
//! members and compacts. Waiting heartbeats (long polls) are woken when
//! their member's answer changes.
//!
//! Compaction (a snapshot): once a segment's worth of records
//! (`offsets_segment_bytes`) was appended to a partition since its last
//! snapshot, the whole live state of its groups is appended again and the
//! segments holding only records before that snapshot are deleted. A load
//! replays from the first segment kept: older records there are
//! overwritten by the snapshot after them (the last record of a key wins),
//! so the log stays about two segments plus the live state however many
//! commits go through it.
//!
//! In a cluster the records are written like `acks=all` produce
//! (`replication::acks_all`): a change is answered once every in-sync
//! replica has it, so a group's state fails over with its partition. The
//! loaded state belongs to one leader epoch: a broker that leads the
//! partition again (or whose write failed) reads it anew from its log,
//! every record it holds included (past the high watermark: they are the
//! leader's, and will be replicated).
//!
//! Owned by: the shard of each partition; nothing here crosses threads
//! except requests and answers (`on_shard`).

use super::errors::code_of;
use crate::cluster::ClusterHandle;
use crate::group::coordinator::{Group, GroupConfig, GroupError};
use crate::group::records::{self, GroupRecord};
use crate::group::{AssignorKind, MemberId};
use crate::protocol::ErrorCode;
use crate::replication::acks_all::{self, Failure};
use crate::runtime;
use futures::future::LocalBoxFuture;
use futures::lock::Mutex;
use mamba_engine::batch::iter_batches;
use mamba_engine::{
    BatchBuilder, Engine, EngineError, NewRecord, Offset, PartitionId, ReadLimit, ShardId,
    StorageMode, TopicConfig,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The internal topic of group state and committed offsets.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often each shard looks for ended sessions and expired offsets.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Bytes read at a time while loading a partition's groups.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Record bytes per batch of a snapshot (far below any batch limit).
const SNAPSHOT_BATCH_BYTES: usize = 256 << 10;
/// How long a change waits for the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms`); the partition stays locked meanwhile.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The partition of `__consumer_offsets` (of `partitions`) that holds
/// `group` (FNV-1a: the same on every broker and build).
pub(crate) fn partition_of(group: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in group.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// A group id is 1 to 255 bytes with no control characters (records use
/// NUL as a separator).
pub(crate) fn validate_group_id(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > 255 || group.chars().any(char::is_control) {
        return Err(format!(
            "bad group id {group:?}: use 1 to 255 bytes without control characters"
        ));
    }
    Ok(())
}

/// Creates `__consumer_offsets` unless it exists: unlimited retention (its
/// records are the groups' state; compaction bounds it), disk, fsync.
/// Returns its partition count.
pub(crate) async fn ensure_offsets_topic(
    engine: &Engine,
    config: &GroupConfig,
) -> Result<u32, EngineError> {
    if let Ok(meta) = engine.describe_topic(OFFSETS_TOPIC) {
        return Ok(meta.config.partitions);
    }
    let topic = offsets_topic_config(config);
    engine
        .create_topic_if_not_exists(OFFSETS_TOPIC, topic)
        .await
        .map(|(meta, _)| meta.config.partitions)
}

/// `__consumer_offsets`' settings: unlimited retention (its records are the
/// groups' state; compaction bounds it), disk, fsync.
pub(crate) fn offsets_topic_config(config: &GroupConfig) -> TopicConfig {
    TopicConfig {
        partitions: config.offsets_topic_partitions,
        storage: StorageMode::Disk,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: config.offsets_segment_bytes,
        ..TopicConfig::default()
    }
}

/// Runs `work` on `shard` and returns what it gives.
pub(crate) async fn on_shard<T: Send + 'static>(
    engine: &Engine,
    shard: ShardId,
    work: impl FnOnce() -> LocalBoxFuture<'static, T> + Send + 'static,
) -> Result<T, EngineError> {
    let (reply, answer) = futures::channel::oneshot::channel();
    let task: mamba_engine::shard::ShardTask = Box::new(move || {
        Box::pin(async move {
            // The asker may have gone (its connection closed).
            let _no_one_waits = reply.send(work().await);
        })
    });
    engine.spawn_on_shard(shard, task).await?;
    answer.await.map_err(|_| EngineError::ShuttingDown)
}

/// The groups of one partition of `__consumer_offsets`.
pub(crate) struct PartitionGroups {
    partition: u32,
    pub groups: BTreeMap<String, Group>,
    /// Record bytes appended (or loaded) since the last snapshot.
    bytes_since_snapshot: u64,
    /// Record bytes of the last snapshot: a live state larger than a
    /// segment is rewritten only after as much again was appended.
    snapshot_bytes: u64,
    /// In a cluster, the leader epoch this state was read at.
    leader_epoch: Option<u32>,
    /// When a write failed: the state may be ahead of the log, or another
    /// broker may lead now. A lock reads the log again, at the same leader
    /// epoch not sooner than `RELOAD_BACKOFF` after.
    stale_since: Option<Instant>,
}

/// How long after a failed write the same leadership waits before it
/// reads its groups again: a log that failed the write (a full disk) fails
/// the next ones as well, and a reload replays the whole partition.
const RELOAD_BACKOFF: Duration = Duration::from_millis(500);

/// Wakes one waiting heartbeat.
type Wake = futures::channel::oneshot::Sender<()>;

/// One shard's coordinators.
struct Host {
    engine: Engine,
    config: GroupConfig,
    /// Where topics' partition counts come from in a cluster (the
    /// metadata: a topic may have no partition on this broker).
    cluster: Option<Arc<ClusterHandle>>,
    /// Loaded on first use; the lock orders a partition's changes.
    partitions: RefCell<HashMap<u32, Arc<Mutex<Option<PartitionGroups>>>>>,
    /// Waiting heartbeats by group and member.
    waiting: RefCell<HashMap<(String, MemberId), Vec<Wake>>>,
}

impl Host {
    /// A topic's partition count: the cluster's, else the engine's.
    fn partition_count(&self, topic: &str) -> Option<u32> {
        match &self.cluster {
            Some(cluster) => {
                cluster.view().metadata.topic(topic).map(|t| t.partitions.len() as u32)
            }
            None => self.engine.describe_topic(topic).ok().map(|t| t.config.partitions),
        }
    }
}

thread_local! {
    static HOST: RefCell<Option<Rc<Host>>> = const { RefCell::new(None) };
}

/// This shard's coordinators, made (and their sweep started) on first use.
fn host(engine: &Engine, config: &GroupConfig, cluster: Option<Arc<ClusterHandle>>) -> Rc<Host> {
    HOST.with(|h| {
        h.borrow_mut()
            .get_or_insert_with(|| {
                let host = Rc::new(Host {
                    engine: engine.clone(),
                    config: config.clone(),
                    cluster,
                    partitions: RefCell::new(HashMap::new()),
                    waiting: RefCell::new(HashMap::new()),
                });
                runtime::spawn(sweep(Rc::downgrade(&host))).detach();
                host
            })
            .clone()
    })
}

/// A partition's groups, locked, loaded from its log if not yet.
pub(crate) struct Locked {
    host: Rc<Host>,
    guard: futures::lock::OwnedMutexGuard<Option<PartitionGroups>>,
}

impl Locked {
    pub fn groups(&mut self) -> &mut BTreeMap<String, Group> {
        &mut self.guard.as_mut().expect("loaded before it is handed out").groups
    }

    pub fn config(&self) -> &GroupConfig {
        &self.host.config
    }

    /// What the assignors need: each topic's partition count.
    pub fn partition_counts(&self) -> impl Fn(&str) -> Option<u32> + 'static {
        let host = self.host.clone();
        move |topic| host.partition_count(topic)
    }

    /// Appends `group`'s changes (durably, and in a cluster on every
    /// in-sync replica) and wakes the heartbeats whose answer changed. An
    /// error leaves the state ahead of the log: the caller answers with
    /// it, and the next lock reads the log again.
    pub async fn persist(&mut self, group_id: &str) -> Result<(), Failure> {
        let (records, changed) = match self.groups().get_mut(group_id) {
            Some(g) => (g.changes(), g.take_changed()),
            None => return Ok(()),
        };
        self.append(records).await?;
        self.host.wake(group_id, changed);
        Ok(())
    }

    /// A receiver that fires when `member`'s answer changes (or is
    /// dropped with this shard's coordinators). Registered under the lock,
    /// so no change between the answer and the wait is missed.
    pub fn waiter(
        &self,
        group_id: &str,
        member: &MemberId,
    ) -> futures::channel::oneshot::Receiver<()> {
        let (waiter, woken) = futures::channel::oneshot::channel();
        self.host
            .waiting
            .borrow_mut()
            .entry((group_id.to_string(), member.clone()))
            .or_default()
            .push(waiter);
        woken
    }

    /// Deletes `group_id` and its records.
    pub async fn delete(&mut self, group_id: &str) -> Result<(), Failure> {
        let Some(group) = self.groups().remove(group_id) else { return Ok(()) };
        self.append(group.deletion()).await.map(|_| ())
    }

    fn loaded(&self) -> &PartitionGroups {
        self.guard.as_ref().expect("loaded before it is handed out")
    }

    fn loaded_mut(&mut self) -> &mut PartitionGroups {
        self.guard.as_mut().expect("loaded before it is handed out")
    }

    /// Whether a write failed since the lock was taken (nothing more is
    /// written under it).
    pub fn is_stale(&self) -> bool {
        self.loaded().stale_since.is_some()
    }

    /// Appends `records` as one batch; returns its first offset, or
    /// `None` when there was nothing to write (most sweeps). A failure
    /// marks the state stale.
    async fn append(&mut self, records: Vec<GroupRecord>) -> Result<Option<Offset>, Failure> {
        if records.is_empty() {
            return Ok(None);
        }
        if self.is_stale() {
            return Err(loading(self.loaded().partition, "an earlier write failed"));
        }
        let appended = self.append_replicated(records).await;
        if appended.is_err() {
            self.loaded_mut().stale_since = Some(Instant::now());
        }
        appended.map(Some)
    }

    /// `append`'s work: in a cluster only while this broker leads at the
    /// epoch the state was read at, and done once the in-sync replicas
    /// have it.
    async fn append_replicated(&mut self, records: Vec<GroupRecord>) -> Result<Offset, Failure> {
        let PartitionGroups { partition, leader_epoch, .. } = *self.loaded();
        let replicated = match &self.host.cluster {
            Some(cluster) => {
                if self.host.leading_epoch(partition)? != leader_epoch {
                    return Err(not_coordinator(partition, "the leadership moved"));
                }
                acks_all::check_in_sync(cluster, OFFSETS_TOPIC, partition)?
            }
            None => None,
        };
        let now_ms = mamba_engine::runtime::now_ms();
        let mut batch = BatchBuilder::new();
        for r in records {
            batch.push(NewRecord {
                key: Some(r.key),
                // A tombstone has no value; a live value is never empty.
                value: r.value.unwrap_or_default(),
                headers: vec![],
                timestamp_ms: now_ms,
            });
        }
        let batch = batch.build().map_err(|e| engine_error(&EngineError::InvalidBatch(e)))?;
        let bytes = batch.as_bytes().len() as u64;
        let info = self
            .host
            .engine
            .append(OFFSETS_TOPIC, PartitionId(partition), batch)
            .await
            .map_err(|e| moved_with_leadership(partition, engine_error(&e)))?;
        self.loaded_mut().bytes_since_snapshot += bytes;
        if let (Some(cluster), Some(epoch)) = (&self.host.cluster, replicated) {
            let last = info.last_offset;
            let engine = &self.host.engine;
            acks_all::wait_replicated(
                cluster,
                engine,
                OFFSETS_TOPIC,
                partition,
                epoch,
                last,
                REPLICATION_TIMEOUT,
            )
            .await
            .map_err(|failure| moved_with_leadership(partition, failure))?;
        }
        Ok(info.base_offset)
    }

    /// Compacts when a segment's worth was appended since the last
    /// snapshot: appends the live state of every group of the partition,
    /// then deletes the segments before it.
    async fn compact_if_due(&mut self) -> Result<(), Failure> {
        let (partition, due) = match self.guard.as_ref() {
            Some(p) => {
                let threshold = self.host.config.offsets_segment_bytes.max(p.snapshot_bytes);
                (p.partition, p.bytes_since_snapshot >= threshold)
            }
            None => return Ok(()),
        };
        if !due {
            return Ok(());
        }
        let live: Vec<GroupRecord> = self.groups().values().flat_map(records::snapshot).collect();
        let mut snapshot_start = None;
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut snapshot_bytes = 0;
        let count = live.len();
        for record in live {
            let bytes = record.key.len() + record.value.as_ref().map_or(0, Vec::len);
            chunk_bytes += bytes;
            snapshot_bytes += bytes as u64;
            chunk.push(record);
            if chunk_bytes >= SNAPSHOT_BATCH_BYTES {
                let base = self.append(std::mem::take(&mut chunk)).await?;
                snapshot_start = snapshot_start.or(base);
                chunk_bytes = 0;
            }
        }
        if !chunk.is_empty() {
            let base = self.append(chunk).await?;
            snapshot_start = snapshot_start.or(base);
        }
        // No group left: nothing older is needed either.
        let before = match snapshot_start {
            Some(start) => start,
            None => {
                self.host
                    .engine
                    .list_offsets(OFFSETS_TOPIC, PartitionId(partition))
                    .await
                    .map_err(|e| engine_error(&e))?
                    .next_offset
            }
        };
        let deleted = self
            .host
            .engine
            .delete_segments_before(OFFSETS_TOPIC, PartitionId(partition), before)
            .await
            .map_err(|e| engine_error(&e))?;
        let loaded = self.loaded_mut();
        loaded.bytes_since_snapshot = 0;
        loaded.snapshot_bytes = snapshot_bytes;
        tracing::info!(
            partition,
            records = count,
            segments_deleted = deleted,
            "compacted consumer groups"
        );
        Ok(())
    }
}

impl Host {
    fn wake(&self, group: &str, members: impl IntoIterator<Item = MemberId>) {
        let mut waiting = self.waiting.borrow_mut();
        for member in members {
            for waiter in waiting.remove(&(group.to_string(), member)).unwrap_or_default() {
                let _gone = waiter.send(());
            }
        }
    }

    /// In a cluster, the leader epoch at which this broker leads
    /// `partition` (its replica took the leadership over); `not
    /// coordinator` when it does not. `None` outside a cluster.
    fn leading_epoch(&self, partition: u32) -> Result<Option<u32>, Failure> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        let tp = (OFFSETS_TOPIC.to_string(), partition);
        match cluster.replication().leading_epoch(&tp) {
            Some(epoch) => Ok(Some(epoch)),
            None => Err(not_coordinator(partition, "this broker does not lead it (now)")),
        }
    }

    /// `partition`'s groups, locked; read from the log first when not
    /// loaded yet, stale, or loaded at another leader epoch.
    async fn lock(self: &Rc<Self>, partition: u32) -> Result<Locked, Failure> {
        let slot = self.partitions.borrow_mut().entry(partition).or_default().clone();
        let mut guard = slot.lock_owned().await;
        let leader_epoch = self.leading_epoch(partition)?;
        if let Some(loaded) = guard.as_ref().filter(|l| l.leader_epoch == leader_epoch) {
            if loaded.stale_since.is_some_and(|t| t.elapsed() < RELOAD_BACKOFF) {
                return Err(loading(partition, "a write failed just now"));
            }
        }
        let current = guard.as_ref().is_some_and(|loaded| {
            loaded.stale_since.is_none() && loaded.leader_epoch == leader_epoch
        });
        if !current {
            *guard = None;
            // Recovery may keep a write whose answer was an error (its
            // sync failed, its bytes did not): read the log once it ends
            // where it will stay.
            let id = PartitionId(partition);
            let offsets = self.engine.list_offsets(OFFSETS_TOPIC, id).await;
            if offsets.map_err(|e| engine_error(&e))?.fenced {
                return Err(loading(partition, "its log is fenced after a storage error"));
            }
            let loaded = load(&self.engine, partition).await.map_err(|e| engine_error(&e))?;
            *guard = Some(PartitionGroups { leader_epoch, ..loaded });
        }
        Ok(Locked { host: self.clone(), guard })
    }
}

/// `coordinator loading` for the groups of `partition`: the client retries.
fn loading(partition: u32, why: &str) -> Failure {
    (ErrorCode::CoordinatorLoading.as_u16(), format!("{OFFSETS_TOPIC}/{partition}: {why}; retry"))
}

/// `not coordinator` for the groups of `partition`: the client finds the
/// coordinator again.
fn not_coordinator(partition: u32, why: &str) -> Failure {
    (ErrorCode::NotCoordinator.as_u16(), format!("{OFFSETS_TOPIC}/{partition}: {why}"))
}

/// A write to the group's partition failed `not leader` (this broker no
/// longer leads or hosts it, or its append was cut off as it stopped
/// leading): the group's coordinator moved with the leadership.
fn moved_with_leadership(partition: u32, (code, message): Failure) -> Failure {
    match ErrorCode::from_u16(code) {
        ErrorCode::NotLeader => not_coordinator(partition, &message),
        _ => (code, message),
    }
}

/// Reads a partition's records, from its log start to its (local) end,
/// and rebuilds its groups.
async fn load(engine: &Engine, partition: u32) -> Result<PartitionGroups, EngineError> {
    let id = PartitionId(partition);
    let mut records = Vec::new();
    let offsets = engine.list_offsets(OFFSETS_TOPIC, id).await?;
    let (mut next, end) = (offsets.log_start_offset, offsets.local_high_watermark);
    let mut bytes: u64 = 0;
    while next < end {
        let limit = ReadLimit::LocalHighWatermark;
        let read = engine.read_with(OFFSETS_TOPIC, id, next, LOAD_READ_BYTES, limit).await?;
        if read.chunks.is_empty() {
            break;
        }
        for chunk in &read.chunks {
            for batch in iter_batches(chunk) {
                for record in batch?.iter() {
                    if record.offset < next {
                        continue;
                    }
                    let value = record.value();
                    bytes += (record.key().map_or(0, <[u8]>::len) + value.len()) as u64;
                    records.push(GroupRecord {
                        key: record.key().unwrap_or_default().to_vec(),
                        value: (!value.is_empty()).then(|| value.to_vec()),
                    });
                    next = record.offset.plus(1);
                }
            }
        }
    }
    let loaded = records.len();
    let groups = records::replay(records, mamba_engine::runtime::now_ms())
        .map_err(|e| EngineError::InvalidConfig(format!("{OFFSETS_TOPIC}/{partition}: {e}")))?;
    tracing::info!(partition, records = loaded, groups = groups.len(), "loaded consumer groups");
    // A long history compacts at the next sweep.
    Ok(PartitionGroups {
        partition,
        groups,
        bytes_since_snapshot: bytes,
        snapshot_bytes: 0,
        leader_epoch: None,
        stale_since: None,
    })
}

/// Runs `work` on the partition of `group_id`, on its shard, with the
/// partition's groups locked.
pub(crate) async fn with_group_partition<T: Send + 'static>(
    engine: &Engine,
    cluster: Option<&Arc<ClusterHandle>>,
    config: &GroupConfig,
    group_id: &str,
    work: impl for<'a> FnOnce(&'a mut Locked) -> LocalBoxFuture<'a, T> + Send + 'static,
) -> Result<T, Failure> {
    let partitions = ensure_offsets_topic(engine, config).await.map_err(|e| engine_error(&e))?;
    with_partition(engine, cluster, config, partition_of(group_id, partitions), work).await
}

/// Runs `work` on `partition` of `__consumer_offsets`, on its shard.
pub(crate) async fn with_partition<T: Send + 'static>(
    engine: &Engine,
    cluster: Option<&Arc<ClusterHandle>>,
    config: &GroupConfig,
    partition: u32,
    work: impl for<'a> FnOnce(&'a mut Locked) -> LocalBoxFuture<'a, T> + Send + 'static,
) -> Result<T, Failure> {
    ensure_offsets_topic(engine, config).await.map_err(|e| engine_error(&e))?;
    let shard =
        engine.shard_of(OFFSETS_TOPIC, PartitionId(partition)).map_err(|e| engine_error(&e))?;
    let (engine_there, config, cluster) = (engine.clone(), config.clone(), cluster.cloned());
    on_shard(engine, shard, move || {
        Box::pin(async move {
            let host = host(&engine_there, &config, cluster);
            let mut locked = host.lock(partition).await?;
            Ok(work(&mut locked).await)
        })
    })
    .await
    .map_err(|e| engine_error(&e))?
}

/// Ends silent members' sessions and expires the offsets of groups without
/// members, on every loaded partition of this shard, until the host goes.
async fn sweep(host: std::rc::Weak<Host>) {
    loop {
        runtime::sleep(SWEEP_INTERVAL).await;
        let Some(host) = host.upgrade() else { return };
        let loaded: Vec<u32> = host.partitions.borrow().keys().copied().collect();
        for partition in loaded {
            let mut locked = match host.lock(partition).await {
                Ok(locked) => locked,
                Err((code, _)) if code == ErrorCode::CoordinatorLoading.as_u16() => {
                    continue; // a write failed just now: the next sweep
                }
                Err(_) => {
                    // Another broker leads it now (or its log cannot be
                    // read): forget it until it is asked for again.
                    host.partitions.borrow_mut().remove(&partition);
                    continue;
                }
            };
            let now_ms = mamba_engine::runtime::now_ms();
            let ids: Vec<String> = locked.groups().keys().cloned().collect();
            for id in ids {
                let (expired, emptied) = {
                    let count = |t: &str| host.partition_count(t);
                    let Some(group) = locked.groups().get_mut(&id) else { continue };
                    let expired = group.expire(&count, now_ms);
                    group.expire_offsets(host.config.offsets_retention_ms, now_ms);
                    (expired, group.members.is_empty() && group.offsets.is_empty())
                };
                if !expired.is_empty() {
                    tracing::info!(group = %id, members = ?expired, "session ended; partitions move");
                }
                let result = if emptied && expired.is_empty() {
                    locked.delete(&id).await
                } else {
                    locked.persist(&id).await
                };
                if let Err((_, e)) = result {
                    tracing::warn!(group = %id, error = %e, "writing group state");
                    break;
                }
            }
            if locked.is_stale() {
                continue;
            }
            if let Err((_, e)) = locked.compact_if_due().await {
                tracing::warn!(partition, error = %e, "compacting consumer groups");
            }
        }
    }
}

/// The wire code and message of a group error.
pub(crate) fn group_error(e: &GroupError) -> (u16, String) {
    use crate::protocol::ErrorCode as C;
    let code = match e {
        GroupError::UnknownMember { .. } => C::UnknownMemberId,
        GroupError::FencedMemberEpoch { .. } => C::FencedMemberEpoch,
        GroupError::InvalidSessionTimeout { .. } => C::InvalidSessionTimeout,
        GroupError::GroupFull { .. } => C::GroupFull,
        GroupError::GroupNotEmpty { .. } => C::GroupNotEmpty,
        GroupError::NotAssigned { .. } => C::NotAssigned,
        GroupError::InvalidRequest(_) => C::InvalidRequest,
    };
    (code.as_u16(), e.to_string())
}

/// The wire code and message of an engine error met while coordinating.
pub(crate) fn engine_error(e: &EngineError) -> (u16, String) {
    (code_of(e), e.to_string())
}

/// A group made for its first member, with the broker's default assignor.
pub(crate) fn new_group(id: &str, config: &GroupConfig) -> Group {
    Group::new(id, config.assignor_default)
}

/// The assignor a request names, or why not.
pub(crate) fn assignor(name: Option<&str>) -> Result<Option<AssignorKind>, String> {
    name.map(str::parse).transpose()
}
