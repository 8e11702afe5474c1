//! The settings of `mamba serve`, declared once: each is a flag
//! (`--frame-bytes-max`), an environment variable (`MAMBA_FRAME_BYTES_MAX`)
//! and a key of the TOML file given with `--config` (`frame_bytes_max`).
//! A flag wins over the variable, the variable over the file, the file over
//! the default. Sizes and durations take units (`64MiB`, `30s`) everywhere.

use mamba_net::group::AssignorKind;
use mamba_net::topic_config::{parse_bytes, parse_ms};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A value as written in the file: TOML integers and strings both work
/// (`frame_bytes_max = 1048576` or `= "1MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileValue {
    Boolean(bool),
    Integer(u64),
    Text(String),
}

impl FileValue {
    fn text(&self) -> String {
        match self {
            FileValue::Boolean(b) => b.to_string(),
            FileValue::Integer(n) => n.to_string(),
            FileValue::Text(s) => s.clone(),
        }
    }
}

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $(#[arg($($arg:tt)*)])?
        $field:ident: $ty:ty, $env:literal, $value_name:literal, $parse:path;
    )+) => {
        /// Every setting as a flag or environment variable.
        #[derive(clap::Args, Debug, Default)]
        pub struct Flags {$(
            $(#[doc = $doc])+
            #[arg(long, env = $env, value_name = $value_name,
                  value_parser = |s: &str| -> Result<$ty, String> { $parse(stringify!($field), s) })]
            $(#[arg($($arg)*)])?
            pub $field: Option<$ty>,
        )+}

        /// Every setting as a key of the configuration file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {$(
            $field: Option<FileValue>,
        )+}

        /// The settings given anywhere; `None`: the default.
        #[derive(Debug, Default)]
        pub struct Settings {$(
            pub $field: Option<$ty>,
        )+}

        impl Flags {
            /// These flags over the settings of the file at `path`.
            pub fn over_file(self, path: Option<&Path>) -> Result<Settings, String> {
                let Some(path) = path else {
                    return Ok(Settings { $($field: self.$field,)+ });
                };
                let file = load(path)?;
                let in_file = |e: String| format!("config {}: {e}", path.display());
                Ok(Settings {$(
                    $field: match self.$field {
                        Some(given) => Some(given),
                        None => file
                            .$field
                            .map(|v| -> Result<$ty, String> { $parse(stringify!($field), &v.text()) })
                            .transpose()
                            .map_err(in_file)?,
                    },
                )+})
            }
        }
    };
}

