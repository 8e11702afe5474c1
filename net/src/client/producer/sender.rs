//! The sender thread: takes the batches each partition's [`SendOrder`]
//! lets go, sends them through the producer's [`Link`], and steps the order
//! with their answers, which arrive on connection reader threads.
//!
//! Encoding a batch to the end (record array, header, CRC) happens here,
//! outside the lock, so callers go on filling other batches meanwhile.

use super::super::connection::{decode_answer, Waiter};
use super::super::{ClientError, Link};
use super::accumulator::{
    Accumulator, BatchRecords, OpenBatch, SealedBatch, State, Take, TakeWhen,
};
use super::delivery::{deliver, DeliveryHandler};
use super::send_order::{Answer, BatchNumber, Next, Resend, Sequence, Verdict};
use crate::protocol::{ProducePartition, ProduceRequest, ProduceResponse, Slice};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Validated by `Producer::connect`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SenderConfig {
    /// The wire value: 0 (no answer), 1 (leader) or -1 (all).
    pub acks: i8,
    pub request_timeout_ms: u64,
}

/// What a producer's callers and its sender thread share. Lifecycle: made
/// by `Producer::connect`, which starts the sender; the sender returns once
/// the accumulator is closed and empty.
pub(super) struct Shared {
    /// Replaces its connection when the old one dies (a broker restart, a
    /// timeout): retried batches go out on the new one.
    pub link: Link,
    pub config: SenderConfig,
    /// Producer id and epoch, when idempotent.
    pub identity: Option<(u64, u16)>,
    pub delivery: Option<DeliveryHandler>,
    pub accumulator: Accumulator,
}

/// A topic name and a partition of it.
type TopicPartition = (String, u32);

/// A batch taken for sending, not yet encoded to the end.
enum Ready {
    Resend(Resend<SealedBatch>),
    New { batch: OpenBatch, number: BatchNumber, sequence: Sequence },
}

/// Starts the sender thread.
pub(super) fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
    let sender = shared.clone();
    std::thread::Builder::new().name("mamba-producer".into()).spawn(move || run(&sender))?;
    Ok(())
}

fn run(shared: &Arc<Shared>) {
    let accumulator = &shared.accumulator;
    loop {
        let ready = {
            let mut state = accumulator.lock();
            loop {
                if state.finished() {
                    return;
                }
                let now = Instant::now();
                let when =
                    TakeWhen { now, linger: accumulator.linger(), flushing: state.flushing() };
                let (ready, next_due) = take_ready(&mut state, when);
                if !ready.is_empty() {
                    break ready;
                }
                // Sleep until a linger or a retry is due, or a send wakes us.
                let wait = next_due.map_or(Duration::from_millis(50), |at| at - now);
                state = accumulator.wait(state, wait);
            }
        };
        // Encoding ends (record array, header, CRC) outside the lock.
        for (key, ready) in ready {
            let (number, sealed) = match ready {
                Ready::Resend(Resend { number, mut batch, renumbered }) => {
                    if let Some(s) = renumbered {
                        Arc::make_mut(&mut batch.batch)
                            .set_producer_sequence(s.epoch, s.base_sequence);
                    }
                    (number, batch)
                }
                Ready::New { batch, number, sequence } => {
                    let producer =
                        shared.identity.map(|(id, _)| (id, sequence.epoch, sequence.base_sequence));
                    match batch.seal(producer) {
                        Ok(sealed) => (number, sealed),
                        Err((e, records)) => {
                            fail_unsent(shared, &key, number, records, ClientError::Batch(e));
                            continue;
                        }
                    }
                }
            };
            send_batch(shared, key, number, sealed);
        }
    }
}

/// Takes what is ready to send (due resends, closed batches, open ones
/// that lingered long enough), and when to look again otherwise.
fn take_ready(
    state: &mut State,
    when: TakeWhen,
) -> (Vec<(TopicPartition, Ready)>, Option<Instant>) {
    let mut ready = Vec::new();
    let mut next_due: Option<Instant> = None;
    let mut due_at = |at: Instant| next_due = Some(next_due.map_or(at, |n| n.min(at)));
    for (name, topic) in state.topics_mut() {
        for p in 0..topic.partition_count() {
            let key = || (name.clone(), p);
            loop {
                match topic.order_mut(p).next(when.now) {
                    Next::Hold => break,
                    Next::HoldUntil(at) => {
                        due_at(at);
                        break;
                    }
                    Next::Resend(resends) => {
                        ready.extend(resends.into_iter().map(|r| (key(), Ready::Resend(r))));
                    }
                    Next::SendNew => match topic.take_batch(p, when) {
                        Take::Batch(batch) => {
                            let (number, sequence) =
                                topic.order_mut(p).send_new(batch.record_count());
                            ready.push((key(), Ready::New { batch, number, sequence }));
                        }
                        Take::DueAt(at) => {
                            due_at(at);
                            break;
                        }
                        Take::Nothing => break,
                    },
                }
            }
        }
    }
    (ready, next_due)
}

