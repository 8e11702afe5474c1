//! The Rust client: [`Admin`], [`Producer`], [`Consumer`].
//!
//! Network I/O runs on the client's own threads (a reader per connection,
//! a sender per producer); calls return plain futures that work on any
//! runtime, and [`block_on`] gives the blocking form.

mod admin;
mod connection;
mod consumer;
pub mod murmur2;
mod producer;

pub use admin::{Admin, TopicDescription};
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Delivered, SeekTo};
pub use futures::executor::block_on;
pub use producer::{
    Acks, Delivery, DeliveryHandler, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    SendRecord,
};

use crate::protocol::ErrorCode;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    #[error("connection to {addr} closed")]
    Disconnected { addr: String },
    #[error("broker error: {code}: {message}")]
    Broker { code: ErrorCode, message: String },
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

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Io { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Connect { .. } => true,
            _ => false,
        }
    }

    fn from_code(code: u16, message: String) -> Option<ClientError> {
        (code != 0).then(|| ClientError::Broker { code: ErrorCode::from_u16(code), message })
    }
}

/// How long to wait for a broker to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the first broker of a comma-separated list that answers.
pub fn connect_any(brokers: &str) -> Result<Connection, ClientError> {
    let mut last = ClientError::InvalidArgument("no broker address given".into());
    for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match Connection::connect(addr, CONNECT_TIMEOUT) {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}
