//! How a client reaches a cluster: the bootstrap [`Link`] (any broker of
//! the `--brokers` list: metadata, topic admin, finding coordinators; one
//! live broker is enough) and a connection per broker by node id (the
//! leaders of partitions, the coordinators of groups).
//!
//! A broker's connection opens on first use and is replaced on the next
//! use once it died (a broker restart, a timed out request) or once the
//! broker is named at another address. As with the [`Link`], requests in
//! flight on a connection that died have failed already; whether to send
//! them again is the caller's choice.

use super::{ClientError, Connection, Link, CONNECT_TIMEOUT};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A broker's connection and the address it was opened to.
struct Opened {
    addr: String,
    connection: Arc<Connection>,
}

/// One broker's place in the pool: its lock is held while connecting, so
/// callers wanting the same broker wait for one connect instead of each
/// opening their own, while other brokers' callers go on.
type Slot = Arc<Mutex<Option<Opened>>>;

/// Lifecycle: `connect` opens the bootstrap connection (failing if no
/// broker of the list answers); broker connections open as they are
/// asked for and close with the pool. Thread-safe.
pub struct BrokerPool {
    bootstrap: Link,
    request_timeout: Duration,
    /// By node id. Entries are never removed: a cluster has few brokers.
    brokers: Mutex<HashMap<u32, Slot>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BrokerPool {
    /// Connects to the first of `brokers` (comma-separated `HOST[:PORT]`)
    /// that answers; requests give up after `request_timeout`.
    pub fn connect(brokers: &str, request_timeout: Duration) -> Result<BrokerPool, ClientError> {
        Ok(BrokerPool {
            bootstrap: Link::connect(brokers, request_timeout)?,
            request_timeout,
            brokers: Mutex::new(HashMap::new()),
        })
    }

    /// The connection to any broker of the bootstrap list.
    pub fn bootstrap(&self) -> &Link {
        &self.bootstrap
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The live connection to broker `node_id`, reached at `addr`
    /// (`host:port`): the one open, or a new one if it died or the broker
    /// moved.
    pub fn connection(&self, node_id: u32, addr: &str) -> Result<Arc<Connection>, ClientError> {
        let slot = lock(&self.brokers).entry(node_id).or_default().clone();
        let mut opened = lock(&slot);
        if let Some(o) = opened.as_ref().filter(|o| o.addr == addr && o.connection.is_alive()) {
            return Ok(o.connection.clone());
        }
        if let Some(old) = opened.as_ref() {
            tracing::debug!(node_id, old = %old.addr, new = addr, "connecting to a broker again");
        }
        let connection = Arc::new(
            Connection::connect(addr, CONNECT_TIMEOUT)?.with_request_timeout(self.request_timeout),
        );
        *opened = Some(Opened { addr: addr.to_string(), connection: connection.clone() });
        Ok(connection)
    }
}
