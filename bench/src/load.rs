//! `mamba-bench produce|consume|e2e`: load through the broker and the Rust
//! client, against running brokers or an embedded one.

use crate::delivery::{account, DeliveryReport, Seen, SeqSet};
use crate::group_load::{self, CommitTimer, GroupRun, GroupTracker, TrackingListener};
use crate::pacing::{latency_us, Pacer};
use crate::stats::{latency_histogram, record_us, LatencyUs};
use hdrhistogram::Histogram;
use mamba_engine::batch_writer::RECORD_OVERHEAD_BYTES;
use mamba_engine::{Durability, EngineConfig};
use mamba_net::client::{
    block_on, Acks, Admin, ClientError, Consumer, ConsumerConfig, Delivery, DeliveryHandler,
    GroupOptions, OffsetReset, Producer, ProducerConfig, SeekTo, SendRecord,
};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::ConfigEntry;
use mamba_net::server::BrokerConfig;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes at the start of every message: producer, sequence, send time.
pub const HEADER_BYTES: usize = 24;
/// How long an e2e run waits for its groups to hand out every partition
/// before it starts producing.
const GROUP_FORMING_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    None,
    RoundRobin,
    Random,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Random,
    Zeros,
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub mode: Mode,
    /// `None`: an embedded broker.
    pub brokers: Option<String>,
    /// The topic's name; with several topics, the prefix of `NAME-0`, ….
    pub topic: String,
    pub topics: u32,
    pub partitions: u32,
    /// Producer threads per topic.
    pub producers: usize,
    /// Consumer threads per subscription; partitions are spread over them.
    pub consumers: usize,
    /// Subscriptions per topic: each one reads every message.
    pub subscriptions: u32,
    pub message_bytes: usize,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub acks: Acks,
    pub durability: Durability,
    pub rate_per_s: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: Keys,
    pub payload: Payload,
    pub progress: bool,
    /// `Some`: each subscription's consumers form a consumer group instead
    /// of assigning partitions themselves.
    pub group: Option<GroupRun>,
    /// `commit_sync` calls per second over all consumers (under a group).
    pub commit_rate_per_s: f64,
}

/// One side of the run: how much went through, and (where it means
/// something) how long each message took. Produce: send to acknowledgement;
/// e2e: intended send to delivery; consume: no latency — its figure is the
/// delivered rate.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub records: u64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
    pub latency_us: Option<LatencyUs>,
}

/// One second of the run, for the throughput plot.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub elapsed_s: f64,
    pub produced_per_s: f64,
    pub consumed_per_s: f64,
    pub produce_p99_us: u64,
}

/// What committing cost under the load (`--commit-rate`).
#[derive(Debug, Clone, Serialize)]
pub struct CommitSection {
    pub commits_per_s: f64,
    /// Refused or failed commits (a rebalance under way may refuse one).
    pub failed: u64,
    pub first_error: Option<String>,
    /// `commit_sync`, call to return.
    pub latency_us: LatencyUs,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub produce: Option<Section>,
    pub consume: Option<Section>,
    pub e2e: Option<Section>,
    pub delivery: Option<DeliveryReport>,
    pub commit: Option<CommitSection>,
    pub errors: u64,
    pub timeline: Vec<TimelinePoint>,
    /// (percentile, µs) of produce and end-to-end latency, for the plot.
    pub produce_percentiles: Vec<(f64, u64)>,
    pub e2e_percentiles: Vec<(f64, u64)>,
}

/// Latency at a fixed ladder of percentiles.
fn percentiles(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]
        .iter()
        .map(|&p| (p, h.value_at_quantile(p / 100.0)))
        .collect()
}

pub(crate) fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock time from `Instant`s: the pair read once, then offsets.
struct WallClock {
    at: Instant,
    unix_ns: u64,
}

impl WallClock {
    fn new() -> WallClock {
        WallClock { at: Instant::now(), unix_ns: unix_ns() }
    }

    fn unix_ns(&self, now: Instant) -> u64 {
        self.unix_ns + now.saturating_duration_since(self.at).as_nanos() as u64
    }
}

