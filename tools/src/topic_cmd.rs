//! `mamba topic create|list|describe|offsets|alter|delete`.

use crate::cli::{count, say, CliError, ClientArgs, Output};
use crate::human;
use clap::Subcommand;
use mamba_net::client::{block_on, Admin};
use mamba_net::protocol::{
    ConfigEntry, ErrorCode, ListOffsetsResult, PartitionSummary, TopicPartitions,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name: letters, digits, '.', '_' and '-'.
        name: String,
        /// How many partitions (logs read and written in parallel).
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// Copies of each partition on distinct brokers [default: 3, or
        /// every alive broker when fewer].
        #[arg(short = 'r', long, value_name = "N")]
        replication_factor: Option<u32>,
        /// In-sync replicas an acks=all write needs [default: a majority of
        /// the replication factor].
        #[arg(long, value_name = "N")]
        min_insync_replicas: Option<u32>,
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
    /// List topics with their partitions, size and records.
    List,
    /// Show a topic's settings, and per partition its offsets (log start,
    /// log end, high watermark), size and segments, with the totals.
    Describe {
        /// The topic.
        name: String,
    },
    /// Offsets per partition (as kcat -Q): where each log starts and ends,
    /// or with --at the first record at or after a time.
    Offsets {
        /// The topic.
        topic: String,
        /// The offset of the first record at or after this time, per
        /// partition (the end when there is none): @2026-11-30T12:00:00Z,
        /// @-10m (that long ago) or @MS (ms since the epoch).
        #[arg(long, value_name = "@TIME", allow_hyphen_values = true)]
        at: Option<String>,
        /// Only this partition (default: all).
        #[arg(short, long)]
        partition: Option<u32>,
    },
    /// Change settings (--set retention.ms=7d, repeatable), or add
    /// partitions (--set partitions=N).
    ///
    /// Settings: storage is fixed at creation; durability, retention.ms,
    /// retention.bytes, segment.bytes and segment.ms change at once.
    ///
    /// partitions=N grows the topic to N partitions. Records already
    /// written stay where they are; keyed records sent from then on may
    /// map to other partitions than before (as in Kafka: the partition is
    /// the key's hash modulo the count), so a key's order holds within the
    /// records sent before and within those sent after. Partitions are
    /// never removed: a smaller N is refused and changes nothing, since
    /// keys would move and the records and offsets of the removed
    /// partitions would be lost.
    Alter {
        /// The topic.
        name: String,
        /// A setting to change, KEY=VALUE (repeatable); units work
        /// (retention.ms=7d, segment.bytes=256MiB).
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete {
        /// The topic.
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

fn entry(name: &str, value: impl ToString) -> ConfigEntry {
    ConfigEntry { name: name.to_string(), value: value.to_string() }
}

pub fn run(args: TopicArgs) -> Result<(), CliError> {
    let output = args.client.output();
    let admin = args.client.admin()?;
    let err = CliError::from;
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            storage,
            durability,
            retention_ms,
            retention_bytes,
            segment_bytes,
            config,
            if_not_exists,
        } => {
            let mut configs = Vec::new();
            configs.extend(replication_factor.map(|v| entry("replication.factor", v)));
            configs.extend(min_insync_replicas.map(|v| entry("min.insync.replicas", v)));
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
                Err(e)
                    if if_not_exists
                        && CliError::from(e.clone()).is(ErrorCode::TopicAlreadyExists) =>
                {
                    match output {
                        Output::Json => say!("{}", json!({"exists": name}))?,
                        Output::Text => say!("topic {name} exists already; nothing changed")?,
                    }
                }
                Err(e) => {
                    let e = err(e);
                    if e.is(ErrorCode::TopicAlreadyExists) {
                        return Err(e.hint("--if-not-exists accepts an existing topic"));
                    }
                    return Err(e);
                }
            }
        }
        TopicCommand::List => list(&admin, output)?,
        TopicCommand::Describe { name } => describe(&admin, &name, output)?,
        TopicCommand::Offsets { topic, at, partition } => {
            offsets(&admin, &topic, at.as_deref(), partition, output)?
        }
        TopicCommand::Alter { name, set } => alter(&admin, &name, &set, output)?,
        TopicCommand::Delete { name, if_exists } => {
            match block_on(admin.delete_topic(&name)) {
                Ok(()) => {}
                Err(e)
                    if if_exists
                        && CliError::from(e.clone()).is(ErrorCode::UnknownTopicOrPartition) =>
                {
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

/// Records a consumer can read from a partition: from the log start to the
/// high watermark (offsets are dense; retention removes whole segments).
fn record_count(p: &PartitionSummary) -> u64 {
    p.high_watermark.saturating_sub(p.log_start_offset)
}

/// A topic's sums over its online partitions.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    record_count: u64,
    size_bytes: u64,
    segment_count: u64,
    partitions_offline: usize,
}

impl Totals {
    fn of(partitions: &[PartitionSummary]) -> Totals {
        partitions.iter().fold(Totals::default(), |t, p| {
            if p.error_code != 0 {
                return Totals { partitions_offline: t.partitions_offline + 1, ..t };
            }
            Totals {
                record_count: t.record_count + record_count(p),
                size_bytes: t.size_bytes + p.size_bytes,
                segment_count: t.segment_count + u64::from(p.segment_count),
                ..t
            }
        })
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "record_count": self.record_count,
            "size_bytes": self.size_bytes,
            "segment_count": self.segment_count,
            "partitions_offline": self.partitions_offline,
        })
    }
}

/// One topic's partition summaries, or the broker's error for it.
fn topic_partitions(admin: &Admin, name: &str) -> Result<TopicPartitions, CliError> {
    let topics = block_on(admin.describe_partitions(Some(vec![name.to_string()])))?;
    let topic = topics.into_iter().next().ok_or_else(|| {
        CliError::failed(format!("the broker described no partitions of topic {name:?}"))
    })?;
    match ErrorCode::from_u16(topic.error_code) {
        ErrorCode::None => Ok(topic),
        code => Err(CliError { code: code.as_u16(), name: code.name(), message: topic.message }),
    }
}

fn list(admin: &Admin, output: Output) -> Result<(), CliError> {
    let topics = block_on(admin.describe_partitions(None))?;
    let mut rows = vec![["TOPIC", "PARTITIONS", "SIZE", "RECORDS"].map(String::from).to_vec()];
    for t in &topics {
        let totals = Totals::of(&t.partitions);
        match output {
            Output::Json => say!(
                "{}",
                json!({
                    "name": t.name,
                    "partitions": t.partitions.len(),
                    "partitions_offline": totals.partitions_offline,
                    "size_bytes": totals.size_bytes,
                    "record_count": totals.record_count,
                })
            )?,
            Output::Text => {
                let mut partitions = t.partitions.len().to_string();
                if totals.partitions_offline > 0 {
                    partitions.push_str(&format!(" ({} offline)", totals.partitions_offline));
                }
                rows.push(vec![
                    t.name.clone(),
                    partitions,
                    human::bytes(totals.size_bytes),
                    totals.record_count.to_string(),
                ]);
            }
        }
    }
    if output == Output::Text && !topics.is_empty() {
        for line in human::table(&rows) {
            say!("{line}")?;
        }
    }
    Ok(())
}

fn describe(admin: &Admin, name: &str, output: Output) -> Result<(), CliError> {
    let d = block_on(admin.describe_topic(name))?;
    let stored = topic_partitions(admin, name)?;
    let by_partition: BTreeMap<u32, &PartitionSummary> =
        stored.partitions.iter().map(|p| (p.partition, p)).collect();
    let totals = Totals::of(&stored.partitions);
    match output {
        Output::Json => {
            let partitions: Vec<_> = d
                .partitions
                .iter()
                .map(|p| {
                    let placed = json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "moving_to": (!p.target_replicas.is_empty()).then_some(&p.target_replicas),
                        "shard": p.shard,
                    });
                    let stored = match by_partition.get(&p.partition) {
                        Some(s) if s.error_code == 0 => json!({
                            "status": "online",
                            "log_start_offset": s.log_start_offset,
                            "log_end_offset": s.log_end_offset,
                            "high_watermark": s.high_watermark,
                            "record_count": record_count(s),
                            "size_bytes": s.size_bytes,
                            "segment_count": s.segment_count,
                            "followers": s.followers.iter().map(|f| json!({
                                "broker": f.broker_id,
                                "log_end_offset": f.log_end_offset,
                                "durable_offset": f.durable_offset,
                                "lag": s.log_end_offset.saturating_sub(f.log_end_offset),
                            })).collect::<Vec<_>>(),
                        }),
                        // Its leader did not answer (dead, not fenced yet).
                        Some(s) if s.error_code == ErrorCode::NotLeader.as_u16() => {
                            json!({"status": "unreachable", "error": s.message})
                        }
                        Some(s) => json!({"status": "offline", "error": s.message}),
                        None => {
                            json!({"status": "unknown", "error": "the broker did not describe it"})
                        }
                    };
                    merge(placed, stored)
                })
                .collect();
            say!(
                "{}",
                json!({
                    "name": d.name,
                    "partitions": partitions,
                    "totals": totals.json(),
                    "configs": d.configs.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                })
            )?;
        }
        Output::Text => {
            say!("topic {} ({})", d.name, count(d.partitions.len(), "partition"))?;
            for c in &d.configs {
                // Exact values, as `--set` takes them, read in units.
                let readable = match c.value.parse::<u64>() {
                    Ok(ms) if c.name.ends_with(".ms") => format!(" ({})", human::duration_ms(ms)),
                    Ok(bytes) if c.name.ends_with(".bytes") => {
                        format!(" ({})", human::bytes(bytes))
                    }
                    _ => String::new(),
                };
                say!("  {} = {}{readable}", c.name, c.value)?;
            }
            for p in &d.partitions {
                let state = match by_partition.get(&p.partition) {
                    Some(s) if s.error_code == 0 => format!(
                        "offsets {}..{} (high watermark {}), {} in {}",
                        s.log_start_offset,
                        s.log_end_offset,
                        s.high_watermark,
                        human::bytes(s.size_bytes),
                        count(s.segment_count as usize, "segment"),
                    ),
                    Some(s) if s.error_code == ErrorCode::NotLeader.as_u16() => {
                        format!("UNREACHABLE (its leader did not answer): {}", s.message)
                    }
                    Some(s) => format!("OFFLINE: {}", s.message),
                    None => "UNKNOWN: the broker did not describe it".to_string(),
                };
                let leader = p.leader.map_or("none (offline)".to_string(), |id| id.to_string());
                let list =
                    |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                let (replicas, isr) = (list(&p.replicas), list(&p.isr));
                let shard = p.shard.map_or(String::new(), |s| format!(" shard {s}"));
                let moving = if p.target_replicas.is_empty() {
                    String::new()
                } else {
                    format!(" moving to {}", list(&p.target_replicas))
                };
                say!(
                    "  partition {}: leader {leader} (epoch {}) replicas {replicas}{moving} in-sync {isr}{shard} {state}",
                    p.partition, p.leader_epoch
                )?;
                if let Some(s) = by_partition.get(&p.partition).filter(|s| s.error_code == 0) {
                    for f in &s.followers {
                        say!(
                            "    follower {}: log end {} (lag {}), durable to {}",
                            f.broker_id,
                            f.log_end_offset,
                            s.log_end_offset.saturating_sub(f.log_end_offset),
                            f.durable_offset
                        )?;
                    }
                }
            }
            let mut total = format!(
                "  total: {}, {} in {}",
                count(totals.record_count as usize, "record"),
                human::bytes(totals.size_bytes),
                count(totals.segment_count as usize, "segment"),
            );
            if totals.partitions_offline > 0 {
                total.push_str(&format!(
                    " ({} offline, not counted)",
                    count(totals.partitions_offline, "partition")
                ));
            }
            say!("{total}")?;
        }
    }
    Ok(())
}

