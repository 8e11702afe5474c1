//! One partition's order of sends: which batch may go next, which go again
//! and under which sequence numbers and epoch. A state machine with no I/O
//! and no clock of its own: the sender steps it with events (a batch taken
//! for sending, the answer to a batch, a batch that could not be encoded)
//! and the time, and does what [`SendOrder::next`] says.
//!
//! The rules, which keep a partition's records in order across failures
//! with up to `in_flight_max` batches in flight (the broker writes one
//! connection's batches in the order they arrive):
//! - After a failure nothing new is sent until every answer of the
//!   partition is in: a batch sent now could be written before the failed
//!   one's resend.
//! - Then the failed batches go again first, in their original order, once
//!   the longest backoff any of them asked for has passed.
//! - With idempotence each batch carries the sequence number of its first
//!   record, and the broker refuses gaps. A batch the broker refused was
//!   never written: the batches resent after it are renumbered from its
//!   sequence, so no gap is left.
//! - A batch given up after connection failures may or may not have been
//!   written: keeping the numbers could leave a gap the broker refuses
//!   forever, renumbering could make a later batch look like its duplicate.
//!   The partition moves to its next producer epoch, which the broker takes
//!   from sequence 0 (Kafka's KIP-360); batches waiting to be resent go
//!   under it too, so one the broker had in fact written (its answer lost)
//!   is written again: across such a failure delivery is at least once.
//! - A batch refused as out of order while an earlier batch of its
//!   partition failed is not at fault: it goes again after that one. Out of
//!   order with nothing failed before it, it fails like any refusal.
//! - A batch answered `not leader` was not written (the broker checks
//!   leadership before it appends): it goes again, to the leader the
//!   sender learns next, without using up one of its retries — a leader
//!   election is a wait, not a failure — until it has waited past its
//!   delivery timeout. Batches waiting to go again while their partition
//!   has no leader are given up the same way (`give_up_waiting`).
//! - A batch once answered with no answer to trust (a timeout, a failed
//!   connection) may have been written, whatever later answers to its
//!   resends say (a `not leader` from a broker that lost the leadership
//!   after writing it): given up, it moves the partition to its next
//!   epoch, never renumbers the batches after it.

use crate::protocol::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How a partition's batches are numbered and retried; the same for every
/// partition of a producer (validated by `Producer::connect`).
#[derive(Debug, Clone, Copy)]
pub(super) struct SendOrderConfig {
    /// Batches carry producer sequence numbers (idempotence).
    pub idempotent: bool,
    /// The producer's epoch: every partition starts under it.
    pub producer_epoch: u16,
    /// Batches sent and not yet answered, at most.
    pub in_flight_max: usize,
    /// Sends of a batch after its first, at most.
    pub retries: u32,
    /// Doubled with each attempt (up to 64 times).
    pub retry_backoff_ms: u64,
}

/// A batch's place in its partition's order: given when the batch is first
/// sent, in order, and kept across resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BatchNumber(u64);

/// The idempotence numbering a batch carries: its producer epoch and the
/// sequence number of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sequence {
    pub epoch: u16,
    pub base_sequence: u32,
}

/// The answer to a batch, as far as its order is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Written, or found already written (a duplicate).
    Written,
    /// The broker refused the batch, so it was not written; `retriable`:
    /// it may take it later (busy, shutting down, ...).
    Refused { code: ErrorCode, retriable: bool },
    /// No answer to trust (the connection failed, the request timed out,
    /// the answer was unreadable): written or not, nobody knows.
    Unknown { retriable: bool },
    /// The broker does not lead the partition, so it did not write the
    /// batch; `expired`: the batch has waited past its delivery timeout.
    NotLeader { expired: bool },
}

/// What to do next for the partition.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next<B> {
    /// Nothing until an answer comes: the window is full, or answers are
    /// outstanding after a failure.
    Hold,
    /// Nothing before this (a retry's backoff).
    HoldUntil(Instant),
    /// Send these again now, in this order, before anything new.
    Resend(Vec<Resend<B>>),
    /// A new batch may go, if there is one: [`SendOrder::send_new`].
    SendNew,
}