settings! {
    /// Where topics are stored [default: ./mamba-data]
    data_dir: PathBuf, "MAMBA_DATA_DIR", "DIR", path;
    /// This broker's id in the cluster, unique among its brokers
    /// [default: 1]
    node_id: u32, "MAMBA_NODE_ID", "N", positive;
    /// Client address [default: 127.0.0.1:9400]
    listen: SocketAddr, "MAMBA_LISTEN", "ADDR", address;
    /// Cluster address: other brokers' Raft messages, heartbeats and
    /// forwarded requests [default: 127.0.0.1:9401]
    cluster_listen: SocketAddr, "MAMBA_CLUSTER_LISTEN", "ADDR", address;
    /// HTTP address: the JSON API, /livez, /readyz and /openapi.json
    /// [default: loopback at the client port + 80, 127.0.0.1:9480]
    http: SocketAddr, "MAMBA_HTTP", "ADDR", address;
    /// The bearer token every HTTP API request must carry
    /// (`Authorization: Bearer TOKEN`); needed to serve HTTP beyond
    /// loopback [default: none]
    http_token: String, "MAMBA_HTTP_TOKEN", "TOKEN", secret;
    /// Serve HTTP beyond loopback without a token: anyone who reaches the
    /// port may do anything (logged as a warning) [default: false]
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    http_insecure: bool, "MAMBA_HTTP_INSECURE", "BOOL", boolean;
    /// The client address this broker gives clients and other brokers,
    /// when --listen is not it (0.0.0.0, a NAT, a DNS name)
    /// [default: the --listen address]
    advertised_listen: String, "MAMBA_ADVERTISED_LISTEN", "HOST:PORT", host_port;
    /// The cluster address other brokers reach this one at, when
    /// --cluster-listen is not it [default: this node's --voters entry,
    /// else the --cluster-listen address]
    advertised_cluster_listen: String, "MAMBA_ADVERTISED_CLUSTER_LISTEN", "HOST:PORT", host_port;
    /// The metadata quorum of a new cluster, ID@HOST:PORT of each voter's
    /// cluster address, e.g. 1@10.0.0.1:9401,2@10.0.0.2:9401,3@10.0.0.3:9401
    /// (the same list on every voter) [default: this broker alone]
    voters: VoterList, "MAMBA_VOTERS", "ID@ADDR,...", voters;
    /// Cluster addresses of live brokers to join an existing cluster
    /// through (a broker not among the voters) [default: none]
    seeds: AddressList, "MAMBA_SEEDS", "ADDR,...", addresses;
    /// This broker's rack (or zone): replicas of a partition go to
    /// different racks [default: none]
    rack: String, "MAMBA_RACK", "NAME", text;
    /// How often this broker heartbeats the controller
    /// (broker.heartbeat.interval.ms) [default: 500ms]
    broker_heartbeat_interval_ms: u64, "MAMBA_BROKER_HEARTBEAT_INTERVAL_MS", "DURATION", duration;
    /// A broker silent this long is fenced: it leads nothing until it is
    /// back (broker.session.timeout.ms) [default: 3s]
    broker_session_timeout_ms: u64, "MAMBA_BROKER_SESSION_TIMEOUT_MS", "DURATION", duration;
    /// A follower that has not caught up with its leader this long leaves
    /// the in-sync replicas (replica.lag.time.max.ms) [default: 5s]
    replica_lag_time_max_ms: u64, "MAMBA_REPLICA_LAG_TIME_MAX_MS", "DURATION", duration;
    /// Metadata log entries applied past the last snapshot before a new
    /// one; the log before a snapshot is dropped, and a broker further
    /// behind installs the snapshot instead [default: 10000]
    metadata_snapshot_entries: u64, "MAMBA_METADATA_SNAPSHOT_ENTRIES", "N", positive;
    /// Executor threads, one per core [default: every core]
    shards: u32, "MAMBA_SHARDS", "N", positive;
    /// Largest request frame accepted; a produce request carries its
    /// batches [default: 64MiB]
    frame_bytes_max: usize, "MAMBA_FRAME_BYTES_MAX", "SIZE", size;
    /// Connections each shard serves; beyond it the least recently active
    /// idle one is closed [default: 4096]
    connections_per_shard_max: usize, "MAMBA_CONNECTIONS_PER_SHARD_MAX", "N", positive;
    /// Requests read from one connection before its answers are written
    /// [default: 64]
    in_flight_per_connection_max: usize, "MAMBA_IN_FLIGHT_PER_CONNECTION_MAX", "N", positive;
    /// Request bytes one shard holds at once over all its connections
    /// [default: 256MiB]
    request_bytes_per_shard_max: usize, "MAMBA_REQUEST_BYTES_PER_SHARD_MAX", "SIZE", size;
    /// Time a frame may take to arrive whole before the connection is
    /// answered `timeout` and closed [default: 30s]
    frame_receive_timeout_ms: u64, "MAMBA_FRAME_RECEIVE_TIMEOUT_MS", "DURATION", duration;
    /// A connection with nothing in flight is closed after this long
    /// [default: 10m]
    connections_max_idle_ms: u64, "MAMBA_CONNECTIONS_MAX_IDLE_MS", "DURATION", duration;
    /// Recent batches kept in memory per shard for readers at the tail
    /// [default: 64MiB]
    tail_cache_bytes_per_shard: usize, "MAMBA_TAIL_CACHE_BYTES_PER_SHARD", "SIZE", size;
    /// How often each shard checkpoints its partitions' recovery points;
    /// recovery after a crash verifies what was written since [default: 10s]
    recovery_point_interval_ms: u64, "MAMBA_RECOVERY_POINT_INTERVAL_MS", "DURATION", duration;
    /// How often retention deletes old segments [default: 30s]
    retention_check_interval_ms: u64, "MAMBA_RETENTION_CHECK_INTERVAL_MS", "DURATION", duration;
    /// Segment and index descriptors each shard keeps open [default: a
    /// quarter of the open-file limit, split over the shards]
    open_files_per_shard_max: usize, "MAMBA_OPEN_FILES_PER_SHARD_MAX", "N", positive;
    /// Session timeout of a group member that asks for none: silent that
    /// long, it is removed and its partitions move [default: 10s]
    group_session_timeout_ms: u64, "MAMBA_GROUP_SESSION_TIMEOUT_MS", "DURATION", duration;
    /// Shortest session timeout a member may ask for [default: 1s]
    group_session_timeout_ms_min: u64, "MAMBA_GROUP_SESSION_TIMEOUT_MS_MIN", "DURATION", duration;
    /// Longest session timeout a member may ask for [default: 5m]
    group_session_timeout_ms_max: u64, "MAMBA_GROUP_SESSION_TIMEOUT_MS_MAX", "DURATION", duration;
    /// Longest wait between a member's heartbeats when nothing changes;
    /// changes reach members at once [default: 3s]
    group_heartbeat_interval_ms: u64, "MAMBA_GROUP_HEARTBEAT_INTERVAL_MS", "DURATION", duration;
    /// Members one group may have [default: 1000]
    group_members_max: usize, "MAMBA_GROUP_MEMBERS_MAX", "N", positive;
    /// Assignor of a group whose first member names none: uniform,
    /// range or round-robin [default: uniform]
    group_assignor: AssignorKind, "MAMBA_GROUP_ASSIGNOR", "NAME", assignor;
    /// Committed offsets of a group without members are kept this long
    /// after their last commit [default: 7d]
    offsets_retention_ms: u64, "MAMBA_OFFSETS_RETENTION_MS", "DURATION", duration;
    /// Partitions of the internal __consumer_offsets topic, when the broker
    /// creates it (later changes have no effect) [default: 16]
    offsets_topic_partitions: u32, "MAMBA_OFFSETS_TOPIC_PARTITIONS", "N", positive;
    /// Segment size of __consumer_offsets when created; group state is
    /// compacted each time this much was written [default: 16MiB]
    offsets_segment_bytes: u64, "MAMBA_OFFSETS_SEGMENT_BYTES", "SIZE", size_u64;
}

