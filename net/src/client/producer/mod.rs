//! The producer: batches records per partition and sends them.
//!
//! A send picks the partition (explicit; murmur2 of the key as Kafka's
//! default partitioner does; sticky for keyless records, moving on with
//! each new batch) and encodes the record straight into that partition's
//! open batch ([`BatchWriter`]): one copy of its bytes, no allocation. A
//! batch closes when the next record would not fit `batch_bytes`; a sender
//! thread sends closed batches, and open ones once they have waited
//! `linger_ms` (or on `flush`). It keeps one request in flight per
//! partition (so order is kept across retries) and retries retriable errors
//! with a backoff. Buffered bytes are bounded: a send waits for room up to
//! `max_block_ms`, then fails.
//!
//! How a send ends reaches the caller three ways: a future ([`Producer::send`]),
//! a callback per record ([`Producer::send_with_callback`]), or, cheapest, a
//! tag handed to the producer's [`DeliveryHandler`] once per batch
//! ([`Producer::send_tagged`], like librdkafka's delivery reports).

use super::murmur2::partition_for_key;
use super::{ClientError, Link, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::client::connection::{decode_answer, Waiter};
use crate::protocol::*;
use futures::channel::oneshot;
use mamba_engine::batch_writer::{BatchWriter, RecordRef};
use mamba_engine::limits::BATCH_BYTES_MAX;
use mamba_engine::producer_state::RECENT_BATCHES_MAX;
use mamba_engine::Batch;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    /// Requests in flight per partition (Kafka's
    /// `max.in.flight.requests.per.connection`): more overlaps sending,
    /// writing and syncing. At most 5 with idempotence (what the broker
    /// remembers per producer to recognise retries).
    pub max_in_flight: usize,
    /// With `Acks::All`: the broker drops retried batches it already wrote
    /// (producer id + per-partition sequence numbers), so a retry never
    /// duplicates.
    pub idempotence: bool,
    /// A produce request with no answer for this long fails with
    /// `ClientError::Timeout` (its connection is replaced) and is retried.
    pub request_timeout_ms: u64,
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
            max_in_flight: 5,
            idempotence: true,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
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

/// A record to send, borrowed: the producer copies it into a batch before
/// the send call returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendRecord<'a> {
    pub topic: &'a str,
    pub partition: Option<u32>,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Defaults to now.
    pub timestamp_ms: Option<i64>,
}

/// How one batch of tagged sends ended, given to the [`DeliveryHandler`].
#[derive(Debug)]
pub struct Delivery<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// The offset of the batch's first record (`None` with `Acks::None`),
    /// or why the batch failed.
    pub outcome: Result<Option<u64>, &'a ClientError>,
    /// `(offset delta in the batch, tag)` of each tagged record in it.
    pub tagged: &'a [(u32, u64)],
}

/// Runs on a client thread once per batch with tagged records: keep it
/// short, it delays other answers.
pub type DeliveryHandler = Arc<dyn Fn(&Delivery<'_>) + Send + Sync>;

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
    /// For the delivery handler.
    Tag(u64),
}

/// A batch being filled, or closed and waiting for its turn.
struct OpenBatch {
    writer: BatchWriter,
    completions: Vec<Completion>,
    size_bytes: usize,
    opened: Instant,
}

/// A batch sent (or to be re-sent) with the records it answers for.
struct InFlight {
    /// Its place in the partition's order of batches.
    number: u64,
    batch: Arc<Batch>,
    completions: Vec<Completion>,
    size_bytes: usize,
    attempts: u32,
}