/// `a` with the fields of `b` added (both JSON objects).
fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn offsets(
    admin: &Admin,
    topic: &str,
    at: Option<&str>,
    partition: Option<u32>,
    output: Output,
) -> Result<(), CliError> {
    let meta = block_on(admin.topic_metadata(topic))?;
    let partitions: Vec<u32> = match partition {
        None => meta.partitions.iter().map(|p| p.partition).collect(),
        Some(p) if meta.partitions.iter().any(|m| m.partition == p) => vec![p],
        Some(p) => {
            return Err(CliError::usage(format!(
                "topic {topic} has no partition {p}: it has {} (0..={})",
                count(meta.partitions.len(), "partition"),
                meta.partitions.len().saturating_sub(1)
            )))
        }
    };
    let mut failed = Vec::new();
    let mut check = |r: &ListOffsetsResult| {
        if r.error_code != 0 {
            failed.push(format!("partition {}: {}", r.partition, r.message));
        }
    };
    let mut rows = Vec::new();
    match at {
        None => {
            let starts = block_on(admin.list_offsets(topic, &partitions, EARLIEST_TIMESTAMP))?;
            let ends = block_on(admin.list_offsets(topic, &partitions, LATEST_TIMESTAMP))?;
            rows.push(["PARTITION", "START", "END"].map(String::from).to_vec());
            for (start, end) in starts.iter().zip(&ends) {
                check(start);
                let p = start.partition;
                if start.error_code != 0 || end.error_code != 0 {
                    let why = if start.error_code != 0 { &start.message } else { &end.message };
                    match output {
                        Output::Json => {
                            say!("{}", json!({"topic": topic, "partition": p, "error": why}))?
                        }
                        Output::Text => rows.push(vec![p.to_string(), format!("OFFLINE: {why}")]),
                    }
                    continue;
                }
                match output {
                    Output::Json => say!(
                        "{}",
                        json!({"topic": topic, "partition": p, "log_start_offset": start.offset, "high_watermark": end.offset})
                    )?,
                    Output::Text => rows.push(vec![
                        p.to_string(),
                        start.offset.to_string(),
                        end.offset.to_string(),
                    ]),
                }
            }
        }
        Some(at) => {
            let time = at.strip_prefix('@').unwrap_or(at);
            let timestamp_ms = crate::cli::parse_time_ms(time, crate::cli::now_ms())
                .map_err(|e| CliError::usage(format!("--at: {e}")))?;
            let found = block_on(admin.list_offsets(topic, &partitions, timestamp_ms))?;
            rows.push(["PARTITION", "OFFSET", "TIMESTAMP"].map(String::from).to_vec());
            for r in &found {
                check(r);
                if r.error_code != 0 {
                    match output {
                        Output::Json => say!(
                            "{}",
                            json!({"topic": topic, "partition": r.partition, "error": r.message})
                        )?,
                        Output::Text => rows
                            .push(vec![r.partition.to_string(), format!("OFFLINE: {}", r.message)]),
                    }
                    continue;
                }
                // No record at or after the time: the end, where one would go.
                let record_ms = (r.timestamp >= 0).then_some(r.timestamp);
                match output {
                    Output::Json => say!(
                        "{}",
                        json!({"topic": topic, "partition": r.partition, "at_ms": timestamp_ms, "offset": r.offset, "timestamp_ms": record_ms})
                    )?,
                    Output::Text => rows.push(vec![
                        r.partition.to_string(),
                        r.offset.to_string(),
                        record_ms.map_or_else(
                            || "(none at or after; the end)".to_string(),
                            human::time_ms,
                        ),
                    ]),
                }
            }
        }
    }
    if output == Output::Text {
        for line in human::table(&rows) {
            say!("{line}")?;
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "topic {topic}: {} could not answer: {}",
            count(failed.len(), "partition"),
            failed.join("; ")
        )))
    }
}