/// Live counters shared by every thread, for the progress line.
pub(crate) struct Live {
    pub(crate) acked: AtomicU64,
    consumed: AtomicU64,
    errors: AtomicU64,
    /// Produce latencies since the last progress line.
    recent: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Live {
        Live {
            acked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            recent: Mutex::new(latency_histogram()),
        }
    }
}

pub(crate) struct Embedded {
    pub(crate) node: Node,
    /// Removed after the node stops (fields drop in order).
    _dir: tempfile::TempDir,
}

/// Where the load goes: given brokers, or a broker started here.
pub(crate) fn target(options: &LoadOptions) -> Result<(String, Option<Embedded>), String> {
    target_at(options.brokers.as_deref())
}

/// `brokers`, or (`None`) a one-node broker started in this process, in a
/// temporary directory under the current one.
pub(crate) fn target_at(brokers: Option<&str>) -> Result<(String, Option<Embedded>), String> {
    if let Some(brokers) = brokers {
        return Ok((brokers.to_string(), None));
    }
    let dir = tempfile::Builder::new()
        .prefix("mamba-bench-embedded-")
        .tempdir_in(std::env::current_dir().map_err(|e| e.to_string())?)
        .map_err(|e| format!("creating a data directory: {e}"))?;
    let listen = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let node = Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        engine: EngineConfig::default(),
        cluster: None,
        broker: BrokerConfig { listen, ..BrokerConfig::default() },
    })
    .map_err(|e| e.to_string())?;
    let addr = node.client_addr().ok_or("the embedded broker is not listening")?.to_string();
    Ok((addr, Some(Embedded { node, _dir: dir })))
}

impl LoadOptions {
    pub fn topic_names(&self) -> Vec<String> {
        match self.topics {
            1 => vec![self.topic.clone()],
            n => (0..n).map(|i| format!("{}-{i}", self.topic)).collect(),
        }
    }

    fn producer_count(&self) -> usize {
        self.producers * self.topics as usize
    }
}

/// Creates `topic` with `options.partitions`, or finds it; returns its
/// partition count, which the run then uses (an existing topic may have
/// more or fewer).
pub(crate) fn ensure_topic(
    brokers: &str,
    topic: &str,
    options: &LoadOptions,
) -> Result<u32, String> {
    let admin =
        Admin::connect(brokers).map_err(|e| format!("{e} (is a broker running at {brokers}?)"))?;
    let configs =
        vec![ConfigEntry { name: "durability".into(), value: options.durability.to_string() }];
    match block_on(admin.create_topic(topic, options.partitions, configs)) {
        Ok(()) => Ok(options.partitions),
        Err(ClientError::Broker {
            code: mamba_net::protocol::ErrorCode::TopicAlreadyExists,
            ..
        }) => {
            let existing = block_on(admin.describe_topic(topic))
                .map_err(|e| format!("describing topic {topic}: {e}"))?;
            Ok(u32::try_from(existing.partitions.len()).unwrap_or(u32::MAX))
        }
        Err(e) => Err(format!("creating topic {topic}: {e}")),
    }
}

fn payload_fill(options: &LoadOptions) -> Vec<u8> {
    let n = options.message_bytes.saturating_sub(HEADER_BYTES);
    match &options.payload {
        Payload::Zeros => vec![0; n],
        Payload::Random => {
            let mut rng = fastrand::Rng::with_seed(42);
            (0..n).map(|_| rng.u8(..)).collect()
        }
        Payload::File(bytes) if !bytes.is_empty() => {
            bytes.iter().copied().cycle().take(n).collect()
        }
        Payload::File(_) => vec![0; n],
    }
}

pub(crate) struct ProducerResult {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) acked: SeqSet,
    pub(crate) measured: u64,
}

/// Intended send times of the messages in flight, by sequence number, so
/// the delivery handler can time each acknowledged message while a send
/// allocates nothing. The producer's buffer bounds the messages in flight
/// (it frees a batch's space only after its delivery report ran).
struct SendTimes {
    start: Instant,
    /// Nanoseconds after `start`.
    slots: Vec<AtomicU64>,
    mask: u64,
}

impl SendTimes {
    fn new(start: Instant, in_flight_max: usize) -> SendTimes {
        let len = in_flight_max.next_power_of_two();
        SendTimes {
            start,
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len as u64 - 1,
        }
    }