/// One partition's batches. Order is kept across retries: once a batch
/// fails retriably, nothing new is sent until every batch in flight has
/// answered; then the failed ones go again, in their original order, before
/// anything else.
#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    closed: VecDeque<OpenBatch>,
    /// Numbers of the batches sent and not answered yet.
    in_flight: BTreeSet<u64>,
    /// Batches to send again, by number, and when.
    retries: BTreeMap<u64, InFlight>,
    retry_at: Option<Instant>,
    /// Idempotence: a batch failed for good, so the broker never got these
    /// sequence numbers; the batches re-sent after it are renumbered from
    /// here.
    resequence_from: Option<u32>,
    /// Idempotence: a batch gave up without knowing whether the broker
    /// wrote it, so no sequence number after it can be trusted to follow
    /// on; once nothing is in flight the partition moves to a new epoch,
    /// which the broker takes from sequence 0 (Kafka's KIP-360). Batches
    /// waiting to be resent go under the new epoch too: one the broker had
    /// in fact written (its answer lost) is then written again, so across
    /// such a failure delivery is at least once.
    new_epoch_due: bool,
    /// Epochs this partition moved to beyond the producer's own (the broker
    /// keeps producer state per partition).
    epoch_bumps: u16,
    /// Sequence number of the next batch's first record (idempotence).
    next_sequence: u32,
    next_number: u64,
}

struct TopicQueues {
    partitions: Vec<PartitionQueue>,
    /// Where keyless records go until that partition's batch closes.
    sticky: u32,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, TopicQueues>,
    buffered_bytes: usize,
    flushing: usize,
    closed: bool,
}

impl TopicQueues {
    /// The queue `record` goes to: its partition, the murmur2 hash of its
    /// key, or the sticky partition (moving on when its batch is full).
    fn queue_for(
        &mut self,
        record: &SendRecord<'_>,
        encoded: &RecordRef<'_>,
        batch_limit: usize,
    ) -> Result<&mut PartitionQueue, ClientError> {
        let partitions = self.partitions.len() as u32;
        let partition = match (record.partition, record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {:?} has no partition {p} (it has {partitions})",
                    record.topic
                )))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                let sticky = &self.partitions[self.sticky as usize];
                if sticky.open.as_ref().is_some_and(|b| !b.writer.fits(encoded, batch_limit)) {
                    self.sticky = (self.sticky + 1) % partitions;
                }
                self.sticky
            }
        };
        Ok(&mut self.partitions[partition as usize])
    }
}

impl PartitionQueue {
    /// The broker never got the batch numbered from `base_sequence`: the
    /// batches re-sent after it are renumbered from its numbers.
    fn never_written(&mut self, base_sequence: u32) {
        self.resequence_from =
            Some(self.resequence_from.map_or(base_sequence, |s| s.min(base_sequence)));
    }

    /// The epoch this partition's batches carry.
    fn epoch(&self, producer_epoch: u16) -> u16 {
        producer_epoch.saturating_add(self.epoch_bumps)
    }

    /// Whether sending must wait for every answer: resends and a new epoch
    /// keep the order only when nothing is in flight.
    fn needs_quiet(&self) -> bool {
        !self.retries.is_empty() || self.resequence_from.is_some() || self.new_epoch_due
    }
}

/// A topic name and a partition of it.
type TopicPartition = (String, u32);

/// A batch taken for sending, not yet encoded to the end.
enum Ready {
    Retry(InFlight),
    Fresh { batch: OpenBatch, number: u64, epoch: u16, base_sequence: u32 },
}

struct Inner {
    /// Replaces its connection when the old one dies (a broker restart, a
    /// timeout): retried batches go out on the new one.
    link: Link,
    config: ProducerConfig,
    /// Producer id and epoch, when idempotent.
    identity: Option<(u64, u16)>,
    delivery: Option<DeliveryHandler>,
    state: Mutex<State>,
    changed: Condvar,
}

