//! The workload of `mamba-bench verify`: producers append self-describing
//! values with `acks=all` (idempotent), readers read every partition by
//! assignment and a consumer group reads and commits, all at once; every
//! operation goes to the history with its outcome. After the run, with
//! producers flushed, the readers read on to the end offsets and a final
//! scan reads every partition from its start, so each acknowledged record
//! has had its chance to be read.
//!
//! Threads, not tasks: each client is a blocking `mamba_net::client`
//! object on a thread of its own, and all of them send their events over
//! one channel to the thread that writes the history, in the order they
//! happened (a commit is sent before the commit's consequences can be
//! read by another member, so ties in time keep cause before effect).

use super::history::{decode_value, encode_value, Event, HistoryWriter, Outcome, ValueId};
use futures::executor::block_on;
use mamba_net::client::{
    Acks, Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, GroupOptions, OffsetReset,
    Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use mamba_net::protocol::{ConfigEntry, ErrorCode, LATEST_TIMESTAMP};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The reader of the last pass over every partition, after the load.
pub const FINAL_SCAN: &str = "final-scan";

/// What `mamba-bench verify` runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// `None`: a one-node broker in this process.
    pub brokers: Option<String>,
    pub topic: String,
    pub partitions: u32,
    /// For the topic it creates; `None`: the cluster's default.
    pub replication_factor: Option<u32>,
    pub producers: u32,
    /// Produce attempts per second over all producers.
    pub rate: f64,
    pub value_bytes: usize,
    pub duration: Duration,
    /// Readers of assigned partitions.
    pub readers: u32,
    /// Members of the consumer group.
    pub group_members: u32,
    pub history: PathBuf,
    /// After the run: how long readers may take to reach the end offsets.
    pub drain_timeout: Duration,
    /// Faults to strike while producing (`faults.rs`).
    pub faults: Option<super::faults::FaultPlan>,
}

/// What the run itself saw (the checker reads the history for the rest).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunSummary {
    pub brokers: String,
    pub end_offsets: BTreeMap<u32, u64>,
    pub read_errors: u64,
    pub commit_errors: u64,
    /// Readers that did not reach the end offsets within the drain timeout.
    pub readers_short: u32,
    pub faults_struck: u64,
    /// Why the fault schedule stopped early.
    pub fault_error: Option<String>,
}

/// Sends events to the history with their time.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: mpsc::Sender<Event>,
}

impl Recorder {
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn record(&self, event: Event) {
        // The writer only stops after every sender is gone.
        let _ = self.events.send(event);
    }
}

