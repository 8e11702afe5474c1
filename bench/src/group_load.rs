//! `consume|e2e --group`: the consumers of a subscription as one consumer
//! group, what they learn of its rebalances, and the cost of committing.
//!
//! A partition that two members read in turn *moved*: its next owner reads
//! again from the group's last commit, so the delivery check counts the
//! records read twice there apart (`delivery.rs`). The tracker learns of
//! moves from every member's rebalance listener.

use crate::pacing::latency_us;
use crate::stats::{latency_histogram, record_us};
use hdrhistogram::Histogram;
use mamba_net::client::{block_on, Admin, Consumer, GroupOptions, Partitions, RebalanceListener};
use mamba_net::protocol::{CommitOffset, ErrorCode, LATEST_TIMESTAMP};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a run's consumers form groups.
#[derive(Debug, Clone)]
pub struct GroupRun {
    /// Subscription 0's group; subscription i > 0 uses `GROUP-i`.
    pub group_id: String,
    /// 0: the broker's default.
    pub session_timeout_ms: u32,
    /// `None`: the broker's default (uniform).
    pub assignor: Option<String>,
}

impl GroupRun {
    pub fn group_of(&self, subscription: u32) -> String {
        match subscription {
            0 => self.group_id.clone(),
            i => format!("{}-{i}", self.group_id),
        }
    }
}

/// A group id no earlier run used: a fresh group has no commits, so it
/// starts where the run says.
pub fn fresh_group_id() -> String {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("mamba-bench-{}-{unix_ms}", std::process::id())
}

/// One group's partitions of one topic: who holds each now, and how often
/// each was handed to a member.
#[derive(Debug, Default)]
struct Holdings {
    holders: BTreeMap<u32, usize>,
    handed: BTreeMap<u32, u64>,
}

/// What the members of the run's groups tell their listeners, keyed by
/// (subscription, topic). Shared by the consumer threads.
#[derive(Debug, Default)]
pub struct GroupTracker {
    groups: Mutex<BTreeMap<(u32, String), Holdings>>,
}

impl GroupTracker {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(u32, String), Holdings>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Partitions of `topic` handed to members of `subscription`'s group
    /// more than once: they moved.
    pub fn moved(&self, subscription: u32, topic: &str) -> BTreeSet<u32> {
        self.lock().get(&(subscription, topic.to_string())).map_or_else(BTreeSet::new, |h| {
            h.handed.iter().filter(|(_, n)| **n > 1).map(|(p, _)| *p).collect()
        })
    }

    /// Whether every group holds all `partitions` of each topic, each by
    /// one member.
    pub fn all_held(&self, keys: &[(u32, String)], partitions: u32) -> bool {
        let groups = self.lock();
        keys.iter().all(|key| {
            groups.get(key).is_some_and(|h| {
                (0..partitions).all(|p| h.holders.get(&p).copied().unwrap_or(0) == 1)
            })
        })
    }
}

/// A member's listener: tells the tracker what it gains and gives up.
pub struct TrackingListener {
    pub tracker: Arc<GroupTracker>,
    pub subscription: u32,
}

impl TrackingListener {
    fn change(&self, partitions: &Partitions, assigned: bool) {
        let mut groups = self.tracker.lock();
        for (topic, ps) in partitions {
            let h = groups.entry((self.subscription, topic.clone())).or_default();
            for &p in ps {
                let holders = h.holders.entry(p).or_default();
                if assigned {
                    *holders += 1;
                    *h.handed.entry(p).or_default() += 1;
                } else {
                    *holders = holders.saturating_sub(1);
                }
            }
        }
    }
}

impl RebalanceListener for TrackingListener {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.change(partitions, true);
    }

    fn on_revoked(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.change(partitions, false);
    }
}

/// Commits at a fixed rate and times each `commit_sync`.
pub struct CommitTimer {
    interval: Option<Duration>,
    next: Instant,
    pub latency_us: Histogram<u64>,
    /// Commits refused or failed (a rebalance under way can refuse one).
    pub failed: u64,
    /// Why the first one failed.
    pub first_error: Option<String>,
}

