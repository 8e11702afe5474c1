//! The producer: batches records per partition and sends them.
//!
//! `send` picks the partition (explicit; murmur2 of the key as Kafka's
//! default partitioner does; sticky for keyless records, moving on with
//! each new batch), appends the record to that partition's queue and
//! returns a future of its `(partition, offset)`. A sender thread turns
//! queues into batches when they reach `batch_bytes` or have waited
//! `linger_ms` (or on `flush`), keeps one request in flight per partition
//! (so order is kept across retries), and retries retriable errors with a
//! backoff. Buffered bytes are bounded: `send` waits for room up to
//! `max_block_ms`, then fails.

use super::murmur2::partition_for_key;
use super::{connect_any, ClientError, Connection};
use crate::client::connection::{decode_answer, Waiter};
use crate::protocol::*;
use futures::channel::oneshot;
use mamba_engine::{Batch, BatchBuilder, NewRecord};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When the broker answers a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Fire and forget: no answer, offsets unknown.
    None,
    /// After the leader appended the batch.
    Leader,
    /// Once durable under the topic's policy (on one node: its fsync).
    All,
}

impl Acks {
    fn wire(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    pub linger_ms: u64,
    pub batch_bytes: usize,
    pub buffer_bytes_max: usize,
    pub max_block_ms: u64,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    /// With `Acks::All`: the broker drops retried batches it already wrote
    /// (producer id + per-partition sequence numbers), so a retry never
    /// duplicates.
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            acks: Acks::All,
            linger_ms: 5,
            batch_bytes: 256 * 1024,
            buffer_bytes_max: 64 << 20,
            max_block_ms: 60_000,
            retries: 5,
            retry_backoff_ms: 100,
            idempotence: true,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub partition: Option<u32>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Defaults to now.
    pub timestamp_ms: Option<i64>,
}

/// Where a record landed. `offset` is `None` with `Acks::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<u64>,
}

