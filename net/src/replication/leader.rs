//! What a partition's leader knows of its followers, pure (no I/O, time
//! comes with each call): where each one's log ends and what it has made
//! durable, from its fetches; the high watermark that follows from the
//! in-sync replicas; and when the in-sync set should change.
//!
//! The rules are Kafka's (KIP-101/279/320): the high watermark is the
//! lowest durable offset among the in-sync replicas and never goes back;
//! a follower leaves the in-sync set after `lag_max` without catching up
//! to the leader's end, and rejoins once it reached the high watermark
//! and the start of the leader's epoch; the set never loses the leader.

use crate::cluster::metadata::{BrokerId, Partition};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One follower, as its fetches showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The next offset it asked for: its log ends there.
    pub fetch_offset: u64,
    /// Everything before this is durable on it.
    pub durable_offset: u64,
    /// The last time its fetch reached the leader's end.
    pub caught_up_at: Instant,
    pub fetched_at: Instant,
}

impl FollowerProgress {
    /// A follower not heard from yet: given a full `lag_max` from `now` to
    /// show up, as Kafka's leader grants.
    fn new(now: Instant) -> Self {
        FollowerProgress { fetch_offset: 0, durable_offset: 0, caught_up_at: now, fetched_at: now }
    }
}

/// A partition this broker leads, at one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderPartition {
    pub leader: BrokerId,
    pub leader_epoch: u32,
    pub partition_epoch: u32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// The leader's log end when it took over: a follower joins the
    /// in-sync set only once it holds this epoch's start (else it could
    /// still hold a diverging tail of an older one).
    pub epoch_start_offset: u64,
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// An in-sync set asked of the controller and not applied yet, and
    /// when it was asked (asked again after `ISR_CHANGE_RETRY`).
    pending_isr: Option<(Vec<BrokerId>, Instant)>,
}

/// An in-sync set change is asked again after this long without the
/// metadata showing it.
pub const ISR_CHANGE_RETRY: Duration = Duration::from_secs(2);

impl LeaderPartition {
    /// Takes over `partition` (as the metadata has it) with the log ending
    /// at `log_end`. Every follower in the in-sync set starts with a full
    /// `lag_max` to show up, as Kafka's leader grants.
    pub fn new(leader: BrokerId, partition: &Partition, log_end: u64, now: Instant) -> Self {
        let followers = partition
            .replicas
            .iter()
            .filter(|id| **id != leader)
            .map(|id| (*id, FollowerProgress::new(now)))
            .collect();
        LeaderPartition {
            leader,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            epoch_start_offset: log_end,
            followers,
            pending_isr: None,
        }
    }

    /// The metadata changed the partition within the same leader epoch
    /// (its in-sync set, through the controller).
    pub fn update(&mut self, partition: &Partition, now: Instant) {
        debug_assert_eq!(partition.leader_epoch, self.leader_epoch, "a new epoch is a new leader");
        self.partition_epoch = partition.partition_epoch;
        self.isr = partition.isr.clone();
        for id in &partition.replicas {
            if *id != self.leader {
                self.followers.entry(*id).or_insert_with(|| FollowerProgress::new(now));
            }
        }
        self.followers.retain(|id, _| partition.replicas.contains(id));
        self.replicas = partition.replicas.clone();
        if self.pending_isr.as_ref().is_some_and(|(isr, _)| same_set(isr, &self.isr)) {
            self.pending_isr = None;
        }
    }

    /// Whether `id` is a follower of this partition.
    pub fn is_follower(&self, id: BrokerId) -> bool {
        self.followers.contains_key(&id)
    }

