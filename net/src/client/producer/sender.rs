//! The sender thread: takes the batches each partition's [`SendOrder`]
//! lets go, sends each to its partition's leader (the producer's
//! [`Router`] knows which broker that is), and steps the order with their
//! answers, which arrive on connection reader threads.
//!
//! A round takes every partition's ready batches, then sends them broker
//! by broker, each broker's on its one connection. Each batch is a request
//! of its own: the broker adopts a one-batch payload as the batch without
//! a copy (`server/handlers/produce.rs`), and a connection carries many
//! requests in flight anyway.
//!
//! A partition with no leader now (offline, an election), or whose last
//! send found the view wrong (`not leader`, a leader that could not be
//! reached) until the metadata refresh that follows, sends nothing: its
//! batches wait, and fail (`NoLeader`) once they waited past the delivery
//! timeout. The router's refresh hook wakes the thread when a refresh
//! ends.
//!
//! Encoding a batch to the end (record array, header, CRC) happens here,
//! outside the lock, so callers go on filling other batches meanwhile.

use super::super::connection::{decode_answer, Connection, Waiter};
use super::super::router::{refresh_reason, unroutable, Reroute, Router, Routes};
use super::super::{ClientError, Route};
use super::accumulator::{
    Accumulator, BatchRecords, OpenBatch, SealedBatch, State, Take, TakeWhen, TopicQueues,
};
use super::delivery::{deliver, DeliveryHandler};
use super::send_order::{Answer, BatchNumber, Next, Resend, Sequence, Verdict};
use crate::protocol::{ErrorCode, ProducePartition, ProduceRequest, ProduceResponse, Slice};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Validated by `Producer::connect`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SenderConfig {
    /// The wire value: 0 (no answer), 1 (leader) or -1 (all).
    pub acks: i8,
    pub request_timeout_ms: u64,
    /// How long a batch may wait for its partition's leader, from when it
    /// opened.
    pub delivery_timeout: Duration,
}

/// What a producer's callers and its sender thread share. Lifecycle: made
/// by `Producer::connect`, which starts the sender; the sender returns once
/// the accumulator is closed and empty.
pub(super) struct Shared {
    /// The partitions' leaders and the connections to them, each replaced
    /// when it dies (a broker restart, a timeout): retried batches go out
    /// on the new one.
    pub router: Router,
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

/// What a round takes from the partitions.
#[derive(Default)]
struct Taken {
    /// Batches to send, with their leader's node id.
    ready: Vec<(TopicPartition, u32, Ready)>,
    /// Batches given up before they could go, and why.
    failed: Vec<(TopicPartition, BatchRecords, ClientError)>,
    /// When to look again if nothing happens before.
    next_due: Option<Instant>,
}

impl Taken {
    fn due_at(&mut self, at: Instant) {
        self.next_due = Some(self.next_due.map_or(at, |n| n.min(at)));
    }
}

/// Where a partition's batches go this round.
enum Destination {
    Leader(u32),
    /// Nowhere yet: no leader, or a refresh is awaited.
    Wait,
    /// The cluster has no such partition: its batches fail.
    Gone(ClientError),
}

/// Starts the sender thread, and has the router wake it after every
/// metadata refresh (partitions may have leaders again).
pub(super) fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
    let woken = Arc::downgrade(shared);
    shared.router.set_refresh_hook(Box::new(move || {
        if let Some(shared) = woken.upgrade() {
            shared.accumulator.notify();
        }
    }));
    let sender = shared.clone();
    std::thread::Builder::new().name("mamba-producer".into()).spawn(move || run(&sender))?;
    Ok(())
}

