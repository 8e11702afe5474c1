//! Partition replication (DESIGN.md §7): followers pull their leader's
//! stored batches over the cluster port and append them verbatim; the
//! leader's high watermark is the lowest durable offset among its in-sync
//! replicas; leader epochs decide where a returning replica's log stops
//! agreeing with its leader's, and it truncates there before it fetches.
//!
//! `Replication` is this broker's side of it, shared by every shard (in
//! the `ClusterHandle`): the role this broker plays for each partition it
//! holds (`apply_roles`, run by the reconciler after each metadata change),
//! the partitions it leads with their followers' progress (`leader.rs`,
//! pure; the cluster port's `replica_fetch` handler feeds it), and the
//! fetchers of the partitions it follows (`follower.rs`, one per local
//! shard and leader, running on that shard).
//!
//! Architecture Invariant: the engine knows no replicas; everything a
//! replica's log must do (epochs, follower appends, truncation, a high
//! watermark set from outside) it offers, and this module decides when.

pub(crate) mod acks_all;
pub(crate) mod follower;
pub mod leader;
mod throttle;

use crate::cluster::metadata::{BrokerId, MetadataState, Partition};
use follower::{Fetchers, Followed};
use leader::LeaderPartition;
use mamba_engine::{Engine, EngineError, LeaderEpoch, LogOffsets, Offset, PartitionId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A partition, by topic name and number.
pub type TopicPartition = (String, u32);

/// What this broker is for a partition it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Leader {
        epoch: u32,
    },
    Follower {
        leader: BrokerId,
        epoch: u32,
    },
    /// Offline: no leader (or a fenced one); nothing to do until there is.
    Idle {
        epoch: u32,
    },
}

/// Replication settings of the broker (`mamba serve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower that has not caught up with
    /// its leader for this long leaves the in-sync set.
    pub lag_time_max_ms: u64,
    /// How long a follower's fetch waits at the leader for new data.
    pub fetch_max_wait_ms: u32,
    /// Bytes one replica fetch answer carries at most.
    pub fetch_max_bytes: u32,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            lag_time_max_ms: 5_000,
            fetch_max_wait_ms: 500,
            fetch_max_bytes: 16 << 20,
        }
    }
}

