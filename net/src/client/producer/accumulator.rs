//! The accumulator: records gathered into batches per partition, in a
//! bounded buffer.
//!
//! A send encodes its record straight into its partition's open batch
//! ([`BatchWriter`]): one copy of its bytes, no allocation. A batch closes
//! when the next record would not fit `batch_bytes`; the sender takes
//! closed batches, and open ones once they have waited `linger_ms` (or
//! while flushing). Buffered bytes are bounded: a send waits for room up to
//! `max_block_ms`, then fails. A batch's bytes stay counted until its
//! records' senders know how it ended, so `flush` returns after every
//! delivery.

use super::super::murmur2::partition_for_key;
use super::super::router::RefreshTicket;
use super::super::ClientError;
use super::delivery::Completion;
use super::send_order::{SendOrder, SendOrderConfig};
use mamba_engine::batch::BatchError;
use mamba_engine::batch_writer::{BatchWriter, RecordRef};
use mamba_engine::limits::BATCH_BYTES_MAX;
use mamba_engine::Batch;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Room kept in a batch for its header and record array.
const BATCH_OVERHEAD_BYTES: usize = 1024;

/// How long past its linger an open batch waits before keyless records
/// stop going to its partition. A batch still open then could not go: its
/// leader is unreachable or being elected, or every request in flight to
/// it is unanswered. Records sent elsewhere meanwhile are delivered; left
/// sticky, the partition would take every keyless record until its batch
/// filled — seconds of a producer's load behind one stalled broker (the
/// problem KIP-794 fixed in Kafka's partitioner).
const STALLED_AFTER: Duration = Duration::from_millis(100);

/// Validated by `Producer::connect`.
#[derive(Debug, Clone, Copy)]
pub(super) struct AccumulatorConfig {
    pub batch_bytes: usize,
    pub buffer_bytes_max: usize,
    pub max_block_ms: u64,
    pub linger_ms: u64,
    /// For each partition's [`SendOrder`].
    pub send_order: SendOrderConfig,
}

/// A batch being filled, or closed and waiting for its turn.
pub(super) struct OpenBatch {
    writer: BatchWriter,
    completions: Vec<Completion>,
    size_bytes: usize,
    opened: Instant,
}

/// The records a batch answers for: who to tell how it ended, and the
/// buffer bytes to release once they are told.
pub(super) struct BatchRecords {
    pub completions: Vec<Completion>,
    pub size_bytes: usize,
}

/// A batch encoded to the end, with its records: what goes out, and what
/// its partition's [`SendOrder`] keeps while it waits to go again.
pub(super) struct SealedBatch {
    pub batch: Arc<Batch>,
    pub records: BatchRecords,
    /// When its first record came: its delivery timeout counts from here.
    pub opened: Instant,
}

impl OpenBatch {
    pub fn record_count(&self) -> u32 {
        self.writer.record_count() as u32
    }

    /// Its records, for a batch that will never be sent.
    pub fn into_records(self) -> BatchRecords {
        BatchRecords { completions: self.completions, size_bytes: self.size_bytes }
    }

    /// Writes the record array, header and CRC; `producer` is the producer
    /// id, epoch and base sequence with idempotence.
    pub fn seal(
        self,
        producer: Option<(u64, u16, u32)>,
    ) -> Result<SealedBatch, (BatchError, BatchRecords)> {
        let records = BatchRecords { completions: self.completions, size_bytes: self.size_bytes };
        match self.writer.finish(producer) {
            Ok(built) => Ok(SealedBatch { batch: Arc::new(built), records, opened: self.opened }),
            Err(e) => Err((e, records)),
        }
    }
}

/// One partition's batches and the order they are sent in.
pub(super) struct PartitionQueue {
    open: Option<OpenBatch>,
    closed: VecDeque<OpenBatch>,
    pub order: SendOrder<SealedBatch>,
    /// A send found the cluster's view wrong (`not leader`, a leader that
    /// could not be reached): nothing goes until this refresh finished.
    pub reroute: Option<RefreshTicket>,
}

/// A batch for the sender, or why there is none.
pub(super) enum Take {
    Batch(OpenBatch),
    /// The open batch may go then (its linger ends).
    DueAt(Instant),
    Nothing,
}