/// A cloneable, thread-safe producer.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Producer {
    pub fn connect(brokers: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        Producer::start(brokers, config, None)
    }

    /// A producer whose tagged sends ([`Producer::send_tagged`]) end at
    /// `handler`, once per batch.
    pub fn connect_with_delivery(
        brokers: &str,
        config: ProducerConfig,
        handler: DeliveryHandler,
    ) -> Result<Producer, ClientError> {
        Producer::start(brokers, config, Some(handler))
    }

    fn start(
        brokers: &str,
        config: ProducerConfig,
        delivery: Option<DeliveryHandler>,
    ) -> Result<Producer, ClientError> {
        if config.batch_bytes == 0 || config.buffer_bytes_max < config.batch_bytes {
            return Err(ClientError::InvalidArgument(
                "batch_bytes must be positive and at most buffer_bytes_max".into(),
            ));
        }
        let idempotent = config.idempotence && config.acks == Acks::All;
        let in_flight_max = if idempotent { RECENT_BATCHES_MAX } else { usize::MAX };
        if config.max_in_flight == 0 || config.max_in_flight > in_flight_max {
            return Err(ClientError::InvalidArgument(format!(
                "max_in_flight must be between 1 and {RECENT_BATCHES_MAX} with idempotence"
            )));
        }
        let link = Link::connect(brokers, Duration::from_millis(config.request_timeout_ms))?;
        let identity = if idempotent {
            let (answer, _) = futures::executor::block_on(
                link.call::<_, InitProducerIdResponse>(&InitProducerIdRequest {}, &[]),
            )?;
            if let Some(e) = ClientError::from_code(answer.error_code, "init producer id".into()) {
                return Err(e);
            }
            Some((answer.producer_id, answer.producer_epoch))
        } else {
            None
        };
        let inner = Arc::new(Inner {
            link,
            config,
            identity,
            delivery,
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let sender = inner.clone();
        std::thread::Builder::new()
            .name("mamba-producer".into())
            .spawn(move || run_sender(&sender))
            .map_err(|e| ClientError::Io { addr: brokers.to_string(), source: Arc::new(e) })?;
        Ok(Producer { inner })
    }

    /// Queues `record`; the future resolves when the broker answers.
    pub fn send(
        &self,
        record: ProducerRecord,
    ) -> Result<impl Future<Output = Result<RecordMetadata, ClientError>>, ClientError> {
        let (done, result) = oneshot::channel();
        self.enqueue_owned(&record, Completion::Future(done))?;
        Ok(async move { result.await.map_err(|_| ClientError::Closed)? })
    }

    /// Queues `record`; `callback` runs (on a client thread) when the broker
    /// answers. Keep it short: it delays other answers.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata, ClientError>) + Send + 'static,
    ) -> Result<(), ClientError> {
        self.enqueue_owned(&record, Completion::Callback(Box::new(callback)))
    }

    /// Copies `record` into its batch; the delivery handler gets `tag` with
    /// the batch's outcome. Allocates nothing per record.
    pub fn send_tagged(&self, record: &SendRecord<'_>, tag: u64) -> Result<(), ClientError> {
        if self.inner.delivery.is_none() {
            return Err(ClientError::InvalidArgument(
                "send_tagged needs a producer made with connect_with_delivery".into(),
            ));
        }
        self.enqueue(record, Completion::Tag(tag))
    }

    fn enqueue_owned(&self, record: &ProducerRecord, done: Completion) -> Result<(), ClientError> {
        let headers: Vec<(&str, &[u8])> =
            record.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let record = SendRecord {
            topic: &record.topic,
            partition: record.partition,
            key: record.key.as_deref(),
            value: &record.value,
            headers: &headers,
            timestamp_ms: record.timestamp_ms,
        };
        self.enqueue(&record, done)
    }

    /// Learns a topic's partition count from the broker.
    fn learn_topic(&self, topic: &str) -> Result<(), ClientError> {
        let meta = futures::executor::block_on(self.inner.link.topic_metadata(topic))?;
        let n = meta.partitions.len() as u32;
        lock(&self.inner).topics.entry(topic.to_string()).or_insert_with(|| TopicQueues {
            partitions: (0..n).map(|_| PartitionQueue::default()).collect(),
            sticky: spread_start(n),
        });
        Ok(())
    }

    /// The state, once the buffer has room for `size_bytes` more (waiting
    /// up to `max_block_ms`).
    fn wait_for_room(&self, size_bytes: usize) -> Result<MutexGuard<'_, State>, ClientError> {
        let config = &self.inner.config;
        let mut state = lock(&self.inner);
        let mut started = None;
        while state.buffered_bytes + size_bytes > config.buffer_bytes_max
            && state.buffered_bytes > 0
        {
            if state.closed {
                return Err(ClientError::Closed);
            }
            let waited = started.get_or_insert_with(Instant::now).elapsed();
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
        Ok(state)
    }

    fn enqueue(&self, record: &SendRecord<'_>, done: Completion) -> Result<(), ClientError> {
        let encoded = RecordRef {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
        };
        let size_bytes = encoded.encoded_bytes();
        if size_bytes + 1024 > BATCH_BYTES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "a record of {size_bytes} bytes does not fit in a batch ({BATCH_BYTES_MAX} bytes)"
            )));
        }
        let batch_limit = self.inner.config.batch_bytes.min(BATCH_BYTES_MAX - 1024);
        loop {
            let mut guard = self.wait_for_room(size_bytes)?;
            let state = &mut *guard;
            if let Some(topic) = state.topics.get_mut(record.topic) {
                let queue = topic.queue_for(record, &encoded, batch_limit)?;
                let mut wake_sender = false;
                if queue.open.as_ref().is_some_and(|b| !b.writer.fits(&encoded, batch_limit)) {
                    queue.closed.extend(queue.open.take());
                    wake_sender = true;
                }
                let batch = queue.open.get_or_insert_with(|| {
                    wake_sender = true;
                    OpenBatch {
                        writer: BatchWriter::with_capacity(batch_limit.max(size_bytes)),
                        completions: Vec::new(),
                        size_bytes: 0,
                        opened: Instant::now(),
                    }
                });
                batch.writer.push(&encoded)?;
                batch.completions.push(done);
                batch.size_bytes += size_bytes;
                state.buffered_bytes += size_bytes;
                if wake_sender {
                    self.inner.changed.notify_all();
                }
                return Ok(());
            }
            drop(guard);
            self.learn_topic(record.topic)?;
        }
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
fn spread_start(partitions: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos % partitions.max(1)
}