fn load(path: &Path) -> Result<FileSettings, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {}", path.display(), e.message()))
}

/// `--voters`, parsed.
#[derive(Debug, Clone, Default)]
pub struct VoterList(pub Vec<mamba_net::cluster::Voter>);

/// A comma-separated list of `HOST:PORT`.
#[derive(Debug, Clone, Default)]
pub struct AddressList(pub Vec<String>);

fn voters(name: &str, value: &str) -> Result<VoterList, String> {
    mamba_net::cluster::parse_voters(value).map(VoterList).map_err(|e| format!("{name}: {e}"))
}

fn addresses(name: &str, value: &str) -> Result<AddressList, String> {
    let list: Vec<String> =
        value.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    if let Some(bad) =
        list.iter().find(|a| a.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()))
    {
        return Err(format!("{name}: {bad:?} is not HOST:PORT"));
    }
    Ok(AddressList(list))
}

fn host_port(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    let bad = |why: &str| {
        format!("{name} must be HOST:PORT that others can reach ({why}); got {value:?}")
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("a port from 1")),
        Ok(_) => {}
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    if host.is_empty() || ip.is_ok_and(|ip| ip.is_unspecified()) {
        return Err(bad("a host or IP, not 0.0.0.0"));
    }
    Ok(value.to_string())
}

fn secret(name: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.len() < 16 {
        return Err(format!(
            "{name} must be at least 16 characters (a guessable token protects nothing)"
        ));
    }
    Ok(value.to_string())
}

fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{name} is true or false, not {other:?}")),
    }
}

fn text(_name: &str, value: &str) -> Result<String, String> {
    Ok(value.trim().to_string())
}

fn path(_name: &str, value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

fn address(name: &str, value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!("{name} must be IP:PORT, e.g. 127.0.0.1:9400 or 0.0.0.0:9400; got {value:?}")
    })
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| format!("{name} must be a whole number; got {value:?}"))
}

fn positive<T: std::str::FromStr + PartialEq + From<u8>>(
    name: &str,
    value: &str,
) -> Result<T, String> {
    let n: T = number(name, value)?;
    if n == T::from(0) {
        return Err(format!("{name} must be at least 1; got {value:?}"));
    }
    Ok(n)
}

fn size(name: &str, value: &str) -> Result<usize, String> {
    let bytes = parse_bytes(name, value)?;
    usize::try_from(bytes).map_err(|_| format!("{name} is too large: {value:?}"))
}

fn size_u64(name: &str, value: &str) -> Result<u64, String> {
    parse_bytes(name, value)
}

fn duration(name: &str, value: &str) -> Result<u64, String> {
    parse_ms(name, value)
}

fn assignor(name: &str, value: &str) -> Result<AssignorKind, String> {
    value.trim().parse().map_err(|e: String| format!("{name}: {e}"))
}