/// A batch to send again.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Resend<B> {
    pub number: BatchNumber,
    pub batch: B,
    /// The numbering to write into the batch before it goes; `None`: it
    /// keeps the one it was sent with (so the broker can recognise it as a
    /// duplicate if the first send was written).
    pub renumbered: Option<Sequence>,
}

/// What becomes of a batch once answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict<B> {
    /// Kept to go again ([`Next::Resend`]): its records wait.
    Retry,
    /// Its records end with the answer: written, or failed for good.
    Deliver(B),
}

/// What the order keeps of a batch sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    base_sequence: u32,
    record_count: u32,
    /// Sends after the first so far (`not leader` answers not counted).
    attempts: u32,
    /// An answer to one of its sends could not be trusted: the broker may
    /// have written it.
    maybe_written: bool,
}

/// One partition's send order. Lifecycle: made when the producer learns
/// the partition, lives as long as the producer; kept in the accumulator
/// (under its lock), stepped by the sender thread and by the connection
/// reader threads that deliver answers.
///
/// Holds each batch waiting for a resend (`B`, the sender's batch and its
/// records); knows batches in flight by number only.
///
/// Invariant: `in_flight.len() + retries.len() <= in_flight_max` (a new
/// batch goes only with no resend waiting, and a resend comes from the
/// batches in flight), so one [`Next::Resend`] sends every waiting batch.
pub(super) struct SendOrder<B> {
    config: SendOrderConfig,
    /// Batches sent and not answered yet.
    in_flight: BTreeMap<BatchNumber, Sent>,
    /// Batches to send again, and after when.
    retries: BTreeMap<BatchNumber, (Sent, B)>,
    retry_at: Option<Instant>,
    /// A batch failed for good, so the broker never got these sequence
    /// numbers: the batches resent after it are renumbered from here.
    resequence_from: Option<u32>,
    /// A batch was given up without knowing whether the broker wrote it:
    /// once nothing is in flight, the partition moves to its next epoch.
    new_epoch_due: bool,
    /// The epoch this partition's batches carry: the producer's, plus one
    /// for each batch given up after connection failures (the broker keeps
    /// producer state per partition).
    epoch: u16,
    /// Sequence number of the next new batch's first record.
    next_sequence: u32,
    next_number: u64,
}

impl<B> SendOrder<B> {
    pub fn new(config: SendOrderConfig) -> SendOrder<B> {
        assert!(config.in_flight_max > 0, "in_flight_max must be positive");
        SendOrder {
            config,
            in_flight: BTreeMap::new(),
            retries: BTreeMap::new(),
            retry_at: None,
            resequence_from: None,
            new_epoch_due: false,
            epoch: config.producer_epoch,
            next_sequence: 0,
            next_number: 0,
        }
    }

    /// Whether sending must wait for every answer: resends and a new
    /// numbering keep the order only when nothing is in flight.
    fn needs_quiet(&self) -> bool {
        !self.retries.is_empty() || self.resequence_from.is_some() || self.new_epoch_due
    }

    /// What to do now. After a [`Next::Resend`] ask again: new batches may
    /// follow the resent ones in the same window.
    pub fn next(&mut self, now: Instant) -> Next<B> {
        if self.needs_quiet() {
            if !self.in_flight.is_empty() {
                return Next::Hold;
            }
            if let Some(at) = self.retry_at.filter(|at| *at > now) {
                return Next::HoldUntil(at);
            }
            if std::mem::take(&mut self.new_epoch_due) {
                // Everything still to send, resends included, starts from
                // 0 under the new epoch.
                self.epoch = self.epoch.saturating_add(1);
                self.resequence_from = Some(0);
            }
            let renumber = self.resequence_from.take();
            if let Some(from) = renumber {
                let mut sequence = from;
                for (sent, _) in self.retries.values_mut() {
                    sent.base_sequence = sequence;
                    sequence = sequence.wrapping_add(sent.record_count);
                }
                self.next_sequence = sequence;
            }
            self.retry_at = None;
            if !self.retries.is_empty() {
                assert!(self.retries.len() <= self.config.in_flight_max, "more resends than room");
                let epoch = self.epoch;
                let mut resends = Vec::with_capacity(self.retries.len());
                while let Some((number, (sent, batch))) = self.retries.pop_first() {
                    self.in_flight.insert(number, sent);
                    let renumbered =
                        renumber.map(|_| Sequence { epoch, base_sequence: sent.base_sequence });
                    resends.push(Resend { number, batch, renumbered });
                }
                return Next::Resend(resends);
            }
        }
        if self.in_flight.len() < self.config.in_flight_max {
            Next::SendNew
        } else {
            Next::Hold
        }
    }