    fn set(&self, seq: u64, intended: Instant) {
        let ns = intended.saturating_duration_since(self.start).as_nanos() as u64;
        self.slots[(seq & self.mask) as usize].store(ns, Ordering::Relaxed);
    }

    fn get(&self, seq: u64) -> Instant {
        self.start
            + Duration::from_nanos(self.slots[(seq & self.mask) as usize].load(Ordering::Relaxed))
    }
}

/// What a producer's delivery reports add up to.
struct Acked {
    histogram: Histogram<u64>,
    seqs: SeqSet,
    measured: u64,
}

fn run_producer(
    index: u32,
    topic: &str,
    brokers: &str,
    options: &LoadOptions,
    start: Instant,
    stop: &AtomicBool,
    live: &Arc<Live>,
) -> Result<ProducerResult, String> {
    let config = ProducerConfig {
        acks: options.acks,
        linger_ms: options.linger_ms,
        batch_bytes: options.batch_bytes,
        ..ProducerConfig::default()
    };
    let record_bytes = options.message_bytes + RECORD_OVERHEAD_BYTES;
    let times = Arc::new(SendTimes::new(start, config.buffer_bytes_max / record_bytes + 1));
    let acked = Arc::new(Mutex::new(Acked {
        histogram: latency_histogram(),
        seqs: SeqSet::default(),
        measured: 0,
    }));
    let measure_from = start + options.warmup;
    let handler: DeliveryHandler = {
        let (times, acked, live) = (times.clone(), acked.clone(), live.clone());
        Arc::new(move |delivery: &Delivery<'_>| {
            let done = Instant::now();
            let count = delivery.tagged.len() as u64;
            if delivery.outcome.is_err() {
                live.errors.fetch_add(count, Ordering::Relaxed);
                return;
            }
            let mut acked = acked.lock().unwrap_or_else(|p| p.into_inner());
            let mut recent = live.recent.lock().unwrap_or_else(|p| p.into_inner());
            for &(_, seq) in delivery.tagged {
                let intended = times.get(seq);
                let latency = latency_us(intended, done);
                acked.seqs.insert(seq);
                record_us(&mut recent, latency);
                if intended >= measure_from {
                    record_us(&mut acked.histogram, latency);
                    acked.measured += 1;
                }
            }
            live.acked.fetch_add(count, Ordering::Relaxed);
        })
    };
    let producer =
        Producer::connect_with_delivery(brokers, config, handler).map_err(|e| e.to_string())?;
    // The message: [producer u32][reserved u32][seq u64][send time ns u64][fill],
    // rewritten in place for each send.
    let mut value = vec![0u8; HEADER_BYTES];
    value.extend_from_slice(&payload_fill(options));
    value[..4].copy_from_slice(&index.to_le_bytes());
    let mut pacer = Pacer::new(start, options.rate_per_s / options.producer_count() as f64);
    let clock = WallClock::new();
    let mut rng = fastrand::Rng::with_seed(u64::from(index) + 1);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = pacer.next_intended(now);
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
            continue;
        }
        let intended = pacer.advance(now);
        times.set(seq, intended);
        // Wall-clock send time for consumers, from the monotonic reading
        // already taken (one clock read per message, not two).
        let sent_ns = clock.unix_ns(now);
        value[8..16].copy_from_slice(&seq.to_le_bytes());
        value[16..24].copy_from_slice(&sent_ns.to_le_bytes());
        let key = match options.keys {
            Keys::None => None,
            Keys::RoundRobin => Some((seq % 1024).to_le_bytes()),
            Keys::Random => Some(rng.u64(..).to_le_bytes()),
        };
        let record = SendRecord {
            topic,
            key: key.as_ref().map(|k| &k[..]),
            value: &value,
            timestamp_ms: Some((sent_ns / 1_000_000) as i64),
            ..SendRecord::default()
        };
        if let Err(e) = producer.send_tagged(&record, seq) {
            return Err(format!("producer {index}: {e}"));
        }
        seq += 1;
    }
    producer.close();
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner());
    Ok(ProducerResult {
        histogram: acked.histogram.clone(),
        acked: acked.seqs.clone(),
        measured: acked.measured,
    })
}