/// A batch that could not be encoded: its records fail, its sequence
/// numbers go to the batches after it.
fn fail_unsent(
    shared: &Shared,
    key: &TopicPartition,
    number: BatchNumber,
    records: BatchRecords,
    error: ClientError,
) {
    let mut state = shared.accumulator.lock();
    if let Some(queue) = state.queue_mut(&key.0, key.1) {
        queue.order.unsent(number);
    }
    drop(state);
    deliver(shared.delivery.as_ref(), (&key.0, key.1), records.completions, Err(error));
    shared.accumulator.release(records.size_bytes);
}

fn send_batch(shared: &Arc<Shared>, key: TopicPartition, number: BatchNumber, sealed: SealedBatch) {
    let request = ProduceRequest {
        acks: shared.config.acks,
        timeout_ms: u32::try_from(shared.config.request_timeout_ms).unwrap_or(u32::MAX),
        partitions: vec![ProducePartition {
            topic: key.0.clone(),
            partition: key.1,
            batch: Slice { offset: 0, len: sealed.batch.as_bytes().len() as u32 },
        }],
    };
    let batch = sealed.batch.clone();
    let payload = [batch.as_bytes()];
    if shared.config.acks == 0 {
        // No answer comes: the batch ends once written to the socket.
        let result =
            shared.link.connection().and_then(|conn| conn.send_with(&request, &payload, None));
        finish(shared, &key, (number, sealed), result.map(|()| None));
        return;
    }
    let callback_shared = shared.clone();
    let callback_key = key.clone();
    let slot: Arc<Mutex<Option<(BatchNumber, SealedBatch)>>> =
        Arc::new(Mutex::new(Some((number, sealed))));
    let callback_slot = slot.clone();
    let waiter = Waiter::Callback(Box::new(move |result| {
        let outcome = result.and_then(|frame| {
            let answer = decode_answer::<ProduceResponse>(&frame)?;
            let p = answer
                .partitions
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Protocol("empty produce answer".into()))?;
            match ClientError::from_code(p.error_code, p.message) {
                Some(e) => Err(e),
                None => Ok(Some(p.base_offset)),
            }
        });
        let taken = callback_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(flight) = taken {
            finish(&callback_shared, &callback_key, flight, outcome);
        }
    }));
    if let Err(e) =
        shared.link.connection().and_then(|conn| conn.send_with(&request, &payload, Some(waiter)))
    {
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(flight) = taken {
            finish(shared, &key, flight, Err(e));
        }
    }
}

/// Steps the partition's order with a batch's answer: its records are
/// told, or it waits for a resend.
fn finish(
    shared: &Shared,
    key: &TopicPartition,
    (number, sealed): (BatchNumber, SealedBatch),
    outcome: Result<Option<u64>, ClientError>,
) {
    let answer = match &outcome {
        Ok(_) => Answer::Written,
        Err(e @ ClientError::Broker { code, .. }) => {
            Answer::Refused { code: *code, retriable: e.is_retriable() }
        }
        Err(e) => Answer::Unknown { retriable: e.is_retriable() },
    };
    let mut state = shared.accumulator.lock();
    let closed = state.closed();
    let Some(queue) = state.queue_mut(&key.0, key.1) else {
        unreachable!("a batch in flight for {key:?}, which has no queue")
    };
    match queue.order.answered(number, sealed, answer, Instant::now(), closed) {
        Verdict::Retry => {
            drop(state);
            shared.accumulator.notify();
        }
        Verdict::Deliver(sealed) => {
            drop(state);
            let records = sealed.records;
            deliver(shared.delivery.as_ref(), (&key.0, key.1), records.completions, outcome);
            shared.accumulator.release(records.size_bytes);
        }
    }
}
