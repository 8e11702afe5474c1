//! `mamba serve`: a single-node broker.

use clap::Args;
use mamba_engine::{Engine, EngineConfig};
use mamba_net::server::{Broker, BrokerConfig, BrokerLimits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9400";
pub const DEFAULT_DATA_DIR: &str = "./mamba-data";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of: data_dir, listen, shards, node_id,
    /// frame_bytes_max, connections_per_shard_max,
    /// in_flight_per_connection_max, request_bytes_per_shard_max,
    /// frame_receive_timeout_ms, connections_max_idle_ms,
    /// tail_cache_bytes_per_shard. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where topics are stored [default: ./mamba-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This broker's id in a cluster [default: 0]
    #[arg(long)]
    node_id: Option<u32>,
    /// Client address [default: 127.0.0.1:9400]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Executor threads, one per core [default: every core]
    #[arg(long)]
    shards: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    node_id: Option<u32>,
    listen: Option<SocketAddr>,
    shards: Option<u32>,
    frame_bytes_max: Option<usize>,
    connections_per_shard_max: Option<usize>,
    in_flight_per_connection_max: Option<usize>,
    request_bytes_per_shard_max: Option<usize>,
    frame_receive_timeout_ms: Option<u64>,
    connections_max_idle_ms: Option<u64>,
    tail_cache_bytes_per_shard: Option<usize>,
}

fn load(path: &PathBuf) -> Result<FileConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {}", path.display(), e.message()))
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => FileConfig::default(),
    };
    let data_dir =
        args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = match args.listen.or(file.listen) {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?,
    };
    let shards = args.shards.or(file.shards);
    if shards == Some(0) {
        return Err("--shards must be at least 1".into());
    }
    let defaults = BrokerLimits::default();
    let limits = BrokerLimits {
        frame_bytes_max: file.frame_bytes_max.unwrap_or(defaults.frame_bytes_max),
        connections_per_shard_max: file
            .connections_per_shard_max
            .unwrap_or(defaults.connections_per_shard_max),
        in_flight_per_connection_max: file
            .in_flight_per_connection_max
            .unwrap_or(defaults.in_flight_per_connection_max),
        request_bytes_per_shard_max: file
            .request_bytes_per_shard_max
            .unwrap_or(defaults.request_bytes_per_shard_max),
        frame_receive_timeout_ms: file
            .frame_receive_timeout_ms
            .unwrap_or(defaults.frame_receive_timeout_ms),
        connections_max_idle_ms: file
            .connections_max_idle_ms
            .unwrap_or(defaults.connections_max_idle_ms),
    };
    limits.validate().map_err(|e| match &args.config {
        Some(path) => format!("config {}: {e}", path.display()),
        None => e.to_string(),
    })?;
    // A dead shard must not leave a half-working broker behind.
    mamba_engine::runtime::exit_on_panic();
    // Two descriptors per connection and three per segment; see the function.
    let open_files_max = match mamba_engine::runtime::raise_open_file_limit() {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "open file limit not raised; connections may be refused");
            None
        }
    };
    // Catch the signals before any thread starts, so every thread inherits
    // the handling and a signal during startup is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    let engine_defaults = EngineConfig::default();
    let engine_config = EngineConfig {
        shards,
        tail_cache_bytes_per_shard: file
            .tail_cache_bytes_per_shard
            .unwrap_or(engine_defaults.tail_cache_bytes_per_shard),
        ..engine_defaults
    };
    let engine = Engine::open(&data_dir, engine_config)
        .map_err(|e| format!("cannot open data directory {}: {e}", data_dir.display()))?;
    let config =
        BrokerConfig { node_id: args.node_id.or(file.node_id).unwrap_or(0), listen, limits };
    let broker = match Broker::start(engine.clone(), config) {
        Ok(broker) => broker,
        Err(e) => {
            if let Err(close) = engine.close() {
                tracing::error!(error = %close, "closing the engine");
            }
            return Err(e.to_string());
        }
    };
    let report = engine.open_report();
    tracing::info!(
        listen = %broker.local_addr(),
        shards = engine.shard_count(),
        data_dir = %data_dir.display(),
        durability_default = "fsync",
        partitions = report.partitions_opened,
        repaired_segments = report.repaired_segments.len(),
        offline_partitions = report.offline_partitions.len(),
        open_files_max = ?open_files_max,
        "mamba broker ready"
    );
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down: flushing and closing partitions");
    }
    engine.close().map_err(|e| format!("shutdown: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
