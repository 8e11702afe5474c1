//! `mamba-bench`: Mamba's load generator and benchmarks.

mod delivery;
mod disk_mode;
mod engine_mode;
mod group_load;
mod load;
mod machine;
mod member_wire;
mod metadata_mode;
mod ownership;
mod pacing;
mod rebalance;
mod rebalance_member;
mod report;
mod stats;
mod verify;
mod workload;

use clap::{Parser, Subcommand, ValueEnum};
use mamba_engine::Durability;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// glommio allocates DMA buffers beyond its registered memory with the
// global allocator; glibc's malloc would mmap and unmap every 1 MiB write
// buffer (page faults on each write). mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mamba-bench",
    version,
    about = "Measure what Mamba (and the disk under it) can do"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Fsync,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeysArg {
    None,
    RoundRobin,
    Random,
}

/// What `produce`, `consume` and `e2e` share.
#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// Brokers to load (comma-separated host:port); or --embedded.
    #[arg(short, long, env = "MAMBA_BROKERS")]
    brokers: Option<String>,
    /// Start a broker in this process on a free loopback port, with a
    /// temporary data directory removed afterwards (--brokers and
    /// MAMBA_BROKERS are then ignored).
    #[arg(long)]
    embedded: bool,
    /// Topic to use; created with --partitions and --durability if missing.
    /// With --topics N > 1: NAME-0 … NAME-(N-1).
    #[arg(long, default_value = "mamba-bench")]
    topic: String,
    /// Number of topics.
    #[arg(long, default_value_t = 1)]
    topics: u32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Producer threads per topic, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer threads per subscription; a topic's partitions are spread
    /// over them.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Subscriptions per topic: each one reads (and checks) every message.
    #[arg(long, default_value_t = 1)]
    subscriptions: u32,
    /// Size of each message, in bytes (at least 24: id and send time).
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Producer batch size, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    batch_bytes: usize,
    /// How long a producer waits to fill a batch, in ms (1, as the
    /// OpenMessaging Benchmark's Kafka driver sets it).
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Durability of the topic it creates.
    #[arg(long, value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// Messages per second over all producers; 0 = as fast as possible.
    /// With a rate, latency counts from each message's intended send time.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Length of the run, in seconds (warm-up included).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Seconds at the start left out of every figure.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Message keys: none, round-robin (1024 keys) or random.
    #[arg(long, value_enum, default_value = "none")]
    keys: KeysArg,
    /// Message contents: random, zeros, or a file's bytes.
    #[arg(long, default_value = "random")]
    payload: String,
    /// Report format: text (with a progress line on a terminal) or json
    /// (one object: parameters, machine, produce/consume/e2e/delivery).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// An OpenMessaging Benchmark workload file (YAML): sets topics,
    /// partitions, message size, payload, keys, producers and consumers,
    /// subscriptions, rate, duration and warm-up instead of those flags.
    #[arg(long, conflicts_with_all = [
        "topics", "partitions", "producers", "consumers", "subscriptions", "message_bytes",
        "rate", "duration_s", "warmup_s", "keys", "payload",
    ])]
    workload: Option<PathBuf>,
    /// Also write report.json, throughput.svg and latency.svg here.
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Also measure the disk reference (`disk` mode, 3 s) on the data disk
    /// (the embedded broker's, or the current directory's) and report
    /// produce throughput as a ratio of it.
    #[arg(long)]
    vs_disk: bool,
    /// consume and e2e: each subscription's consumers form a consumer
    /// group (subscription 0 this one, i > 0 GROUP-i) instead of assigning
    /// partitions. Without a value: a fresh group id for the run. consume
    /// starts a partition with no commit at the earliest record; e2e sets
    /// the group's offsets to the end before it joins (the group must have
    /// no members).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    group: Option<String>,
    /// With --group: each member's session timeout (0: the broker's
    /// default).
    #[arg(long, default_value_t = 0, requires = "group")]
    session_timeout_ms: u32,
    /// With --group: commit_sync calls per second over all consumers; the
    /// report gives their latency.
    #[arg(long, default_value_t = 0.0, requires = "group")]
    commit_rate: f64,
    /// With --group: the group's assignor, uniform (the broker's default),
    /// range or round-robin. round-robin splits partitions as the consumers
    /// without a group do (consumer i: partitions i, i+N, …), so the two
    /// read the same partitions from the same shards.
    #[arg(long, value_name = "NAME", requires = "group")]
    assignor: Option<String>,
}

