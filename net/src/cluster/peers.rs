//! Outbound links to the other brokers' cluster ports: Raft messages and
//! requests to the controller.
//!
//! Each peer has a thread of its own that owns its connection (a client
//! [`Connection`]: a reader thread completes answers by correlation id).
//! Work reaches it through a bounded queue as closures that get the live
//! connection; connecting (which blocks up to `CONNECT_TIMEOUT`) and
//! writing happen on that thread, never on a shard, so a dead or stalled
//! peer cannot hold up the shard that runs the Raft node. Raft tolerates
//! lost messages: when the queue is full or the peer cannot be reached,
//! messages are dropped (and raft retries); requests fail at once.

use crate::client::{ClientError, Connection};
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Work for a peer's thread: given its connection, or why there is none.
pub type PeerJob = Box<dyn FnOnce(Result<&Connection, ClientError>) + Send>;

/// Jobs queued per peer before new ones are refused.
const PEER_QUEUE_MAX: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connect, jobs fail at once for this long.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Requests between brokers give up after this long.
pub const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Peer {
    address: String,
    jobs: SyncSender<PeerJob>,
}

/// The links of one broker to its peers, by node id. Thread-safe.
#[derive(Default)]
pub struct Peers {
    peers: Mutex<HashMap<u64, Peer>>,
}

impl Peers {
    /// Runs `job` on the link to `node_id` at `address` (opened, or
    /// re-opened at a new address, as needed). A full queue fails the job
    /// at once with `Busy`-like `Disconnected`.
    pub fn run(&self, node_id: u64, address: &str, job: PeerJob) {
        let jobs = {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            let stale = peers.get(&node_id).is_none_or(|p| p.address != address);
            if stale {
                // The old thread ends once its queue's sender is dropped.
                peers.insert(
                    node_id,
                    Peer { address: address.to_string(), jobs: spawn(node_id, address) },
                );
            }
            peers[&node_id].jobs.clone()
        };
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) = jobs.try_send(job) {
            job(Err(ClientError::Disconnected {
                addr: format!("{address} (node {node_id}): queue full"),
            }));
        }
    }

    /// Forgets every link (their threads end).
    pub fn clear(&self) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn spawn(node_id: u64, address: &str) -> SyncSender<PeerJob> {
    let (jobs, queue) = sync_channel::<PeerJob>(PEER_QUEUE_MAX);
    let address = address.to_string();
    let spawned =
        std::thread::Builder::new().name(format!("mamba-peer-{node_id}")).spawn(move || {
            let mut connection: Option<Arc<Connection>> = None;
            let mut failed_at: Option<(Instant, ClientError)> = None;
            while let Ok(job) = queue.recv() {
                if connection.as_ref().is_some_and(|c| !c.is_alive()) {
                    connection = None;
                }
                if connection.is_none() {
                    if let Some((at, e)) = &failed_at {
                        if at.elapsed() < RECONNECT_BACKOFF {
                            job(Err(e.clone()));
                            continue;
                        }
                    }
                    match Connection::connect(&address, CONNECT_TIMEOUT) {
                        Ok(c) => {
                            connection =
                                Some(Arc::new(c.with_request_timeout(PEER_REQUEST_TIMEOUT)));
                            failed_at = None;
                        }
                        Err(e) => {
                            tracing::debug!(node_id, %address, error = %e, "peer unreachable");
                            failed_at = Some((Instant::now(), e.clone()));
                            job(Err(e));
                            continue;
                        }
                    }
                }
                job(Ok(connection.as_deref().expect("connected above")));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(node_id, error = %e, "cannot start a peer link thread");
    }
    jobs
}
