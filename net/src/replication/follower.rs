//! The follower side: one fetcher per (local shard, leader broker), a task
//! on that shard fetching every partition the shard owns and that broker
//! leads, over a connection of its own to the leader's cluster port. So a
//! follower partition's fetches, appends and truncations run on the shard
//! that owns it, and a slow leader holds up only its own partitions.
//!
//! Per partition, each round: the fetch names the follower's log end, the
//! epoch of its last batch and what it has made durable. The leader
//! answers batches (appended verbatim, each with its offsets and epoch,
//! once its CRC checked out), or a diverging epoch: the follower then cuts
//! its log where the two agree (never blindly to its high watermark) and
//! fetches again. A fetch round waits for its appends to be durable before
//! the next one goes out, so every fetch reports a durable offset the
//! leader can count.

use super::TopicPartition;
use crate::client::{ClientError, Connection};
use crate::cluster::metadata::BrokerId;
use crate::cluster::ClusterHandle;
use crate::protocol::*;
use futures::FutureExt;
use mamba_engine::{
    AppendWait, Batch, Engine, EngineError, EpochEnd, LeaderEpoch, Offset, PartitionId, ShardId,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// What the metadata says of a followed partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    pub leader_epoch: u32,
}

/// What one fetcher fetches, shared with the reconciler that changes it.
#[derive(Default)]
pub(crate) struct FetcherShared {
    partitions: Mutex<BTreeMap<TopicPartition, Followed>>,
    changed: event_listener::Event,
    stopped: AtomicBool,
}

impl FetcherShared {
    fn snapshot(&self) -> BTreeMap<TopicPartition, Followed> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Every fetcher of this broker, by (shard, leader).
#[derive(Default)]
pub(crate) struct Fetchers {
    fetchers: Mutex<HashMap<(ShardId, BrokerId), Arc<FetcherShared>>>,
    /// The cluster handle, for leaders' addresses and this broker's id
    /// (set once the cluster starts; weak: the handle owns this).
    handle: Mutex<Weak<ClusterHandle>>,
}

impl Fetchers {
    pub(crate) fn set_handle(&self, handle: &Arc<ClusterHandle>) {
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(handle);
    }

    /// Fetches `tp` (owned by `shard`) from `leader`, and from no one else.
    pub(crate) fn follow(
        &self,
        engine: &Engine,
        shard: ShardId,
        leader: BrokerId,
        tp: TopicPartition,
        followed: Followed,
    ) {
        self.unfollow_except(&tp, (shard, leader));
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        let shared = fetchers.entry((shard, leader)).or_insert_with(|| {
            let shared = Arc::new(FetcherShared::default());
            let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (engine_there, task_shared) = (engine.clone(), shared.clone());
            let task: mamba_engine::shard::ShardTask = Box::new(move || {
                Box::pin(async move {
                    let Some(handle) = handle.upgrade() else { return };
                    Fetcher::new(engine_there, handle, leader, task_shared).run().await;
                })
            });
            // The reconciler runs on shard 0; the fetcher starts on its own
            // shard (the spawn request waits for room in that inbox).
            let engine = engine.clone();
            crate::runtime::spawn(async move {
                if let Err(e) = engine.spawn_on_shard(shard, task).await {
                    tracing::warn!(%shard, %leader, error = %e, "cannot start a replica fetcher");
                }
            })
            .detach();
            shared
        });
        shared.partitions.lock().unwrap_or_else(|p| p.into_inner()).insert(tp, followed);
        shared.changed.notify(usize::MAX);
    }

    pub(crate) fn unfollow(&self, tp: &TopicPartition) {
        self.unfollow_except(tp, (ShardId(u32::MAX), BrokerId(u32::MAX)));
    }

    fn unfollow_except(&self, tp: &TopicPartition, keep: (ShardId, BrokerId)) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        fetchers.retain(|key, shared| {
            if *key == keep {
                return true;
            }
            let mut partitions = shared.partitions.lock().unwrap_or_else(|p| p.into_inner());
            if partitions.remove(tp).is_some() {
                shared.changed.notify(usize::MAX);
            }
            if partitions.is_empty() {
                // Nothing left to fetch from that leader on that shard.
                shared.stopped.store(true, Ordering::Release);
                shared.changed.notify(usize::MAX);
                return false;
            }
            true
        });
    }