impl CommitTimer {
    /// `rate_per_s` = 0: never.
    pub fn new(rate_per_s: f64, start: Instant) -> CommitTimer {
        let interval = (rate_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_per_s));
        CommitTimer {
            interval,
            next: start,
            latency_us: latency_histogram(),
            failed: 0,
            first_error: None,
        }
    }

    /// Commits if one is due (the schedule does not catch up after a slow
    /// commit: the rate is a ceiling, the latency what one costs); returns
    /// how the commit went, its latency or why it failed.
    pub fn maybe_commit(
        &mut self,
        consumer: &mut Consumer,
        measure: bool,
    ) -> Option<Result<u64, String>> {
        let interval = self.interval?;
        let now = Instant::now();
        if now < self.next || consumer.assignment().is_empty() {
            return None;
        }
        self.next = (self.next + interval).max(now);
        let result = consumer.commit_sync();
        let latency = latency_us(now, Instant::now());
        Some(match result {
            Ok(()) => {
                if measure {
                    record_us(&mut self.latency_us, latency);
                }
                Ok(latency)
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                Err(e.to_string())
            }
        })
    }
}

/// Sets a group without members to start at the end of every partition of
/// `topic`: an `e2e` group then reads exactly what the run produces,
/// wherever the coordinator first hands a partition.
pub fn start_at_end(
    brokers: &str,
    group_id: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), String> {
    let admin = Admin::connect(brokers).map_err(|e| e.to_string())?;
    let all: Vec<u32> = (0..partitions).collect();
    let ends = block_on(admin.list_offsets(topic, &all, LATEST_TIMESTAMP))
        .map_err(|e| format!("end offsets of {topic}: {e}"))?;
    let mut offsets = Vec::with_capacity(ends.len());
    for end in ends {
        if end.error_code != 0 {
            let code = ErrorCode::from_u16(end.error_code);
            return Err(format!(
                "end offset of {topic}/{}: {code}: {}",
                end.partition, end.message
            ));
        }
        offsets.push(CommitOffset {
            topic: topic.to_string(),
            partition: end.partition,
            offset: end.offset,
            metadata: String::new(),
        });
    }
    let results = block_on(admin.reset_offsets(group_id, offsets))
        .map_err(|e| format!("setting group {group_id}'s offsets: {e}"))?;
    for r in results {
        if r.error_code != 0 {
            let code = ErrorCode::from_u16(r.error_code);
            return Err(format!(
                "setting group {group_id}'s offset of {topic}/{}: {code}: {} (a group given \
                 with --group must have no members)",
                r.partition, r.message
            ));
        }
    }
    Ok(())
}

/// The options of a bench consumer joining `group_id` for `topic`.
pub fn group_options(
    group_id: String,
    topic: &str,
    session_timeout_ms: u32,
    assignor: Option<String>,
) -> GroupOptions {
    GroupOptions {
        group_id,
        topics: vec![topic.to_string()],
        instance_id: None,
        assignor,
        session_timeout_ms,
        client_id: "mamba-bench".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(topic: &str, ps: &[u32]) -> Partitions {
        Partitions::from([(topic.to_string(), ps.iter().copied().collect())])
    }

    #[test]
    fn a_partition_handed_twice_moved_and_holders_follow_the_listeners() {
        let tracker = Arc::new(GroupTracker::default());
        let a = TrackingListener { tracker: tracker.clone(), subscription: 0 };
        let b = TrackingListener { tracker: tracker.clone(), subscription: 0 };
        let key = [(0, "t".to_string())];
        a.change(&partitions("t", &[0, 1]), true);
        assert!(tracker.all_held(&key, 2));
        a.change(&partitions("t", &[1]), false);
        assert!(!tracker.all_held(&key, 2), "partition 1 has no holder between owners");
        b.change(&partitions("t", &[1]), true);
        assert!(tracker.all_held(&key, 2));
        assert_eq!(tracker.moved(0, "t"), BTreeSet::from([1]));
        assert!(tracker.moved(1, "t").is_empty(), "another subscription's group");
        b.change(&partitions("t", &[1]), false);
        assert!(!tracker.all_held(&key, 2));
    }
}