    /// A new batch of `record_count` records goes (after [`Next::SendNew`]):
    /// its number and the numbering to write into it.
    pub fn send_new(&mut self, record_count: u32) -> (BatchNumber, Sequence) {
        assert!(!self.needs_quiet(), "a new batch while resends are due");
        assert!(self.in_flight.len() < self.config.in_flight_max, "a new batch past the window");
        let base_sequence = self.next_sequence;
        if self.config.idempotent {
            self.next_sequence = base_sequence.wrapping_add(record_count);
        }
        let number = BatchNumber(self.next_number);
        self.next_number += 1;
        let sent = Sent { base_sequence, record_count, attempts: 0, maybe_written: false };
        self.in_flight.insert(number, sent);
        (number, Sequence { epoch: self.epoch, base_sequence })
    }

    /// A new batch could not be encoded, so it never went out: its sequence
    /// numbers go to the batches after it.
    pub fn unsent(&mut self, number: BatchNumber) {
        let sent = self.in_flight.remove(&number);
        let Some(sent) = sent else { panic!("batch {number:?} unsent but not in flight") };
        if self.config.idempotent {
            self.never_written(sent.base_sequence);
        }
    }

    /// The answer to batch `number` came: keep the batch for a resend, or
    /// hand it back for its records to be told. A closed producer
    /// (`producer_closed`) retries nothing.
    pub fn answered(
        &mut self,
        number: BatchNumber,
        batch: B,
        answer: Answer,
        now: Instant,
        producer_closed: bool,
    ) -> Verdict<B> {
        let sent = self.in_flight.remove(&number);
        let Some(mut sent) = sent else { panic!("batch {number:?} answered but not in flight") };
        let (refused, retriable) = match answer {
            Answer::Written => return Verdict::Deliver(batch),
            Answer::Refused { code, retriable } => (Some(code), retriable),
            Answer::Unknown { retriable } => {
                sent.maybe_written = true;
                (None, retriable)
            }
            Answer::NotLeader { expired } => {
                if !expired && !producer_closed {
                    // A wait for the leader, not an attempt: no retry used
                    // up, no doubling.
                    let at = now + Duration::from_millis(self.config.retry_backoff_ms);
                    self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
                    self.retries.insert(number, (sent, batch));
                    return Verdict::Retry;
                }
                (Some(ErrorCode::NotLeader), false)
            }
        };
        // A batch refused as out of order because an earlier one of this
        // partition failed goes again after it.
        let behind_a_failure = refused == Some(ErrorCode::OutOfOrderSequence)
            && (self.in_flight.first_key_value().is_some_and(|(n, _)| *n < number)
                || self.retries.first_key_value().is_some_and(|(n, _)| *n < number)
                || self.resequence_from.is_some()
                || self.new_epoch_due);
        if (retriable || behind_a_failure)
            && sent.attempts < self.config.retries
            && !producer_closed
        {
            sent.attempts += 1;
            let backoff =
                Duration::from_millis(self.config.retry_backoff_ms << sent.attempts.min(6));
            let at = now + backoff;
            self.retry_at = Some(self.retry_at.map_or(at, |t| t.max(at)));
            self.retries.insert(number, (sent, batch));
            return Verdict::Retry;
        }
        self.give_up(sent);
        Verdict::Deliver(batch)
    }

    /// The partition has no leader to send to: the batches waiting to go
    /// again are given up, oldest first, for as long as `expired` says
    /// they waited too long (their records fail), with what that means
    /// for the numbering, as for a batch given up after its answer. Only
    /// with nothing in flight (an answer still due might change that),
    /// else nothing is given up.
    pub fn give_up_waiting(&mut self, expired: impl Fn(&B) -> bool) -> Vec<B> {
        let mut given_up = Vec::new();
        if !self.in_flight.is_empty() {
            return given_up;
        }
        while let Some(entry) = self.retries.first_entry() {
            if !expired(&entry.get().1) {
                break;
            }
            let (sent, batch) = entry.remove();
            self.give_up(sent);
            given_up.push(batch);
        }
        if self.retries.is_empty() {
            self.retry_at = None;
        }
        given_up
    }