struct ConsumerResult {
    e2e: Histogram<u64>,
    seen: Seen,
    measured: u64,
    measured_bytes: u64,
    consumed: u64,
    commits: CommitTimer,
    /// When its last record arrived: `consume` measures up to there (a
    /// group member waits a quiet spell before it stops).
    last_record: Option<Instant>,
}

/// Where a consumer's partitions come from.
enum Source {
    Assign { partitions: Vec<u32>, from: SeekTo },
    Group { options: GroupOptions, listener: TrackingListener },
}

/// A group member stops once nothing arrived for this long after the
/// producers stopped and enough was read: duplicates after a rebalance
/// make "enough" reachable before everything is read.
const GROUP_QUIET: Duration = Duration::from_millis(500);

#[allow(clippy::too_many_arguments)]
fn run_consumer(
    topic: &str,
    source: Source,
    brokers: &str,
    measure_from_ns: &AtomicU64,
    commit_rate_per_s: f64,
    producers_done: &AtomicBool,
    expected: &AtomicU64,
    deadline: Instant,
    live: &Live,
) -> Result<ConsumerResult, String> {
    let (mut consumer, under_group) = match source {
        Source::Assign { partitions, from } => {
            let mut consumer =
                Consumer::connect(brokers, ConsumerConfig::default()).map_err(|e| e.to_string())?;
            consumer.assign(topic, &partitions, from).map_err(|e| e.to_string())?;
            (consumer, false)
        }
        Source::Group { options, listener } => {
            // A fresh group starts at the earliest record (consume); an
            // e2e group's offsets were set to the end before it joined.
            let config = ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::connect(brokers, config).map_err(|e| e.to_string())?;
            consumer.subscribe(options).map_err(|e| e.to_string())?;
            consumer.set_rebalance_listener(Box::new(listener)).map_err(|e| e.to_string())?;
            (consumer, true)
        }
    };
    let mut result = ConsumerResult {
        e2e: latency_histogram(),
        seen: Seen::default(),
        measured: 0,
        measured_bytes: 0,
        consumed: 0,
        commits: CommitTimer::new(commit_rate_per_s, Instant::now()),
        last_record: None,
    };
    let mut last_record = Instant::now();
    let result = loop {
        let count = consumer
            .poll_each(Duration::from_millis(100), |d| {
                let value = d.record.value();
                result.consumed += 1;
                if value.len() < HEADER_BYTES {
                    return;
                }
                let producer = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                let mut x = [0u8; 8];
                x.copy_from_slice(&value[8..16]);
                let seq = u64::from_le_bytes(x);
                x.copy_from_slice(&value[16..24]);
                let sent_ns = u64::from_le_bytes(x);
                result.seen.record(producer, d.partition, seq);
                if sent_ns >= measure_from_ns.load(Ordering::Relaxed) {
                    record_us(&mut result.e2e, unix_ns().saturating_sub(sent_ns) / 1000);
                    result.measured += 1;
                    result.measured_bytes += value.len() as u64;
                }
            })
            .map_err(|e| e.to_string())?;
        live.consumed.fetch_add(count as u64, Ordering::Relaxed);
        let now = Instant::now();
        if count > 0 {
            last_record = now;
            result.last_record = Some(now);
        }
        let done = producers_done.load(Ordering::Acquire);
        let measured = unix_ns() >= measure_from_ns.load(Ordering::Relaxed);
        // Its outcome is in the timer's counts.
        let _counted = result.commits.maybe_commit(&mut consumer, measured);
        if done
            && count == 0
            && live.consumed.load(Ordering::Relaxed) >= expected.load(Ordering::Acquire)
            && (!under_group || now.duration_since(last_record) >= GROUP_QUIET)
        {
            break result;
        }
        if now > deadline {
            break result;
        }
    };
    if under_group {
        // `close` tells the listener (so the tracker) what it gives up.
        consumer.close().map_err(|e| format!("leaving the group: {e}"))?;
    }
    Ok(result)
}