    pub(crate) fn stop_all(&self) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        for shared in fetchers.values() {
            shared.stopped.store(true, Ordering::Release);
            shared.changed.notify(usize::MAX);
        }
        fetchers.clear();
    }
}

/// A partition's fetch position, kept by its fetcher.
#[derive(Debug, Clone, Copy)]
struct Position {
    leader_epoch: u32,
    fetch_offset: u64,
    last_fetched_epoch: Option<u32>,
    /// Not fetched before this (the leader refused it; the metadata is
    /// expected to change).
    paused_until: Option<Instant>,
}

/// How long a partition the leader refused waits before it is fetched
/// again (a metadata change re-arms it at once).
const REFUSED_PAUSE: Duration = Duration::from_millis(200);
/// How long a partition whose fetched batches could not be appended, or
/// whose log is fenced, waits before it is fetched again.
const FAILED_PAUSE: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// A fetch gives up when the leader has not answered this long after its
/// long poll.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

struct Fetcher {
    engine: Engine,
    handle: Arc<ClusterHandle>,
    leader: BrokerId,
    shared: Arc<FetcherShared>,
    positions: BTreeMap<TopicPartition, Position>,
    connection: Option<(String, Arc<Connection>)>,
}

/// Why a fetch round ended early.
enum RoundEnd {
    /// What to fetch changed: start over with the new set.
    Changed,
    Failed(String),
}

impl Fetcher {
    fn new(
        engine: Engine,
        handle: Arc<ClusterHandle>,
        leader: BrokerId,
        shared: Arc<FetcherShared>,
    ) -> Fetcher {
        Fetcher { engine, handle, leader, shared, positions: BTreeMap::new(), connection: None }
    }

    async fn run(mut self) {
        tracing::debug!(leader = %self.leader, "replica fetcher started");
        while !self.shared.stopped.load(Ordering::Acquire) {
            let listener = self.shared.changed.listen();
            self.sync_positions().await;
            let now = Instant::now();
            let ready = self.positions.values().any(|p| p.paused_until.is_none_or(|t| t <= now));
            if !ready {
                let wake = self
                    .positions
                    .values()
                    .filter_map(|p| p.paused_until)
                    .min()
                    .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
                futures::select! {
                    () = listener.fuse() => {}
                    () = crate::runtime::sleep(wake).fuse() => {}
                }
                continue;
            }
            match self.round(listener).await {
                Ok(()) | Err(RoundEnd::Changed) => {}
                Err(RoundEnd::Failed(why)) => {
                    tracing::debug!(leader = %self.leader, %why, "replica fetch failed; reconnecting");
                    self.connection = None;
                    crate::runtime::sleep(RECONNECT_BACKOFF).await;
                }
            }
        }
        tracing::debug!(leader = %self.leader, "replica fetcher stopped");
    }

