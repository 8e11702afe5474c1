//! Delivery accounting for `e2e`: every produced message consumed exactly
//! once, in order per partition.
//!
//! Each message carries its producer's index and a per-producer sequence
//! number. Producers mark the sequences the broker acknowledged; consumers
//! mark what they read. Lost = acknowledged but never read; duplicated =
//! read more than once; out of order = read after a higher sequence of the
//! same producer on the same partition.
//!
//! Under a consumer group a partition may move between members, and the
//! new owner reads again from the group's last commit: those duplicates
//! are the group's contract (at least once), counted apart as
//! `duplicated_across_rebalances`. A duplicate in a partition that never
//! moved is a failure like any other.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A growable set of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Inserts `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let new = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        new
    }

    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Members of `self` missing from `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    pub fn union(&mut self, other: &SeqSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }
}

/// What one consumer saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Per producer.
    pub sequences: Vec<SeqSet>,
    /// Records read twice by this consumer, by partition.
    duplicated_by_partition: BTreeMap<u32, u64>,
    pub out_of_order: u64,
    /// (producer, partition) -> the highest sequence read.
    last: HashMap<(u32, u32), u64>,
    /// Partitions that moved between the members of this consumer's group
    /// while it ran (set by the caller before `account`).
    pub moved: BTreeSet<u32>,
}

impl Seen {
    pub fn record(&mut self, producer: u32, partition: u32, seq: u64) {
        let p = producer as usize;
        if self.sequences.len() <= p {
            self.sequences.resize_with(p + 1, SeqSet::default);
        }
        if !self.sequences[p].insert(seq) {
            *self.duplicated_by_partition.entry(partition).or_default() += 1;
            return;
        }
        let last = self.last.entry((producer, partition)).or_insert(seq);
        if seq < *last {
            self.out_of_order += 1;
        }
        *last = (*last).max(seq);
    }

    /// Records this consumer read twice.
    pub fn duplicated(&self) -> u64 {
        self.duplicated_by_partition.values().sum()
    }

    /// Whether any partition this consumer read moved between members.
    fn read_a_moved_partition(&self) -> bool {
        self.last.keys().any(|(_, partition)| self.moved.contains(partition))
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryReport {
    pub acknowledged: u64,
    pub consumed: u64,
    pub lost: u64,
    /// Read more than once, in partitions that never moved: a failure.
    pub duplicated: u64,
    /// Read again by a partition's next owner after it moved between the
    /// members of a group (at least once): expected, not a failure.
    pub duplicated_across_rebalances: u64,
    pub out_of_order: u64,
}

impl DeliveryReport {
    /// Both reports' counts (subscriptions of one run add up).
    pub fn plus(&self, other: &DeliveryReport) -> DeliveryReport {
        DeliveryReport {
            acknowledged: self.acknowledged + other.acknowledged,
            consumed: self.consumed + other.consumed,
            lost: self.lost + other.lost,
            duplicated: self.duplicated + other.duplicated,
            duplicated_across_rebalances: self.duplicated_across_rebalances
                + other.duplicated_across_rebalances,
            out_of_order: self.out_of_order + other.out_of_order,
        }
    }

    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Compares what producers had acknowledged with what the consumers of one
/// subscription saw. A record two consumers both read counts as read
/// across rebalances when the later one read a partition that moved (a
/// record lives in one partition, so both read it), else as a failure.
pub fn account(acknowledged: &[SeqSet], seen: &[Seen]) -> DeliveryReport {
    let mut all_seen: Vec<SeqSet> = vec![SeqSet::default(); acknowledged.len()];
    let (mut duplicated, mut across, mut out_of_order, mut consumed) = (0, 0, 0, 0);
    for s in seen {
        for (partition, count) in &s.duplicated_by_partition {
            if s.moved.contains(partition) {
                across += count;
            } else {
                duplicated += count;
            }
        }
        consumed += s.duplicated();
        out_of_order += s.out_of_order;
        let mut shared = 0;
        for (p, set) in s.sequences.iter().enumerate() {
            consumed += set.len();
            if p >= all_seen.len() {
                all_seen.resize(p + 1, SeqSet::default());
            }
            shared += set.len() - set.missing_from(&all_seen[p]);
            all_seen[p].union(set);
        }
        if s.read_a_moved_partition() {
            across += shared;
        } else {
            duplicated += shared;
        }
    }
    DeliveryReport {
        acknowledged: acknowledged.iter().map(SeqSet::len).sum(),
        consumed,
        lost: acknowledged.iter().zip(&all_seen).map(|(a, s)| a.missing_from(s)).sum(),
        duplicated,
        duplicated_across_rebalances: across,
        out_of_order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_delivery_counts_nothing_wrong() {
        let mut acked = vec![SeqSet::default(); 2];
        let mut seen = Seen::default();
        for p in 0..2u32 {
            for seq in 0..100u64 {
                acked[p as usize].insert(seq);
                seen.record(p, p, seq);
            }
        }
        let report = account(&acked, &[seen]);
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.acknowledged, report.consumed), (200, 200));
    }

    #[test]
    fn injected_losses_duplicates_and_reorders_are_counted() {
        let mut acked = vec![SeqSet::default()];
        let mut seen = Seen::default();
        for seq in 0..10u64 {
            acked[0].insert(seq);
        }
        for seq in [0u64, 1, 2, 2, 5, 4, 6, 7, 8] {
            seen.record(0, 0, seq);
        }
        let report = account(&acked, &[seen]);
        assert_eq!(report.lost, 2, "3 and 9 never arrived");
        assert_eq!(report.duplicated, 1);
        assert_eq!(report.out_of_order, 1, "4 after 5");
        assert!(!report.ok());
    }

    #[test]
    fn rereads_after_a_partition_moved_are_allowed_and_others_are_not() {
        let mut acked = vec![SeqSet::default()];
        for seq in 0..10u64 {
            acked[0].insert(seq);
        }
        // Partition 0 moved from `first` to `second`, which read 3 and 4
        // again from the group's last commit. Partition 1 never moved,
        // yet `first` read 9 twice.
        let (mut first, mut second) = (Seen::default(), Seen::default());
        for seq in [0u64, 1, 2, 3, 4] {
            first.record(0, 0, seq);
        }
        for seq in [3u64, 4, 5, 6] {
            second.record(0, 0, seq);
        }
        for seq in [7u64, 8, 9, 9] {
            first.record(0, 1, seq);
        }
        first.moved = [0].into();
        second.moved = [0].into();
        let report = account(&acked, &[first, second]);
        assert_eq!(report.lost, 0);
        assert_eq!(report.duplicated_across_rebalances, 2, "{report:?}");
        assert_eq!(report.duplicated, 1, "9 read twice in a partition that never moved");
        assert_eq!(report.consumed, 13);
        assert_eq!(report.out_of_order, 0, "a new owner starting earlier is not a reorder");
        assert!(!report.ok());
    }

    #[test]
    fn two_consumers_reading_the_same_unmoved_partition_fail_the_check() {
        let mut acked = vec![SeqSet::default()];
        let (mut first, mut second) = (Seen::default(), Seen::default());
        for seq in 0..4u64 {
            acked[0].insert(seq);
            first.record(0, 0, seq);
            second.record(0, 0, seq);
        }
        let report = account(&acked, &[first, second]);
        assert_eq!((report.duplicated, report.duplicated_across_rebalances), (4, 0));
    }
}
