//! `rebalance`'s bookkeeping, with no processes, pipes or clocks (time
//! comes with each message), so its tests need none: who holds each
//! partition, the scripted events and how long each took to settle, and
//! every record delivered (lost, seen twice, out of order).
//!
//! An event starts when the parent acts (spawns, tells to leave, kills).
//! A member that leaves or is killed holds nothing from that moment: the
//! group's partitions are *owned again* once every one is held by a live
//! member and the live members hold equal shares (within one, as the
//! uniform assignor balances them). The partitions whose holder then
//! differs from the one before the event *moved*; consumption *resumed*
//! once each moved partition delivered a record through its new holder.
//! Messages of different members arrive through different pipes, so in no
//! fixed order: a holder's `revoked` after the next holder's `assigned` is
//! ignored.

use crate::delivery::{Seen, SeqSet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Join,
    Leave,
    Kill,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::Kill => "kill",
        }
    }
}

/// One scripted event and how the group took it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub kind: EventKind,
    pub member: usize,
    pub at_ns: u64,
    /// Event to every partition held again by a live member, balanced.
    pub owned_again_ms: Option<f64>,
    /// Event to the first record of the last moved partition delivered by
    /// its new holder.
    pub resumed_ms: Option<f64>,
    pub moved_partitions: Vec<u32>,
    /// Records delivered again in the partitions this event moved (a
    /// partition's next holder reads again from the group's last commit).
    pub duplicated: u64,
}

/// The event under way.
#[derive(Debug)]
struct Open {
    index: usize,
    /// Holders just before the event.
    before: Vec<Option<usize>>,
    /// (partition, member) -> first delivery since the event.
    first_delivery: BTreeMap<(u32, usize), u64>,
    settled_ns: Option<u64>,
    /// Moved partitions not yet delivering through their new holder.
    waiting: BTreeSet<u32>,
}

#[derive(Debug)]
pub struct Ownership {
    holder: Vec<Option<usize>>,
    /// Per partition, the last event that handed it to a new holder: the
    /// one its duplicates follow from.
    moved_by: Vec<Option<usize>>,
    live: BTreeSet<usize>,
    events: Vec<EventRecord>,
    open: Option<Open>,
    /// Every (producer, seq) delivered, by producer.
    delivered: Vec<SeqSet>,
    pub distinct_delivered: u64,
    /// Records delivered again in partitions no event moved (moved while
    /// the group formed).
    pub duplicated_before_events: u64,
    /// Per member, for order per partition.
    seen: BTreeMap<usize, Seen>,
}

impl Ownership {
    pub fn new(partitions: u32) -> Ownership {
        Ownership {
            holder: vec![None; partitions as usize],
            moved_by: vec![None; partitions as usize],
            live: BTreeSet::new(),
            events: Vec::new(),
            open: None,
            delivered: Vec::new(),
            distinct_delivered: 0,
            duplicated_before_events: 0,
            seen: BTreeMap::new(),
        }
    }

    /// A member that starts with the run (not an event).
    pub fn add_member(&mut self, member: usize) {
        self.live.insert(member);
    }

    pub fn live(&self) -> &BTreeSet<usize> {
        &self.live
    }

    /// Every partition held by a live member, in equal shares (within one).
    pub fn balanced(&self) -> bool {
        if self.live.is_empty() {
            return false;
        }
        let mut counts: BTreeMap<usize, usize> = self.live.iter().map(|m| (*m, 0)).collect();
        for holder in &self.holder {
            match holder.and_then(|h| counts.get_mut(&h)) {
                Some(count) => *count += 1,
                None => return false,
            }
        }
        let partitions = self.holder.len();
        let (low, high) = (partitions / self.live.len(), partitions.div_ceil(self.live.len()));
        counts.values().all(|c| (low..=high).contains(c))
    }

