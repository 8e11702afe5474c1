//! `mamba topic|produce|consume`: the client side of the CLI.

use crate::Output;
use clap::{Args, Subcommand};
use mamba_net::client::{
    block_on, Acks, Admin, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use mamba_net::protocol::{ConfigEntry, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use serde_json::json;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// disk (default) or memory (lost at restart).
        #[arg(long)]
        storage: Option<String>,
        /// fsync (default), interval:MS or none.
        #[arg(long)]
        durability: Option<String>,
        /// Delete data older than this many ms [default: 7 days].
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Keep at most about this many bytes per partition [default: unlimited].
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// Roll segments at this size [default: 1 GiB].
        #[arg(long)]
        segment_bytes: Option<u64>,
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
    Delete { name: String },
}

fn admin(brokers: &str) -> Result<Admin, String> {
    Admin::connect(brokers).map_err(|e| {
        format!("{e} (is `mamba serve` running there? set --brokers or MAMBA_BROKERS)")
    })
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
        } => {
            let mut configs = Vec::new();
            configs.extend(storage.map(|v| entry("storage", v)));
            configs.extend(durability.map(|v| entry("durability", v)));
            configs.extend(retention_ms.map(|v| entry("retention.ms", v)));
            configs.extend(retention_bytes.map(|v| entry("retention.bytes", v)));
            configs.extend(segment_bytes.map(|v| entry("segment.bytes", v)));
            block_on(admin.create_topic(&name, partitions, configs)).map_err(err)?;
            match output {
                Output::Json => println!("{}", json!({"created": name, "partitions": partitions})),
                Output::Text => println!("created topic {name} with {partitions} partitions"),
            }
        }
        TopicCommand::List => {
            let topics = block_on(admin.list_topics()).map_err(err)?;
            for t in topics {
                match output {
                    Output::Json => {
                        println!("{}", json!({"name": t.name, "partitions": t.partitions.len()}))
                    }
                    Output::Text => println!("{}\t{} partitions", t.name, t.partitions.len()),
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
                Output::Json => println!(
                    "{}",
                    json!({
                        "name": d.name,
                        "partitions": d.partitions.iter().zip(&status).map(|(p, s)| match s {
                            Ok((start, end)) => json!({"partition": p.partition, "leader": p.leader, "shard": p.shard, "status": "online", "log_start_offset": start, "high_watermark": end}),
                            Err(e) => json!({"partition": p.partition, "leader": p.leader, "shard": p.shard, "status": "offline", "error": e}),
                        }).collect::<Vec<_>>(),
                        "configs": d.configs.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                    })
                ),
                Output::Text => {
                    println!("topic {} ({} partitions)", d.name, d.partitions.len());
                    for c in &d.configs {
                        println!("  {} = {}", c.name, c.value);
                    }
                    for (p, s) in d.partitions.iter().zip(&status) {
                        let state = match s {
                            Ok((start, end)) => format!("offsets {start}..{end}"),
                            Err(e) => format!("OFFLINE: {e}"),
                        };
                        println!(
                            "  partition {}: leader {} shard {} {state}",
                            p.partition, p.leader, p.shard
                        );
                    }
                }
            }
        }
        TopicCommand::Alter { name, set } => {
            let mut configs = Vec::new();
            for s in &set {
                let (k, v) =
                    s.split_once('=').ok_or_else(|| format!("--set wants KEY=VALUE, got {s:?}"))?;
                configs.push(entry(k.trim(), v.trim()));
            }
            block_on(admin.alter_topic(&name, configs)).map_err(err)?;
            match output {
                Output::Json => println!("{}", json!({"altered": name})),
                Output::Text => println!("altered topic {name}"),
            }
        }
        TopicCommand::Delete { name } => {
            block_on(admin.delete_topic(&name)).map_err(err)?;
            match output {
                Output::Json => println!("{}", json!({"deleted": name})),
                Output::Text => println!("deleted topic {name}"),
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    /// The key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(long)]
    partition: Option<u32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// A header on every record (repeatable).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
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
        .map_err(|e| {
            format!("{e} (is `mamba serve` running there? set --brokers or MAMBA_BROKERS)")
        })?;
    let mut pending = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(k), _) => (Some(k.as_bytes().to_vec()), line.into_bytes()),
            (None, Some(sep)) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => (None, line.into_bytes()),
            },
            (None, None) => (None, line.into_bytes()),
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value,
            headers: headers.clone(),
            timestamp_ms: None,
        };
        pending.push(producer.send(record).map_err(|e| e.to_string())?);
    }
    producer.flush();
    let mut failed = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (line, result) in pending.into_iter().enumerate() {
        match block_on(result) {
            Ok(meta) => {
                if output == Output::Json {
                    writeln!(out, "{}", json!({"line": line + 1, "partition": meta.partition, "offset": meta.offset}))
                        .map_err(|e| e.to_string())?;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("record on line {} failed: {e}", line + 1);
            }
        }
    }
    producer.close();
    if failed > 0 {
        return Err(format!("{failed} records were not acknowledged"));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
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
    let mut consumer = Consumer::connect(brokers, ConsumerConfig::default()).map_err(|e| {
        format!("{e} (is `mamba serve` running there? set --brokers or MAMBA_BROKERS)")
    })?;
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
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
}
