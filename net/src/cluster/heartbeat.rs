//! The broker's side of membership: a thread that heartbeats the
//! controller every `broker.heartbeat.interval.ms` with this broker's
//! addresses and how far it applied the metadata log. The first heartbeat
//! of a process registers it; the controller unfences it once it caught
//! up, and fences it when heartbeats stop.
//!
//! Whom to ask: the quorum leader this broker's Raft node knows of; else
//! the voters and seeds in turn (an answer `not controller` names the
//! leader). The controller's own broker asks its Raft task directly.
//!
//! Answers that mean this broker cannot be in the cluster — its data
//! directory belongs to another cluster, or a live broker has its node id
//! (past one session, so a restart that beat its old session out is not
//! mistaken for one) — end the broker through `ClusterHandle::set_fatal`.
//!
//! The same thread checks once that the peers named by `--voters` and
//! `--seeds` are in this broker's cluster (`IdentityCheck`): a broker
//! started on another cluster's data directory may lead a quorum of its
//! own (a one-node cluster's directory: it is that quorum's only voter),
//! so its heartbeats go to itself and would never meet the refusal above.

use super::handle::ClusterHandle;
use crate::protocol::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, ClusterStatusRequest, ClusterStatusResponse,
    ErrorCode,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Heartbeat interval while this broker is not (yet) alive.
const FENCED_INTERVAL: Duration = Duration::from_millis(50);

/// Ids for seeds in `Peers` (they have no node id until they answer).
const SEED_NODE_ID_BASE: u64 = u64::MAX - 1024;

/// Ids for the identity check's links in `Peers`, apart from the links
/// Raft uses (a voter's configured address may be stale).
const CHECK_NODE_ID_BASE: u64 = u64::MAX - 2048;