/// When open batches may go.
#[derive(Debug, Clone, Copy)]
pub(super) struct TakeWhen {
    pub now: Instant,
    pub linger: Duration,
    /// Open batches go now (a flush or close is waiting).
    pub flushing: bool,
}

pub(super) struct TopicQueues {
    partitions: Vec<PartitionQueue>,
    /// Where keyless records go until that partition's batch closes.
    sticky: u32,
}

impl TopicQueues {
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn order_mut(&mut self, partition: u32) -> &mut SendOrder<SealedBatch> {
        &mut self.partitions[partition as usize].order
    }

    pub fn queue_mut(&mut self, partition: u32) -> &mut PartitionQueue {
        &mut self.partitions[partition as usize]
    }

    /// Whether the partition has batches to send, new or again.
    pub fn has_work(&self, partition: u32) -> bool {
        let queue = &self.partitions[partition as usize];
        queue.open.is_some() || !queue.closed.is_empty() || queue.order.has_resends()
    }

    /// Takes the batches not sent yet that opened at or before
    /// `opened_by`, oldest first (they will never be sent).
    pub fn take_unsent_opened_by(&mut self, partition: u32, opened_by: Instant) -> Vec<OpenBatch> {
        let queue = &mut self.partitions[partition as usize];
        let mut taken = Vec::new();
        while queue.closed.front().is_some_and(|b| b.opened <= opened_by) {
            taken.extend(queue.closed.pop_front());
        }
        if queue.closed.is_empty() && queue.open.as_ref().is_some_and(|b| b.opened <= opened_by) {
            taken.extend(queue.open.take());
        }
        taken
    }

    /// When the partition's oldest batch not sent yet opened.
    pub fn oldest_unsent(&self, partition: u32) -> Option<Instant> {
        let queue = &self.partitions[partition as usize];
        queue.closed.front().or(queue.open.as_ref()).map(|b| b.opened)
    }

    /// The partition's next batch to send: a closed one, else the open one
    /// once it lingered long enough (keyless records then move on to the
    /// next partition).
    pub fn take_batch(&mut self, partition: u32, when: TakeWhen) -> Take {
        let partition_count = self.partitions.len() as u32;
        let queue = &mut self.partitions[partition as usize];
        if let Some(batch) = queue.closed.pop_front() {
            return Take::Batch(batch);
        }
        match &queue.open {
            Some(open) if when.flushing || when.now >= open.opened + when.linger => {
                if self.sticky == partition {
                    self.sticky = (self.sticky + 1) % partition_count;
                }
                queue.open.take().map_or(Take::Nothing, Take::Batch)
            }
            Some(open) => Take::DueAt(open.opened + when.linger),
            None => Take::Nothing,
        }
    }

    /// Moves keyless records off `partition` when it is the sticky one and
    /// its oldest batch not sent has waited [`STALLED_AFTER`] past its
    /// linger, to the next partition not stalled too (when every one is,
    /// they stay). Answers when to look again while it is not stalled yet.
    pub fn avoid_if_stalled(
        &mut self,
        partition: u32,
        now: Instant,
        linger: Duration,
    ) -> Option<Instant> {
        if self.sticky != partition {
            return None;
        }
        let stalled_at = |q: &PartitionQueue| {
            let oldest = q.closed.front().or(q.open.as_ref());
            oldest.map(|b| b.opened + linger + STALLED_AFTER)
        };
        let at = stalled_at(&self.partitions[partition as usize])?;
        if now < at {
            return Some(at);
        }
        let n = self.partition_count();
        let next = (1..n)
            .map(|step| (partition + step) % n)
            .find(|q| stalled_at(&self.partitions[*q as usize]).is_none_or(|at| now < at));
        if let Some(next) = next {
            self.sticky = next;
        }
        None
    }

