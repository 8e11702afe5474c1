//! The Rust client: [`Admin`], [`Producer`], [`Consumer`].
//!
//! A client needs one live broker of its `--brokers` list: from it, it
//! learns the cluster (its [`ClusterView`]) and sends each partition's
//! produce, fetch and list-offsets requests to the partition's leader, and
//! each group's requests to the group's [`Coordinator`], refreshing what
//! it knows when a broker says it moved (`not leader`, `not coordinator`).
//!
//! Network I/O runs on the client's own threads (a reader per connection,
//! a sender per producer); calls return plain futures that work on any
//! runtime, and [`block_on`] gives the blocking form.

mod admin;
mod backoff;
mod blocking;
mod broker_pool;
mod cluster_view;
mod connection;
mod consumer;
mod group_coordinator;
mod link;
mod membership;
pub mod murmur2;
mod producer;
mod refresh_schedule;
mod router;
mod topic_pattern;

pub use admin::{Admin, AdminConfig, PartitionLag, TopicDescription, VoterChange};
pub use backoff::Backoff;
pub use cluster_view::{ClusterView, Route};
pub use connection::{decode_answer, Connection, Waiter};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerRecord, Delivered, OffsetReset, RebalanceListener, SeekTo,
};
pub use futures::executor::block_on;
pub use group_coordinator::Coordinator;
pub use link::Link;
pub use membership::{GroupOptions, Partitions};
pub use producer::{
    Acks, Delivery, DeliveryHandler, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    SendRecord,
};

use crate::protocol::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// Why a client call failed. Clone, so one failure can answer every record
/// of a batch: causes from the system are shared (`Arc`), and kept as typed
/// sources (`std::error::Error::source`), not flattened into text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The address itself is bad (syntax, or the name does not resolve).
    #[error("bad broker address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("connection to {addr} closed")]
    Disconnected { addr: String },
    /// No answer within the request timeout. The connection it went out on
    /// was closed (see `connection.rs`); the next request opens a new one.
    #[error(
        "no answer to {request} from {addr} within {waited_ms} ms; the connection was closed \
         and the next request opens a new one (raise request_timeout_ms if the broker is \
         just slow)"
    )]
    Timeout { request: &'static str, addr: String, waited_ms: u64 },
    #[error("broker error: {code}: {message}")]
    Broker { code: ErrorCode, message: String },
    /// The partition has no leader now: it is offline (no in-sync replica
    /// alive) or a leader election is under way.
    #[error(
        "partition {partition} of topic {topic} has no leader now (offline, or a leader \
         election is under way)"
    )]
    NoLeader { topic: String, partition: u32 },
    /// A fetch position outside the partition's log: before its start
    /// (retention deleted it) or past its end.
    #[error(
        "partition {partition} of topic {topic} has offsets {log_start_offset}..{log_end_offset}; \
         {offset} is {}",
        side_of_log(.offset, .log_start_offset)
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("invalid batch: {0}")]
    Batch(#[from] mamba_engine::batch::BatchError),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("producer buffer full ({buffered_bytes} bytes) for {waited_ms} ms")]
    BufferFull { buffered_bytes: usize, waited_ms: u64 },
    #[error("producer is closed")]
    Closed,
    #[error("no answer is expected for this request")]
    NoAnswer,
}

/// Where an offset outside a log lies, for `OffsetOutOfRange`.
fn side_of_log(offset: &u64, log_start_offset: &u64) -> &'static str {
    if offset < log_start_offset {
        "before the start (retention deleted it)"
    } else {
        "beyond the end"
    }
}

impl ClientError {
    /// Whether sending the same request again may succeed: the connection
    /// failed or timed out (the next one is new), or the broker said to
    /// come back (busy, shutting down, ...).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code: ErrorCode::ShuttingDown, .. } => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Io { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
            | ClientError::Connect { .. }
            | ClientError::NoLeader { .. } => true,
            _ => false,
        }
    }

    /// The error a broker answered with (`None` for code 0).
    pub fn from_code(code: u16, message: String) -> Option<ClientError> {
        (code != 0).then(|| ClientError::Broker { code: ErrorCode::from_u16(code), message })
    }
}

/// The client port of a broker given without one (`--brokers HOST`).
pub const DEFAULT_PORT: u16 = 9400;

/// `addr` with `DEFAULT_PORT` added when it names no port: `host`,
/// `1.2.3.4`, `::1` or `[::1]` get one; `host:9500` and `[::1]:9500` keep
/// theirs.
pub fn with_default_port(addr: &str) -> String {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{DEFAULT_PORT}");
    }
    if addr.starts_with('[') && addr.ends_with(']') {
        return format!("{addr}:{DEFAULT_PORT}");
    }
    match addr.rsplit_once(':') {
        Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            addr.to_string()
        }
        _ => format!("{addr}:{DEFAULT_PORT}"),
    }
}

/// How long to wait for a broker to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for its answer by default (Kafka's
/// `request.timeout.ms`); a fetch waits its long poll on top.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

#[cfg(test)]
mod address_tests {
    use super::with_default_port;

    #[test]
    fn an_address_without_a_port_gets_9400() {
        for (given, expected) in [
            ("localhost", "localhost:9400"),
            ("10.0.0.7", "10.0.0.7:9400"),
            ("::1", "[::1]:9400"),
            ("[::1]", "[::1]:9400"),
            ("broker-1.example:9500", "broker-1.example:9500"),
            ("[::1]:9500", "[::1]:9500"),
            ("127.0.0.1:9401", "127.0.0.1:9401"),
        ] {
            assert_eq!(with_default_port(given), expected, "{given}");
        }
    }
}