    /// Starts an event at `at_ns`: `member` joins, or stops holding anything.
    pub fn start_event(&mut self, kind: EventKind, member: usize, at_ns: u64) {
        assert!(self.open.is_none(), "one event at a time");
        let before = self.holder.clone();
        match kind {
            EventKind::Join => {
                self.live.insert(member);
            }
            EventKind::Leave | EventKind::Kill => {
                self.live.remove(&member);
                for holder in &mut self.holder {
                    if *holder == Some(member) {
                        *holder = None;
                    }
                }
            }
        }
        self.events.push(EventRecord {
            kind,
            member,
            at_ns,
            owned_again_ms: None,
            resumed_ms: None,
            moved_partitions: Vec::new(),
            duplicated: 0,
        });
        self.open = Some(Open {
            index: self.events.len() - 1,
            before,
            first_delivery: BTreeMap::new(),
            settled_ns: None,
            waiting: BTreeSet::new(),
        });
    }

    /// The event under way has settled and resumed (or none is open).
    pub fn event_done(&self) -> bool {
        self.open.is_none()
    }

    /// Gives up on the event under way (it did not settle in time); its
    /// figures stay `None`.
    pub fn abandon_event(&mut self) {
        self.open = None;
    }

    pub fn assigned(&mut self, member: usize, at_ns: u64, partitions: &[u32]) {
        if !self.live.contains(&member) {
            return;
        }
        for &p in partitions {
            if let Some(holder) = self.holder.get_mut(p as usize) {
                if let Some(open) = &self.open {
                    if open.before[p as usize] != Some(member) {
                        self.moved_by[p as usize] = Some(open.index);
                    }
                }
                *holder = Some(member);
            }
        }
        self.check_settled(at_ns);
    }

    pub fn revoked(&mut self, member: usize, at_ns: u64, partitions: &[u32]) {
        for &p in partitions {
            if let Some(holder) = self.holder.get_mut(p as usize) {
                if *holder == Some(member) {
                    *holder = None;
                }
            }
        }
        self.check_settled(at_ns);
    }

    fn check_settled(&mut self, at_ns: u64) {
        if !self.balanced() {
            return;
        }
        let Some(open) = &mut self.open else { return };
        if open.settled_ns.is_some() {
            return;
        }
        open.settled_ns = Some(at_ns);
        let event = &mut self.events[open.index];
        event.owned_again_ms = Some(ms_between(event.at_ns, at_ns));
        for (p, (before, now)) in open.before.iter().zip(&self.holder).enumerate() {
            if before != now {
                event.moved_partitions.push(p as u32);
                open.waiting.insert(p as u32);
            }
        }
        // Records the new holders delivered before the last partition
        // settled count from when they came.
        let mut resumed_ns = at_ns;
        let holder = &self.holder;
        open.waiting.retain(|p| match holder[*p as usize] {
            Some(h) => match open.first_delivery.get(&(*p, h)) {
                Some(at) => {
                    resumed_ns = resumed_ns.max(*at);
                    false
                }
                None => true,
            },
            None => true,
        });
        if open.waiting.is_empty() {
            event.resumed_ms = Some(ms_between(event.at_ns, resumed_ns));
            self.open = None;
        }
    }

    /// A record `member` delivered at `at_ns`.
    pub fn delivered(
        &mut self,
        member: usize,
        at_ns: u64,
        partition: u32,
        producer: u32,
        seq: u64,
    ) {
        let p = producer as usize;
        if self.delivered.len() <= p {
            self.delivered.resize(p + 1, SeqSet::default());
        }
        if self.delivered[p].insert(seq) {
            self.distinct_delivered += 1;
        } else {
            match self.moved_by.get(partition as usize).copied().flatten() {
                Some(event) => self.events[event].duplicated += 1,
                None => self.duplicated_before_events += 1,
            }
        }
        self.seen.entry(member).or_default().record(producer, partition, seq);
        let Some(open) = &mut self.open else { return };
        open.first_delivery.entry((partition, member)).or_insert(at_ns);
        if open.settled_ns.is_some()
            && self.holder.get(partition as usize) == Some(&Some(member))
            && open.waiting.remove(&partition)
            && open.waiting.is_empty()
        {
            let event = &mut self.events[open.index];
            event.resumed_ms = Some(ms_between(event.at_ns, at_ns));
            self.open = None;
        }
    }

    pub fn events(&self) -> &[EventRecord] {
        &self.events
    }