    /// The queue `record` goes to: its partition, the murmur2 hash of its
    /// key, or the sticky partition (moving on when its batch is full, or
    /// stalled: `avoid_if_stalled`).
    /// Inlined into `append`, as it was before the split.
    #[inline]
    fn queue_for(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        record: &RecordRef<'_>,
        batch_limit: usize,
    ) -> Result<&mut PartitionQueue, ClientError> {
        let partitions = self.partitions.len() as u32;
        let partition = match (partition, record.key) {
            (Some(p), _) if p < partitions => p,
            (Some(p), _) => {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {topic:?} has no partition {p} (it has {partitions})"
                )))
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                let sticky = &self.partitions[self.sticky as usize];
                if sticky.open.as_ref().is_some_and(|b| !b.writer.fits(record, batch_limit)) {
                    self.sticky = (self.sticky + 1) % partitions;
                }
                self.sticky
            }
        };
        Ok(&mut self.partitions[partition as usize])
    }
}

/// Everything buffered, under the accumulator's lock.
#[derive(Default)]
pub(super) struct State {
    topics: HashMap<String, TopicQueues>,
    buffered_bytes: usize,
    /// Callers waiting in `flush`.
    flushing: usize,
    closed: bool,
}

impl State {
    pub fn topics_mut(&mut self) -> impl Iterator<Item = (&String, &mut TopicQueues)> {
        self.topics.iter_mut()
    }

    pub fn queue_mut(&mut self, topic: &str, partition: u32) -> Option<&mut PartitionQueue> {
        self.topics.get_mut(topic)?.partitions.get_mut(partition as usize)
    }

    /// Whether open batches go without lingering.
    pub fn flushing(&self) -> bool {
        self.flushing > 0 || self.closed
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Closed, and every record delivered: the sender may stop.
    pub fn finished(&self) -> bool {
        self.closed && self.buffered_bytes == 0
    }
}

/// What became of an append.
pub(super) enum Appended {
    Queued,
    /// The producer does not know the topic yet: learn it, then append
    /// again with the completion handed back.
    TopicUnknown(Completion),
}

/// Lifecycle: made with the producer, closed by `close` (then appends
/// fail); shared by the callers' threads, the sender thread and the reader
/// threads that deliver answers. One lock guards all of it; `changed`
/// wakes the sender (a batch to send) and waiters (room, a flush done).
pub(super) struct Accumulator {
    config: AccumulatorConfig,
    state: Mutex<State>,
    changed: Condvar,
}

impl Accumulator {
    pub fn new(config: AccumulatorConfig) -> Accumulator {
        Accumulator { config, state: Mutex::default(), changed: Condvar::new() }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases the lock until `changed` or `timeout`.
    pub fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(state, timeout).unwrap_or_else(|p| p.into_inner()).0
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.config.linger_ms)
    }

    /// Adds a topic's partitions, unless another caller did already.
    pub fn add_topic(&self, topic: &str, partition_count: u32) {
        let send_order = self.config.send_order;
        self.lock().topics.entry(topic.to_string()).or_insert_with(|| TopicQueues {
            partitions: (0..partition_count)
                .map(|_| PartitionQueue {
                    open: None,
                    closed: VecDeque::new(),
                    order: SendOrder::new(send_order),
                    reroute: None,
                })
                .collect(),
            sticky: spread_start(partition_count),
        });
    }