/// Who learns how a record's send ended.
enum Completion {
    Future(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    /// Runs on the client's reader (or sender) thread: keep it short.
    Callback(Box<dyn FnOnce(Result<RecordMetadata, ClientError>) + Send>),
}

struct Queued {
    record: NewRecord,
    size_bytes: usize,
    done: Completion,
}

/// A batch sent (or to be re-sent) with the records it answers for.
struct InFlight {
    batch: Arc<Batch>,
    completions: Vec<Completion>,
    size_bytes: usize,
    attempts: u32,
}

impl InFlight {
    fn base_sequence(&self) -> u32 {
        self.batch.header().base_sequence
    }
}

#[derive(Default)]
struct PartitionQueue {
    records: VecDeque<Queued>,
    bytes: usize,
    oldest: Option<Instant>,
    in_flight: bool,
    /// A failed batch waiting for its retry, sent before anything else.
    retry: Option<(Instant, InFlight)>,
    /// Sequence number of the next record (idempotence).
    next_sequence: u32,
}

#[derive(Default)]
struct State {
    partitions: HashMap<String, u32>,
    sticky: HashMap<String, u32>,
    queues: HashMap<(String, u32), PartitionQueue>,
    buffered_bytes: usize,
    flushing: usize,
    closed: bool,
}

struct Inner {
    brokers: String,
    /// Replaced by a new connection when the old one dies (a broker
    /// restart): retried batches go out on the new one.
    conn: Mutex<Arc<Connection>>,
    config: ProducerConfig,
    /// Producer id and epoch, when idempotent.
    identity: Option<(u64, u16)>,
    state: Mutex<State>,
    changed: Condvar,
}

/// A cloneable, thread-safe producer.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// The live connection, reconnecting if the last one died.
fn connection(inner: &Inner) -> Result<Arc<Connection>, ClientError> {
    let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
    if !conn.is_alive() {
        *conn = Arc::new(connect_any(&inner.brokers)?);
    }
    Ok(conn.clone())
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn complete(done: Completion, result: Result<RecordMetadata, ClientError>) {
    match done {
        Completion::Future(tx) => {
            if tx.send(result).is_err() {
                tracing::trace!("a send's caller stopped waiting");
            }
        }
        Completion::Callback(f) => f(result),
    }
}

impl Producer {
    pub fn connect(brokers: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        if config.batch_bytes == 0 || config.buffer_bytes_max < config.batch_bytes {
            return Err(ClientError::InvalidArgument(
                "batch_bytes must be positive and at most buffer_bytes_max".into(),
            ));
        }
        let conn = connect_any(brokers)?;
        let identity = if config.idempotence && config.acks == Acks::All {
            let (answer, _) = futures::executor::block_on(
                conn.call::<_, InitProducerIdResponse>(&InitProducerIdRequest {}, &[]),
            )?;
            if let Some(e) = ClientError::from_code(answer.error_code, "init producer id".into()) {
                return Err(e);
            }
            Some((answer.producer_id, answer.producer_epoch))
        } else {
            None
        };
        let inner = Arc::new(Inner {
            brokers: brokers.to_string(),
            conn: Mutex::new(Arc::new(conn)),
            config,
            identity,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let sender = inner.clone();
        std::thread::Builder::new()
            .name("mamba-producer".into())
            .spawn(move || run_sender(&sender))
            .map_err(|e| ClientError::Io { addr: brokers.to_string(), reason: e.to_string() })?;
        Ok(Producer { inner })
    }

    fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(&n) = lock(&self.inner).partitions.get(topic) {
            return Ok(n);
        }
        let t = futures::executor::block_on(connection(&self.inner)?.topic_metadata(topic))?;
        let n = t.partitions.len() as u32;
        lock(&self.inner).partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    /// Queues `record`; the future resolves when the broker answers.
    pub fn send(
        &self,
        record: ProducerRecord,
    ) -> Result<impl Future<Output = Result<RecordMetadata, ClientError>>, ClientError> {
        let (done, result) = oneshot::channel();
        self.enqueue(record, Completion::Future(done))?;
        Ok(async move { result.await.map_err(|_| ClientError::Closed)? })
    }

    /// Queues `record`; `callback` runs (on a client thread) when the broker
    /// answers. Keep it short: it delays other answers.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        self.enqueue(record, Completion::Callback(Box::new(callback)))
    }

    fn enqueue(&self, record: ProducerRecord, done: Completion) -> Result<(), ClientError> {
        let partitions = self.partition_count(&record.topic)?;
        let size_bytes = record.value.len()
            + record.key.as_ref().map_or(0, Vec::len)
            + record.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + 32;
        let config = &self.inner.config;
        let mut state = lock(&self.inner);
        let started = Instant::now();
        while state.buffered_bytes + size_bytes > config.buffer_bytes_max
            && state.buffered_bytes > 0
        {
            if state.closed {
                return Err(ClientError::Closed);
            }
            let waited = started.elapsed();
            let limit = Duration::from_millis(config.max_block_ms);
            if waited >= limit {
                return Err(ClientError::BufferFull {
                    buffered_bytes: state.buffered_bytes,
                    waited_ms: limit.as_millis() as u64,
                });
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, limit - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if state.closed {
            return Err(ClientError::Closed);
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} has no partition {p} (it has {partitions})",
                    record.topic
                )))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => *state
                .sticky
                .entry(record.topic.clone())
                .or_insert_with(|| fastrand_u32(partitions)),
        };
        let queue = state.queues.entry((record.topic.clone(), partition)).or_default();
        queue.oldest.get_or_insert_with(Instant::now);
        queue.bytes += size_bytes;
        queue.records.push_back(Queued {
            record: NewRecord {
                key: record.key,
                value: record.value,
                headers: record.headers,
                timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            },
            size_bytes,
            done,
        });
        state.buffered_bytes += size_bytes;
        drop(state);
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Sends everything queued now and waits until all of it is answered.
    pub fn flush(&self) {
        let mut state = lock(&self.inner);
        state.flushing += 1;
        self.inner.changed.notify_all();
        while state.buffered_bytes > 0 && !state.closed {
            state = self.inner.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.flushing -= 1;
    }

    /// Flushes and stops the sender thread.
    pub fn close(&self) {
        self.flush();
        lock(&self.inner).closed = true;
        self.inner.changed.notify_all();
    }
}

/// A start partition for keyless records, spread over producers.
fn fastrand_u32(below: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos % below
}

/// Takes what is ready to send: a due retry, or a batch of queued records.
fn take_ready(inner: &Inner, state: &mut State, now: Instant) -> Vec<((String, u32), InFlight)> {
    let config = &inner.config;
    let linger = Duration::from_millis(config.linger_ms);
    let flushing = state.flushing > 0 || state.closed;
    let mut ready = Vec::new();
    let mut rotate = Vec::new();
    for (key, queue) in state.queues.iter_mut() {
        if queue.in_flight {
            continue;
        }
        if let Some((at, _)) = &queue.retry {
            if *at <= now {
                if let Some((_, batch)) = queue.retry.take() {
                    queue.in_flight = true;
                    ready.push((key.clone(), batch));
                }
            }
            continue;
        }
        let due = queue.bytes >= config.batch_bytes
            || flushing
            || queue.oldest.is_some_and(|t| now - t >= linger);
        if queue.records.is_empty() || !due {
            continue;
        }
        let mut builder = match inner.identity {
            Some((id, epoch)) => BatchBuilder::new().producer(id, epoch, queue.next_sequence),
            None => BatchBuilder::new(),
        };
        let mut completions = Vec::new();
        let mut size_bytes = 0;
        while let Some(q) = queue.records.front() {
            if !completions.is_empty() && size_bytes + q.size_bytes > config.batch_bytes {
                break;
            }
            let Some(q) = queue.records.pop_front() else { break };
            size_bytes += q.size_bytes;
            builder.push(q.record);
            completions.push(q.done);
        }
        queue.bytes -= size_bytes;
        queue.oldest = if queue.records.is_empty() { None } else { Some(now) };
        match builder.build() {
            Ok(batch) => {
                if inner.identity.is_some() {
                    queue.next_sequence =
                        queue.next_sequence.wrapping_add(batch.header().record_count);
                }
                queue.in_flight = true;
                ready.push((
                    key.clone(),
                    InFlight { batch: Arc::new(batch), completions, size_bytes, attempts: 0 },
                ));
                rotate.push(key.0.clone());
            }
            Err(e) => {
                state.buffered_bytes -= size_bytes;
                for done in completions {
                    complete(done, Err(ClientError::Batch(e.clone())));
                }
            }
        }
    }
    // Keyless records stick to a partition until it has a batch going.
    for topic in rotate {
        let n = state.partitions.get(&topic).copied().unwrap_or(1);
        if let Some(p) = state.sticky.get_mut(&topic) {
            *p = (*p + 1) % n;
        }
    }
    ready
}

fn run_sender(inner: &Arc<Inner>) {
    loop {
        let ready = {
            let mut state = lock(inner);
            loop {
                if state.closed && state.buffered_bytes == 0 {
                    return;
                }
                let now = Instant::now();
                let ready = take_ready(inner, &mut state, now);
                if !ready.is_empty() {
                    break ready;
                }
                // Sleep until something may be due: a linger or a retry.
                let wait = Duration::from_millis(inner.config.linger_ms.clamp(1, 50));
                state =
                    inner.changed.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
        };
        for (key, flight) in ready {
            send_batch(inner, key, flight);
        }
    }
}

fn send_batch(inner: &Arc<Inner>, key: (String, u32), flight: InFlight) {
    let request = ProduceRequest {
        acks: inner.config.acks.wire(),
        timeout_ms: 30_000,
        partitions: vec![ProducePartition {
            topic: key.0.clone(),
            partition: key.1,
            batch: Slice { offset: 0, len: flight.batch.as_bytes().len() as u32 },
        }],
    };
    let batch = flight.batch.clone();
    let payload = [batch.as_bytes()];
    if inner.config.acks == Acks::None {
        let result = connection(inner).and_then(|conn| conn.send_with(&request, &payload, None));
        finish(inner, &key, flight, result.map(|()| None));
        return;
    }
    let callback_inner = inner.clone();
    let callback_key = key.clone();
    let slot: Arc<Mutex<Option<InFlight>>> = Arc::new(Mutex::new(Some(flight)));
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
            finish(&callback_inner, &callback_key, flight, outcome);
        }
    }));
    if let Err(e) =
        connection(inner).and_then(|conn| conn.send_with(&request, &payload, Some(waiter)))
    {
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(flight) = taken {
            finish(inner, &key, flight, Err(e));
        }
    }
}

