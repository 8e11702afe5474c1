//! `mamba broker info` and `mamba health`: what a broker is and whether it
//! serves.

use crate::cli::{count, local_code, say, CliError, ClientArgs, Output};
use crate::human;
use clap::Subcommand;
use mamba_net::client::{block_on, ClientError};
use mamba_net::protocol::DescribeBrokerResponse;
use serde_json::json;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    command: BrokerCommand,
}

#[derive(Subcommand, Debug)]
enum BrokerCommand {
    /// Version, node id, data directory, shards, listeners, uptime,
    /// partitions (online and offline) and the data disk's free space.
    Info,
}

/// Exit 0 when the broker answers and serves; 1 when it cannot be reached,
/// does not answer in time, or is shutting down.
///
/// Offline partitions (damaged data, see `mamba topic describe`) do not
/// make an unhealthy broker: it serves every other partition, so the
/// check passes and says how many are offline. With --strict they fail it.
#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Fail (exit 1) when any partition is offline, too.
    #[arg(long)]
    strict: bool,
    /// Fail when the broker has not answered within this many ms.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout_ms: u64,
}

pub fn info(args: BrokerArgs) -> Result<(), CliError> {
    let output = args.client.output();
    let BrokerCommand::Info = args.command;
    let admin = args.client.admin()?;
    let b = block_on(admin.describe_broker())?;
    match output {
        Output::Json => {
            let disk = if b.disk.error_code == 0 {
                json!({"total_bytes": b.disk.total_bytes, "free_bytes": b.disk.free_bytes})
            } else {
                json!({"error": b.disk.message})
            };
            say!(
                "{}",
                json!({
                    "node_id": b.node_id,
                    "version": b.version,
                    "data_dir": b.data_dir,
                    "shards": b.shards,
                    "listeners": b.listeners.iter().map(|l| json!({"name": l.name, "address": l.address})).collect::<Vec<_>>(),
                    "started_ms": b.started_ms,
                    "uptime_ms": b.uptime_ms,
                    "topics": b.topic_count,
                    "partitions_online": b.partitions_online,
                    "partitions_offline": b.partitions_offline,
                    "disk": disk,
                })
            )
        }
        Output::Text => {
            let listeners: Vec<String> =
                b.listeners.iter().map(|l| format!("{} {}", l.name, l.address)).collect();
            let disk = if b.disk.error_code == 0 {
                let used_percent = 100.0
                    * (b.disk.total_bytes.saturating_sub(b.disk.free_bytes)) as f64
                    / b.disk.total_bytes.max(1) as f64;
                format!(
                    "{} free of {} ({used_percent:.0}% used)",
                    human::bytes(b.disk.free_bytes),
                    human::bytes(b.disk.total_bytes)
                )
            } else {
                format!("unknown: {}", b.disk.message)
            };
            let mut partitions = format!("{} online", b.partitions_online);
            if b.partitions_offline > 0 {
                partitions.push_str(&format!(
                    ", {} offline (mamba topic describe shows why)",
                    b.partitions_offline
                ));
            }
            say!("broker {} (mamba {})", b.node_id, b.version)?;
            let rows = [
                ["data dir".to_string(), b.data_dir.clone()],
                ["shards".to_string(), b.shards.to_string()],
                ["listeners".to_string(), listeners.join(", ")],
                [
                    "started".to_string(),
                    format!(
                        "{} (up {})",
                        human::time_ms(b.started_ms),
                        human::duration_ms(b.uptime_ms)
                    ),
                ],
                ["topics".to_string(), b.topic_count.to_string()],
                ["partitions".to_string(), partitions],
                ["disk".to_string(), disk],
            ];
            for line in human::table(&rows.map(|row| row.to_vec())) {
                say!("  {line}")?;
            }
            Ok(())
        }
    }
}

pub fn health(args: HealthArgs) -> Result<(), CliError> {
    let output = args.client.output();
    let b = describe_within(&args.client, Duration::from_millis(args.timeout_ms))?;
    let address = b.listeners.first().map_or("?", |l| l.address.as_str());
    let mut summary = format!(
        "broker {} at {address}: mamba {}, up {}, {} online",
        b.node_id,
        b.version,
        human::duration_ms(b.uptime_ms),
        count(b.partitions_online as usize, "partition"),
    );
    if b.partitions_offline > 0 {
        summary.push_str(&format!(
            ", {} offline (mamba topic describe shows why)",
            b.partitions_offline
        ));
        if args.strict {
            return Err(CliError::failed(format!("unhealthy (--strict): {summary}")));
        }
    }
    match output {
        Output::Json => say!(
            "{}",
            json!({
                "status": "ok",
                "node_id": b.node_id,
                "version": b.version,
                "address": address,
                "uptime_ms": b.uptime_ms,
                "partitions_online": b.partitions_online,
                "partitions_offline": b.partitions_offline,
            })
        ),
        Output::Text => {
            say!("ok")?;
            say!("{summary}")
        }
    }
}

/// `describe_broker`, given up after `timeout`: a broker that accepts
/// connections but never answers (stopped, overloaded) must fail a health
/// check rather than hang it.
fn describe_within(
    client: &ClientArgs,
    timeout: Duration,
) -> Result<DescribeBrokerResponse, CliError> {
    let brokers = client.brokers.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mamba-health".into())
        .spawn(move || {
            let answer = mamba_net::client::Admin::connect(&brokers)
                .and_then(|admin| block_on(admin.describe_broker()));
            // The receiver is gone only after the timeout, which reported it.
            tx.send(answer).ok();
        })
        .map_err(|e| CliError::failed(format!("starting the health check: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(answer) => answer.map_err(|e: ClientError| CliError::from(e).context("unhealthy")),
        Err(_) => Err(CliError {
            code: local_code::CONNECTION,
            name: "connection",
            message: format!(
                "unhealthy: no answer from {} within {} ms (--timeout-ms)",
                client.brokers,
                timeout.as_millis()
            ),
        }),
    }
}