/// Takes what is ready to send (due retries, closed batches, open ones
/// that lingered long enough), and when to look again otherwise.
fn take_ready(
    inner: &Inner,
    state: &mut State,
    now: Instant,
) -> (Vec<(TopicPartition, Ready)>, Option<Instant>) {
    let linger = Duration::from_millis(inner.config.linger_ms);
    let in_flight_max = inner.config.max_in_flight;
    let producer_epoch = inner.identity.map_or(0, |(_, epoch)| epoch);
    let flushing = state.flushing > 0 || state.closed;
    let mut ready = Vec::new();
    let mut next_due: Option<Instant> = None;
    let mut due_at = |at: Instant| next_due = Some(next_due.map_or(at, |n| n.min(at)));
    for (name, topic) in state.topics.iter_mut() {
        let partitions = topic.partitions.len() as u32;
        for (p, queue) in topic.partitions.iter_mut().enumerate() {
            let key = || (name.clone(), p as u32);
            if queue.needs_quiet() {
                // Resend only once every answer is in, so the order holds.
                if !queue.in_flight.is_empty() {
                    continue;
                }
                if let Some(at) = queue.retry_at.filter(|at| *at > now) {
                    due_at(at);
                    continue;
                }
                if std::mem::take(&mut queue.new_epoch_due) {
                    // Everything still to send, resends included, starts
                    // from 0 under the new epoch.
                    queue.epoch_bumps = queue.epoch_bumps.saturating_add(1);
                    queue.resequence_from = Some(0);
                }
                if let Some(from) = queue.resequence_from.take() {
                    let epoch = queue.epoch(producer_epoch);
                    let mut sequence = from;
                    for flight in queue.retries.values_mut() {
                        Arc::make_mut(&mut flight.batch).set_producer_sequence(epoch, sequence);
                        sequence = sequence.wrapping_add(flight.batch.header().record_count);
                    }
                    queue.next_sequence = sequence;
                }
                queue.retry_at = None;
                while queue.in_flight.len() < in_flight_max {
                    let Some((number, flight)) = queue.retries.pop_first() else { break };
                    queue.in_flight.insert(number);
                    ready.push((key(), Ready::Retry(flight)));
                }
                if !queue.retries.is_empty() {
                    continue;
                }
            }
            while queue.in_flight.len() < in_flight_max {
                let batch = match queue.closed.pop_front() {
                    Some(batch) => batch,
                    None => match &queue.open {
                        Some(open) if flushing || now >= open.opened + linger => {
                            if topic.sticky == p as u32 {
                                topic.sticky = (topic.sticky + 1) % partitions;
                            }
                            let Some(batch) = queue.open.take() else { break };
                            batch
                        }
                        Some(open) => {
                            due_at(open.opened + linger);
                            break;
                        }
                        None => break,
                    },
                };
                let base_sequence = queue.next_sequence;
                if inner.identity.is_some() {
                    queue.next_sequence =
                        base_sequence.wrapping_add(batch.writer.record_count() as u32);
                }
                let number = queue.next_number;
                queue.next_number += 1;
                queue.in_flight.insert(number);
                let epoch = queue.epoch(producer_epoch);
                ready.push((key(), Ready::Fresh { batch, number, epoch, base_sequence }));
            }
        }
    }
    (ready, next_due)
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
                let (ready, next_due) = take_ready(inner, &mut state, now);
                if !ready.is_empty() {
                    break ready;
                }
                // Sleep until a linger or a retry is due, or a send wakes us.
                let wait = next_due.map_or(Duration::from_millis(50), |at| at - now);
                state =
                    inner.changed.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
            }
        };
        // Encoding ends (record array, header, CRC) outside the lock.
        for (key, ready) in ready {
            let flight = match ready {
                Ready::Retry(flight) => flight,
                Ready::Fresh { batch, number, epoch, base_sequence } => {
                    let producer = inner.identity.map(|(id, _)| (id, epoch, base_sequence));
                    match batch.writer.finish(producer) {
                        Ok(built) => InFlight {
                            number,
                            batch: Arc::new(built),
                            completions: batch.completions,
                            size_bytes: batch.size_bytes,
                            attempts: 0,
                        },
                        Err(e) => {
                            let unsent = (number, batch.completions, batch.size_bytes);
                            fail_unsent(inner, &key, unsent, base_sequence, ClientError::Batch(e));
                            continue;
                        }
                    }
                }
            };
            send_batch(inner, key, flight);
        }
    }
}