/// How a failed produce ended: only a refusal that says the record was
/// not written is `Failed`; a timeout, a lost connection or a retriable
/// error the producer gave up on may have written it.
fn outcome_of(e: &ClientError) -> Outcome {
    match e {
        ClientError::Broker { code, .. } if !code.is_retriable() => Outcome::Failed,
        ClientError::UnknownTopic(_) | ClientError::InvalidArgument(_) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Runs the workload, writing the history; answers what it saw.
pub fn run(options: &VerifyOptions) -> Result<RunSummary, String> {
    if options.producers == 0 || options.rate <= 0.0 {
        return Err("verify needs --producers ≥ 1 and a --rate above 0".into());
    }
    let (brokers, embedded) = crate::load::target_at(options.brokers.as_deref())?;
    ensure_topic(&brokers, options)?;
    let (events, received) = mpsc::channel();
    let recorder = Recorder { start: Instant::now(), events };
    let mut writer = HistoryWriter::create(&options.history)?;
    let writing = std::thread::spawn(move || -> Result<(), String> {
        for event in received {
            writer.write(&event)?;
        }
        writer.finish()
    });
    let mut summary = RunSummary { brokers: brokers.clone(), ..RunSummary::default() };
    let producing = Arc::new(AtomicBool::new(true));
    let group_on = Arc::new(AtomicBool::new(true));
    let ends: Arc<std::sync::OnceLock<BTreeMap<u32, u64>>> = Arc::default();
    let read_errors = Arc::new(AtomicU64::new(0));
    let commit_errors = Arc::new(AtomicU64::new(0));

    let mut producers = Vec::new();
    for p in 0..options.producers {
        let (brokers, recorder, producing) =
            (brokers.clone(), recorder.clone(), Arc::clone(&producing));
        let options = options.clone();
        producers.push(std::thread::spawn(move || {
            produce(p, &brokers, &options, &recorder, &producing)
        }));
    }
    let mut readers = Vec::new();
    for r in 0..options.readers {
        let partitions: Vec<u32> =
            (0..options.partitions).filter(|p| p % options.readers == r).collect();
        let (brokers, recorder, topic) = (brokers.clone(), recorder.clone(), options.topic.clone());
        let (ends, errors, drain) =
            (Arc::clone(&ends), Arc::clone(&read_errors), options.drain_timeout);
        readers.push(std::thread::spawn(move || {
            read_assigned(
                &format!("reader-{r}"),
                &brokers,
                &topic,
                &partitions,
                &recorder,
                &ends,
                &errors,
                drain,
            )
        }));
    }
    let group_id = format!("mamba-verify-{}-{}", std::process::id(), recorder.now_ms());
    let mut members = Vec::new();
    for m in 0..options.group_members {
        let (brokers, recorder, topic) = (brokers.clone(), recorder.clone(), options.topic.clone());
        let (group_id, on) = (group_id.clone(), Arc::clone(&group_on));
        let (read_errors, commit_errors) = (Arc::clone(&read_errors), Arc::clone(&commit_errors));
        members.push(std::thread::spawn(move || {
            read_in_group(
                m,
                &brokers,
                &topic,
                &group_id,
                &recorder,
                &on,
                &read_errors,
                &commit_errors,
            )
        }));
    }

    let faults_off = Arc::new(AtomicBool::new(false));
    let faulting = options.faults.clone().map(|plan| {
        let (recorder, off) = (recorder.clone(), Arc::clone(&faults_off));
        std::thread::spawn(move || super::faults::run(&plan, &recorder, &off))
    });
    std::thread::sleep(options.duration);
    // Everything heals before producers flush and readers drain.
    faults_off.store(true, Ordering::Relaxed);
    if let Some(faulting) = faulting {
        match faulting.join().map_err(|_| "the fault thread panicked")? {
            Ok(struck) => summary.faults_struck = struck,
            Err(e) => summary.fault_error = Some(e),
        }
    }
    producing.store(false, Ordering::Relaxed);
    for p in producers {
        p.join().map_err(|_| "a producer thread panicked")??;
    }
    group_on.store(false, Ordering::Relaxed);
    for m in members {
        m.join().map_err(|_| "a group member thread panicked")?;
    }
    let end_offsets = end_offsets(&brokers, options)?;
    let _ = ends.set(end_offsets.clone());
    for r in readers {
        if !r.join().map_err(|_| "a reader thread panicked")? {
            summary.readers_short += 1;
        }
    }
    let all: Vec<u32> = (0..options.partitions).collect();
    let (final_ends, final_errors) = (Arc::clone(&ends), Arc::new(AtomicU64::new(0)));
    if !read_assigned(
        FINAL_SCAN,
        &brokers,
        &options.topic,
        &all,
        &recorder,
        &final_ends,
        &final_errors,
        options.drain_timeout,
    ) {
        summary.readers_short += 1;
    }
    drop(recorder);
    writing.join().map_err(|_| "the history writer panicked")??;
    if let Some(embedded) = embedded {
        embedded.node.stop().map_err(|e| e.to_string())?;
    }
    summary.end_offsets = end_offsets;
    summary.read_errors =
        read_errors.load(Ordering::Relaxed) + final_errors.load(Ordering::Relaxed);
    summary.commit_errors = commit_errors.load(Ordering::Relaxed);
    Ok(summary)
}

fn ensure_topic(brokers: &str, options: &VerifyOptions) -> Result<(), String> {
    let admin =
        Admin::connect(brokers).map_err(|e| format!("{e} (is a broker running at {brokers}?)"))?;
    let configs = options
        .replication_factor
        .map(|rf| vec![ConfigEntry { name: "replication.factor".into(), value: rf.to_string() }])
        .unwrap_or_default();
    match block_on(admin.create_topic(&options.topic, options.partitions, configs)) {
        Ok(()) => Ok(()),
        Err(ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. }) => Err(format!(
            "topic {} exists: verify checks a history from a topic's start, so give a new --topic",
            options.topic
        )),
        Err(e) => Err(format!("creating topic {}: {e}", options.topic)),
    }
}

/// The topic's end offsets, asked until a leader of every partition
/// answers (after faults heal) or 60 s pass.
fn end_offsets(brokers: &str, options: &VerifyOptions) -> Result<BTreeMap<u32, u64>, String> {
    let partitions: Vec<u32> = (0..options.partitions).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let answer = Admin::connect(brokers).and_then(|admin| {
            block_on(admin.list_offsets(&options.topic, &partitions, LATEST_TIMESTAMP))
        });
        match answer {
            Ok(listed) if listed.iter().all(|l| l.error_code == 0) => {
                return Ok(listed.iter().map(|l| (l.partition, l.offset)).collect());
            }
            Ok(listed) => {
                last = format!("{:?}", listed.iter().map(|l| l.error_code).collect::<Vec<_>>())
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("the end offsets of {} could not be read within 60 s: {last}", options.topic))
}

fn produce(
    p: u32,
    brokers: &str,
    options: &VerifyOptions,
    recorder: &Recorder,
    producing: &AtomicBool,
) -> Result<(), String> {
    let config = ProducerConfig { acks: Acks::All, idempotence: true, ..ProducerConfig::default() };
    let producer = Producer::connect(brokers, config).map_err(|e| format!("producer {p}: {e}"))?;
    let interval = Duration::from_secs_f64(f64::from(options.producers) / options.rate);
    let mut next = Instant::now();
    let mut seq = 0u64;
    while producing.load(Ordering::Relaxed) {
        let id = ValueId { producer: p, seq };
        seq += 1;
        let record = ProducerRecord {
            topic: options.topic.clone(),
            value: encode_value(id, options.value_bytes),
            ..ProducerRecord::default()
        };
        let sent_at = Instant::now();
        let done = recorder.clone();
        let sent = producer.send_with_callback(record, move |result| {
            let (outcome, partition, offset, error) = match result {
                Ok(m) => (Outcome::Ok, Some(m.partition), m.offset, None),
                Err(e) => (outcome_of(&e), None, None, Some(e.to_string())),
            };
            done.record(Event::Produce {
                t_ms: done.now_ms(),
                latency_us: u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX),
                id,
                outcome,
                partition,
                offset,
                error,
            });
        });
        if let Err(e) = sent {
            // Not queued: never sent.
            recorder.record(Event::Produce {
                t_ms: recorder.now_ms(),
                latency_us: 0,
                id,
                outcome: Outcome::Failed,
                partition: None,
                offset: None,
                error: Some(e.to_string()),
            });
        }
        next += interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Far behind (a stall): go on from now rather than burst.
            None if now - next > Duration::from_secs(1) => next = now,
            None => {}
        }
    }
    // Every delivery answered (acknowledged, failed, or given up on).
    producer.flush();
    Ok(())
}

