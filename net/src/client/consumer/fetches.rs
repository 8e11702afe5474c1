//! The consumer's fetches in flight: at most one per broker, each carrying
//! the partitions that broker leads, from their positions.
//!
//! A partition is in at most one fetch at a time, so no two answers ever
//! carry the same records: when a partition moves to another leader, it
//! goes to the new one only once the old one's fetch is answered (`not
//! leader`, or records, which are handed over as usual). A partition whose
//! broker said the view is wrong, or that has no leader now, waits for a
//! metadata refresh that started after that ([`RefreshTicket`]), so polls
//! do not ask the same broker again and again.
//!
//! Nothing here moves a position: a fetch dropped unanswered (a seek, a
//! pause, a rebalance) loses nothing, its partitions are fetched again
//! from where they are.

use crate::client::connection::Waiter;
use crate::client::router::{refresh_reason, unroutable, RefreshTicket, Reroute, Router};
use crate::client::ClientError;
use crate::client::Route;
use crate::protocol::{FetchPartition, FetchRequest, Frame};
use futures::channel::oneshot;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What every fetch asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct FetchSettings {
    /// The long poll: how long the broker may wait for `min_bytes`.
    pub max_wait: Duration,
    pub min_bytes: u32,
    pub max_bytes: u32,
    pub partition_max_bytes: u32,
}

/// A partition held until a metadata refresh.
struct Hold {
    ticket: RefreshTicket,
    /// Why its leader could not be reached, if that is why: while nothing
    /// else is fetched, polls fail with it (the broker is away), instead
    /// of returning nothing.
    unreachable: Option<ClientError>,
}

/// A fetch sent and not answered yet.
struct InFlight {
    answer: oneshot::Receiver<Result<Frame, ClientError>>,
    /// Where it went, for errors.
    addr: String,
    partitions: Vec<(String, u32)>,
}

/// Lifecycle: owned by the consumer, which `send`s, takes `next_answer`s
/// and `clear`s when positions change under the fetches.
#[derive(Default)]
pub(super) struct Fetches {
    /// By the leader's node id.
    in_flight: BTreeMap<u32, InFlight>,
    /// Partitions held until a refresh: see the module docs.
    rerouting: BTreeMap<(String, u32), Hold>,
    /// The broker answered last: the next answer is looked for at the
    /// others first, so a broker that always has data cannot starve them.
    last_answered: Option<u32>,
}

