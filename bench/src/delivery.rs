//! Delivery accounting for `e2e`: every produced message consumed exactly
//! once, in order per partition.
//!
//! Each message carries its producer's index and a per-producer sequence
//! number. Producers mark the sequences the broker acknowledged; consumers
//! mark what they read. Lost = acknowledged but never read; duplicated =
//! read more than once; out of order = read after a higher sequence of the
//! same producer on the same partition.

use serde::Serialize;
use std::collections::HashMap;

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
    pub duplicated: u64,
    pub out_of_order: u64,
    last: HashMap<(u32, u32), u64>,
}

impl Seen {
    pub fn record(&mut self, producer: u32, partition: u32, seq: u64) {
        let p = producer as usize;
        if self.sequences.len() <= p {
            self.sequences.resize_with(p + 1, SeqSet::default);
        }
        if !self.sequences[p].insert(seq) {
            self.duplicated += 1;
            return;
        }
        let last = self.last.entry((producer, partition)).or_insert(seq);
        if seq < *last {
            self.out_of_order += 1;
        }
        *last = (*last).max(seq);
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryReport {
    pub acknowledged: u64,
    pub consumed: u64,
    pub lost: u64,
    pub duplicated: u64,
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
            out_of_order: self.out_of_order + other.out_of_order,
        }
    }

    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Compares what producers had acknowledged with what consumers saw.
pub fn account(acknowledged: &[SeqSet], seen: &[Seen]) -> DeliveryReport {
    let mut all_seen: Vec<SeqSet> = vec![SeqSet::default(); acknowledged.len()];
    let mut duplicated = 0;
    let mut out_of_order = 0;
    let mut consumed = 0;
    for s in seen {
        duplicated += s.duplicated;
        out_of_order += s.out_of_order;
        for (p, set) in s.sequences.iter().enumerate() {
            consumed += set.len();
            if p < all_seen.len() {
                all_seen[p].union(set);
            }
        }
    }
    DeliveryReport {
        acknowledged: acknowledged.iter().map(SeqSet::len).sum(),
        consumed: consumed + duplicated,
        lost: acknowledged.iter().zip(&all_seen).map(|(a, s)| a.missing_from(s)).sum(),
        duplicated,
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
}