fn read_event(reader: &str, group: bool, r: &ConsumerRecord, recorder: &Recorder) -> Event {
    let (id, garbled) = match decode_value(&r.value) {
        Ok(id) => (Some(id), None),
        Err(what) => (None, Some(what)),
    };
    Event::Read {
        t_ms: recorder.now_ms(),
        reader: reader.to_string(),
        group,
        partition: r.partition,
        offset: r.offset,
        id,
        garbled,
    }
}

/// Reads `partitions` from their start until `ends` is known and reached
/// (then answers true), or the drain timeout passes after `ends` is set
/// (false).
#[allow(clippy::too_many_arguments)]
fn read_assigned(
    name: &str,
    brokers: &str,
    topic: &str,
    partitions: &[u32],
    recorder: &Recorder,
    ends: &std::sync::OnceLock<BTreeMap<u32, u64>>,
    errors: &AtomicU64,
    drain_timeout: Duration,
) -> bool {
    let config = ConsumerConfig { enable_auto_commit: false, ..ConsumerConfig::default() };
    let mut consumer = None;
    let mut drain_deadline = None;
    loop {
        if let Some(ends) = ends.get() {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain_timeout);
            let reached = consumer.as_ref().is_some_and(|c: &Consumer| {
                partitions.iter().all(|p| c.position(topic, *p).unwrap_or(0) >= ends[p])
            });
            if reached || partitions.iter().all(|p| ends[p] == 0) {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "mamba-bench: {name} did not read to the end offsets within {drain_timeout:?}"
                );
                return false;
            }
        }
        let c = match consumer.as_mut() {
            Some(c) => c,
            None => match Consumer::connect(brokers, config.clone())
                .and_then(|mut c| c.assign(topic, partitions, SeekTo::Earliest).map(|()| c))
            {
                Ok(c) => consumer.insert(c),
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        match c.poll(Duration::from_millis(200)) {
            Ok(records) => {
                for r in &records {
                    recorder.record(read_event(name, false, r, recorder));
                }
            }
            Err(ClientError::OffsetOutOfRange {
                partition,
                offset,
                log_start_offset,
                log_end_offset,
                ..
            }) => {
                errors.fetch_add(1, Ordering::Relaxed);
                // Below the start (retention) go to the start; past the end
                // (a truncated log) go to the end: what was read past it
                // is on record, and the checker judges it.
                let to = if offset < log_start_offset { log_start_offset } else { log_end_offset };
                let _ = c.seek(topic, partition, SeekTo::Offset(to));
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A group member: reads what the group gives it and commits after each
/// poll, recording the commits the coordinator accepted.
#[allow(clippy::too_many_arguments)]
fn read_in_group(
    m: u32,
    brokers: &str,
    topic: &str,
    group_id: &str,
    recorder: &Recorder,
    on: &AtomicBool,
    read_errors: &AtomicU64,
    commit_errors: &AtomicU64,
) {
    let name = format!("member-{m}");
    let config = ConsumerConfig {
        enable_auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer: Option<Consumer> = None;
    while on.load(Ordering::Relaxed) {
        let c = match consumer.as_mut() {
            Some(c) => c,
            None => {
                let joined = Consumer::connect(brokers, config.clone()).and_then(|mut c| {
                    let options = GroupOptions {
                        group_id: group_id.to_string(),
                        topics: vec![topic.to_string()],
                        instance_id: None,
                        assignor: None,
                        session_timeout_ms: 0,
                        client_id: format!("mamba-verify/{name}"),
                    };
                    c.subscribe(options).map(|()| c)
                });
                match joined {
                    Ok(c) => consumer.insert(c),
                    Err(_) => {
                        read_errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                }
            }
        };
        let records = match c.poll(Duration::from_millis(200)) {
            Ok(records) => records,
            Err(_) => {
                read_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for r in &records {
            recorder.record(read_event(&name, true, r, recorder));
            next.insert(r.partition, r.offset + 1);
        }
        if next.is_empty() {
            continue;
        }
        let offsets: Vec<((String, u32), u64)> =
            next.iter().map(|(p, o)| ((topic.to_string(), *p), *o)).collect();
        match c.commit_offsets(&offsets) {
            Ok(()) => {
                for (partition, offset) in next {
                    recorder.record(Event::Commit {
                        t_ms: recorder.now_ms(),
                        reader: name.clone(),
                        partition,
                        offset,
                    });
                }
            }
            Err(_) => {
                commit_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(c) = consumer {
        let _ = c.close();
    }
}