    /// Brings the positions in line with what to fetch: new partitions (or
    /// new epochs) start from the local log's end and last epoch.
    async fn sync_positions(&mut self) {
        let wanted = self.shared.snapshot();
        tracing::trace!(leader = %self.leader, partitions = wanted.len(), "fetch positions");
        self.positions.retain(|tp, _| wanted.contains_key(tp));
        for (tp, followed) in wanted {
            if self.positions.get(&tp).is_some_and(|p| p.leader_epoch == followed.leader_epoch) {
                continue;
            }
            match self.local_position(&tp, followed.leader_epoch).await {
                Ok(position) => drop(self.positions.insert(tp, position)),
                Err(e) => {
                    tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "follower position unknown");
                    self.positions.remove(&tp);
                }
            }
        }
    }

    async fn local_position(
        &self,
        tp: &TopicPartition,
        leader_epoch: u32,
    ) -> Result<Position, EngineError> {
        let id = PartitionId(tp.1);
        let offsets = self.engine.list_offsets(&tp.0, id).await?;
        let epochs = self.engine.leader_epochs(&tp.0, id).await?;
        let empty = offsets.next_offset == offsets.log_start_offset;
        Ok(Position {
            leader_epoch,
            fetch_offset: offsets.next_offset.0,
            last_fetched_epoch: if empty { None } else { epochs.last().map(|e| e.epoch.0) },
            paused_until: None,
        })
    }

    async fn connection(&mut self) -> Result<Arc<Connection>, String> {
        let address = self
            .handle
            .address_of(u64::from(self.leader.0))
            .ok_or_else(|| format!("no address for broker {}", self.leader))?;
        if let Some((at, c)) = &self.connection {
            if *at == address && c.is_alive() {
                return Ok(c.clone());
            }
        }
        // Connecting may block: on a thread of its own, never the shard.
        let (tx, rx) = futures::channel::oneshot::channel();
        let target = address.clone();
        std::thread::Builder::new()
            .name("mamba-replica-connect".into())
            .spawn(move || drop(tx.send(Connection::connect(&target, CONNECT_TIMEOUT))))
            .map_err(|e| e.to_string())?;
        let connection =
            rx.await.map_err(|_| "connect thread ended".to_string())?.map_err(|e| e.to_string())?;
        let connection = Arc::new(connection);
        self.connection = Some((address, connection.clone()));
        Ok(connection)
    }

    /// One fetch: ask, apply the answer.
    async fn round(&mut self, listener: event_listener::EventListener) -> Result<(), RoundEnd> {
        let connection = self.connection().await.map_err(RoundEnd::Failed)?;
        let config = self.handle.replication().config().clone();
        let now = Instant::now();
        let view = self.handle.view();
        let me = BrokerId(self.handle.node_id());
        let throttle = crate::cluster::settings::throttle_bytes_per_s(&view.metadata);
        // Partitions this broker is not in sync on catch up within the
        // throttle: a quarter second's worth per fetch at most.
        let catching_up = |tp: &TopicPartition| {
            throttle.is_some()
                && view
                    .metadata
                    .topic(&tp.0)
                    .and_then(|t| t.partitions.get(tp.1 as usize))
                    .is_some_and(|p| !p.isr.contains(&me))
        };
        let catch_up_max_bytes = throttle.map_or(config.fetch_max_bytes, |rate| {
            (rate / 4).clamp(1, u64::from(config.fetch_max_bytes)) as u32
        });
        let mut partitions = Vec::new();
        let mut gone = Vec::new();
        let mut moved = Vec::new();
        let mut paused = Vec::new();
        for (tp, p) in &self.positions {
            if p.paused_until.is_some_and(|t| t > now) {
                continue;
            }
            let max_bytes =
                if catching_up(tp) { catch_up_max_bytes } else { config.fetch_max_bytes };
            let offsets = match self.engine.list_offsets(&tp.0, PartitionId(tp.1)).await {
                Ok(o) => o,
                Err(e) => {
                    // Deleted or closed here: its position goes, and comes
                    // back (from the log) only if the partition does.
                    tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "not fetched");
                    gone.push(tp.clone());
                    continue;
                }
            };
            if offsets.fenced {
                // Its appends fail until it recovers (the shard retries
                // that every second), and its end may count some that
                // never reached the disk. No fetch meanwhile: fetching at
                // that end would tell the leader this replica is caught
                // up, keeping it in sync while it makes nothing durable.
                paused.push(tp.clone());
                continue;
            }
            if offsets.next_offset.0 != p.fetch_offset {
                // Only this fetcher appends here, so the log moved under
                // the position: recovery from a write error cut appends
                // that never reached the disk (or a failed round left
                // some behind).
                // Fetching past the log's end would wait for offsets the
                // leader may never send; the log's end is where to go on.
                tracing::info!(
                    topic = %tp.0, partition = tp.1, leader = %self.leader,
                    position = p.fetch_offset, log_end = offsets.next_offset.0,
                    "the local log ends elsewhere than the fetch position: fetching from its end"
                );
                moved.push((tp.clone(), p.leader_epoch));
                continue;
            }
            let durable = offsets.local_high_watermark.0;
            partitions.push(ReplicaFetchPartition {
                topic: tp.0.clone(),
                partition: tp.1,
                current_leader_epoch: p.leader_epoch,
                fetch_offset: p.fetch_offset,
                last_fetched_epoch: p.last_fetched_epoch,
                durable_offset: durable,
                max_bytes,
            });
        }
        for tp in gone {
            self.positions.remove(&tp);
        }
        for tp in paused {
            if let Some(p) = self.positions.get_mut(&tp) {
                p.paused_until = Some(now + FAILED_PAUSE);
            }
        }
        for (tp, leader_epoch) in moved {
            match self.local_position(&tp, leader_epoch).await {
                Ok(position) => drop(self.positions.insert(tp, position)),
                Err(_) => drop(self.positions.remove(&tp)),
            }
        }
        if partitions.is_empty() {
            // Nothing to ask now: the loop goes on with the positions
            // re-read, or waits for a change (never spins).
            return Ok(());
        }
        let request = ReplicaFetchRequest {
            cluster_id: self.handle.view().metadata.cluster_id().unwrap_or_default().to_string(),
            replica_id: self.handle.node_id(),
            max_wait_ms: config.fetch_max_wait_ms,
            min_bytes: 1,
            max_bytes: config.fetch_max_bytes,
            partitions,
        };
        let timeout = Duration::from_millis(u64::from(config.fetch_max_wait_ms)) + ANSWER_GRACE;
        tracing::trace!(leader = %self.leader, partitions = request.partitions.len(), "replica fetch");
        let answer = futures::select! {
            answer = connection
                .call_within::<_, ReplicaFetchResponse>(&request, &[], timeout)
                .fuse() => answer,
            () = listener.fuse() => return Err(RoundEnd::Changed),
        };
        let (response, frame) = answer.map_err(|e: ClientError| RoundEnd::Failed(e.to_string()))?;
        if response.error_code != 0 {
            return Err(RoundEnd::Failed(format!(
                "{}: {}",
                ErrorCode::from_u16(response.error_code),
                response.message
            )));
        }
        tracing::trace!(leader = %self.leader, payload_bytes = frame.payload().len(), "replica fetch answered");
        let mut throttled = Vec::new();
        let mut catch_up_bytes = 0u64;
        for result in &response.partitions {
            let tp = (result.topic.clone(), result.partition);
            if catching_up(&tp) {
                catch_up_bytes += u64::from(result.records.len);
                throttled.push(tp.clone());
            }
            if let Err(e) = self.apply(&tp, result, frame.payload()).await {
                // Not at once: a fenced log fails every append until it
                // recovers (a full disk, for as long as it stays full).
                // The next round starts from wherever the log then ends.
                tracing::info!(topic = %tp.0, partition = tp.1, leader = %self.leader, error = %e, "replica fetch not applied; fetching again from the local log's end shortly");
                if let Some(p) = self.positions.get_mut(&tp) {
                    p.paused_until = Some(Instant::now() + FAILED_PAUSE);
                }
            }
        }
        if let Some(rate) = throttle {
            let wait = self.handle.replication().catch_up_throttle.charge(
                catch_up_bytes,
                rate,
                Instant::now(),
            );
            if !wait.is_zero() {
                let until = Instant::now() + wait;
                for tp in throttled {
                    if let Some(p) = self.positions.get_mut(&tp) {
                        p.paused_until = Some(until);
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one partition's answer.
    async fn apply(
        &mut self,
        tp: &TopicPartition,
        result: &ReplicaFetchResult,
        payload: &[u8],
    ) -> Result<(), String> {
        let Some(position) = self.positions.get_mut(tp) else { return Ok(()) };
        let id = PartitionId(tp.1);
        if result.error_code == ErrorCode::OffsetOutOfRange.as_u16()
            && position.fetch_offset < result.log_start_offset
        {
            // The leader no longer has what this log lacks (retention
            // deleted it): this replica starts over at the leader's start.
            return self.start_over(tp, result.log_start_offset).await;
        }
        if result.error_code != 0 {
            let code = ErrorCode::from_u16(result.error_code);
            tracing::debug!(topic = %tp.0, partition = tp.1, %code, message = %result.message, "leader refused a replica fetch");
            position.paused_until = Some(Instant::now() + REFUSED_PAUSE);
            return Ok(());
        }
        if let Some(diverging) = result.diverging_epoch {
            return self.truncate(tp, diverging).await;
        }
        let records = slice_of(payload, result.records)
            .ok_or_else(|| "records outside the answer's payload".to_string())?;
        let mut pending = Vec::new();
        let mut next = position.fetch_offset;
        let mut last_epoch = position.last_fetched_epoch;
        let mut rest = records;
        while !rest.is_empty() {
            // Split at each batch's length; `from_bytes` then checks it all
            // (bounds, CRC, archive) once, as it copies it out.
            let stored = mamba_engine::batch::peek_stored_bytes(rest)
                .filter(|n| *n <= rest.len())
                .ok_or_else(|| format!("a truncated batch from the leader at offset {next}"))?;
            let (bytes, after) = rest.split_at(stored);
            rest = after;
            let batch =
                Batch::from_bytes(bytes).map_err(|e| format!("a batch from the leader: {e}"))?;
            let header = *batch.header();
            if header.base_offset.0 != next {
                return Err(format!(
                    "the leader sent offset {} where {next} was due",
                    header.base_offset
                ));
            }
            let outcome = self
                .engine
                .submit_append_replica(&tp.0, id, batch, AppendWait::Visible)
                .await
                .map_err(|e| e.to_string())?;
            pending.push(outcome);
            next = header.last_offset().0 + 1;
            last_epoch = Some(header.leader_epoch.0);
        }
        // Durable here before the next fetch says so.
        for outcome in pending {
            outcome.await.map_err(|e| e.to_string())?;
        }
        if let Some(position) = self.positions.get_mut(tp) {
            position.fetch_offset = next;
            position.last_fetched_epoch = last_epoch;
        }
        // The leader's high watermark, for when this replica leads.
        let hw = result.high_watermark.min(next);
        if let Err(e) = self.engine.set_high_watermark(&tp.0, id, Offset(hw)).await {
            tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "follower high watermark not set");
        }
        Ok(())
    }

    /// Empties the local log and starts it at `start`, the leader's log
    /// start, past this log's end.
    async fn start_over(&mut self, tp: &TopicPartition, start: u64) -> Result<(), String> {
        let id = PartitionId(tp.1);
        tracing::info!(
            topic = %tp.0, partition = tp.1, leader = %self.leader, start,
            "the leader's log starts past this replica's end: starting over there"
        );
        self.engine.reset_partition(&tp.0, id, Offset(start)).await.map_err(|e| e.to_string())?;
        let leader_epoch = self.positions.get(tp).map_or(0, |p| p.leader_epoch);
        let position = self.local_position(tp, leader_epoch).await.map_err(|e| e.to_string())?;
        self.positions.insert(tp.clone(), position);
        Ok(())
    }

    /// Cuts the local log where it stops agreeing with the leader's: at
    /// the end of the leader's `diverging.epoch`, or earlier where this
    /// log's own history of that epoch ends (KIP-279: the next fetch then
    /// asks about an earlier epoch, until the two agree).
    async fn truncate(
        &mut self,
        tp: &TopicPartition,
        diverging: EpochEndOffset,
    ) -> Result<(), String> {
        let id = PartitionId(tp.1);
        let ours = self
            .engine
            .end_offset_for_epoch(&tp.0, id, LeaderEpoch(diverging.epoch))
            .await
            .map_err(|e| e.to_string())?;
        let offsets = self.engine.list_offsets(&tp.0, id).await.map_err(|e| e.to_string())?;
        let cut = match ours {
            EpochEnd::Known { end_offset, .. } => diverging.end_offset.min(end_offset.0),
            EpochEnd::Undefined => diverging.end_offset.min(offsets.log_start_offset.0),
        };
        let cut = cut.max(offsets.log_start_offset.0);
        tracing::info!(
            topic = %tp.0, partition = tp.1, leader = %self.leader,
            from = offsets.next_offset.0, to = cut,
            "truncating a diverging log tail before fetching from the leader"
        );
        self.engine.truncate_partition(&tp.0, id, Offset(cut)).await.map_err(|e| e.to_string())?;
        let leader_epoch = self.positions.get(tp).map_or(0, |p| p.leader_epoch);
        let position = self.local_position(tp, leader_epoch).await.map_err(|e| e.to_string())?;
        self.positions.insert(tp.clone(), position);
        Ok(())
    }
}