    /// A fetch from `follower`: its log ends at `fetch_offset` and is
    /// durable below `durable_offset`; the leader serves up to `leader_end`.
    pub fn on_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: u64,
        durable_offset: u64,
        leader_end: u64,
        now: Instant,
    ) {
        let Some(progress) = self.followers.get_mut(&follower) else { return };
        progress.fetch_offset = fetch_offset;
        // What is durable cannot be past the log end it reports.
        progress.durable_offset = durable_offset.min(fetch_offset);
        progress.fetched_at = now;
        if fetch_offset >= leader_end {
            progress.caught_up_at = now;
        }
    }

    /// The high watermark the in-sync replicas allow, given the leader's
    /// own durable end: `None` when the leader is the only one in sync
    /// (then its own durable end is the high watermark).
    pub fn high_watermark(&self, leader_durable: u64) -> Option<u64> {
        let followers: Vec<u64> = self
            .isr
            .iter()
            .filter(|id| **id != self.leader)
            .map(|id| self.followers.get(id).map_or(0, |p| p.durable_offset))
            .collect();
        let lowest = followers.into_iter().min()?;
        Some(lowest.min(leader_durable))
    }

    /// The follower progress, for `topic describe`.
    pub fn followers(&self) -> impl Iterator<Item = (BrokerId, &FollowerProgress)> {
        self.followers.iter().map(|(id, p)| (*id, p))
    }

    /// The in-sync set to ask the controller for now, if it should change:
    /// followers that have not caught up for `lag_max` leave; followers out
    /// of it that reached `high_watermark` and this epoch's start join. A
    /// change already asked is asked again only after `ISR_CHANGE_RETRY`.
    pub fn isr_change(
        &mut self,
        high_watermark: u64,
        lag_max: Duration,
        now: Instant,
    ) -> Option<Vec<BrokerId>> {
        if let Some((_, asked_at)) = &self.pending_isr {
            if now.duration_since(*asked_at) < ISR_CHANGE_RETRY {
                return None;
            }
        }
        let mut isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|id| {
                *id == self.leader
                    || self
                        .followers
                        .get(id)
                        .is_some_and(|p| now.duration_since(p.caught_up_at) < lag_max)
            })
            .collect();
        if !isr.contains(&self.leader) {
            isr.insert(0, self.leader);
        }
        let needed = high_watermark.max(self.epoch_start_offset);
        for (id, p) in &self.followers {
            let recent = now.duration_since(p.fetched_at) < lag_max;
            // Only followers out of the current set: one leaving now is not
            // back on the high watermark it alone holds down.
            if !self.isr.contains(id) && recent && p.fetch_offset >= needed {
                isr.push(*id);
            }
        }
        // Keep the replica order: the preferred leader first.
        isr.sort_by_key(|id| self.replicas.iter().position(|r| r == id).unwrap_or(usize::MAX));
        if same_set(&isr, &self.isr) {
            self.pending_isr = None;
            return None;
        }
        self.pending_isr = Some((isr.clone(), now));
        Some(isr)
    }
}

fn same_set(a: &[BrokerId], b: &[BrokerId]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(replicas: &[u32], isr: &[u32]) -> Partition {
        Partition {
            replicas: replicas.iter().map(|id| BrokerId(*id)).collect(),
            leader: Some(BrokerId(replicas[0])),
            leader_epoch: 3,
            partition_epoch: 7,
            isr: isr.iter().map(|id| BrokerId(*id)).collect(),
        }
    }

    const LAG: Duration = Duration::from_secs(5);

    #[test]
    fn the_high_watermark_is_the_lowest_durable_offset_of_the_in_sync_followers() {
        let now = Instant::now();
        let mut leader =
            LeaderPartition::new(BrokerId(1), &partition(&[1, 2, 3], &[1, 2, 3]), 0, now);
        assert_eq!(leader.high_watermark(100), Some(0), "no follower fetched yet");
        leader.on_fetch(BrokerId(2), 80, 60, 100, now);
        leader.on_fetch(BrokerId(3), 100, 90, 100, now);
        assert_eq!(leader.high_watermark(100), Some(60));
        assert_eq!(leader.high_watermark(50), Some(50), "never past the leader's own");
        leader.on_fetch(BrokerId(2), 50, 70, 100, now);
        assert_eq!(leader.high_watermark(100), Some(50), "durable is capped by the log end");
        let alone = LeaderPartition::new(BrokerId(1), &partition(&[1, 2], &[1]), 0, now);
        assert_eq!(alone.high_watermark(100), None, "the leader alone: its own end");
    }

    #[test]
    fn a_lagging_follower_leaves_and_rejoins_once_caught_up() {
        let start = Instant::now();
        let mut leader =
            LeaderPartition::new(BrokerId(1), &partition(&[1, 2, 3], &[1, 2, 3]), 10, start);
        let later = start + LAG + Duration::from_millis(1);
        leader.on_fetch(BrokerId(3), 100, 100, 100, later);
        leader.on_fetch(BrokerId(2), 40, 40, 100, later);
        let shrunk = leader.isr_change(40, LAG, later).expect("2 fell behind");
        assert_eq!(shrunk, vec![BrokerId(1), BrokerId(3)]);
        assert_eq!(leader.isr_change(40, LAG, later), None, "asked already");
        let mut p = partition(&[1, 2, 3], &[1, 3]);
        p.partition_epoch = 8;
        leader.update(&p, later);
        // Caught up to the high watermark (100) and the epoch start: back in.
        leader.on_fetch(BrokerId(2), 100, 100, 120, later);
        let grown = leader.isr_change(100, LAG, later).expect("2 caught up");
        assert_eq!(grown, vec![BrokerId(1), BrokerId(2), BrokerId(3)], "replica order");
    }

    #[test]
    fn a_follower_below_the_epoch_start_does_not_rejoin_and_the_leader_never_leaves() {
        let now = Instant::now();
        let mut leader = LeaderPartition::new(BrokerId(2), &partition(&[1, 2], &[2]), 500, now);
        leader.on_fetch(BrokerId(1), 400, 400, 500, now);
        assert_eq!(leader.isr_change(300, LAG, now), None, "below the epoch start (500)");
        let much_later = now + 10 * LAG;
        assert_eq!(leader.isr_change(300, LAG, much_later), None, "the leader stays");
    }
}
