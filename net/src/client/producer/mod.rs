//! The producer: batches records per partition and sends them.
//!
//! A send picks the partition (explicit; murmur2 of the key as Kafka's
//! default partitioner does; sticky for keyless records, moving on with
//! each new batch, and off a partition whose batch could not go for
//! `linger_ms` + 100 ms: its leader is down or cut off) and encodes the record straight into that partition's
//! open batch: one copy of its bytes, no allocation. A batch closes when
//! the next record would not fit `batch_bytes`; a sender thread sends
//! closed batches, and open ones once they have waited `linger_ms` (or on
//! `flush`). Each partition's batches go to its leader (the `Router` knows
//! which broker leads it, and refreshes that when a broker answers `not
//! leader`). It keeps up to `max_in_flight` requests in flight per
//! partition, and retries retriable errors with a backoff, keeping each
//! partition's order; a partition without a leader waits for one, up to
//! `delivery_timeout_ms`. Buffered bytes are bounded: a send waits for room up
//! to `max_block_ms`, then fails.
//!
//! How a send ends reaches the caller three ways: a future ([`Producer::send`]),
//! a callback per record ([`Producer::send_with_callback`]), or, cheapest, a
//! tag handed to the producer's [`DeliveryHandler`] once per batch
//! ([`Producer::send_tagged`], like librdkafka's delivery reports).
//!
//! This file is the public API. Below it, each using only the files after
//! it: `sender.rs` (the thread and its I/O), `accumulator.rs` (batches per
//! partition, buffer memory), then `send_order.rs` (each partition's
//! resend and epoch rules: a state machine with no I/O) and `delivery.rs`
//! (telling each record's caller how it ended).

mod accumulator;
mod delivery;
mod send_order;
mod sender;

pub use delivery::{Delivery, DeliveryHandler, RecordMetadata};

use super::broker_pool::BrokerPool;
use super::router::Router;
use super::{ClientError, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::protocol::{InitProducerIdRequest, InitProducerIdResponse};
use accumulator::{Accumulator, AccumulatorConfig, Appended};
use delivery::Completion;
use futures::channel::oneshot;
use mamba_engine::batch_writer::RecordRef;
use mamba_engine::producer_state::RECENT_BATCHES_MAX;
use send_order::SendOrderConfig;
use sender::{SenderConfig, Shared};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    /// How long a batch may wait for its partition's leader, counted from
    /// when the batch opened: while the partition has none (offline, an
    /// election under way: `ClientError::NoLeader` then) or its leader
    /// moved (`not leader` answers, which do not use up `retries`). Other
    /// failures are bounded by `retries`.
    pub delivery_timeout_ms: u64,
    /// How often the partitions' leaders are asked for even when no
    /// broker said they moved (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age_ms: u64,
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
            delivery_timeout_ms: 120_000,
            metadata_max_age_ms: 300_000,
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

/// A cloneable, thread-safe producer.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
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
        let pool = BrokerPool::connect(brokers, Duration::from_millis(config.request_timeout_ms))?;
        let identity = if idempotent {
            // Any broker hands out producer ids.
            let (answer, _) = futures::executor::block_on(
                pool.bootstrap().call::<_, InitProducerIdResponse>(&InitProducerIdRequest {}, &[]),
            )?;
            if let Some(e) = ClientError::from_code(answer.error_code, "init producer id".into()) {
                return Err(e);
            }
            Some((answer.producer_id, answer.producer_epoch))
        } else {
            None
        };
        let accumulator = Accumulator::new(AccumulatorConfig {
            batch_bytes: config.batch_bytes,
            buffer_bytes_max: config.buffer_bytes_max,
            max_block_ms: config.max_block_ms,
            linger_ms: config.linger_ms,
            send_order: SendOrderConfig {
                idempotent,
                producer_epoch: identity.map_or(0, |(_, epoch)| epoch),
                in_flight_max: config.max_in_flight,
                retries: config.retries,
                retry_backoff_ms: config.retry_backoff_ms,
            },
        });
        let router =
            Router::start(Arc::new(pool), Duration::from_millis(config.metadata_max_age_ms))?;
        let shared = Arc::new(Shared {
            router,
            config: SenderConfig {
                acks: config.acks.wire(),
                request_timeout_ms: config.request_timeout_ms,
                delivery_timeout: Duration::from_millis(config.delivery_timeout_ms),
            },
            identity,
            delivery,
            accumulator,
        });
        sender::start(&shared)
            .map_err(|e| ClientError::Io { addr: brokers.to_string(), source: Arc::new(e) })?;
        Ok(Producer { shared })
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
        if self.shared.delivery.is_none() {
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

    /// Learns a topic's partition count from the cluster's metadata.
    fn learn_topic(&self, topic: &str) -> Result<(), ClientError> {
        let meta = futures::executor::block_on(self.shared.router.topic(topic))?;
        self.shared.accumulator.add_topic(topic, meta.partitions.len() as u32);
        Ok(())
    }

    fn enqueue(&self, record: &SendRecord<'_>, done: Completion) -> Result<(), ClientError> {
        let encoded = RecordRef {
            key: record.key,
            value: record.value,
            headers: record.headers,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
        };
        let accumulator = &self.shared.accumulator;
        let mut done = done;
        loop {
            match accumulator.append(record.topic, record.partition, &encoded, done)? {
                Appended::Queued => return Ok(()),
                Appended::TopicUnknown(back) => {
                    done = back;
                    self.learn_topic(record.topic)?;
                }
            }
        }
    }

    /// Sends everything queued now and waits until all of it is answered.
    pub fn flush(&self) {
        self.shared.accumulator.flush();
    }

    /// Flushes and stops the sender thread.
    pub fn close(&self) {
        self.flush();
        self.shared.accumulator.close();
    }
}
