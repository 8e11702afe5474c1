//! A connection to one of a list of brokers that replaces itself when it
//! dies: what `Admin`, `Consumer` and `Producer` talk through.
//!
//! A [`Connection`] dies for good when its socket fails, the broker closes
//! it (a restart) or a request on it times out. The `Link` notices on its
//! next use and connects again, trying the brokers of its list in turn
//! from the one after the broker it had, so a broker that accepts
//! connections but never answers is not chosen again and again; the
//! request that found the old connection dead goes out on the new one.
//! Requests that were in flight on the old connection have failed already
//! (`Disconnected`, `Timeout`): whether to send them again is the caller's
//! choice, since only the caller knows whether a request is safe to repeat.
//!
//! Once the list's brokers are all gone (restarted elsewhere, replaced), it
//! goes on through the brokers the cluster's metadata named last
//! (`learn`), as Kafka's clients ask any broker they know of.

use super::{ClientError, Connection, CONNECT_TIMEOUT};
use crate::protocol::{Frame, Message, Request, TopicMeta};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Lifecycle: `connect` opens the first connection (failing if no broker
/// answers); from then on every use gets a live connection or the error of
/// the last attempt to open one. Thread-safe: one lock guards the swap,
/// and requests run on the connection outside it.
pub struct Link {
    /// The `HOST[:PORT]` addresses, as given.
    brokers: String,
    addrs: Vec<String>,
    request_timeout: Duration,
    /// The connection and the index in `addrs` of its broker.
    current: Mutex<(Arc<Connection>, usize)>,
    /// Brokers the metadata named, tried after `addrs`.
    learned: Mutex<Vec<String>>,
}

impl Link {
    /// Connects to the first of `brokers` (comma-separated `HOST[:PORT]`)
    /// that answers. Requests give up after `request_timeout` without an
    /// answer.
    pub fn connect(brokers: &str, request_timeout: Duration) -> Result<Link, ClientError> {
        if request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "request_timeout_ms must be positive (30000 is the default)".into(),
            ));
        }
        let addrs: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let (conn, index) = connect_from(&addrs, 0, request_timeout).map_err(|e| match e {
            None => ClientError::InvalidArgument(format!(
                "no broker address in {brokers:?}; give HOST[:PORT],..."
            )),
            Some(e) => e,
        })?;
        Ok(Link {
            brokers: brokers.to_string(),
            addrs,
            request_timeout,
            current: Mutex::new((Arc::new(conn), index)),
            learned: Mutex::new(Vec::new()),
        })
    }

    /// Remembers the brokers the cluster's metadata names (`host:port`),
    /// to reconnect through once the given list answers no more.
    pub fn learn(&self, addresses: impl IntoIterator<Item = String>) {
        let mut learned: Vec<String> =
            addresses.into_iter().filter(|a| !self.addrs.contains(a)).collect();
        learned.sort();
        learned.dedup();
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = learned;
    }

    /// The live connection, opening a new one if the last one died.
    pub fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (conn, index) = &mut *current;
        if !conn.is_alive() {
            tracing::debug!(old = %conn.addr(), brokers = %self.brokers, "reconnecting");
            let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let all: Vec<String> = self.addrs.iter().cloned().chain(learned).collect();
            let start = (*index + 1) % all.len();
            let (new, new_index) =
                connect_from(&all, start, self.request_timeout).map_err(|e| {
                    e.unwrap_or(ClientError::Disconnected { addr: self.brokers.clone() })
                })?;
            *conn = Arc::new(new);
            *index = new_index;
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
    pub async fn call<R: Request, A: Message>(
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

/// Connects to the first broker of `addrs` that answers, trying them in
/// turn from `start`; `Err(None)` when there is none to try, else the
/// last broker's error.
fn connect_from(
    addrs: &[String],
    start: usize,
    request_timeout: Duration,
) -> Result<(Connection, usize), Option<ClientError>> {
    let mut last = None;
    for i in (0..addrs.len()).map(|k| (start + k) % addrs.len()) {
        match Connection::connect(&addrs[i], CONNECT_TIMEOUT) {
            Ok(conn) => return Ok((conn.with_request_timeout(request_timeout), i)),
            Err(e) => last = Some(e),
        }
    }
    Err(last)
}