/// `--set` entries: `partitions` grows the topic (create_partitions), the
/// rest are settings (alter_configs). Everything is checked before
/// anything is sent, so a bad entry changes nothing.
fn alter(admin: &Admin, name: &str, set: &[String], output: Output) -> Result<(), CliError> {
    let (grow, configs): (Vec<ConfigEntry>, Vec<ConfigEntry>) =
        settings("--set", set)?.into_iter().partition(|e| e.name == "partitions");
    let partition_count = match grow.last() {
        None => None,
        Some(e) => Some(e.value.parse::<u32>().map_err(|_| {
            CliError::usage(format!(
                "--set partitions wants the new partition count, a whole number, got {:?}",
                e.value
            ))
        })?),
    };
    let mut checked = mamba_engine::TopicConfig::default();
    mamba_net::topic_config::apply(&mut checked, &configs).map_err(|message| {
        let code = ErrorCode::InvalidConfig;
        CliError { code: code.as_u16(), name: code.name(), message }
    })?;
    if let Some(partition_count) = partition_count {
        block_on(admin.create_partitions(name, partition_count))?;
        match output {
            Output::Json => say!("{}", json!({"altered": name, "partitions": partition_count}))?,
            Output::Text => say!(
                "topic {name} now has {}; keyed records sent from now on may go to other partitions than before",
                count(partition_count as usize, "partition")
            )?,
        }
    }
    if !configs.is_empty() {
        block_on(admin.alter_topic(name, configs))?;
        match output {
            Output::Json => say!("{}", json!({"altered": name}))?,
            Output::Text => say!("altered topic {name}")?,
        }
    }
    Ok(())
}