/// Starts `options.producers` producer threads per topic. Producer i writes
/// to topic i / producers; its index is unique over all topics, so delivery
/// accounting tells every producer apart.
pub(crate) fn spawn_producers<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    topics: &'env [String],
    brokers: &'env str,
    options: &'env LoadOptions,
    start: Instant,
    stop: &'env AtomicBool,
    live: &'env Arc<Live>,
) -> Vec<std::thread::ScopedJoinHandle<'scope, Result<ProducerResult, String>>> {
    (0..options.producer_count())
        .map(|i| {
            let topic = topics[i / options.producers].as_str();
            s.spawn(move || run_producer(i as u32, topic, brokers, options, start, stop, live))
        })
        .collect()
}

pub(crate) fn section(
    records: u64,
    bytes: u64,
    window: Duration,
    histogram: Option<&Histogram<u64>>,
) -> Section {
    let s = window.as_secs_f64().max(1e-9);
    Section {
        records,
        records_per_s: records as f64 / s,
        bytes_per_s: bytes as f64 / s,
        latency_us: histogram.map(LatencyUs::of),
    }
}

/// Samples the last second; prints the progress line when `show`.
fn sample(
    live: &Live,
    started: Instant,
    last: &mut (Instant, u64, u64),
    message_bytes: usize,
    show: bool,
) -> TimelinePoint {
    let now = Instant::now();
    let acked = live.acked.load(Ordering::Relaxed);
    let consumed = live.consumed.load(Ordering::Relaxed);
    let seconds = now.duration_since(last.0).as_secs_f64().max(1e-9);
    let point = TimelinePoint {
        elapsed_s: started.elapsed().as_secs_f64(),
        produced_per_s: (acked - last.1) as f64 / seconds,
        consumed_per_s: (consumed - last.2) as f64 / seconds,
        produce_p99_us: {
            let mut recent = live.recent.lock().unwrap_or_else(|p| p.into_inner());
            let p99 = recent.value_at_quantile(0.99);
            recent.reset();
            p99
        },
    };
    *last = (now, acked, consumed);
    if show {
        let rate = point.produced_per_s.max(point.consumed_per_s);
        print!(
            "\r{:>5.1}s  {:>10.0} msgs/s  {:>8.1} MB/s  p99 {} µs  errors {}   ",
            point.elapsed_s,
            rate,
            rate * message_bytes as f64 / 1e6,
            point.produce_p99_us,
            live.errors.load(Ordering::Relaxed)
        );
        if std::io::stdout().flush().is_err() {
            // A closed stdout only loses the progress line.
        }
    }
    point
}