/// Resolves a batch's records, or schedules its retry.
fn finish(
    inner: &Inner,
    key: &(String, u32),
    mut flight: InFlight,
    outcome: Result<Option<u64>, ClientError>,
) {
    let mut state = lock(inner);
    let retry = match &outcome {
        Err(e) => e.is_retriable() && flight.attempts < inner.config.retries && !state.closed,
        Ok(_) => false,
    };
    let queue = state.queues.entry(key.clone()).or_default();
    queue.in_flight = false;
    if retry {
        flight.attempts += 1;
        let backoff =
            Duration::from_millis(inner.config.retry_backoff_ms << flight.attempts.min(6));
        queue.retry = Some((Instant::now() + backoff, flight));
    } else {
        if outcome.is_err() && inner.identity.is_some() {
            // The batch was not written (one batch in flight per partition,
            // so nothing after it was built): its sequence numbers go to
            // the next batch.
            queue.next_sequence = flight.base_sequence();
        }
        state.buffered_bytes -= flight.size_bytes;
        for (i, done) in flight.completions.into_iter().enumerate() {
            let result = match &outcome {
                Ok(base) => {
                    Ok(RecordMetadata { partition: key.1, offset: base.map(|b| b + i as u64) })
                }
                Err(e) => Err(e.clone()),
            };
            complete(done, result);
        }
    }
    drop(state);
    inner.changed.notify_all();
}