/// `rebalance`: a group under load while members join, leave and die.
#[derive(clap::Args, Clone)]
struct RebalanceArgs {
    /// Brokers to load (comma-separated host:port); or --embedded.
    #[arg(short, long, env = "MAMBA_BROKERS")]
    brokers: Option<String>,
    /// Start a broker in this process (members connect to it).
    #[arg(long)]
    embedded: bool,
    /// Topic to read; created with --partitions if missing.
    #[arg(long, default_value = "mamba-bench-rebalance")]
    topic: String,
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Members at the start, each a process of its own.
    #[arg(long, default_value_t = 3)]
    consumers: usize,
    /// Messages per second produced throughout.
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    #[arg(long, default_value_t = 1024 * 1024)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, value_enum, default_value = "fsync")]
    durability: DurabilityArg,
    /// The events, in order: join, leave (a clean close) or kill (SIGKILL),
    /// comma-separated. Leave and kill take the longest-serving member.
    #[arg(long, value_delimiter = ',', conflicts_with = "events")]
    schedule: Vec<String>,
    /// Without --schedule: this many events, leave and join alternating.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Time from one event to the next (longer when one takes longer to
    /// settle).
    #[arg(long, default_value_t = 2_000)]
    event_interval_ms: u64,
    /// Each member's session timeout: a killed member's partitions move
    /// after it (the broker takes 1 000 ms at least).
    #[arg(long, default_value_t = 3_000)]
    session_timeout_ms: u32,
    /// commit_sync calls per second over all members; the report gives
    /// their latency.
    #[arg(long, default_value_t = 0.0)]
    commit_rate: f64,
    /// Group id; default: a fresh one (its offsets start at the end).
    #[arg(long)]
    group: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Also write report.json and lag.svg here.
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

/// `verify`: lost, duplicated, reordered or garbled records under faults.
#[derive(clap::Args, Clone)]
struct VerifyArgs {
    /// Brokers to check (comma-separated host:port); or --embedded, or
    /// --check.
    #[arg(short, long, env = "MAMBA_BROKERS", conflicts_with_all = ["embedded", "check"])]
    brokers: Option<String>,
    /// Start a one-node broker in this process.
    #[arg(long, conflicts_with = "check")]
    embedded: bool,
    /// Run nothing: check this saved history file again.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// The topic it creates (it must not exist); default: a fresh name.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// The topic's replication factor [default: the cluster's].
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Idempotent producers, acks=all.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Produce attempts per second over all producers.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Bytes of each value's payload (after its id and checksum).
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// How long producers run, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Readers of assigned partitions (they read everything).
    #[arg(long, default_value_t = 2)]
    readers: u32,
    /// Members of one consumer group, which commit after every poll.
    #[arg(long, default_value_t = 2)]
    group_members: u32,
    /// Where the history goes [default: verify-history.jsonl here].
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// After producing stops, how long readers may take to read to the end.
    #[arg(long, default_value_t = 60)]
    drain_timeout_s: u64,
    /// Strike faults with this command while producing (`CMD start KIND`,
    /// `CMD heal KIND`, `CMD heal-all`; see ci/faults/), one at a time.
    #[arg(long, value_name = "CMD")]
    faults: Option<PathBuf>,
    /// Which faults, comma-separated (the command's names).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,isolate,split,oneway,linkdown")]
    fault_kinds: Vec<String>,
    /// Seed of the fault schedule [default: drawn, and printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Longest quiet time between faults, in seconds.
    #[arg(long, default_value_t = 6)]
    fault_quiet_s: u64,
    /// Longest fault, in seconds.
    #[arg(long, default_value_t = 8)]
    fault_length_s: u64,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Also write report.json and timeline.svg (operations and latency
    /// per second, faults shaded) here.
    #[arg(long)]
    report_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Mode {
    /// Produce through the broker and report ack throughput and latency.
    Produce(LoadArgs),
    /// Fill the topic for --duration-s, then read it back and report
    /// consume throughput.
    Consume(LoadArgs),
    /// Produce and consume at once: publish-to-delivery latency, and a check
    /// that every message arrives once, in order per partition.
    E2e(LoadArgs),
    /// A consumer group under a steady produce rate while members join,
    /// leave and are killed: time to reassign and resume per event, records
    /// read twice, nothing lost, lag over time.
    Rebalance(RebalanceArgs),
    /// Checks the brokers lose nothing: producers (acks=all), readers and
    /// a consumer group run while faults may strike; every operation is
    /// recorded, and the history is then checked for lost, duplicated,
    /// inconsistent, reordered, non-monotonic and corrupt records. Exit
    /// status 0 only when none is found.
    Verify(VerifyArgs),
    /// Times metadata propagation in a running cluster: topic creations
    /// through the first of --brokers, each until every listed broker's
    /// metadata shows it (p50/p99/max).
    Metadata {
        /// Client addresses of every broker, comma-separated.
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value_t = 200)]
        rounds: u32,
    },
    /// One member of a `rebalance` run (started by it).
    #[command(hide = true)]
    RebalanceMember {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        session_timeout_ms: u32,
        #[arg(long)]
        commit_rate: f64,
        #[arg(long)]
        lifetime_s: u64,
    },
    /// Append through the embeddable engine API (no network), then read
    /// everything back and verify it.
    Engine {
        /// Data directory; left in place for inspection. Default: a
        /// temporary directory, removed afterwards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Partitions of the benchmark topic; one writer thread each.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Size of each message value, in bytes.
        #[arg(long, default_value_t = 1024)]
        message_bytes: usize,
        /// Records per appended batch.
        #[arg(long, default_value_t = 64)]
        batch_records: usize,
        /// Durability policy of the benchmark topic.
        #[arg(long, value_enum, default_value = "fsync")]
        durability: DurabilityArg,
        /// How long to append, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Engine shards (executor threads). Default: one per core.
        #[arg(long)]
        shards: Option<u32>,
        /// Appends each writer keeps in flight.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The disk's own limit: sequential O_DIRECT writes and reads through
    /// io_uring with no engine logic, and 4 KiB write+fdatasync latency.
    Disk {
        /// Directory on the disk to measure (a temporary file is written there).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Size of each write, in bytes (a multiple of 4096).
        #[arg(long, default_value_t = 1 << 20)]
        write_bytes: usize,
        /// Writes (and reads) kept in flight.
        #[arg(long, default_value_t = 4)]
        queue_depth: usize,
        /// How long each phase runs, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    // An embedded broker and the load share this process; see the functions.
    mamba_engine::runtime::keep_freed_memory();
    if let Err(e) = mamba_engine::runtime::disable_transparent_huge_pages() {
        eprintln!("mamba-bench: transparent huge pages stay on ({e}); expect latency spikes");
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mamba-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_verify(a: &VerifyArgs) -> Result<(), String> {
    let (history, run) = match &a.check {
        Some(file) => (file.clone(), None),
        None => {
            if !a.embedded && a.brokers.is_none() {
                return Err(
                    "verify needs --brokers (or MAMBA_BROKERS), --embedded, or --check FILE".into(),
                );
            }
            let history =
                a.history.clone().unwrap_or_else(|| PathBuf::from("verify-history.jsonl"));
            let options = verify::workload::VerifyOptions {
                brokers: a.brokers.clone(),
                topic: a.topic.clone().unwrap_or_else(|| {
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    format!("mamba-verify-{ms}")
                }),
                partitions: a.partitions,
                replication_factor: a.replication_factor,
                producers: a.producers,
                rate: a.rate,
                value_bytes: a.value_bytes,
                duration: Duration::from_secs(a.duration_s),
                readers: a.readers,
                group_members: a.group_members,
                history: history.clone(),
                drain_timeout: Duration::from_secs(a.drain_timeout_s),
                faults: a.faults.clone().map(|command| {
                    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
                    eprintln!("mamba-bench: fault schedule seed {seed} (--seed {seed} replays it)");
                    verify::faults::FaultPlan {
                        command,
                        kinds: a.fault_kinds.clone(),
                        seed,
                        quiet: Duration::from_secs(a.fault_quiet_s),
                        length: Duration::from_secs(a.fault_length_s),
                    }
                }),
            };
            (history, Some(verify::workload::run(&options)?))
        }
    };
    let events = verify::history::read_history(&history)?;
    let check = verify::checker::check(&events);
    let availability = verify::availability(&events);
    let report = json!({
        "history": history, "run": run, "availability": availability,
        "check": check, "anomalies": check.anomalies(),
    });
    match a.output {
        Output::Json => println!("{report}"),
        Output::Text => {
            println!("history {}", history.display());
            if let Some(run) = &run {
                println!(
                    "brokers {}; end offsets {:?}; read errors {}, refused commits {}, readers short of the end {}, faults {}",
                    run.brokers, run.end_offsets, run.read_errors, run.commit_errors, run.readers_short, run.faults_struck
                );
            }
            verify::print_text(&check, &availability);
        }
    }
    // After the verdict is out: a report that cannot be written loses none of it.
    if let Some(dir) = &a.report_dir {
        report::write_verify(dir, &report, &verify::timeline::Timeline::of(&events))?;
    }
    if let Some(e) = run.as_ref().and_then(|r| r.fault_error.as_ref()) {
        return Err(format!("the fault schedule failed: {e}"));
    }
    match check.anomalies() {
        0 => Ok(()),
        n => Err(format!("{n} anomalies in {}", history.display())),
    }
}

/// The given directory, or a temporary one removed when the guard drops.
fn data_dir(given: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("mamba-bench-")
                .tempdir_in(std::env::current_dir().map_err(|e| e.to_string())?)
                .map_err(|e| format!("creating a temporary data directory: {e}"))?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// The flags a workload file sets, taken from it.
fn apply_workload(a: &LoadArgs) -> Result<LoadArgs, String> {
    let Some(path) = &a.workload else { return Ok(a.clone()) };
    let w = workload::Workload::load(path)?;
    let minutes = |m: f64| (m * 60.0).round() as u64;
    let warmup_s = minutes(w.warmup_duration_minutes);
    Ok(LoadArgs {
        topics: w.topics,
        partitions: w.partitions_per_topic,
        producers: w.producers_per_topic,
        consumers: w.consumer_per_subscription,
        subscriptions: w.subscriptions_per_topic,
        message_bytes: w.message_size,
        rate: w.producer_rate,
        warmup_s,
        duration_s: warmup_s + minutes(w.test_duration_minutes).max(1),
        keys: match w.key_distributor {
            workload::KeyDistributor::NoKey => KeysArg::None,
            workload::KeyDistributor::KeyRoundRobin => KeysArg::RoundRobin,
            workload::KeyDistributor::RandomNano => KeysArg::Random,
        },
        payload: match w.payload_path(path) {
            Some(file) => file.display().to_string(),
            None => "random".into(),
        },
        ..a.clone()
    })
}

fn load_options(mode: load::Mode, a: &LoadArgs) -> Result<load::LoadOptions, String> {
    let acks = parse_acks(&a.acks)?;
    let payload = match a.payload.as_str() {
        "random" => load::Payload::Random,
        "zeros" => load::Payload::Zeros,
        path => {
            load::Payload::File(std::fs::read(path).map_err(|e| format!("--payload {path}: {e}"))?)
        }
    };
    if a.warmup_s >= a.duration_s {
        return Err("--warmup-s must be shorter than --duration-s".into());
    }
    if !a.embedded && a.brokers.is_none() {
        return Err("no broker to load: give --brokers HOST:PORT (or MAMBA_BROKERS), or \
                    --embedded to start one in this process"
            .into());
    }
    Ok(load::LoadOptions {
        mode,
        brokers: if a.embedded { None } else { a.brokers.clone() },
        topic: a.topic.clone(),
        topics: a.topics,
        partitions: a.partitions.max(1),
        producers: a.producers,
        consumers: a.consumers,
        subscriptions: a.subscriptions,
        message_bytes: a.message_bytes,
        batch_bytes: a.batch_bytes.max(1024),
        linger_ms: a.linger_ms,
        acks,
        durability: match a.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::None,
        },
        rate_per_s: a.rate.max(0.0),
        duration: Duration::from_secs(a.duration_s),
        warmup: Duration::from_secs(a.warmup_s),
        keys: match a.keys {
            KeysArg::None => load::Keys::None,
            KeysArg::RoundRobin => load::Keys::RoundRobin,
            KeysArg::Random => load::Keys::Random,
        },
        payload,
        progress: matches!(a.output, Output::Text),
        group: match (&a.group, mode) {
            (None, _) => None,
            (Some(_), load::Mode::Produce) => {
                return Err("--group applies to consume and e2e, not produce".into())
            }
            (Some(id), _) => Some(group_load::GroupRun {
                group_id: if id.is_empty() { group_load::fresh_group_id() } else { id.clone() },
                session_timeout_ms: a.session_timeout_ms,
                assignor: a.assignor.clone(),
            }),
        },
        commit_rate_per_s: a.commit_rate.max(0.0),
    })
}

/// One line of the text report: `what` names the figure, so consume
/// (the delivered rate) and e2e (publish-to-delivery latency) read apart.
fn print_section(name: &str, what: &str, s: &Option<load::Section>) {
    if let Some(s) = s {
        let latency = s.latency_us.as_ref().map(|l| format!("  {what} {l}")).unwrap_or_default();
        println!(
            "{name:<8} {:>10.0} records/s  {}{latency}",
            s.records_per_s,
            stats::rate(s.bytes_per_s),
        );
    }
}

fn run_load(
    mode: load::Mode,
    name: &str,
    args: &LoadArgs,
    machine: &machine::Machine,
) -> Result<(), String> {
    let args = &apply_workload(args)?;
    let options = load_options(mode, args)?;
    let disk = if args.vs_disk {
        let dir = std::env::current_dir().map_err(|e| e.to_string())?;
        Some(disk_mode::run(disk_mode::DiskOptions {
            dir,
            write_bytes: 1 << 20,
            queue_depth: 4,
            duration: Duration::from_secs(3),
        })?)
    } else {
        None
    };
    let report = load::run(options.clone())?;
    let vs_disk = disk.as_ref().map(|d| {
        let produce = report.produce.as_ref().map_or(0.0, |p| p.bytes_per_s);
        json!({ "disk_write_bytes_per_s": d.write_bytes_per_s, "produce_ratio": produce / d.write_bytes_per_s.max(1.0) })
    });
    let document = json!({
        "mode": name,
        "params": {
            "brokers": args.brokers, "embedded": args.embedded, "topic": args.topic,
            "topics": args.topics, "partitions": args.partitions, "producers": args.producers,
            "consumers": args.consumers, "subscriptions": args.subscriptions, "workload": args.workload,
            "message_bytes": args.message_bytes, "batch_bytes": args.batch_bytes, "linger_ms": args.linger_ms,
            "acks": args.acks, "rate": args.rate, "duration_s": args.duration_s, "warmup_s": args.warmup_s,
            "payload": args.payload, "group": options.group.as_ref().map(|g| &g.group_id),
            "session_timeout_ms": args.session_timeout_ms, "commit_rate": args.commit_rate,
        },
        "machine": machine,
        "produce": report.produce,
        "consume": report.consume,
        "e2e": report.e2e,
        "delivery": report.delivery,
        "commit": report.commit,
        "errors": report.errors,
        "vs_disk": vs_disk,
        "timeline": report.timeline,
    });
    if let Some(dir) = &args.report_dir {
        report::write(dir, &document, &report)?;
    }
    match args.output {
        Output::Json => println!("{document}"),
        Output::Text => {
            print_section("produce", "send to ack", &report.produce);
            print_section("consume", "", &report.consume);
            print_section("e2e", "publish to delivery", &report.e2e);
            if let Some(d) = &report.delivery {
                println!(
                    "delivery {} acknowledged, {} consumed: lost {}, duplicated {}, out of order {}, \
                     duplicated across rebalances {}",
                    d.acknowledged,
                    d.consumed,
                    d.lost,
                    d.duplicated,
                    d.out_of_order,
                    d.duplicated_across_rebalances
                );
            }
            if let Some(c) = &report.commit {
                println!(
                    "commit   {:>10.0} commits/s  commit_sync {}  failed {}",
                    c.commits_per_s, c.latency_us, c.failed
                );
            }
            if let Some(v) = &vs_disk {
                println!(
                    "vs disk  produce = {:.2} of the disk's sequential write rate",
                    v["produce_ratio"].as_f64().unwrap_or(0.0)
                );
            }
            if let Some(dir) = &args.report_dir {
                println!("report   {}", dir.display());
            }
        }
    }
    if let Some(d) = &report.delivery {
        if !d.ok() {
            return Err(format!(
                "delivery check failed: lost {}, duplicated {}, out of order {}",
                d.lost, d.duplicated, d.out_of_order
            ));
        }
    }
    Ok(())
}

fn parse_acks(acks: &str) -> Result<mamba_net::client::Acks, String> {
    match acks {
        "0" => Ok(mamba_net::client::Acks::None),
        "1" => Ok(mamba_net::client::Acks::Leader),
        "all" | "-1" => Ok(mamba_net::client::Acks::All),
        other => Err(format!("--acks must be 0, 1 or all, not {other:?}")),
    }
}

fn rebalance_options(a: &RebalanceArgs) -> Result<rebalance::RebalanceOptions, String> {
    if !a.embedded && a.brokers.is_none() {
        return Err("no broker to load: give --brokers HOST:PORT (or MAMBA_BROKERS), or \
                    --embedded to start one in this process"
            .into());
    }
    let schedule = if a.schedule.is_empty() {
        let kinds = [ownership::EventKind::Leave, ownership::EventKind::Join];
        (0..a.events).map(|i| kinds[i % 2]).collect()
    } else {
        a.schedule
            .iter()
            .map(|name| match name.trim() {
                "join" => Ok(ownership::EventKind::Join),
                "leave" => Ok(ownership::EventKind::Leave),
                "kill" => Ok(ownership::EventKind::Kill),
                other => Err(format!("--schedule: {other:?} is not join, leave or kill")),
            })
            .collect::<Result<_, _>>()?
    };
    if a.rate <= 0.0 {
        return Err("--rate must be above 0: the lag and the resumption need a steady flow".into());
    }
    let load = load::LoadOptions {
        mode: load::Mode::E2e,
        brokers: if a.embedded { None } else { a.brokers.clone() },
        topic: a.topic.clone(),
        topics: 1,
        partitions: a.partitions.max(1),
        producers: 1,
        consumers: a.consumers,
        subscriptions: 1,
        message_bytes: a.message_bytes,
        batch_bytes: a.batch_bytes.max(1024),
        linger_ms: a.linger_ms,
        acks: parse_acks(&a.acks)?,
        durability: match a.durability {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::None,
        },
        rate_per_s: a.rate,
        duration: Duration::ZERO,
        warmup: Duration::from_secs(1),
        keys: load::Keys::None,
        payload: load::Payload::Random,
        progress: false,
        group: None,
        commit_rate_per_s: 0.0,
    };
    if a.message_bytes < load::HEADER_BYTES {
        return Err(format!("--message-bytes must be at least {}", load::HEADER_BYTES));
    }
    Ok(rebalance::RebalanceOptions {
        load,
        members: a.consumers,
        schedule,
        event_interval: Duration::from_millis(a.event_interval_ms),
        session_timeout_ms: a.session_timeout_ms,
        commit_rate_per_s: a.commit_rate.max(0.0),
        group_id: a.group.clone(),
        member_exe: std::env::current_exe()
            .map_err(|e| format!("finding this program to start members: {e}"))?,
    })
}

fn run_rebalance(args: &RebalanceArgs, machine: &machine::Machine) -> Result<(), String> {
    let options = rebalance_options(args)?;
    let report = rebalance::run(options)?;
    let document = json!({
        "mode": "rebalance",
        "params": {
            "brokers": args.brokers, "embedded": args.embedded, "topic": args.topic,
            "partitions": report.partitions, "consumers": args.consumers, "rate": args.rate,
            "message_bytes": args.message_bytes, "batch_bytes": args.batch_bytes,
            "linger_ms": args.linger_ms, "acks": args.acks,
            "schedule": report.events.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
            "event_interval_ms": args.event_interval_ms,
            "session_timeout_ms": args.session_timeout_ms, "commit_rate": args.commit_rate,
            "group": report.group_id,
        },
        "machine": machine,
        "produce": report.produce,
        "events": report.events,
        "by_kind": report.by_kind,
        "delivery": report.delivery,
        "commit": report.commit,
        "lag": report.lag,
    });
    if let Some(dir) = &args.report_dir {
        report::write_rebalance(dir, &document, &report)?;
    }
    match args.output {
        Output::Json => println!("{document}"),
        Output::Text => print_rebalance(&report, args),
    }
    let failures = report.failures();
    if !failures.is_empty() {
        return Err(format!("rebalance check failed: {}", failures.join(", ")));
    }
    Ok(())
}

fn print_rebalance(report: &rebalance::RebalanceReport, args: &RebalanceArgs) {
    let ms = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} ms"));
    print_section("produce", "send to ack", &report.produce);
    for (i, e) in report.events.iter().enumerate() {
        println!(
            "event {i:>3} {:<5} member {:<3} owned again {:>8}  resumed {:>8}  moved {:>2}  read twice {}",
            e.kind.name(),
            e.member,
            ms(e.owned_again_ms),
            ms(e.resumed_ms),
            e.moved_partitions.len(),
            e.duplicated
        );
    }
    let spread = |s: &Option<rebalance::Spread>| {
        s.as_ref().map_or("-".to_string(), |s| format!("p50 {:.0} ms, max {:.0} ms", s.p50, s.max))
    };
    for (kind, k) in &report.by_kind {
        println!(
            "{kind:<5} {} events ({} unsettled): owned again {}; resumed {}{}; read twice {}",
            k.events,
            k.unsettled,
            spread(&k.owned_again_ms),
            spread(&k.resumed_ms),
            k.resumed_after_session_ms.as_ref().map_or(String::new(), |s| format!(
                " (session timeout {} ms + p50 {:.0} ms, max {:.0} ms)",
                args.session_timeout_ms, s.p50, s.max
            )),
            k.duplicated
        );
    }
    let d = &report.delivery;
    println!(
        "delivery {} acknowledged, {} delivered: lost {}, out of order {}, duplicated across \
         rebalances {} ({} while the group formed)",
        d.acknowledged,
        d.delivered,
        d.lost,
        d.out_of_order,
        d.duplicated_across_rebalances,
        d.duplicated_while_forming
    );
    if let Some(c) = &report.commit {
        println!("commit   commit_sync {}  failed {}", c.latency_us, c.failed);
    }
    if let Some(dir) = &args.report_dir {
        println!("report   {}", dir.display());
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let machine = machine::Machine::detect();
    match cli.mode {
        Mode::Produce(args) => run_load(load::Mode::Produce, "produce", &args, &machine)?,
        Mode::Consume(args) => run_load(load::Mode::Consume, "consume", &args, &machine)?,
        Mode::E2e(args) => run_load(load::Mode::E2e, "e2e", &args, &machine)?,
        Mode::Rebalance(args) => run_rebalance(&args, &machine)?,
        Mode::Verify(args) => run_verify(&args)?,
        Mode::Metadata { brokers, rounds } => {
            let brokers = brokers.split(',').map(|b| b.trim().to_string()).collect();
            let report = metadata_mode::run(&metadata_mode::MetadataOptions { brokers, rounds })?;
            let line = |what: &str, h: &hdrhistogram::Histogram<u64>| {
                println!(
                    "{what:<28} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} rounds)",
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.max() as f64 / 1000.0,
                    h.len()
                );
            };
            line("create acknowledged after", &report.create_us);
            line("visible on every broker after", &report.everywhere_us);
            for (broker, h) in &report.per_broker_us {
                line(&format!("  visible on {broker}"), h);
            }
        }
        Mode::RebalanceMember {
            brokers,
            topic,
            group,
            session_timeout_ms,
            commit_rate,
            lifetime_s,
        } => rebalance_member::run(rebalance_member::MemberOptions {
            brokers,
            topic,
            group_id: group,
            session_timeout_ms,
            commit_rate_per_s: commit_rate,
            lifetime: Duration::from_secs(lifetime_s),
        })?,
        Mode::Engine {
            data_dir: dir,
            partitions,
            message_bytes,
            batch_records,
            durability,
            duration_s,
            shards,
            in_flight,
            output,
        } => {
            if partitions == 0 || batch_records == 0 || in_flight == 0 {
                return Err(
                    "--partitions, --batch-records and --in-flight must be at least 1".into()
                );
            }
            let (dir, _temp) = data_dir(dir)?;
            let durability = match durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::None => Durability::None,
            };
            let options = engine_mode::EngineOptions {
                data_dir: dir.clone(),
                partitions,
                message_bytes,
                batch_records,
                durability,
                duration: Duration::from_secs(duration_s),
                shards,
                in_flight,
            };
            let report = engine_mode::run(options)?;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({
                        "mode": "engine",
                        "params": {
                            "data_dir": dir, "partitions": partitions, "message_bytes": message_bytes,
                            "batch_records": batch_records, "durability": durability.to_string(),
                            "duration_s": duration_s, "shards": shards, "in_flight": in_flight,
                        },
                        "machine": machine,
                        "result": report,
                    })
                ),
                Output::Text => {
                    println!("engine: {partitions} partitions, {message_bytes} B messages, {batch_records} per batch, durability {durability}");
                    println!(
                        "  append  {:.0} records/s, {} payload ({} stored)",
                        report.records_per_s,
                        stats::rate(report.bytes_per_s),
                        stats::rate(report.stored_bytes_per_s)
                    );
                    println!("  latency {}", report.append_latency_us);
                    println!(
                        "  read    {} ({} records verified)",
                        stats::rate(report.read_bytes_per_s),
                        report.verified_records
                    );
                }
            }
        }
        Mode::Disk { data_dir: dir, write_bytes, queue_depth, duration_s, output } => {
            let (dir, _temp) = data_dir(dir)?;
            let report = disk_mode::run(disk_mode::DiskOptions {
                dir: dir.clone(),
                write_bytes,
                queue_depth: queue_depth.max(1),
                duration: Duration::from_secs(duration_s.max(1)),
            })?;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({
                        "mode": "disk",
                        "params": { "data_dir": dir, "write_bytes": write_bytes, "queue_depth": queue_depth, "duration_s": duration_s },
                        "machine": machine,
                        "result": report,
                    })
                ),
                Output::Text => {
                    println!(
                        "disk: {} writes, queue depth {queue_depth}, in {}",
                        write_bytes,
                        dir.display()
                    );
                    println!("  write     {}", stats::rate(report.write_bytes_per_s));
                    println!("  read      {}", stats::rate(report.read_bytes_per_s));
                    println!("  4 KiB write+fdatasync {}", report.fdatasync_latency_us);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2e_args(argv: &[&str]) -> LoadArgs {
        let mut full = vec!["mamba-bench", "e2e", "--embedded"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("valid flags").mode {
            Mode::E2e(args) => args,
            _ => unreachable!("parsed e2e"),
        }
    }

    #[test]
    fn a_workload_file_sets_the_run_and_finds_its_payload_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("payload")).expect("mkdir");
        std::fs::write(dir.path().join("payload/p.data"), [7u8; 100]).expect("payload");
        let file = dir.path().join("w.yaml");
        std::fs::write(
            &file,
            "topics: 3\npartitionsPerTopic: 8\nmessageSize: 512\npayloadFile: payload/p.data\n\
             keyDistributor: RANDOM_NANO\nsubscriptionsPerTopic: 2\nconsumerPerSubscription: 4\n\
             producersPerTopic: 2\nproducerRate: 1000\ntestDurationMinutes: 0.5\n\
             warmupDurationMinutes: 0.25\n",
        )
        .expect("workload");
        let args = e2e_args(&["--workload", file.to_str().expect("utf8 path")]);
        let a = apply_workload(&args).expect("applies");
        assert_eq!((a.topics, a.partitions, a.message_bytes), (3, 8, 512));
        assert_eq!((a.producers, a.consumers, a.subscriptions), (2, 4, 2));
        assert_eq!((a.rate, a.warmup_s, a.duration_s), (1000.0, 15, 45));
        assert!(matches!(a.keys, KeysArg::Random));
        assert_eq!(PathBuf::from(&a.payload), dir.path().join("payload/p.data"));
        let options = load_options(load::Mode::E2e, &a).expect("options");
        assert!(matches!(options.payload, load::Payload::File(ref b) if b.len() == 100));
    }

    #[test]
    fn a_workload_excludes_the_flags_it_sets() {
        let parsed = Cli::try_parse_from([
            "mamba-bench",
            "e2e",
            "--embedded",
            "--workload",
            "w.yaml",
            "--rate",
            "5",
        ]);
        assert!(parsed.is_err());
    }
}