pub struct Replication {
    me: BrokerId,
    config: ReplicationConfig,
    roles: Mutex<HashMap<TopicPartition, Role>>,
    leaders: Mutex<HashMap<TopicPartition, LeaderPartition>>,
    pub(crate) fetchers: Fetchers,
    /// `replication.throttle.bytes_per_s`, for partitions catching up.
    pub(crate) catch_up_throttle: throttle::Throttle,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why this broker does not serve a replica fetch of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotServing {
    NotLeader,
    /// The follower's epoch is older than the leader's.
    FencedEpoch {
        ours: u32,
    },
    /// The follower's epoch is newer than this broker applied (or it is
    /// still taking the leadership over).
    UnknownEpoch {
        ours: u32,
    },
    NotAReplica,
}

impl Replication {
    pub fn new(me: BrokerId, config: ReplicationConfig) -> Replication {
        Replication {
            me,
            config,
            roles: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            fetchers: Fetchers::default(),
            catch_up_throttle: throttle::Throttle::new(),
        }
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    pub fn lag_max(&self) -> Duration {
        Duration::from_millis(self.config.lag_time_max_ms)
    }

    /// Makes this broker play, for every partition it holds, the role
    /// `metadata` gives it: leader (its epoch set in the engine, its
    /// followers tracked), follower (handed to the fetcher of its leader),
    /// or idle. Partitions it no longer holds are forgotten. Changes that
    /// fail (an engine error) are retried at the next call.
    pub async fn apply_roles(&self, engine: &Engine, metadata: &MetadataState) {
        let mut held: BTreeMap<TopicPartition, Partition> = BTreeMap::new();
        for topic in metadata.topics() {
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&self.me) {
                    held.insert((topic.name.clone(), i as u32), p.clone());
                }
            }
        }
        let gone: Vec<TopicPartition> =
            lock(&self.roles).keys().filter(|tp| !held.contains_key(*tp)).cloned().collect();
        for tp in gone {
            lock(&self.roles).remove(&tp);
            lock(&self.leaders).remove(&tp);
            self.fetchers.unfollow(&tp);
        }
        for (tp, partition) in held {
            let role = match partition.leader {
                Some(leader) if leader == self.me => Role::Leader { epoch: partition.leader_epoch },
                Some(leader) if metadata.broker(leader).is_some_and(|b| !b.fenced) => {
                    Role::Follower { leader, epoch: partition.leader_epoch }
                }
                _ => Role::Idle { epoch: partition.leader_epoch },
            };
            if lock(&self.roles).get(&tp) == Some(&role) {
                if let Role::Leader { .. } = role {
                    let changed = match lock(&self.leaders).get_mut(&tp) {
                        Some(l) if l.partition_epoch != partition.partition_epoch => {
                            l.update(&partition, Instant::now());
                            true
                        }
                        _ => false,
                    };
                    if changed {
                        self.advance_high_watermark(engine, &tp).await;
                    }
                }
                continue;
            }
            match self.take_role(engine, &tp, &partition, &role).await {
                Ok(()) => drop(lock(&self.roles).insert(tp, role)),
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, ?role, error = %e, "cannot take a partition's new role; retrying at the next metadata change");
                }
            }
        }
    }

    async fn take_role(
        &self,
        engine: &Engine,
        tp: &TopicPartition,
        partition: &Partition,
        role: &Role,
    ) -> Result<(), EngineError> {
        let id = PartitionId(tp.1);
        match role {
            Role::Leader { epoch } => {
                self.fetchers.unfollow(tp);
                engine.set_leader_epoch(&tp.0, id, LeaderEpoch(*epoch)).await?;
                let offsets = engine.list_offsets(&tp.0, id).await?;
                if partition.replicas.len() > 1 && offsets.replicated_high_watermark.is_none() {
                    // A replica that never learned a high watermark (it
                    // restarted): readers see nothing new until the
                    // followers report, rather than records that are not
                    // replicated yet.
                    engine.set_high_watermark(&tp.0, id, offsets.log_start_offset).await?;
                }
                let leading =
                    LeaderPartition::new(self.me, partition, offsets.next_offset.0, Instant::now());
                lock(&self.leaders).insert(tp.clone(), leading);
                tracing::info!(topic = %tp.0, partition = tp.1, epoch, isr = ?partition.isr, "leading");
                self.advance_high_watermark(engine, tp).await;
            }
            Role::Follower { leader, epoch } => {
                lock(&self.leaders).remove(tp);
                let offsets = engine.list_offsets(&tp.0, id).await?;
                if offsets.replicated_high_watermark.is_none() {
                    engine.set_high_watermark(&tp.0, id, offsets.log_start_offset).await?;
                }
                let shard = engine.shard_of(&tp.0, id)?;
                let followed = Followed { leader_epoch: *epoch };
                self.fetchers.follow(engine, shard, *leader, tp.clone(), followed);
                tracing::debug!(topic = %tp.0, partition = tp.1, %leader, epoch, "following");
            }
            Role::Idle { .. } => {
                lock(&self.leaders).remove(tp);
                self.fetchers.unfollow(tp);
            }
        }
        Ok(())
    }

    /// Whether this broker leads `tp` at `epoch` and `follower` may fetch
    /// it.
    pub fn check_fetch(
        &self,
        tp: &TopicPartition,
        follower: BrokerId,
        epoch: u32,
    ) -> Result<(), NotServing> {
        let leaders = lock(&self.leaders);
        let Some(leading) = leaders.get(tp) else { return Err(NotServing::NotLeader) };
        let ours = leading.leader_epoch;
        if epoch < ours {
            return Err(NotServing::FencedEpoch { ours });
        }
        if epoch > ours {
            return Err(NotServing::UnknownEpoch { ours });
        }
        if !leading.is_follower(follower) {
            return Err(NotServing::NotAReplica);
        }
        Ok(())
    }

    /// The leader epoch this broker leads `tp` at, if it does.
    pub fn leading_epoch(&self, tp: &TopicPartition) -> Option<u32> {
        lock(&self.leaders).get(tp).map(|l| l.leader_epoch)
    }

    /// Records a follower's fetch and moves the high watermark; `offsets`
    /// are the leader's, read for this fetch. Returns the high watermark
    /// readers see now (`None`: this broker does not lead `tp`).
    pub async fn on_follower_fetch(
        &self,
        engine: &Engine,
        tp: &TopicPartition,
        follower: BrokerId,
        fetch_offset: u64,
        durable_offset: u64,
        offsets: &LogOffsets,
    ) -> Option<u64> {
        let leader_end = offsets.local_high_watermark.0;
        lock(&self.leaders).get_mut(tp)?.on_fetch(
            follower,
            fetch_offset,
            durable_offset,
            leader_end,
            Instant::now(),
        );
        self.set_high_watermark(engine, tp, offsets).await
    }

    /// Sets the high watermark the in-sync replicas allow (or, the leader
    /// alone in sync, lets readers follow its own durable end).
    pub async fn advance_high_watermark(&self, engine: &Engine, tp: &TopicPartition) {
        let Ok(offsets) = engine.list_offsets(&tp.0, PartitionId(tp.1)).await else { return };
        self.set_high_watermark(engine, tp, &offsets).await;
    }

    /// `advance_high_watermark` with the leader's offsets in hand: the
    /// high watermark readers see after it, when it could be set.
    async fn set_high_watermark(
        &self,
        engine: &Engine,
        tp: &TopicPartition,
        offsets: &LogOffsets,
    ) -> Option<u64> {
        let id = PartitionId(tp.1);
        let allowed = lock(&self.leaders).get(tp)?.high_watermark(offsets.local_high_watermark.0);
        let set = match allowed {
            // Never below what readers already saw: while the leader was
            // alone in sync they saw its own durable end, which a follower
            // that just rejoined may not have made durable yet.
            Some(hw) => {
                let hw = hw.max(offsets.high_watermark.0);
                engine.set_high_watermark(&tp.0, id, Offset(hw)).await
            }
            None => engine.clear_high_watermark(&tp.0, id).await,
        };
        match set {
            Ok(hw) => Some(hw.0),
            Err(e) => {
                tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "high watermark not set");
                None
            }
        }
    }

    /// In-sync set changes the partitions this broker leads need now:
    /// `(partition, leader epoch, partition epoch, new set)`.
    pub(crate) async fn isr_changes(
        &self,
        engine: &Engine,
    ) -> Vec<(TopicPartition, u32, u32, Vec<BrokerId>)> {
        let led: Vec<TopicPartition> = lock(&self.leaders).keys().cloned().collect();
        let mut changes = Vec::new();
        for tp in led {
            let Ok(offsets) = engine.list_offsets(&tp.0, PartitionId(tp.1)).await else {
                continue;
            };
            let mut leaders = lock(&self.leaders);
            let Some(l) = leaders.get_mut(&tp) else { continue };
            if l.replicas.len() < 2 {
                continue;
            }
            if let Some(isr) =
                l.isr_change(offsets.high_watermark.0, self.lag_max(), Instant::now())
            {
                changes.push((tp.clone(), l.leader_epoch, l.partition_epoch, isr));
            }
        }
        changes
    }

    /// Each follower's progress on a partition this broker leads.
    pub fn follower_progress(&self, tp: &TopicPartition) -> Vec<(BrokerId, u64, u64)> {
        lock(&self.leaders).get(tp).map_or_else(Vec::new, |l| {
            l.followers().map(|(id, p)| (id, p.fetch_offset, p.durable_offset)).collect()
        })
    }

    /// Stops every fetcher (the broker stops).
    pub fn stop(&self) {
        self.fetchers.stop_all();
    }
}

/// Arc'd for the handle.
pub type SharedReplication = Arc<Replication>;
