//! `mamba topic|produce|consume`: the client side of the CLI.

use crate::Output;
use clap::{Args, Subcommand};
use mamba_net::client::{
    block_on, Acks, Admin, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use mamba_net::protocol::{ConfigEntry, ErrorCode, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use serde_json::json;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// `println!` that ends quietly on a closed pipe (see `emit`).
macro_rules! say {
    ($($arg:tt)*) => {
        emit(&mut std::io::stdout().lock(), &format!($($arg)*))
    };
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// disk (default) or memory (lost at restart).
        #[arg(long)]
        storage: Option<String>,
        /// fsync (default), interval:MS or none.
        #[arg(long)]
        durability: Option<String>,
        /// Delete data older than this: ms or a duration (7d, 12h) [default: 7d].
        #[arg(long, value_name = "DURATION")]
        retention_ms: Option<String>,
        /// Keep at most about this much per partition: bytes or a size
        /// (10GiB) [default: unlimited].
        #[arg(long, value_name = "SIZE")]
        retention_bytes: Option<String>,
        /// Roll segments at this size: bytes or a size (256MiB) [default: 1GiB].
        #[arg(long, value_name = "SIZE")]
        segment_bytes: Option<String>,
        /// Any setting as KEY=VALUE (repeatable), as `topic alter --set` takes.
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Succeed without a change when the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    List,
    /// Show a topic's partitions and settings.
    Describe { name: String },
    /// Change settings: --set retention.ms=60000 (repeatable).
    Alter {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        /// Succeed without a change when there is no such topic.
        #[arg(long)]
        if_exists: bool,
    },
}

/// `KEY=VALUE` settings as wire entries.
fn settings(flag: &str, given: &[String]) -> Result<Vec<ConfigEntry>, String> {
    given
        .iter()
        .map(|s| {
            let (k, v) =
                s.split_once('=').ok_or_else(|| format!("{flag} wants KEY=VALUE, got {s:?}"))?;
            Ok(entry(k.trim(), v.trim()))
        })
        .collect()
}

/// "1 partition", "4 partitions".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Whether `e` is the broker saying `code`.
fn is_code(e: &ClientError, code: ErrorCode) -> bool {
    matches!(e, ClientError::Broker { code: c, .. } if *c == code)
}

fn admin(brokers: &str) -> Result<Admin, String> {
    Admin::connect(brokers).map_err(connect_error)
}

/// A failed connection, with a hint where one helps: a refused or timed
/// out connection may mean no broker runs there; a bad address does not.
fn connect_error(e: ClientError) -> String {
    match e {
        ClientError::Connect { .. } => {
            format!("{e} (is `mamba serve` running there? set --brokers or MAMBA_BROKERS)")
        }
        other => other.to_string(),
    }
}

fn entry(name: &str, value: impl ToString) -> ConfigEntry {
    ConfigEntry { name: name.to_string(), value: value.to_string() }
}

pub fn topic(brokers: &str, output: Output, command: TopicCommand) -> Result<(), String> {
    let admin = admin(brokers)?;
    let err = |e: ClientError| e.to_string();
    match command {
        TopicCommand::Create {
            name,
            partitions,
            storage,
            durability,
            retention_ms,
            retention_bytes,
            segment_bytes,
            config,
            if_not_exists,
        } => {
            let mut configs = Vec::new();
            configs.extend(storage.map(|v| entry("storage", v)));
            configs.extend(durability.map(|v| entry("durability", v)));
            configs.extend(retention_ms.map(|v| entry("retention.ms", v)));
            configs.extend(retention_bytes.map(|v| entry("retention.bytes", v)));
            configs.extend(segment_bytes.map(|v| entry("segment.bytes", v)));
            configs.extend(settings("--config", &config)?);
            match block_on(admin.create_topic(&name, partitions, configs)) {
                Ok(()) => match output {
                    Output::Json => say!("{}", json!({"created": name, "partitions": partitions}))?,
                    Output::Text => say!(
                        "created topic {name} with {}",
                        count(partitions as usize, "partition")
                    )?,
                },
                Err(e) if if_not_exists && is_code(&e, ErrorCode::TopicAlreadyExists) => {
                    match output {
                        Output::Json => say!("{}", json!({"exists": name}))?,
                        Output::Text => say!("topic {name} exists already; nothing changed")?,
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
        TopicCommand::List => {
            let topics = block_on(admin.list_topics()).map_err(err)?;
            for t in topics {
                match output {
                    Output::Json => {
                        say!("{}", json!({"name": t.name, "partitions": t.partitions.len()}))?
                    }
                    Output::Text => say!("{}\t{}", t.name, count(t.partitions.len(), "partition"))?,
                }
            }
        }
        TopicCommand::Describe { name } => {
            let d = block_on(admin.describe_topic(&name)).map_err(err)?;
            // Each partition's offsets, or why it serves nothing (offline).
            let status: Vec<Result<(u64, u64), String>> = d
                .partitions
                .iter()
                .map(|p| {
                    let earliest =
                        block_on(admin.list_offset(&name, p.partition, EARLIEST_TIMESTAMP));
                    let latest = block_on(admin.list_offset(&name, p.partition, LATEST_TIMESTAMP));
                    earliest.and_then(|e| latest.map(|l| (e, l))).map_err(|e| e.to_string())
                })
                .collect();
            match output {
                Output::Json => say!(
                    "{}",
                    json!({
                        "name": d.name,
                        "partitions": d.partitions.iter().zip(&status).map(|(p, s)| match s {
                            Ok((start, end)) => json!({"partition": p.partition, "leader": p.leader, "shard": p.shard, "status": "online", "log_start_offset": start, "high_watermark": end}),
                            Err(e) => json!({"partition": p.partition, "leader": p.leader, "shard": p.shard, "status": "offline", "error": e}),
                        }).collect::<Vec<_>>(),
                        "configs": d.configs.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                    })
                )?,
                Output::Text => {
                    say!("topic {} ({})", d.name, count(d.partitions.len(), "partition"))?;
                    for c in &d.configs {
                        say!("  {} = {}", c.name, c.value)?;
                    }
                    for (p, s) in d.partitions.iter().zip(&status) {
                        let state = match s {
                            Ok((start, end)) => format!("offsets {start}..{end}"),
                            Err(e) => format!("OFFLINE: {e}"),
                        };
                        say!(
                            "  partition {}: leader {} shard {} {state}",
                            p.partition,
                            p.leader,
                            p.shard
                        )?;
                    }
                }
            }
        }
        TopicCommand::Alter { name, set } => {
            block_on(admin.alter_topic(&name, settings("--set", &set)?)).map_err(err)?;
            match output {
                Output::Json => say!("{}", json!({"altered": name}))?,
                Output::Text => say!("altered topic {name}")?,
            }
        }
        TopicCommand::Delete { name, if_exists } => {
            match block_on(admin.delete_topic(&name)) {
                Ok(()) => {}
                Err(e) if if_exists && is_code(&e, ErrorCode::UnknownTopicOrPartition) => {
                    match output {
                        Output::Json => say!("{}", json!({"absent": name}))?,
                        Output::Text => say!("no topic {name}; nothing changed")?,
                    }
                    return Ok(());
                }
                Err(e) => return Err(err(e)),
            }
            match output {
                Output::Json => say!("{}", json!({"deleted": name}))?,
                Output::Text => say!("deleted topic {name}")?,
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    /// The key of every record.
    #[arg(short, long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each record at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(short, long)]
    partition: Option<u32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// A header on every record (repeatable).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
    /// The byte that ends each record on standard input: one character,
    /// or an escape (\n, \0, \t, \xHH). Records are raw bytes; they need
    /// not be UTF-8.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter)]
    delimiter: u8,
}

/// A record delimiter: one ASCII character or an escape.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    let byte = match s {
        "\\n" => Some(b'\n'),
        "\\0" => Some(0),
        "\\t" => Some(b'\t'),
        "\\r" => Some(b'\r'),
        _ if s.len() == 1 && s.is_ascii() => Some(s.as_bytes()[0]),
        _ => s.strip_prefix("\\x").and_then(|hex| u8::from_str_radix(hex, 16).ok()),
    };
    byte.ok_or_else(|| {
        format!("--delimiter wants one character or \\n, \\0, \\t, \\r, \\xHH, not {s:?}")
    })
}

/// Records sent but not yet acknowledged before reading standard input
/// waits: bounds the memory of `mamba produce` whatever the input length.
const PRODUCE_UNACKED_MAX: usize = 16 * 1024;

/// Writes `line` to standard output; a closed pipe (`| head`) ends the
/// process quietly with status 0, as a reader that stopped reading wants.
pub fn emit(out: &mut impl Write, line: &str) -> Result<(), String> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("writing to standard output: {e}")),
    }
}

pub fn produce(brokers: &str, output: Output, args: ProduceArgs) -> Result<(), String> {
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(format!("--acks must be 0, 1 or all, not {other:?}")),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once('=').ok_or_else(|| format!("--header wants K=V, got {h:?}"))?;
        headers.push((k.to_string(), v.as_bytes().to_vec()));
    }
    let producer = Producer::connect(brokers, ProducerConfig { acks, ..ProducerConfig::default() })
        .map_err(connect_error)?;
    // Acknowledgements are awaited, in send order, by a thread that prints
    // each as it arrives; the bounded queue between makes reading wait
    // when too many records are in flight.
    let (acks_tx, acks_rx) = std::sync::mpsc::sync_channel(PRODUCE_UNACKED_MAX);
    let printer = std::thread::spawn(move || -> Result<usize, String> {
        let mut failed = 0usize;
        let stdout = std::io::stdout();
        for (number, ack) in acks_rx {
            match block_on(ack) {
                Ok(meta) => {
                    let meta: mamba_net::client::RecordMetadata = meta;
                    if output == Output::Json {
                        let line = json!({"record": number, "partition": meta.partition, "offset": meta.offset});
                        emit(&mut stdout.lock(), &line.to_string())?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("record {number} failed: {e}");
                }
            }
        }
        Ok(failed)
    });
    let mut input = std::io::BufReader::new(std::io::stdin().lock());
    let mut record_bytes = Vec::new();
    let mut number = 0u64;
    let mut read_error = None;
    loop {
        record_bytes.clear();
        match input.read_until(args.delimiter, &mut record_bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(format!("reading standard input: {e}"));
                break;
            }
        }
        if record_bytes.last() == Some(&args.delimiter) {
            record_bytes.pop();
        }
        number += 1;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(k), _) => (Some(k.as_bytes().to_vec()), record_bytes.clone()),
            (None, Some(sep)) => match find(&record_bytes, sep.as_bytes()) {
                Some(at) => {
                    (Some(record_bytes[..at].to_vec()), record_bytes[at + sep.len()..].to_vec())
                }
                None => (None, record_bytes.clone()),
            },
            (None, None) => (None, record_bytes.clone()),
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value,
            headers: headers.clone(),
            timestamp_ms: None,
        };
        match producer.send(record) {
            Ok(ack) => {
                if acks_tx.send((number, ack)).is_err() {
                    break; // the printer stopped: its error is reported below
                }
            }
            Err(e) => {
                read_error = Some(format!("record {number}: {e}"));
                break;
            }
        }
    }
    producer.flush();
    drop(acks_tx);
    let failed =
        printer.join().map_err(|_| "the acknowledgement printer panicked".to_string())??;
    producer.close();
    if let Some(e) = read_error {
        return Err(e);
    }
    if failed > 0 {
        return Err(format!("{failed} of {number} records were not acknowledged"));
    }
    Ok(())
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<u32>,
    /// earliest, latest, an offset, or @TIMESTAMP_MS.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop after this many records (default: follow until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Text output prints key<TAB>value.
    #[arg(long)]
    print_key: bool,
}

fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

pub fn consume(brokers: &str, output: Output, args: ConsumeArgs) -> Result<(), String> {
    let from = match args.from.as_str() {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        s if s.starts_with('@') => {
            SeekTo::Timestamp(s[1..].parse().map_err(|_| format!("bad timestamp in --from {s:?}"))?)
        }
        s => SeekTo::Offset(s.parse().map_err(|_| {
            format!("--from wants earliest, latest, an offset or @TIMESTAMP_MS, not {s:?}")
        })?),
    };
    let mut consumer =
        Consumer::connect(brokers, ConsumerConfig::default()).map_err(connect_error)?;
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    consumer.assign(&args.topic, &partitions, from).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let poll = Duration::from_millis(args.timeout_ms.unwrap_or(500).min(500));
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        if args.timeout_ms.is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t)) {
            return Ok(());
        }
        let records = consumer.poll(poll).map_err(|e| e.to_string())?;
        let mut out = stdout.lock();
        for r in records {
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
            seen += 1;
            last_record = Instant::now();
            let line = match output {
                Output::Json => json!({
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp_ms": r.timestamp_ms,
                    "key": r.key.as_deref().map(printable),
                    "value": printable(&r.value),
                    "headers": r.headers.iter().map(|(k, v)| (k.clone(), json!(printable(v)))).collect::<serde_json::Map<_, _>>(),
                })
                .to_string(),
                Output::Text if args.print_key => {
                    format!("{}\t{}", r.key.as_deref().map(printable).unwrap_or_default(), printable(&r.value))
                }
                Output::Text => printable(&r.value),
            };
            emit(&mut out, &line)?;
        }
    }
}