pub(crate) struct Heartbeats {
    stop: Arc<AtomicBool>,
    /// Set for a controlled shutdown: heartbeats ask to be fenced.
    shutting_down: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeats {
    pub(crate) fn start(
        handle: Arc<ClusterHandle>,
        incarnation_id: u64,
    ) -> std::io::Result<Heartbeats> {
        let stop = Arc::new(AtomicBool::new(false));
        let shutting_down = Arc::new(AtomicBool::new(false));
        let (stopping, leaving) = (stop.clone(), shutting_down.clone());
        let thread = std::thread::Builder::new()
            .name("mamba-heartbeat".into())
            .spawn(move || run(handle, incarnation_id, stopping, leaving))?;
        Ok(Heartbeats { stop, shutting_down, thread: Some(thread) })
    }

    /// From now on heartbeats ask the controller to fence this broker
    /// (and never to unfence it): a controlled shutdown.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    handle: Arc<ClusterHandle>,
    incarnation_id: u64,
    stop: Arc<AtomicBool>,
    shutting_down: Arc<AtomicBool>,
) {
    let config = handle.config().clone();
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    // Since when every answer was "duplicate id" (None: the last was not).
    let mut refused_since: Option<Instant> = None;
    // A restarted broker is refused until its previous run's session
    // ends — up to one session, and one more when the controller changed
    // meanwhile (a new controller gives every broker a full session). A
    // live broker with the same id heartbeats on and is never fenced.
    let duplicate_grace = 2 * Duration::from_millis(config.session_timeout_ms) + 2 * interval;
    // Where to ask when no leader is known: voters, then seeds.
    let mut fallbacks: Vec<(u64, String)> =
        config.voters.iter().map(|v| (v.node_id, v.cluster_address.clone())).collect();
    fallbacks.extend(
        config.seeds.iter().enumerate().map(|(i, s)| (SEED_NODE_ID_BASE + i as u64, s.clone())),
    );
    let mut identity = IdentityCheck::new(&config);
    let mut next_fallback = 0usize;
    let mut hinted: Option<(u64, String)> = None;
    let me = u64::from(config.node_id);
    let mut last_error = String::new();
    // Redirects followed without sleeping, so a stale hint cannot spin.
    let mut redirects = 0u32;
    while !stop.load(Ordering::Acquire) {
        let round = Instant::now();
        let view = handle.view();
        let addresses = handle.addresses();
        let request = BrokerHeartbeatRequest {
            cluster_id: view.metadata.cluster_id().unwrap_or_default().to_string(),
            broker_id: config.node_id,
            incarnation_id,
            client_address: addresses.client,
            cluster_address: addresses.cluster,
            http_address: addresses.http,
            rack: config.rack.clone(),
            metadata_applied_index: view.metadata.applied_index(),
            want_shutdown: shutting_down.load(Ordering::Acquire),
        };
        let target = match view.leader_id {
            Some(id) if id == me => Some((me, String::new())),
            Some(id) => handle.address_of(id).map(|a| (id, a)).or_else(|| hinted.clone()),
            None => hinted.clone(),
        }
        .or_else(|| {
            let pick = fallbacks.get(next_fallback % fallbacks.len().max(1)).cloned();
            next_fallback += 1;
            pick
        });
        let outcome: Result<BrokerHeartbeatResponse, String> = match &target {
            None => Err("no controller known yet".into()),
            // This broker's own Raft task leads. Not "the leader has my
            // id": a hint may name another process with this broker's id
            // (a duplicate), which must hear from it to refuse it.
            Some((_, address)) if address.is_empty() => {
                futures::executor::block_on(handle.heartbeat(request))
                    .ok_or_else(|| "the raft task stopped".to_string())
            }
            // Waits one interval, not the peer request timeout: a
            // controller cut off by the network answers nothing (packets
            // dropped, no reset), and a heartbeat waiting on it that long
            // would miss the session a new controller grants every broker
            // when elected — every broker, its own included, fenced. The
            // next round asks whoever leads by then.
            Some((id, address)) => {
                let asked = handle.call_peer::<_, BrokerHeartbeatResponse>(*id, address, request);
                futures::executor::block_on(async {
                    futures::select! {
                        answer = futures::FutureExt::fuse(asked) => answer.map_err(|e| e.to_string()),
                        () = futures::FutureExt::fuse(futures_timer::Delay::new(interval)) => {
                            Err(format!("node {id} at {address} did not answer within {interval:?}"))
                        }
                    }
                })
            }
        };
        if !matches!(&outcome, Ok(a) if a.error_code == ErrorCode::DuplicateBrokerId.as_u16()) {
            refused_since = None;
        }
        if let Ok(answer) = &outcome {
            // Whoever answered names the controller (itself, or the one it
            // knows of): a seed is asked under a made-up id, so the answer,
            // not the target, says which node id is at which address.
            if let Some(id) = answer.leader_id {
                handle.learn_address(id, &answer.leader_cluster_address);
            }
        }
        match outcome {
            Ok(answer) => match ErrorCode::from_u16(answer.error_code) {
                ErrorCode::None => {
                    hinted = target;
                    last_error.clear();
                }
                ErrorCode::NotController => {
                    hinted = answer
                        .leader_id
                        .filter(|_| !answer.leader_cluster_address.is_empty())
                        .map(|id| (id, answer.leader_cluster_address.clone()));
                    if hinted.is_some() && redirects < 3 {
                        redirects += 1;
                        continue; // ask the leader at once
                    }
                }
                ErrorCode::ClusterIdMismatch => {
                    handle.set_fatal(answer.message);
                    return;
                }
                ErrorCode::DuplicateBrokerId
                    if refused_since.get_or_insert_with(Instant::now).elapsed()
                        >= duplicate_grace =>
                {
                    handle.set_fatal(answer.message);
                    return;
                }
                _ => {
                    if answer.message != last_error {
                        tracing::info!(reason = %answer.message, "heartbeat not taken; retrying");
                        last_error = answer.message;
                    }
                }
            },
            Err(e) => {
                hinted = None;
                if e != last_error {
                    tracing::debug!(error = %e, "heartbeat failed; retrying");
                    last_error = e;
                }
            }
        }
        redirects = 0;
        if let Err(reason) = identity.step(&handle, interval) {
            handle.set_fatal(reason);
            return;
        }
        // While fenced (registering, catching up) the next heartbeat is
        // what unfences: it goes soon.
        let fenced = handle
            .view()
            .metadata
            .broker(super::metadata::BrokerId(config.node_id))
            .is_none_or(|b| b.fenced || b.incarnation_id.0 != incarnation_id);
        let wait = if fenced { FENCED_INTERVAL.min(interval) } else { interval };
        let left = wait.saturating_sub(round.elapsed());
        sleep_unless_stopped(left, &stop);
    }
}

/// Asks the peers of `--voters` and `--seeds` for their cluster id, one
/// per heartbeat round, until one answers with this broker's own: then the
/// data directory is this cluster's. One that answers with another id
/// means the data directory is another cluster's, and the broker must not
/// serve (it would be a cluster of its own beside the one it was pointed
/// at, or try to join it with another cluster's metadata).
struct IdentityCheck {
    /// (link id, what it is, its cluster address); empty once checked.
    peers: Vec<(u64, String, String)>,
    next: usize,
}

impl IdentityCheck {
    fn new(config: &super::config::ClusterConfig) -> IdentityCheck {
        let me = u64::from(config.node_id);
        let voters = config
            .voters
            .iter()
            .filter(|v| v.node_id != me)
            .map(|v| (format!("voter {}", v.node_id), v.cluster_address.clone()));
        let seeds = config.seeds.iter().map(|s| ("seed".to_string(), s.clone()));
        let peers = voters
            .chain(seeds)
            .enumerate()
            .map(|(i, (what, address))| (CHECK_NODE_ID_BASE + i as u64, what, address))
            .collect();
        IdentityCheck { peers, next: 0 }
    }

    /// Asks the next peer (waiting at most `wait`); `Err` says why this
    /// broker cannot be in the cluster.
    fn step(&mut self, handle: &ClusterHandle, wait: Duration) -> Result<(), String> {
        let ours = handle.view().metadata.cluster_id().unwrap_or_default().to_string();
        if self.peers.is_empty() || ours.is_empty() {
            return Ok(());
        }
        let (link, what, address) = self.peers[self.next % self.peers.len()].clone();
        self.next += 1;
        let asked =
            handle.call_peer::<_, ClusterStatusResponse>(link, &address, ClusterStatusRequest {});
        let answer = futures::executor::block_on(async {
            futures::select! {
                answer = futures::FutureExt::fuse(asked) => answer.ok(),
                () = futures::FutureExt::fuse(futures_timer::Delay::new(wait)) => None,
            }
        });
        // No answer, or a peer that has no cluster id yet: ask again later.
        let Some(theirs) = answer.map(|a| a.cluster_id).filter(|id| !id.is_empty()) else {
            return Ok(());
        };
        if theirs == ours {
            self.peers.clear();
            return Ok(());
        }
        Err(format!(
            "this data directory holds cluster {ours}, but {what} at {address} is in cluster {theirs}: \
             a broker joins a cluster with an empty data directory (or give the --voters or --seeds of its own cluster)"
        ))
    }
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