    /// Copies `record` into its partition's open batch (waiting for room).
    /// Inlined into `Producer::enqueue`, its only caller: the split into
    /// files must not add a call, and the moves of its arguments and
    /// result, to every send (measured: about 10 ns a send).
    #[inline]
    pub fn append(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: &RecordRef<'_>,
        done: Completion,
    ) -> Result<Appended, ClientError> {
        let size_bytes = record.encoded_bytes();
        if size_bytes + BATCH_OVERHEAD_BYTES > BATCH_BYTES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "a record of {size_bytes} bytes does not fit in a batch ({BATCH_BYTES_MAX} bytes)"
            )));
        }
        let batch_limit = self.config.batch_bytes.min(BATCH_BYTES_MAX - BATCH_OVERHEAD_BYTES);
        let mut guard = self.wait_for_room(size_bytes)?;
        let state = &mut *guard;
        let Some(topic_queues) = state.topics.get_mut(topic) else {
            return Ok(Appended::TopicUnknown(done));
        };
        let queue = topic_queues.queue_for(topic, partition, record, batch_limit)?;
        let mut wake_sender = false;
        if queue.open.as_ref().is_some_and(|b| !b.writer.fits(record, batch_limit)) {
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
        batch.writer.push(record)?;
        batch.completions.push(done);
        batch.size_bytes += size_bytes;
        state.buffered_bytes += size_bytes;
        if wake_sender {
            self.notify();
        }
        Ok(Appended::Queued)
    }

    /// The state, once the buffer has room for `size_bytes` more (waiting
    /// up to `max_block_ms`). Inlined into `append`, as it was before the
    /// split.
    #[inline]
    fn wait_for_room(&self, size_bytes: usize) -> Result<MutexGuard<'_, State>, ClientError> {
        let mut state = self.lock();
        let mut started = None;
        while state.buffered_bytes + size_bytes > self.config.buffer_bytes_max
            && state.buffered_bytes > 0
        {
            if state.closed {
                return Err(ClientError::Closed);
            }
            let waited = started.get_or_insert_with(Instant::now).elapsed();
            let limit = Duration::from_millis(self.config.max_block_ms);
            if waited >= limit {
                return Err(ClientError::BufferFull {
                    buffered_bytes: state.buffered_bytes,
                    waited_ms: limit.as_millis() as u64,
                });
            }
            state = self.wait(state, limit - waited);
        }
        if state.closed {
            return Err(ClientError::Closed);
        }
        Ok(state)
    }

    /// Frees buffer space once its records' senders know how they ended
    /// (so `flush` returns after every delivery).
    pub fn release(&self, size_bytes: usize) {
        self.lock().buffered_bytes -= size_bytes;
        self.notify();
    }

    /// Has everything buffered now sent, and waits until all of it is
    /// delivered.
    pub fn flush(&self) {
        let mut state = self.lock();
        state.flushing += 1;
        self.notify();
        while state.buffered_bytes > 0 && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.flushing -= 1;
    }

    /// Appends fail from now on; the sender stops once the buffer is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify();
    }
}

/// A start partition for keyless records, spread over producers.
fn spread_start(partitions: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(partitions: u32) -> TopicQueues {
        let config = SendOrderConfig {
            idempotent: true,
            producer_epoch: 0,
            in_flight_max: 5,
            retries: 5,
            retry_backoff_ms: 100,
        };
        TopicQueues {
            partitions: (0..partitions)
                .map(|_| PartitionQueue {
                    open: None,
                    closed: VecDeque::new(),
                    order: SendOrder::new(config),
                    reroute: None,
                })
                .collect(),
            sticky: 0,
        }
    }

    fn opened_at(opened: Instant) -> Option<OpenBatch> {
        let writer = BatchWriter::with_capacity(4096);
        Some(OpenBatch { writer, completions: Vec::new(), size_bytes: 0, opened })
    }

    #[test]
    fn keyless_records_leave_a_partition_whose_batch_cannot_go_for_one_that_can() {
        let (now, linger) = (Instant::now(), Duration::from_millis(5));
        let stalled = now + linger + STALLED_AFTER;
        let mut t = queues(3);
        t.partitions[0].open = opened_at(now);
        assert_eq!(t.avoid_if_stalled(0, now, linger), Some(stalled), "not stalled yet");
        assert_eq!(t.sticky, 0);
        t.partitions[1].open = opened_at(now);
        assert_eq!(t.avoid_if_stalled(0, stalled, linger), None);
        assert_eq!(t.sticky, 2, "past 0 and 1, both stalled");
        assert_eq!(t.avoid_if_stalled(1, stalled, linger), None, "1 is not the sticky one");
        assert_eq!(t.sticky, 2);
        t.partitions[2].open = opened_at(now);
        assert_eq!(t.avoid_if_stalled(2, stalled, linger), None);
        assert_eq!(t.sticky, 2, "every partition stalled: records stay");
        t.partitions[1].open = None;
        assert_eq!(t.avoid_if_stalled(2, stalled, linger), None);
        assert_eq!(t.sticky, 1, "the first one past 2 that is not stalled (0 still is)");
        // A full batch waiting counts as much as an open one.
        t.partitions[1].closed.extend(opened_at(now));
        t.partitions[2].open = None;
        assert_eq!(t.avoid_if_stalled(1, stalled, linger), None);
        assert_eq!(t.sticky, 2, "1 holds a closed batch it could not send");
    }
}