impl Fetches {
    /// Drops every fetch in flight: their answers will never be read.
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }

    /// Whether no fetch is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Holds `key` until a refresh that serves `ticket` finished.
    pub fn reroute(&mut self, key: (String, u32), ticket: RefreshTicket) {
        self.rerouting.insert(key, Hold { ticket, unreachable: None });
    }

    /// The latest refresh some partition waits for.
    pub fn awaited_refresh(&self) -> Option<RefreshTicket> {
        self.rerouting.values().map(|hold| hold.ticket).max()
    }

    /// Sends a fetch to every broker that has none out, for the partitions
    /// of `positions` it leads, from their positions, leaving out `paused`
    /// ones, ones in a fetch already, and ones waiting for a refresh.
    /// Fails for a partition the cluster does not have, and, when no fetch
    /// is in flight afterwards, with the last failure to reach a leader
    /// (now, or for a partition still waiting for its refresh).
    pub fn send(
        &mut self,
        router: &Router,
        positions: &BTreeMap<(String, u32), u64>,
        paused: &BTreeSet<(String, u32)>,
        settings: FetchSettings,
    ) -> Result<(), ClientError> {
        self.rerouting.retain(|key, _| positions.contains_key(key));
        let routes = router.routes();
        let view = &routes.view;
        let busy: BTreeSet<&(String, u32)> =
            self.in_flight.values().flat_map(|f| f.partitions.iter()).collect();
        let mut by_leader: BTreeMap<u32, (&str, Vec<FetchPartition>)> = BTreeMap::new();
        for (key, &offset) in positions {
            if paused.contains(key) || busy.contains(key) {
                continue;
            }
            if let Some(hold) = self.rerouting.get(key) {
                if !routes.served(hold.ticket) {
                    continue;
                }
                self.rerouting.remove(key);
            }
            let (topic, partition) = (&key.0, key.1);
            match view.route(topic, partition) {
                Route::Leader { node_id, .. } if self.in_flight.contains_key(&node_id) => {
                    // It goes with that broker's next fetch.
                }
                Route::Leader { node_id, addr } => {
                    by_leader.entry(node_id).or_insert((addr, Vec::new())).1.push(FetchPartition {
                        topic: topic.clone(),
                        partition,
                        offset,
                        max_bytes: settings.partition_max_bytes,
                    })
                }
                Route::NoLeader => {
                    let hold = Hold { ticket: router.request_refresh(), unreachable: None };
                    self.rerouting.insert(key.clone(), hold);
                }
                Route::NotAsked => {
                    let hold = Hold { ticket: router.watch(topic), unreachable: None };
                    self.rerouting.insert(key.clone(), hold);
                }
                route @ Route::Unknown => return Err(unroutable(view, topic, partition, route)),
            }
        }
        let mut failed = None;
        for (node_id, (addr, partitions)) in by_leader {
            let keys: Vec<(String, u32)> =
                partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect();
            let request = FetchRequest {
                max_wait_ms: u32::try_from(settings.max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: settings.min_bytes,
                max_bytes: settings.max_bytes,
                partitions,
            };
            let (tx, rx) = oneshot::channel();
            // The broker may hold a fetch for its whole long poll before it
            // answers: that is not a late answer.
            let deadline = router.pool().request_timeout() + settings.max_wait;
            let sent = router.pool().connection(node_id, addr).and_then(|conn| {
                conn.send_within(&request, &[], Some(Waiter::Channel(tx)), deadline)
            });
            match sent {
                Ok(()) => {
                    let fetch = InFlight { answer: rx, addr: addr.to_string(), partitions: keys };
                    self.in_flight.insert(node_id, fetch);
                }
                Err(e) => {
                    tracing::debug!(node_id, addr, error = %e, "could not send a fetch");
                    // Its partitions wait for the refresh this asks for
                    // (the leader may have moved), then go again.
                    if refresh_reason(&e) != Reroute::No {
                        let ticket = router.request_refresh();
                        for key in keys {
                            let hold = Hold { ticket, unreachable: Some(e.clone()) };
                            self.rerouting.insert(key, hold);
                        }
                    }
                    failed = Some(e);
                }
            }
        }
        if !self.in_flight.is_empty() {
            return Ok(());
        }
        let held = self.rerouting.values().find_map(|hold| hold.unreachable.clone());
        match failed.or(held) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the next answer, looking at the brokers in turn from the
    /// one after the last answered; `None` with nothing in flight. Dropped
    /// before it resolves, it takes nothing.
    pub async fn next_answer(&mut self) -> Option<Result<Frame, ClientError>> {
        if self.in_flight.is_empty() {
            return None;
        }
        let after = self.last_answered;
        let mut turn: Vec<(u32, &mut InFlight)> =
            self.in_flight.iter_mut().map(|(node_id, f)| (*node_id, f)).collect();
        let first = turn.iter().position(|(node_id, _)| Some(*node_id) > after).unwrap_or(0);
        turn.rotate_left(first);
        let nodes: Vec<u32> = turn.iter().map(|(node_id, _)| *node_id).collect();
        let answers = turn.into_iter().map(|(_, f)| &mut f.answer);
        let (answered, index, _) = futures::future::select_all(answers).await;
        let node_id = nodes[index];
        self.last_answered = Some(node_id);
        let fetch = self.in_flight.remove(&node_id)?;
        Some(answered.unwrap_or(Err(ClientError::Disconnected { addr: fetch.addr })))
    }
}