    /// Acknowledged records never delivered.
    pub fn lost(&self, acknowledged: &[SeqSet]) -> u64 {
        let none = SeqSet::default();
        acknowledged
            .iter()
            .enumerate()
            .map(|(p, a)| a.missing_from(self.delivered.get(p).unwrap_or(&none)))
            .sum()
    }

    /// Records a member read after a higher sequence of the same producer
    /// in the same partition.
    pub fn out_of_order(&self) -> u64 {
        self.seen.values().map(|s| s.out_of_order).sum()
    }

    pub fn duplicated(&self) -> u64 {
        self.duplicated_before_events + self.events.iter().map(|e| e.duplicated).sum::<u64>()
    }
}

fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Two members holding 4 partitions, 0-1 and 2-3.
    fn settled_pair() -> Ownership {
        let mut o = Ownership::new(4);
        o.add_member(0);
        o.add_member(1);
        o.assigned(0, 0, &[0, 1]);
        o.assigned(1, 0, &[2, 3]);
        assert!(o.balanced());
        o
    }

    #[test]
    fn a_join_settles_when_the_newcomer_holds_its_share_and_resumes_at_its_first_record() {
        let mut o = settled_pair();
        o.start_event(EventKind::Join, 2, 100 * MS);
        assert!(!o.balanced(), "the newcomer holds nothing yet");
        o.revoked(0, 110 * MS, &[1]);
        // Member 1 keeps reading what it holds: not a resumption.
        o.delivered(1, 115 * MS, 2, 0, 1);
        o.assigned(2, 120 * MS, &[1]);
        assert!(!o.event_done(), "settled, but partition 1 has not delivered yet");
        o.delivered(2, 150 * MS, 1, 0, 2);
        assert!(o.event_done());
        let e = &o.events()[0];
        assert_eq!(e.owned_again_ms, Some(20.0));
        assert_eq!(e.resumed_ms, Some(50.0));
        assert_eq!(e.moved_partitions, vec![1]);
    }

    #[test]
    fn a_kill_counts_from_the_kill_and_late_revocations_of_the_old_holder_are_ignored() {
        let mut o = settled_pair();
        o.start_event(EventKind::Kill, 1, 1_000 * MS);
        o.assigned(0, 4_000 * MS, &[2, 3]);
        // The dead member's revocation (written before it died) arrives late.
        o.revoked(1, 900 * MS, &[2, 3]);
        assert!(o.balanced());
        o.delivered(0, 4_010 * MS, 2, 0, 1);
        assert!(!o.event_done());
        o.delivered(0, 4_020 * MS, 3, 0, 2);
        let e = &o.events()[0];
        assert_eq!(e.owned_again_ms, Some(3_000.0));
        assert_eq!(e.resumed_ms, Some(3_020.0));
        assert_eq!(e.moved_partitions, vec![2, 3]);
    }

    #[test]
    fn records_seen_twice_count_against_the_event_they_follow_and_losses_are_found() {
        let mut o = settled_pair();
        let mut acked = vec![SeqSet::default()];
        for seq in 0..5 {
            acked[0].insert(seq);
        }
        o.delivered(0, 1, 0, 0, 0);
        o.delivered(0, 2, 0, 0, 1);
        o.start_event(EventKind::Leave, 0, 10 * MS);
        o.assigned(1, 20 * MS, &[0, 1]);
        // The new holder reads 1 again from the last commit, then 2.
        o.delivered(1, 30 * MS, 0, 0, 1);
        o.delivered(1, 31 * MS, 1, 0, 2);
        assert!(o.event_done());
        // A join that moves nothing of partition 0: its re-reads there
        // still follow from the leave.
        o.start_event(EventKind::Join, 2, 40 * MS);
        o.revoked(1, 41 * MS, &[3]);
        o.assigned(2, 42 * MS, &[3]);
        o.delivered(1, 43 * MS, 0, 0, 1);
        o.delivered(1, 44 * MS, 0, 0, 3);
        assert_eq!(o.events()[0].duplicated, 2);
        assert_eq!(o.events()[1].duplicated, 0);
        assert_eq!(o.duplicated(), 2);
        assert_eq!(o.lost(&acked), 1, "4 never arrived");
        assert_eq!(o.out_of_order(), 0);
        assert_eq!(o.distinct_delivered, 4);
    }
}
