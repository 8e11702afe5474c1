//! `mamba cluster failover|failback|transfer-leader|move|decommission|
//! config`: an operator's actions on leaderships and replicas. Each asks
//! the controller (through any broker) and then, unless told not to,
//! watches the metadata until the action took effect, saying what it is
//! waiting for.

use crate::cli::{say, CliError, ClientArgs, Output};
use clap::Subcommand;
use mamba_net::client::{block_on, Admin};
use mamba_net::protocol::{ClusterAction, MetadataResponse, PartitionMeta};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum ActionCommand {
    /// Move every leadership off a broker (default: the cluster's primary,
    /// leader.placement=primary:N). It stays in sync and leads only where
    /// no other in-sync replica can, until `cluster failback`.
    Failover {
        /// The broker to take leaderships from.
        #[arg(long)]
        from: Option<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Let a broker failed over from lead again (default: the drained
    /// primary, or the only drained broker): the partitions it is the
    /// preferred leader of return to it once it is in sync.
    Failback {
        /// The broker that may lead again.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Make a broker lead a partition now, and stay its preferred leader.
    TransferLeader {
        /// TOPIC:PARTITION
        partition: String,
        /// The broker to lead it: an in-sync replica.
        #[arg(long)]
        to: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move a partition's replicas to other brokers: the new ones copy the
    /// log from the leader (at replication.throttle.bytes_per_s), then the
    /// old ones go. Nothing acknowledged is lost, producers and consumers
    /// carry on. Moving to the current replicas calls a move off.
    Move {
        /// TOPIC:PARTITION
        partition: String,
        /// The new replicas, comma-separated broker ids; the first is the
        /// preferred leader.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<u32>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Take a broker out of the cluster: its leaderships, then all its
    /// replicas move to the other brokers. Once it hosts nothing, stop it;
    /// the cluster then forgets it. A voter of the metadata quorum must be
    /// removed from the voters first.
    Decommission {
        /// The broker to take out.
        broker_id: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Cluster-wide settings: leader.placement (spread | primary:N) and
    /// replication.throttle.bytes_per_s.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Every setting that is set, and the ones that can be.
    Get,
    /// Set one setting.
    Set {
        /// The setting's name.
        name: String,
        /// Its value (a size such as 50MiB for the throttle).
        value: String,
    },
    /// Remove one setting (back to its default).
    Unset {
        /// The setting's name.
        name: String,
    },
}

#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Return once the controller took the request, without waiting for
    /// it to take effect.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for it to take effect.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// How often the metadata is read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often a wait says what it waits for.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

pub fn run(client: &ClientArgs, command: ActionCommand, output: Output) -> Result<(), CliError> {
    let admin = client.admin()?;
    match command {
        ActionCommand::Failover { from, wait } => {
            block_on(admin.cluster_action(ClusterAction::Failover { from }))?;
            let from = match from {
                Some(id) => id,
                None => primary(&admin)?.ok_or_else(|| CliError::failed("no primary"))?,
            };
            let done = wait_for(&admin, wait, |m| {
                let stuck = led_without_successor(m, from);
                let led = led_by(m, from);
                let text = if led.is_empty() {
                    format!("broker {from} leads nothing")
                } else {
                    format!("broker {from} still leads {}", names(&led))
                };
                (led.len() == stuck.len(), text)
            })?;
            report(output, json!({"failover_from": from, "done": done.0}), &done.1)
        }
        ActionCommand::Failback { to } => {
            block_on(admin.cluster_action(ClusterAction::Failback { to }))?;
            let text = match to {
                Some(id) => format!("broker {id} may lead again: its preferred leaderships return as its replicas are in sync"),
                None => "the drained broker may lead again: its preferred leaderships return as its replicas are in sync".to_string(),
            };
            report(output, json!({"failback_to": to}), &text)
        }
        ActionCommand::TransferLeader { partition, to, wait } => {
            let (topic, p) = parse_partition(&partition)?;
            let action = ClusterAction::TransferLeader { topic: topic.clone(), partition: p, to };
            block_on(admin.cluster_action(action))?;
            let done = wait_for(&admin, wait, |m| match find(m, &topic, p) {
                Some(meta) => (
                    meta.leader == Some(to),
                    format!("{topic}/{p}: leader {:?}, epoch {}", meta.leader, meta.leader_epoch),
                ),
                None => (true, format!("{topic}/{p} is gone")),
            })?;
            report(
                output,
                json!({"topic": topic, "partition": p, "leader": to, "done": done.0}),
                &done.1,
            )
        }
        ActionCommand::Move { partition, to, wait } => {
            let (topic, p) = parse_partition(&partition)?;
            let action = ClusterAction::MoveReplicas {
                topic: topic.clone(),
                partition: p,
                replicas: to.clone(),
            };
            block_on(admin.cluster_action(action))?;
            let done = wait_for(&admin, wait, |m| match find(m, &topic, p) {
                Some(meta) => (
                    meta.replicas == to && meta.target_replicas.is_empty(),
                    format!(
                        "{topic}/{p}: replicas {}, in sync {}{}",
                        ids(&meta.replicas),
                        ids(&meta.isr),
                        if meta.target_replicas.is_empty() {
                            String::new()
                        } else {
                            format!(", moving to {}", ids(&meta.target_replicas))
                        }
                    ),
                ),
                None => (true, format!("{topic}/{p} is gone")),
            })?;
            report(
                output,
                json!({"topic": topic, "partition": p, "replicas": to, "done": done.0}),
                &done.1,
            )
        }
        ActionCommand::Decommission { broker_id, wait } => {
            block_on(admin.cluster_action(ClusterAction::Decommission { broker_id }))?;
            let done = wait_for(&admin, wait, |m| {
                let hosted = hosted_by(m, broker_id);
                if hosted.is_empty() {
                    (true, format!("broker {broker_id} hosts no replicas: stop it; the cluster forgets it once it is stopped"))
                } else {
                    (
                        false,
                        format!(
                            "broker {broker_id} still hosts {} replicas ({})",
                            hosted.len(),
                            names(&hosted)
                        ),
                    )
                }
            })?;
            report(output, json!({"decommissioned": broker_id, "done": done.0}), &done.1)
        }
        ActionCommand::Config { command } => config(&admin, command, output),
    }
}

fn config(admin: &Admin, command: ConfigCommand, output: Output) -> Result<(), CliError> {
    let (name, value) = match command {
        ConfigCommand::Get => {
            let status = block_on(admin.cluster_status())?;
            return match output {
                Output::Json => say!(
                    "{}",
                    json!(status
                        .settings
                        .iter()
                        .map(|s| (s.name.clone(), json!(s.value)))
                        .collect::<serde_json::Map<_, _>>())
                ),
                Output::Text => {
                    for (name, what) in mamba_net::cluster::settings::OPERATOR_SETTINGS {
                        let value = status.settings.iter().find(|s| s.name == *name);
                        match value {
                            Some(s) => say!("{name}={}", s.value)?,
                            None => say!("{name} (not set: {what})")?,
                        }
                    }
                    Ok(())
                }
            };
        }
        ConfigCommand::Set { name, value } => (name, Some(value)),
        ConfigCommand::Unset { name } => (name, None),
    };
    let action = ClusterAction::SetSetting { name: name.clone(), value: value.clone() };
    block_on(admin.cluster_action(action))?;
    let text = match &value {
        Some(v) => format!("{name}={v}"),
        None => format!("{name} unset"),
    };
    report(output, json!({"name": name, "value": value}), &text)
}

fn report(output: Output, value: serde_json::Value, text: &str) -> Result<(), CliError> {
    match output {
        Output::Json => say!("{value}"),
        Output::Text => say!("{text}"),
    }
}

/// Reads the metadata until `done` says so (or the wait is over), saying
/// what it waits for every `PROGRESS_INTERVAL`. Returns whether it is
/// done and the last text; a wait that timed out is an error.
fn wait_for(
    admin: &Admin,
    wait: WaitArgs,
    done: impl Fn(&MetadataResponse) -> (bool, String),
) -> Result<(bool, String), CliError> {
    let deadline = Instant::now() + Duration::from_secs(wait.timeout_s);
    let mut said = Instant::now();
    loop {
        let metadata = block_on(admin.metadata(None))?;
        let (finished, text) = done(&metadata);
        if finished || wait.no_wait {
            return Ok((finished, text));
        }
        if Instant::now() >= deadline {
            return Err(CliError::failed(format!(
                "not done after {} s: {text} (it goes on; watch `mamba topic describe` and `mamba cluster status`)",
                wait.timeout_s
            )));
        }
        if said.elapsed() >= PROGRESS_INTERVAL {
            eprintln!("mamba: waiting: {text}");
            said = Instant::now();
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn primary(admin: &Admin) -> Result<Option<u32>, CliError> {
    let status = block_on(admin.cluster_status())?;
    Ok(status
        .settings
        .iter()
        .find(|s| s.name == mamba_net::cluster::settings::LEADER_PLACEMENT)
        .and_then(|s| s.value.strip_prefix("primary:"))
        .and_then(|n| n.parse().ok()))
}

/// `TOPIC:PARTITION`.
fn parse_partition(text: &str) -> Result<(String, u32), CliError> {
    let bad = || CliError::usage(format!("{text:?} is not TOPIC:PARTITION (e.g. orders:3)"));
    let (topic, partition) = text.rsplit_once(':').ok_or_else(bad)?;
    let partition = partition.parse().map_err(|_| bad())?;
    if topic.is_empty() {
        return Err(bad());
    }
    Ok((topic.to_string(), partition))
}

fn find<'a>(m: &'a MetadataResponse, topic: &str, partition: u32) -> Option<&'a PartitionMeta> {
    m.topics.iter().find(|t| t.name == topic)?.partitions.iter().find(|p| p.partition == partition)
}

fn partitions(m: &MetadataResponse) -> impl Iterator<Item = (&str, &PartitionMeta)> {
    m.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p)))
}

fn led_by(m: &MetadataResponse, broker: u32) -> Vec<(String, u32)> {
    partitions(m)
        .filter(|(_, p)| p.leader == Some(broker))
        .map(|(t, p)| (t.to_string(), p.partition))
        .collect()
}

/// Partitions `broker` leads that no other in-sync replica can take.
fn led_without_successor(m: &MetadataResponse, broker: u32) -> Vec<(String, u32)> {
    let alive = |id: u32| m.brokers.iter().any(|b| b.node_id == id && b.status == "alive");
    partitions(m)
        .filter(|(_, p)| p.leader == Some(broker))
        .filter(|(_, p)| !p.isr.iter().any(|id| *id != broker && alive(*id)))
        .map(|(t, p)| (t.to_string(), p.partition))
        .collect()
}

fn hosted_by(m: &MetadataResponse, broker: u32) -> Vec<(String, u32)> {
    partitions(m)
        .filter(|(_, p)| p.replicas.contains(&broker))
        .map(|(t, p)| (t.to_string(), p.partition))
        .collect()
}

/// At most a few names, then a count.
fn names(list: &[(String, u32)]) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = list.iter().take(SHOWN).map(|(t, p)| format!("{t}/{p}")).collect();
    if list.len() > SHOWN {
        text.push(format!("and {} more", list.len() - SHOWN));
    }
    text.join(", ")
}

fn ids(list: &[u32]) -> String {
    format!("[{}]", list.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_topic_colon_number() {
        assert_eq!(parse_partition("orders:3").expect("valid"), ("orders".to_string(), 3));
        for bad in ["orders", "orders:x", ":1", "orders:-1"] {
            let e = parse_partition(bad).expect_err("invalid");
            assert!(e.message.contains("TOPIC:PARTITION"), "{bad}: {}", e.message);
        }
    }
}
