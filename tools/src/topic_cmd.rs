//! `mamba topic create|list|describe|alter|delete`.

use crate::cli::{count, say, CliError, ClientArgs, Output};
use clap::Subcommand;
use mamba_net::client::block_on;
use mamba_net::protocol::{ConfigEntry, ErrorCode, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use serde_json::json;

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
                Err(e)
                    if if_not_exists
                        && CliError::from(e.clone()).is(ErrorCode::TopicAlreadyExists) =>
                {
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
