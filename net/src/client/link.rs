//! A connection to one of a list of brokers that replaces itself when it
//! dies: what `Admin`, `Consumer` and `Producer` talk through.
//!
//! A [`Connection`] dies for good when its socket fails, the broker closes
//! it (a restart) or a request on it times out. The `Link` notices on its
//! next use and connects again, to the first broker of its list that
//! answers; the request that found the old one dead goes out on the new
//! one. Requests that were in flight on the old connection have failed
//! already (`Disconnected`, `Timeout`): whether to send them again is the
//! caller's choice, since only the caller knows whether a request is safe
//! to repeat.

use super::{connect_any, ClientError, Connection};
use crate::protocol::{Frame, Message, TopicMeta};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lifecycle: `connect` opens the first connection (failing if no broker
/// answers); from then on every use gets a live connection or the error of
/// the attempt to open one. Thread-safe: one lock guards the swap, and
/// requests run on the connection outside it.
pub struct Link {
    /// Comma-separated `HOST[:PORT]` list, tried in order.
    brokers: String,
    request_timeout: Duration,
    conn: Mutex<Arc<Connection>>,
}

impl Link {
    /// Connects to the first of `brokers` that answers. Requests give up
    /// after `request_timeout` without an answer.
    pub fn connect(brokers: &str, request_timeout: Duration) -> Result<Link, ClientError> {
        if request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "request_timeout_ms must be positive (30000 is the default)".into(),
            ));
        }
        let conn = connect_any(brokers, request_timeout)?;
        Ok(Link { brokers: brokers.to_string(), request_timeout, conn: Mutex::new(Arc::new(conn)) })
    }

    /// The live connection, opening a new one if the last one died.
    pub fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if !conn.is_alive() {
            tracing::debug!(old = %conn.addr(), brokers = %self.brokers, "reconnecting");
            *conn = Arc::new(connect_any(&self.brokers, self.request_timeout)?);
        }
        Ok(conn.clone())
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends a request on the live connection and decodes its answer.
    pub async fn call<R: Message, A: Message>(
        &self,
        request: &R,
        payload: &[&[u8]],
    ) -> Result<(A, Frame), ClientError> {
        self.connection()?.call(request, payload).await
    }

    /// One topic's metadata; see [`Connection::topic_metadata`].
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        self.connection()?.topic_metadata(topic).await
    }

    /// See [`Connection::list_offset`].
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        self.connection()?.list_offset(topic, partition, timestamp).await
    }
}