fn run(shared: &Arc<Shared>) {
    let accumulator = &shared.accumulator;
    loop {
        let (routes, taken) = {
            let mut state = accumulator.lock();
            loop {
                if state.finished() {
                    return;
                }
                let now = Instant::now();
                let when =
                    TakeWhen { now, linger: accumulator.linger(), flushing: state.flushing() };
                let routes = shared.router.routes();
                let taken = take_ready(shared, &routes, &mut state, when);
                if !taken.ready.is_empty() || !taken.failed.is_empty() {
                    break (routes, taken);
                }
                // Sleep until a linger, a retry or an expiry is due, or a
                // send or a refresh wakes us.
                let wait = taken
                    .next_due
                    .map_or(Duration::from_millis(50), |at| at.saturating_duration_since(now));
                state = accumulator.wait(state, wait);
            }
        };
        for ((topic, partition), records, error) in taken.failed {
            deliver(shared.delivery.as_ref(), (&topic, partition), records.completions, Err(error));
            accumulator.release(records.size_bytes);
        }
        // Encoding ends (record array, header, CRC) outside the lock.
        let mut by_leader: BTreeMap<u32, Vec<(TopicPartition, BatchNumber, SealedBatch)>> =
            BTreeMap::new();
        for (key, node_id, ready) in taken.ready {
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
            by_leader.entry(node_id).or_default().push((key, number, sealed));
        }
        for (node_id, batches) in by_leader {
            let connection = match routes.view.broker_address(node_id) {
                Some(addr) => shared.router.pool().connection(node_id, addr),
                None => unreachable!("a route to broker {node_id}, which the view does not list"),
            };
            match connection {
                Ok(conn) => {
                    for (key, number, sealed) in batches {
                        send_batch(shared, &conn, key, number, sealed);
                    }
                }
                Err(e) => {
                    for (key, number, sealed) in batches {
                        finish(shared, &key, (number, sealed), Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Takes what is ready to send (due resends, closed batches, open ones
/// that lingered long enough) with its leader, and the batches that
/// waited too long for one; says when to look again otherwise.
fn take_ready(shared: &Shared, routes: &Routes, state: &mut State, when: TakeWhen) -> Taken {
    let mut taken = Taken::default();
    for (name, topic) in state.topics_mut() {
        for p in 0..topic.partition_count() {
            if !topic.has_work(p) {
                continue;
            }
            let key = || (name.clone(), p);
            match destination(&shared.router, routes, topic, name, p) {
                Destination::Leader(node_id) => {
                    take_for_leader(topic, p, node_id, key, when, &mut taken)
                }
                Destination::Wait => {
                    let timeout = shared.config.delivery_timeout;
                    // Batches that opened by then have waited long enough.
                    if let Some(opened_by) = when.now.checked_sub(timeout) {
                        let error = ClientError::NoLeader { topic: name.clone(), partition: p };
                        give_up(topic, (name, p), opened_by, &error, &mut taken);
                    }
                    let resend = topic.order_mut(p).first_resend().map(|b| b.opened);
                    let oldest = [resend, topic.oldest_unsent(p)].into_iter().flatten().min();
                    if let Some(oldest) = oldest {
                        taken.due_at(oldest + timeout);
                    }
                }
                Destination::Gone(error) => give_up(topic, (name, p), when.now, &error, &mut taken),
            }
            if let Some(at) = topic.avoid_if_stalled(p, when.now, when.linger) {
                taken.due_at(at);
            }
        }
    }
    taken
}

/// Where `partition`'s batches go now; a partition that waits asks for
/// the refresh it waits for.
fn destination(
    router: &Router,
    routes: &Routes,
    topic: &mut TopicQueues,
    name: &str,
    partition: u32,
) -> Destination {
    let queue = topic.queue_mut(partition);
    if let Some(ticket) = queue.reroute {
        if !routes.served(ticket) {
            return Destination::Wait;
        }
        queue.reroute = None;
    }
    let view = &routes.view;
    match view.route(name, partition) {
        Route::Leader { node_id, .. } => Destination::Leader(node_id),
        Route::NoLeader => {
            queue.reroute = Some(router.request_refresh());
            Destination::Wait
        }
        Route::NotAsked => {
            queue.reroute = Some(router.watch(name));
            Destination::Wait
        }
        route @ Route::Unknown => Destination::Gone(unroutable(view, name, partition, route)),
    }
}

/// Takes `partition`'s batches its order lets go now, for `node_id`.
fn take_for_leader(
    topic: &mut TopicQueues,
    partition: u32,
    node_id: u32,
    key: impl Fn() -> TopicPartition,
    when: TakeWhen,
    taken: &mut Taken,
) {
    loop {
        match topic.order_mut(partition).next(when.now) {
            Next::Hold => break,
            Next::HoldUntil(at) => {
                taken.due_at(at);
                break;
            }
            Next::Resend(resends) => {
                taken.ready.extend(resends.into_iter().map(|r| (key(), node_id, Ready::Resend(r))));
            }
            Next::SendNew => match topic.take_batch(partition, when) {
                Take::Batch(batch) => {
                    let (number, sequence) =
                        topic.order_mut(partition).send_new(batch.record_count());
                    taken.ready.push((key(), node_id, Ready::New { batch, number, sequence }));
                }
                Take::DueAt(at) => {
                    taken.due_at(at);
                    break;
                }
                Take::Nothing => break,
            },
        }
    }
}

/// Gives up `partition`'s batches that opened by `opened_by` and cannot be
/// sent, failing them with `error`: those waiting to go again (once
/// nothing is in flight: see `SendOrder::give_up_waiting`), then those not
/// sent yet.
fn give_up(
    topic: &mut TopicQueues,
    (name, partition): (&str, u32),
    opened_by: Instant,
    error: &ClientError,
    taken: &mut Taken,
) {
    let resends = topic.order_mut(partition).give_up_waiting(|b| b.opened <= opened_by);
    let unsent = topic.take_unsent_opened_by(partition, opened_by);
    let records = resends
        .into_iter()
        .map(|b| b.records)
        .chain(unsent.into_iter().map(OpenBatch::into_records));
    for records in records {
        taken.failed.push(((name.to_string(), partition), records, error.clone()));
    }
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

fn send_batch(
    shared: &Arc<Shared>,
    conn: &Connection,
    key: TopicPartition,
    number: BatchNumber,
    sealed: SealedBatch,
) {
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
        let result = conn.send_with(&request, &payload, None);
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
    if let Err(e) = conn.send_with(&request, &payload, Some(waiter)) {
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(flight) = taken {
            finish(shared, &key, flight, Err(e));
        }
    }
}

/// Steps the partition's order with a batch's answer: its records are
/// told, or it waits for a resend. An answer that shows the view wrong
/// (`not leader`, an unknown partition, a leader that failed) asks for a
/// metadata refresh, and the partition sends nothing until it ends.
fn finish(
    shared: &Shared,
    key: &TopicPartition,
    (number, sealed): (BatchNumber, SealedBatch),
    outcome: Result<Option<u64>, ClientError>,
) {
    let now = Instant::now();
    let answer = match &outcome {
        Ok(_) => Answer::Written,
        // Not written, for sure: the leader moved, or it could not even be
        // reached (a dead leader, before the metadata names the next one).
        // A wait for the leader within the delivery timeout, as in Kafka.
        Err(
            ClientError::Broker { code: ErrorCode::NotLeader, .. } | ClientError::Connect { .. },
        ) => Answer::NotLeader { expired: sealed.opened + shared.config.delivery_timeout <= now },
        Err(e @ ClientError::Broker { code, .. }) => {
            Answer::Refused { code: *code, retriable: e.is_retriable() }
        }
        Err(e) => Answer::Unknown { retriable: e.is_retriable() },
    };
    let reroute = outcome.as_ref().err().is_some_and(|e| {
        refresh_reason(e) != Reroute::No || matches!(e, ClientError::Timeout { .. })
    });
    let ticket = reroute.then(|| shared.router.request_refresh());
    let mut state = shared.accumulator.lock();
    let closed = state.closed();
    let Some(queue) = state.queue_mut(&key.0, key.1) else {
        unreachable!("a batch in flight for {key:?}, which has no queue")
    };
    if let Some(ticket) = ticket {
        queue.reroute = Some(queue.reroute.map_or(ticket, |t| t.max(ticket)));
    }
    match queue.order.answered(number, sealed, answer, now, closed) {
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