    /// A batch will not be sent again: the batches after it are numbered
    /// as its fate demands.
    fn give_up(&mut self, sent: Sent) {
        if !self.config.idempotent {
            return;
        }
        if sent.maybe_written {
            // Its fate is unknown: a new epoch starts afresh.
            self.new_epoch_due = true;
        } else {
            // Refused every time, so never written: the batches after it
            // take over its sequence numbers.
            self.never_written(sent.base_sequence);
        }
    }

    /// Whether batches wait to be sent again.
    pub fn has_resends(&self) -> bool {
        !self.retries.is_empty()
    }

    /// The first batch waiting to be sent again.
    pub fn first_resend(&self) -> Option<&B> {
        self.retries.first_key_value().map(|(_, (_, batch))| batch)
    }

    /// The broker never got the batch numbered from `base_sequence`: the
    /// batches re-sent after it are renumbered from its numbers.
    fn never_written(&mut self, base_sequence: u32) {
        self.resequence_from =
            Some(self.resequence_from.map_or(base_sequence, |s| s.min(base_sequence)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF_MS: u64 = 100;

    fn order(retries: u32) -> SendOrder<&'static str> {
        SendOrder::new(SendOrderConfig {
            idempotent: true,
            producer_epoch: 7,
            in_flight_max: 5,
            retries,
            retry_backoff_ms: BACKOFF_MS,
        })
    }

    /// Sends a new batch, which must be allowed now.
    fn send(order: &mut SendOrder<&'static str>, now: Instant, records: u32) -> BatchNumber {
        assert_eq!(order.next(now), Next::SendNew);
        order.send_new(records).0
    }

    /// The resends due at `at` (after every backoff), as (batch, numbering).
    fn resends(
        order: &mut SendOrder<&'static str>,
        at: Instant,
    ) -> Vec<(&'static str, Option<Sequence>)> {
        match order.next(at) {
            Next::Resend(r) => r.into_iter().map(|r| (r.batch, r.renumbered)).collect(),
            other => panic!("expected resends, got {other:?}"),
        }
    }

    fn seq(epoch: u16, base_sequence: u32) -> Sequence {
        Sequence { epoch, base_sequence }
    }

    const TIMEOUT: Answer = Answer::Unknown { retriable: true };
    const OUT_OF_ORDER: Answer =
        Answer::Refused { code: ErrorCode::OutOfOrderSequence, retriable: false };
    const TOO_LARGE: Answer =
        Answer::Refused { code: ErrorCode::MessageTooLarge, retriable: false };

    #[test]
    fn new_batches_are_numbered_by_their_records_under_the_producer_epoch() {
        let mut order = order(5);
        let now = Instant::now();
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(3), (BatchNumber(0), seq(7, 0)));
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(2), (BatchNumber(1), seq(7, 3)));
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(1), (BatchNumber(2), seq(7, 5)));
    }

    #[test]
    fn at_most_in_flight_max_batches_are_out() {
        let mut order = order(5);
        let now = Instant::now();
        let first = send(&mut order, now, 1);
        for _ in 1..5 {
            send(&mut order, now, 1);
        }
        assert_eq!(order.next(now), Next::Hold);
        assert_eq!(order.answered(first, "a", Answer::Written, now, false), Verdict::Deliver("a"));
        assert_eq!(order.next(now), Next::SendNew);
    }

    #[test]
    fn a_batch_retried_after_a_timeout_keeps_its_sequence() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 3);
        let b = send(&mut order, now, 2);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Retry);
        assert_eq!(order.answered(b, "b", Answer::Written, now, false), Verdict::Deliver("b"));
        // The first retry waits twice the backoff.
        let due = now + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(order.next(now), Next::HoldUntil(due));
        // Same numbers: if the first send was written, the broker answers
        // the resend as its duplicate.
        assert_eq!(resends(&mut order, due), [("a", None)]);
        assert_eq!(order.next(due), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(7, 5));
    }

    #[test]
    fn nothing_new_is_sent_while_answers_are_outstanding_after_a_failure() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 1);
        let b = send(&mut order, now, 1);
        let c = send(&mut order, now, 1);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Retry);
        // Room for three more, but b and c are still out, and even after
        // the backoff a resend now could overtake them.
        let later = now + Duration::from_secs(60);
        assert_eq!(order.next(later), Next::Hold);
        assert_eq!(order.answered(b, "b", Answer::Written, now, false), Verdict::Deliver("b"));
        assert_eq!(order.next(later), Next::Hold);
        assert_eq!(order.answered(c, "c", Answer::Written, now, false), Verdict::Deliver("c"));
        assert_eq!(resends(&mut order, later), [("a", None)]);
    }

    #[test]
    fn failed_batches_go_again_in_their_order_before_new_ones_after_the_longest_backoff() {
        let mut order = order(5);
        let t0 = Instant::now();
        let a = send(&mut order, t0, 1);
        let b = send(&mut order, t0, 1);
        let c = send(&mut order, t0, 1);
        let t1 = t0 + Duration::from_millis(50);
        // Answered out of order: c, then a; b was written.
        assert_eq!(order.answered(c, "c", TIMEOUT, t1, false), Verdict::Retry);
        assert_eq!(order.answered(a, "a", TIMEOUT, t0, false), Verdict::Retry);
        assert_eq!(order.answered(b, "b", Answer::Written, t1, false), Verdict::Deliver("b"));
        let due = t1 + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(order.next(t0), Next::HoldUntil(due));
        assert_eq!(resends(&mut order, due), [("a", None), ("c", None)]);
        // New batches follow the resends in the same window, numbered on.
        assert_eq!(order.next(due), Next::SendNew);
        assert_eq!(order.send_new(1), (BatchNumber(3), seq(7, 3)));
    }

    #[test]
    fn a_batch_refused_for_good_renumbers_the_ones_after_it() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        let c = send(&mut order, now, 1);
        // The broker never wrote a, so it refuses b and c as out of order:
        // they are not at fault and go again, taking over a's numbers.
        assert_eq!(order.answered(a, "a", TOO_LARGE, now, false), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, now, false), Verdict::Retry);
        assert_eq!(order.answered(c, "c", OUT_OF_ORDER, now, false), Verdict::Retry);
        let due = now + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, due), [("b", Some(seq(7, 0))), ("c", Some(seq(7, 3)))]);
        assert_eq!(order.next(due), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(7, 4));
    }

    #[test]
    fn after_a_refusal_with_nothing_to_resend_new_batches_take_over_its_numbers() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        assert_eq!(order.answered(a, "a", TOO_LARGE, now, false), Verdict::Deliver("a"));
        // Nothing new until b's answer is in: it may need renumbering.
        assert_eq!(order.next(now), Next::Hold);
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, now, false), Verdict::Retry);
        let due = now + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, due), [("b", Some(seq(7, 0)))]);
        assert_eq!(order.answered(b, "b", Answer::Written, due, false), Verdict::Deliver("b"));
        assert_eq!(order.next(due), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(7, 3));
    }

    #[test]
    fn a_batch_given_up_after_connection_failures_moves_the_partition_to_its_next_epoch_from_0() {
        let mut order = order(1);
        let t0 = Instant::now();
        let a = send(&mut order, t0, 2);
        assert_eq!(order.answered(a, "a", TIMEOUT, t0, false), Verdict::Retry);
        let t1 = t0 + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, t1), [("a", None)]);
        // A new batch goes behind the resend.
        let (b, b_sequence) = {
            assert_eq!(order.next(t1), Next::SendNew);
            order.send_new(3)
        };
        assert_eq!(b_sequence, seq(7, 2));
        // a fails again: given up, written or not.
        assert_eq!(order.answered(a, "a", TIMEOUT, t1, false), Verdict::Deliver("a"));
        // b, refused as out of order behind it, goes again under epoch 8
        // from sequence 0, and so does everything after it.
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, t1, false), Verdict::Retry);
        let t2 = t1 + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, t2), [("b", Some(seq(8, 0)))]);
        assert_eq!(order.next(t2), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(8, 3));
    }

    #[test]
    fn a_new_epoch_waits_for_every_answer_and_then_numbers_new_batches_from_0() {
        let mut order = order(0);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Deliver("a"));
        assert_eq!(order.next(now), Next::Hold);
        assert_eq!(order.answered(b, "b", Answer::Written, now, false), Verdict::Deliver("b"));
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(4).1, seq(8, 0));
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(8, 4));
    }

    #[test]
    fn out_of_order_with_no_failure_before_it_fails_for_good() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        // Nothing before a failed: the broker's refusal stands; b, sent
        // behind it, is now behind a failure and goes again renumbered.
        assert_eq!(order.answered(a, "a", OUT_OF_ORDER, now, false), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, now, false), Verdict::Retry);
        let due = now + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, due), [("b", Some(seq(7, 0)))]);
    }

    #[test]
    fn out_of_order_behind_a_batch_still_in_flight_goes_again_after_it() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        // b's answer comes first (a's resend on a new connection is slow).
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, now, false), Verdict::Retry);
        assert_eq!(order.answered(a, "a", Answer::Written, now, false), Verdict::Deliver("a"));
        let due = now + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, due), [("b", None)]);
    }

    #[test]
    fn retries_are_bounded_and_backoff_doubles() {
        let mut order = order(2);
        let mut now = Instant::now();
        let a = send(&mut order, now, 1);
        for attempt in 1..=2u32 {
            assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Retry);
            let due = now + Duration::from_millis(BACKOFF_MS << attempt);
            assert_eq!(order.next(now), Next::HoldUntil(due));
            now = due;
            assert_eq!(resends(&mut order, now), [("a", None)]);
        }
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Deliver("a"));
    }

    #[test]
    fn a_refusal_that_is_not_retriable_is_not_retried() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 1);
        assert_eq!(order.answered(a, "a", TOO_LARGE, now, false), Verdict::Deliver("a"));
        let busy = Answer::Refused { code: ErrorCode::Busy, retriable: true };
        let b = send(&mut order, now, 1);
        assert_eq!(order.answered(b, "b", busy, now, false), Verdict::Retry);
    }

    #[test]
    fn a_closed_producer_retries_nothing() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 1);
        let b = send(&mut order, now, 1);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, true), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", OUT_OF_ORDER, now, true), Verdict::Deliver("b"));
    }

    const NOT_LEADER: Answer = Answer::NotLeader { expired: false };
    const NOT_LEADER_EXPIRED: Answer = Answer::NotLeader { expired: true };

    #[test]
    fn not_leader_answers_resend_in_order_keeping_their_numbers_and_their_retries() {
        // No retries at all: a leader election still does not fail them.
        let mut order = order(0);
        let t0 = Instant::now();
        let a = send(&mut order, t0, 2);
        let b = send(&mut order, t0, 3);
        let c = send(&mut order, t0, 1);
        // The old leader refuses all three; b's answer comes first.
        assert_eq!(order.answered(b, "b", NOT_LEADER, t0, false), Verdict::Retry);
        assert_eq!(order.next(t0), Next::Hold, "nothing new before every answer is in");
        assert_eq!(order.answered(a, "a", NOT_LEADER, t0, false), Verdict::Retry);
        assert_eq!(order.answered(c, "c", NOT_LEADER, t0, false), Verdict::Retry);
        // One backoff, not doubled.
        let due = t0 + Duration::from_millis(BACKOFF_MS);
        assert_eq!(order.next(t0), Next::HoldUntil(due));
        // Same numbers, same order: the new leader sees them as if first sent.
        assert_eq!(resends(&mut order, due), [("a", None), ("b", None), ("c", None)]);
        // Moved again: still no retry used up.
        for (number, batch) in [(a, "a"), (b, "b"), (c, "c")] {
            assert_eq!(order.answered(number, batch, NOT_LEADER, due, false), Verdict::Retry);
        }
        let later = due + Duration::from_millis(BACKOFF_MS);
        assert_eq!(resends(&mut order, later), [("a", None), ("b", None), ("c", None)]);
        for (number, batch) in [(a, "a"), (b, "b"), (c, "c")] {
            let written = order.answered(number, batch, Answer::Written, later, false);
            assert_eq!(written, Verdict::Deliver(batch));
        }
        assert_eq!(order.next(later), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(7, 6));
    }

    #[test]
    fn a_not_leader_batch_past_its_delivery_timeout_fails_and_the_next_take_its_numbers() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        assert_eq!(order.answered(a, "a", NOT_LEADER_EXPIRED, now, false), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", NOT_LEADER, now, false), Verdict::Retry);
        let due = now + Duration::from_millis(BACKOFF_MS);
        // a was never written: b takes over its numbers.
        assert_eq!(resends(&mut order, due), [("b", Some(seq(7, 0)))]);
    }

    #[test]
    fn a_batch_that_timed_out_and_then_met_a_new_leader_may_have_been_written() {
        let mut order = order(5);
        let t0 = Instant::now();
        let a = send(&mut order, t0, 2);
        let b = send(&mut order, t0, 3);
        // The leader wrote a, then died before answering; b too.
        assert_eq!(order.answered(a, "a", TIMEOUT, t0, false), Verdict::Retry);
        assert_eq!(order.answered(b, "b", TIMEOUT, t0, false), Verdict::Retry);
        let t1 = t0 + Duration::from_millis(2 * BACKOFF_MS);
        assert_eq!(resends(&mut order, t1), [("a", None), ("b", None)]);
        // A broker that no longer leads refuses the resends; a waited too
        // long. Renumbering b from a's numbers could make b look like the
        // duplicate of a written a: a new epoch instead.
        assert_eq!(order.answered(a, "a", NOT_LEADER_EXPIRED, t1, false), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", NOT_LEADER, t1, false), Verdict::Retry);
        let t2 = t1 + Duration::from_millis(BACKOFF_MS);
        assert_eq!(resends(&mut order, t2), [("b", Some(seq(8, 0)))]);
    }

    #[test]
    fn batches_waiting_for_a_leader_are_given_up_oldest_first_once_nothing_is_in_flight() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        let c = send(&mut order, now, 1);
        assert_eq!(order.answered(a, "a", NOT_LEADER, now, false), Verdict::Retry);
        assert_eq!(order.answered(b, "b", NOT_LEADER, now, false), Verdict::Retry);
        let expired = |batch: &&str| *batch != "c";
        assert_eq!(order.give_up_waiting(expired), Vec::<&str>::new(), "c is still out");
        assert_eq!(order.answered(c, "c", NOT_LEADER, now, false), Verdict::Retry);
        assert_eq!(order.give_up_waiting(expired), ["a", "b"]);
        // Never written: c takes over a's numbers, and new batches follow.
        let due = now + Duration::from_millis(BACKOFF_MS);
        assert_eq!(resends(&mut order, due), [("c", Some(seq(7, 0)))]);
        assert_eq!(order.next(due), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(7, 1));
    }

    #[test]
    fn a_batch_given_up_waiting_for_a_leader_after_a_timeout_moves_to_the_next_epoch() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Retry);
        assert_eq!(order.give_up_waiting(|_| true), ["a"]);
        assert!(!order.has_resends());
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(1).1, seq(8, 0));
    }

    #[test]
    fn a_closed_producer_does_not_wait_for_a_leader() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 1);
        assert_eq!(order.answered(a, "a", NOT_LEADER, now, true), Verdict::Deliver("a"));
    }

    #[test]
    fn a_batch_that_could_not_be_encoded_gives_its_numbers_to_the_next() {
        let mut order = order(5);
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        order.unsent(a);
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(3), (BatchNumber(1), seq(7, 0)));
    }

    #[test]
    fn without_idempotence_sequences_and_epochs_stay_put() {
        let mut order: SendOrder<&'static str> = SendOrder::new(SendOrderConfig {
            idempotent: false,
            producer_epoch: 0,
            in_flight_max: 2,
            retries: 0,
            retry_backoff_ms: BACKOFF_MS,
        });
        let now = Instant::now();
        let a = send(&mut order, now, 2);
        let b = send(&mut order, now, 3);
        assert_eq!(order.answered(a, "a", TIMEOUT, now, false), Verdict::Deliver("a"));
        assert_eq!(order.answered(b, "b", TOO_LARGE, now, false), Verdict::Deliver("b"));
        assert_eq!(order.next(now), Next::SendNew);
        assert_eq!(order.send_new(1), (BatchNumber(2), seq(0, 0)));
    }
}