pub fn run(mut options: LoadOptions) -> Result<LoadReport, String> {
    if options.message_bytes < HEADER_BYTES {
        return Err(format!("--message-bytes must be at least {HEADER_BYTES} (the message carries its id and send time)"));
    }
    if options.producers == 0 && options.mode != Mode::Consume {
        return Err("--producers must be at least 1".into());
    }
    if options.topics == 0 || options.subscriptions == 0 {
        return Err("topics and subscriptions must be at least 1".into());
    }
    let (brokers, embedded) = target(&options)?;
    let topics = options.topic_names();
    let mut counts = Vec::with_capacity(topics.len());
    for topic in &topics {
        counts.push((ensure_topic(&brokers, topic, &options)?, topic));
    }
    // Every topic of the run has the same partitions, which the consumers
    // are spread over: an existing topic's count is the run's count.
    if let Some(&(found, topic)) = counts.iter().find(|(n, _)| *n != options.partitions) {
        if let Some((other, other_topic)) = counts.iter().find(|(n, _)| *n != found) {
            return Err(format!(
                "topic {topic} has {found} partitions and {other_topic} {other}: the run needs \
                 the same count in every topic; choose a new --topic name"
            ));
        }
        eprintln!(
            "mamba-bench: topic {topic} exists with {found} partitions, not --partitions {}; \
             the run uses its {found}",
            options.partitions
        );
        options.partitions = found;
    }
    let live = Arc::new(Live::default());
    let stop = AtomicBool::new(false);
    let producers_done = AtomicBool::new(false);
    let expected = AtomicU64::new(u64::MAX);
    let consumers = if options.mode == Mode::Produce { 0 } else { options.consumers.max(1) };

    // `consume` reads data written before it starts: fill the topic first.
    if options.mode == Mode::Consume {
        let fill = LoadOptions {
            mode: Mode::Produce,
            progress: false,
            warmup: Duration::ZERO,
            producers: options.producers.max(1),
            ..options.clone()
        };
        let fill_stop = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| -> Result<(), String> {
            let handles = spawn_producers(s, &topics, &brokers, &fill, start, &fill_stop, &live);
            std::thread::sleep(options.duration);
            fill_stop.store(true, Ordering::Release);
            for h in handles {
                h.join().map_err(|_| "producer thread panicked".to_string())??;
            }
            Ok(())
        })?;
    }

    if options.mode == Mode::Consume {
        // Every subscription reads what the fill wrote (at least).
        let filled = live.acked.load(Ordering::Relaxed);
        expected.store(filled * u64::from(options.subscriptions), Ordering::Release);
    }
    // An e2e group reads what the run produces: its offsets start at the
    // end, wherever the coordinator first hands a partition.
    if let (Some(group), Mode::E2e) = (&options.group, options.mode) {
        for subscription in 0..options.subscriptions {
            for topic in &topics {
                group_load::start_at_end(
                    &brokers,
                    &group.group_of(subscription),
                    topic,
                    options.partitions,
                )?;
            }
        }
    }
    let tracker = Arc::new(GroupTracker::default());
    let start = Instant::now();
    // Set when the producers start (consume: now): the warm-up counts from
    // there, for producers and consumers alike.
    let measure_from_ns = AtomicU64::new(u64::MAX);
    if options.mode == Mode::Consume {
        measure_from_ns.store(unix_ns() + options.warmup.as_nanos() as u64, Ordering::Relaxed);
    }
    let window = options.duration.saturating_sub(options.warmup);
    let consumer_threads = consumers * options.subscriptions as usize * topics.len();
    let commit_rate_per_consumer = options.commit_rate_per_s / consumer_threads.max(1) as f64;
    let report = std::thread::scope(|s| -> Result<LoadReport, String> {
        let from = if options.mode == Mode::Consume { SeekTo::Earliest } else { SeekTo::Latest };
        // (subscription, consumer thread) for every topic.
        let mut consumer_handles = Vec::new();
        let members =
            (0..options.subscriptions).flat_map(|sub| (0..consumers).map(move |c| (sub, c)));
        for (topic, (subscription, c)) in
            topics.iter().flat_map(|t| members.clone().map(move |m| (t, m)))
        {
            let source = match &options.group {
                Some(group) => Source::Group {
                    options: group_load::group_options(
                        group.group_of(subscription),
                        topic,
                        group.session_timeout_ms,
                        group.assignor.clone(),
                    ),
                    listener: TrackingListener { tracker: tracker.clone(), subscription },
                },
                None => {
                    let partitions: Vec<u32> =
                        (0..options.partitions).filter(|p| *p as usize % consumers == c).collect();
                    if partitions.is_empty() {
                        continue;
                    }
                    Source::Assign { partitions, from }
                }
            };
            let (brokers, options, producers_done, expected, live, measure_from_ns) =
                (&brokers, &options, &producers_done, &expected, &live, &measure_from_ns);
            let deadline = start + options.duration + Duration::from_secs(30);
            consumer_handles.push((
                subscription,
                topic,
                s.spawn(move || {
                    run_consumer(
                        topic,
                        source,
                        brokers,
                        measure_from_ns,
                        commit_rate_per_consumer,
                        producers_done,
                        expected,
                        deadline,
                        live,
                    )
                }),
            ));
        }
        // Consumers position themselves before producers begin; a group's
        // members first wait for the coordinator to hand every partition.
        std::thread::sleep(Duration::from_millis(200));
        if options.group.is_some() && options.mode == Mode::E2e {
            let keys: Vec<(u32, String)> = (0..options.subscriptions)
                .flat_map(|sub| topics.iter().map(move |t| (sub, t.clone())))
                .collect();
            let waited = Instant::now();
            while !tracker.all_held(&keys, options.partitions) {
                if waited.elapsed() > GROUP_FORMING_MAX {
                    return Err(format!(
                        "the consumer groups did not hand out every partition within {} s",
                        GROUP_FORMING_MAX.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let producer_start = Instant::now();
        measure_from_ns.store(unix_ns() + options.warmup.as_nanos() as u64, Ordering::Relaxed);
        let producer_handles = match options.mode {
            Mode::Consume => Vec::new(),
            _ => spawn_producers(s, &topics, &brokers, &options, producer_start, &stop, &live),
        };
        let show = options.progress && std::io::stdout().is_terminal();
        let mut last = (Instant::now(), 0u64, 0u64);
        let mut timeline = Vec::new();
        while producer_start.elapsed() < options.duration {
            std::thread::sleep(
                Duration::from_millis(1000)
                    .min(options.duration.saturating_sub(producer_start.elapsed())),
            );
            timeline.push(sample(&live, producer_start, &mut last, options.message_bytes, show));
        }
        stop.store(true, Ordering::Release);
        let mut produce_hist = latency_histogram();
        let mut acked = Vec::new();
        let mut produced_measured = 0;
        for h in producer_handles {
            let r = h.join().map_err(|_| "producer thread panicked".to_string())??;
            produce_hist.add(&r.histogram).map_err(|e| e.to_string())?;
            produced_measured += r.measured;
            acked.push(r.acked);
        }
        let total_acked: u64 = acked.iter().map(SeqSet::len).sum();
        // Every subscription reads every message.
        let expected_total = total_acked * u64::from(options.subscriptions);
        if options.mode != Mode::Consume {
            expected.store(expected_total, Ordering::Release);
        }
        producers_done.store(true, Ordering::Release);
        let mut e2e_hist = latency_histogram();
        let mut seen: Vec<Vec<Seen>> = (0..options.subscriptions).map(|_| Vec::new()).collect();
        let (mut consumed_measured, mut consumed_bytes, mut consumed_total) = (0u64, 0u64, 0u64);
        let mut last_record = start;
        let (mut commit_hist, mut commits_failed, mut commit_error) =
            (latency_histogram(), 0, None);
        for (subscription, topic, h) in consumer_handles {
            let mut r = h.join().map_err(|_| "consumer thread panicked".to_string())??;
            e2e_hist.add(&r.e2e).map_err(|e| e.to_string())?;
            commit_hist.add(&r.commits.latency_us).map_err(|e| e.to_string())?;
            commits_failed += r.commits.failed;
            commit_error = commit_error.or(r.commits.first_error.take());
            consumed_measured += r.measured;
            consumed_bytes += r.measured_bytes;
            consumed_total += r.consumed;
            last_record = last_record.max(r.last_record.unwrap_or(start));
            r.seen.moved = tracker.moved(subscription, topic);
            seen[subscription as usize].push(r.seen);
        }
        if show {
            println!();
        }
        // consume: from the consumers' start to the last record delivered.
        let consume_window =
            if options.mode == Mode::Consume { last_record.duration_since(start) } else { window };
        let produce = (options.mode != Mode::Consume).then(|| {
            section(
                produced_measured,
                produced_measured * options.message_bytes as u64,
                window,
                Some(&produce_hist),
            )
        });
        let consume = (consumers > 0).then(|| {
            let (records, bytes) = if options.mode == Mode::Consume {
                (consumed_total, consumed_total * options.message_bytes as u64)
            } else {
                (consumed_measured, consumed_bytes)
            };
            section(records, bytes, consume_window, None)
        });
        let e2e = (options.mode == Mode::E2e)
            .then(|| section(consumed_measured, consumed_bytes, window, Some(&e2e_hist)));
        // Each subscription must see every acknowledged message once.
        let delivery = (options.mode == Mode::E2e).then(|| {
            seen.iter()
                .map(|subscription| account(&acked, subscription))
                .fold(DeliveryReport::default(), |total, one| total.plus(&one))
        });
        let commit = (options.commit_rate_per_s > 0.0).then(|| CommitSection {
            commits_per_s: commit_hist.len() as f64 / window.as_secs_f64().max(1e-9),
            failed: commits_failed,
            first_error: commit_error,
            latency_us: LatencyUs::of(&commit_hist),
        });
        Ok(LoadReport {
            produce,
            consume,
            e2e,
            delivery,
            commit,
            errors: live.errors.load(Ordering::Relaxed),
            timeline,
            produce_percentiles: percentiles(&produce_hist),
            e2e_percentiles: percentiles(&e2e_hist),
        })
    })?;
    if let Some(embedded) = embedded {
        embedded.node.stop().map_err(|e| e.to_string())?;
    }
    Ok(report)
}
