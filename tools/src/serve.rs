//! `mamba serve`: a single-node broker — its settings resolved, the
//! process prepared (signals, limits), and a `Node` started and stopped.

use crate::serve_config::Flags;
use clap::Args;
use mamba_engine::EngineConfig;
use mamba_net::cluster::ClusterConfig;
use mamba_net::node::{Node, NodeConfig};
use mamba_net::server::{BrokerConfig, BrokerLimits, GroupConfig};
use std::path::PathBuf;

pub const DEFAULT_LISTEN: &str = crate::cli::DEFAULT_BROKERS;
pub const DEFAULT_DATA_DIR: &str = "./mamba-data";

/// `mamba serve`: every setting is a flag, a `MAMBA_*` variable or a key
/// of the `--config` file (see serve_config.rs and README's table).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of the settings below, keyed by their long name
    /// with underscores (data_dir, frame_bytes_max = "64MiB", …). Flags and
    /// MAMBA_* variables win over it.
    #[arg(long, env = "MAMBA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Flags,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let settings = args.flags.over_file(args.config.as_deref())?;
    let data_dir = settings.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = match settings.listen {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse().map_err(|e| format!("{e}"))?,
    };
    let defaults = BrokerLimits::default();
    let limits = BrokerLimits {
        frame_bytes_max: settings.frame_bytes_max.unwrap_or(defaults.frame_bytes_max),
        connections_per_shard_max: settings
            .connections_per_shard_max
            .unwrap_or(defaults.connections_per_shard_max),
        in_flight_per_connection_max: settings
            .in_flight_per_connection_max
            .unwrap_or(defaults.in_flight_per_connection_max),
        request_bytes_per_shard_max: settings
            .request_bytes_per_shard_max
            .unwrap_or(defaults.request_bytes_per_shard_max),
        frame_receive_timeout_ms: settings
            .frame_receive_timeout_ms
            .unwrap_or(defaults.frame_receive_timeout_ms),
        connections_max_idle_ms: settings
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
        shards: settings.shards,
        tail_cache_bytes_per_shard: settings
            .tail_cache_bytes_per_shard
            .unwrap_or(engine_defaults.tail_cache_bytes_per_shard),
        recovery_point_interval_ms: settings
            .recovery_point_interval_ms
            .unwrap_or(engine_defaults.recovery_point_interval_ms),
        retention_check_interval_ms: settings
            .retention_check_interval_ms
            .unwrap_or(engine_defaults.retention_check_interval_ms),
        open_files_per_shard_max: settings
            .open_files_per_shard_max
            .or(engine_defaults.open_files_per_shard_max),
        ..engine_defaults
    };
    let group_defaults = GroupConfig::default();
    let groups = GroupConfig {
        session_timeout_ms_default: settings
            .group_session_timeout_ms
            .unwrap_or(group_defaults.session_timeout_ms_default),
        session_timeout_ms_min: settings
            .group_session_timeout_ms_min
            .unwrap_or(group_defaults.session_timeout_ms_min),
        session_timeout_ms_max: settings
            .group_session_timeout_ms_max
            .unwrap_or(group_defaults.session_timeout_ms_max),
        heartbeat_interval_ms: settings
            .group_heartbeat_interval_ms
            .unwrap_or(group_defaults.heartbeat_interval_ms),
        members_max: settings.group_members_max.unwrap_or(group_defaults.members_max),
        assignor_default: settings.group_assignor.unwrap_or(group_defaults.assignor_default),
        offsets_retention_ms: settings
            .offsets_retention_ms
            .unwrap_or(group_defaults.offsets_retention_ms),
        offsets_topic_partitions: settings
            .offsets_topic_partitions
            .unwrap_or(group_defaults.offsets_topic_partitions),
        offsets_segment_bytes: settings
            .offsets_segment_bytes
            .unwrap_or(group_defaults.offsets_segment_bytes),
    };
    let node_id = settings.node_id.unwrap_or(1);
    let cluster_defaults = ClusterConfig::default();
    let cluster = ClusterConfig {
        node_id,
        // Unless given: the port after the client port (9401 by default;
        // a kernel-picked one when the client port is picked).
        cluster_listen: settings.cluster_listen.unwrap_or_else(|| next_port(listen)),
        voters: settings.voters.map(|v| v.0).unwrap_or_default(),
        seeds: settings.seeds.map(|s| s.0).unwrap_or_default(),
        rack: settings.rack.filter(|r| !r.is_empty()),
        heartbeat_interval_ms: settings
            .broker_heartbeat_interval_ms
            .unwrap_or(cluster_defaults.heartbeat_interval_ms),
        session_timeout_ms: settings
            .broker_session_timeout_ms
            .unwrap_or(cluster_defaults.session_timeout_ms),
        snapshot_entries_max: settings
            .metadata_snapshot_entries
            .unwrap_or(cluster_defaults.snapshot_entries_max),
        advertised_client: settings.advertised_listen.clone(),
        advertised_cluster: settings.advertised_cluster_listen.clone(),
        replication: mamba_net::replication::ReplicationConfig {
            lag_time_max_ms: settings
                .replica_lag_time_max_ms
                .unwrap_or(cluster_defaults.replication.lag_time_max_ms),
            ..cluster_defaults.replication.clone()
        },
        ..cluster_defaults
    };
    cluster.validate()?;
    let http = mamba_http::HttpConfig {
        // Unless given: loopback (whatever the client address), at the
        // client port + 80 (9480 beside 9400; a picked one when the client
        // port is picked). Beyond loopback takes a token or an explicit
        // --http-insecure.
        listen: settings.http.unwrap_or_else(|| loopback(port_after(listen, 80))),
        token: settings.http_token.clone(),
        insecure: settings.http_insecure.unwrap_or(false),
        ..mamba_http::HttpConfig::default()
    };
    http.check().map_err(|e| e.to_string())?;
    let broker = BrokerConfig { node_id, listen, limits, groups };
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        engine: engine_config,
        broker,
        cluster: Some(cluster),
    };
    let node = Node::start(config).map_err(|e| e.to_string())?;
    let client_addr = node.client_addr().map(|a| a.to_string()).unwrap_or_default();
    let http = mamba_http::HttpServer::start(http, &node).map_err(|e| e.to_string())?;
    let engine = node.engine();
    let report = engine.open_report();
    tracing::info!(
        listen = %client_addr,
        http = %http.local_addr(),
        shards = engine.shard_count(),
        data_dir = %data_dir.display(),
        durability_default = "fsync",
        partitions = report.partitions_opened,
        repaired_segments = report.repaired_segments.len(),
        offline_partitions = report.offline_partitions.len(),
        open_files_max = ?open_files_max,
        "mamba broker ready"
    );
    // A broker that cannot be in its cluster (another cluster's data
    // directory, a node id a live broker has) stops as if signalled, and
    // says why.
    if let Some(cluster) = node.cluster().cloned() {
        let signals = signals.handle();
        std::thread::spawn(move || {
            mamba_net::client::block_on(cluster.wait_fatal());
            signals.close();
        });
    }
    if let Some(signal) = signals.forever().next() {
        tracing::info!(
            signal,
            "shutting down: closing connections, flushing and closing partitions"
        );
    }
    let fatal = node.cluster().and_then(|c| c.fatal());
    http.stop();
    node.stop().map_err(|e| format!("shutdown: {e}"))?;
    if let Some(reason) = fatal {
        return Err(reason);
    }
    tracing::info!("stopped");
    Ok(())
}

/// `address` on its family's loopback interface.
fn loopback(address: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip: std::net::IpAddr = match address {
        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    std::net::SocketAddr::new(ip, address.port())
}

/// The cluster port beside a client port: the next one.
fn next_port(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    port_after(listen, 1)
}

/// The port `by` after the client port on its host (`0` stays `0`, for
/// the kernel to pick; past the last port, a picked one).
fn port_after(listen: std::net::SocketAddr, by: u16) -> std::net::SocketAddr {
    let port = match listen.port() {
        0 => 0,
        p => p.checked_add(by).unwrap_or(0),
    };
    std::net::SocketAddr::new(listen.ip(), port)
}