/// A batch that could not be encoded: its records fail, its sequence
/// numbers go to the batches after it.
fn fail_unsent(
    inner: &Inner,
    key: &TopicPartition,
    (number, completions, size_bytes): (u64, Vec<Completion>, usize),
    base_sequence: u32,
    error: ClientError,
) {
    let mut state = lock(inner);
    if let Some(queue) = queue_of(&mut state, key) {
        queue.in_flight.remove(&number);
        if inner.identity.is_some() {
            queue.never_written(base_sequence);
        }
    }
    drop(state);
    deliver(inner, key, completions, Err(error));
    release(inner, size_bytes);
}

fn queue_of<'s>(state: &'s mut State, key: &TopicPartition) -> Option<&'s mut PartitionQueue> {
    state.topics.get_mut(&key.0)?.partitions.get_mut(key.1 as usize)
}

fn send_batch(inner: &Arc<Inner>, key: TopicPartition, flight: InFlight) {
    let request = ProduceRequest {
        acks: inner.config.acks.wire(),
        timeout_ms: u32::try_from(inner.config.request_timeout_ms).unwrap_or(u32::MAX),
        partitions: vec![ProducePartition {
            topic: key.0.clone(),
            partition: key.1,
            batch: Slice { offset: 0, len: flight.batch.as_bytes().len() as u32 },
        }],
    };
    let batch = flight.batch.clone();
    let payload = [batch.as_bytes()];
    if inner.config.acks == Acks::None {
        let result =
            inner.link.connection().and_then(|conn| conn.send_with(&request, &payload, None));
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
        inner.link.connection().and_then(|conn| conn.send_with(&request, &payload, Some(waiter)))
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
    key: &TopicPartition,
    mut flight: InFlight,
    outcome: Result<Option<u64>, ClientError>,
) {
    let mut state = lock(inner);
    let closed = state.closed;
    let Some(queue) = queue_of(&mut state, key) else {
        unreachable!("a batch in flight for {key:?}, which has no queue")
    };
    queue.in_flight.remove(&flight.number);
    if let Err(e) = &outcome {
        // A batch refused as out of order because an earlier one of this
        // partition failed goes again after it.
        let behind_a_failure = matches!(
            e,
            ClientError::Broker { code: crate::protocol::ErrorCode::OutOfOrderSequence, .. }
        ) && (queue.in_flight.first().is_some_and(|n| *n < flight.number)
            || queue.retries.first_key_value().is_some_and(|(n, _)| *n < flight.number)
            || queue.resequence_from.is_some()
            || queue.new_epoch_due);
        let retriable = e.is_retriable() || behind_a_failure;
        if retriable && flight.attempts < inner.config.retries && !closed {
            flight.attempts += 1;
            let backoff =
                Duration::from_millis(inner.config.retry_backoff_ms << flight.attempts.min(6));
            let at = Instant::now() + backoff;
            queue.retry_at = Some(queue.retry_at.map_or(at, |t| t.max(at)));
            queue.retries.insert(flight.number, flight);
            drop(state);
            inner.changed.notify_all();
            return;
        }
        if inner.identity.is_some() {
            if matches!(e, ClientError::Broker { .. }) {
                // Refused by the broker, so never written: the batches after
                // it take over its sequence numbers.
                queue.never_written(flight.batch.header().base_sequence);
            } else {
                // After a connection failure it may or may not have been
                // written: renumbering could make a later batch look like
                // its duplicate, keeping the numbers could leave a gap the
                // broker refuses forever. A new epoch starts afresh.
                queue.new_epoch_due = true;
            }
        }
    }
    drop(state);
    deliver(inner, key, flight.completions, outcome);
    release(inner, flight.size_bytes);
}

/// Frees buffer space once its records' senders know how they ended (so
/// `flush` returns after every delivery).
fn release(inner: &Inner, size_bytes: usize) {
    lock(inner).buffered_bytes -= size_bytes;
    inner.changed.notify_all();
}

/// Tells each record's sender how it ended, in offset order.
fn deliver(
    inner: &Inner,
    key: &TopicPartition,
    completions: Vec<Completion>,
    outcome: Result<Option<u64>, ClientError>,
) {
    let mut tagged = Vec::new();
    for (i, done) in completions.into_iter().enumerate() {
        let result = || match &outcome {
            Ok(base) => Ok(RecordMetadata { partition: key.1, offset: base.map(|b| b + i as u64) }),
            Err(e) => Err(e.clone()),
        };
        match done {
            Completion::Future(tx) => {
                if tx.send(result()).is_err() {
                    tracing::trace!("a send's caller stopped waiting");
                }
            }
            Completion::Callback(f) => f(result()),
            Completion::Tag(tag) => tagged.push((i as u32, tag)),
        }
    }
    if let (Some(handler), false) = (&inner.delivery, tagged.is_empty()) {
        handler(&Delivery {
            topic: &key.0,
            partition: key.1,
            outcome: outcome.as_ref().map(|o| *o),
            tagged: &tagged,
        });
    }
}
