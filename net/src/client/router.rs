//! Routes a client's partition requests to the partitions' leaders, and
//! keeps what it knows of the cluster fresh.
//!
//! The [`ClusterView`] comes from metadata asked of the bootstrap link (any
//! broker), for the topics the client uses. A thread of its own refreshes
//! it when [`RefreshSchedule`] says: every `metadata_max_age`, and soon
//! after a caller found it wrong ([`Router::request_refresh`]: a `not
//! leader` answer, a partition its broker does not know, a leader that
//! cannot be reached). Callers never wait for metadata unless they choose
//! to ([`Router::wait_refreshed`]): the producer's sender holds only the
//! partitions that need the refresh, and the consumer's poll waits at
//! most its timeout.
//!
//! Lifecycle: `start` asks for the first view (failing if no broker
//! answers) and starts the thread; dropping the router stops it (a
//! refresh under way is abandoned).

use super::blocking::wait;
use super::broker_pool::BrokerPool;
use super::cluster_view::{Asked, ClusterView, Route};
use super::refresh_schedule::RefreshSchedule;
use super::ClientError;
use crate::protocol::{ErrorCode, MetadataRequest, MetadataResponse, TopicMeta};
use event_listener::Event;
use futures::future::{select, Either};
use futures_timer::Delay;
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A refresh to wait for: one that started after it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RefreshTicket(u64);

/// The view and the refreshes it reflects, taken together: a partition
/// held for a refresh is routed by a view that came after it.
pub(crate) struct Routes {
    pub view: Arc<ClusterView>,
    finished: u64,
}

impl Routes {
    /// Whether `ticket`'s refresh had finished when the view was taken.
    pub fn served(&self, ticket: RefreshTicket) -> bool {
        self.finished >= ticket.0
    }
}

/// Told after every refresh, successful or not (the producer wakes its
/// sender with it).
pub(crate) type RefreshHook = Box<dyn Fn() + Send + Sync>;

struct State {
    view: Arc<ClusterView>,
    schedule: RefreshSchedule,
    /// What the metadata requests ask about.
    topics: BTreeSet<String>,
    /// Refreshes started and finished (either way): a ticket taken now
    /// is served once `finished` reaches `started + 1`.
    started: u64,
    finished: u64,
    /// Why the last refresh failed, until one succeeds.
    last_error: Option<ClientError>,
    closed: bool,
}

struct Shared {
    pool: Arc<BrokerPool>,
    state: Mutex<State>,
    /// Wakes the refresh thread: a request, a new topic, closing.
    wake: Condvar,
    /// Wakes callers waiting for a refresh.
    refreshed: Event,
    /// Abandons the refresh under way when the router is dropped.
    closing: Event,
    hook: Mutex<Option<RefreshHook>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client's routes. Lifecycle: see the module docs. Thread-safe: the
/// producer's sender, its callers and the connections' reader threads
/// (answers) all use one; the refresh thread owns nothing but a share of
/// its state.
pub(crate) struct Router {
    shared: Arc<Shared>,
}

impl Router {
    /// Asks for the cluster's brokers (failing if no broker of the pool's
    /// bootstrap list answers) and starts refreshing every
    /// `metadata_max_age`.
    pub fn start(pool: Arc<BrokerPool>, metadata_max_age: Duration) -> Result<Router, ClientError> {
        let mut schedule = RefreshSchedule::new(metadata_max_age);
        let topics = BTreeSet::new();
        schedule.start();
        let view = fetch_view(&pool, &topics, None)?;
        schedule.succeeded(Instant::now(), true);
        let shared = Arc::new(Shared {
            pool,
            state: Mutex::new(State {
                view: Arc::new(view),
                schedule,
                topics,
                started: 1,
                finished: 1,
                last_error: None,
                closed: false,
            }),
            wake: Condvar::new(),
            refreshed: Event::new(),
            closing: Event::new(),
            hook: Mutex::new(None),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("mamba-metadata".into())
            .spawn(move || refresh_loop(&thread_shared))
            .map_err(|e| ClientError::Io {
                addr: shared.pool.bootstrap().brokers().to_string(),
                source: Arc::new(e),
            })?;
        Ok(Router { shared })
    }

    pub fn pool(&self) -> &Arc<BrokerPool> {
        &self.shared.pool
    }

    /// The latest view (it may be stale: see `request_refresh`).
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared.state().view.clone()
    }

    /// The latest view, with the refreshes it reflects.
    pub fn routes(&self) -> Routes {
        let state = self.shared.state();
        Routes { view: state.view.clone(), finished: state.finished }
    }

    /// Runs `hook` after every refresh from now on.
    pub fn set_refresh_hook(&self, hook: RefreshHook) {
        *self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The view was found wrong: refresh it (soon; see
    /// `RefreshSchedule`). The ticket is served by the first refresh that
    /// starts after this call.
    pub fn request_refresh(&self) -> RefreshTicket {
        let mut state = self.shared.state();
        state.schedule.request();
        self.shared.wake.notify_all();
        RefreshTicket(state.started + 1)
    }

    /// Whether a refresh that started after `ticket` was taken has
    /// finished (successful or not).
    pub fn is_refreshed(&self, ticket: RefreshTicket) -> bool {
        self.shared.state().finished >= ticket.0
    }

    /// Waits up to `timeout` for `ticket`'s refresh to finish. Never
    /// blocks an executor: it listens on an `Event` against a
    /// `futures-timer` delay.
    pub async fn wait_refreshed(&self, ticket: RefreshTicket, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            // Listen before looking, so a refresh finishing in between
            // still wakes this wait.
            let listener = self.shared.refreshed.listen();
            let now = Instant::now();
            if self.is_refreshed(ticket) || now >= deadline {
                return;
            }
            let delay = Delay::new(deadline - now);
            // Either way: look again.
            let _either = select(listener, delay).await;
        }
    }

    /// `topic` as the cluster has it, asking the cluster about it first
    /// if the view was not asked yet (waiting up to the request timeout).
    /// A topic the cluster does not have is `UnknownTopic`; a refresh
    /// that failed gives its error.
    pub async fn topic(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        let timeout = self.shared.pool.request_timeout();
        let deadline = Instant::now() + timeout;
        let mut waited: Option<RefreshTicket> = None;
        loop {
            let ticket = {
                let mut state = self.shared.state();
                match state.view.topic(topic) {
                    Ok(Some(t)) => return Ok(t.clone()),
                    Err(ErrorCode::UnknownTopicOrPartition) => {
                        return Err(ClientError::UnknownTopic(topic.to_string()))
                    }
                    Err(code) => {
                        let message = format!("metadata of topic {topic:?}");
                        return Err(ClientError::Broker { code, message });
                    }
                    Ok(None) => {}
                }
                // The refresh waited for asked about the topic: it failed.
                let served = waited.is_some_and(|t| state.finished >= t.0);
                if let (true, Some(e)) = (served, &state.last_error) {
                    return Err(e.clone());
                }
                if Instant::now() >= deadline {
                    return Err(ClientError::Timeout {
                        request: "metadata",
                        addr: self.shared.pool.bootstrap().brokers().to_string(),
                        waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    });
                }
                if state.topics.insert(topic.to_string()) {
                    state.schedule.topics_added();
                    self.shared.wake.notify_all();
                }
                RefreshTicket(state.started + 1)
            };
            waited = Some(ticket);
            self.wait_refreshed(ticket, deadline.saturating_duration_since(Instant::now())).await;
        }
    }

    /// Asks about `topic` from the next refresh on (at once), if not asked
    /// already; the ticket is served by a refresh that asked about it.
    pub fn watch(&self, topic: &str) -> RefreshTicket {
        let mut state = self.shared.state();
        if state.topics.insert(topic.to_string()) {
            state.schedule.topics_added();
            self.shared.wake.notify_all();
        }
        RefreshTicket(state.started + 1)
    }

    /// The offset for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`)
    /// in `partition` of `topic`, asked of its leader. A `not leader` or
    /// unknown-partition answer, or a partition with no leader, refreshes
    /// the view and asks again, for up to the request timeout; a leader
    /// that cannot be reached is asked again only if the refresh moved
    /// the partition (else its error is returned, as with one broker).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        self.topic(topic).await?;
        let deadline = Instant::now() + self.shared.pool.request_timeout();
        loop {
            let view = self.view();
            let route = view.route(topic, partition);
            let result = match route {
                Route::Leader { node_id, addr } => match self.shared.pool.connection(node_id, addr)
                {
                    Ok(conn) => conn.list_offset(topic, partition, timestamp).await,
                    Err(e) => Err(e),
                },
                Route::NoLeader => Err(unroutable(&view, topic, partition, route)),
                Route::Unknown | Route::NotAsked => {
                    return Err(unroutable(&view, topic, partition, route))
                }
            };
            let error = match result {
                Ok(offset) => return Ok(offset),
                Err(e) => e,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let why = refresh_reason(&error);
            if why == Reroute::No || left.is_zero() {
                return Err(error);
            }
            let ticket = self.request_refresh();
            self.wait_refreshed(ticket, left).await;
            if why == Reroute::IfMoved && self.view().route(topic, partition) == route {
                return Err(error);
            }
        }
    }
}

/// Whether a failed partition request should go again after a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reroute {
    /// The cluster said the view is wrong (`not leader`, unknown
    /// partition) or named no leader: refresh and send again.
    Yes,
    /// The leader could not be reached: refresh; send again only if the
    /// partition moved (one broker that is down stays an error).
    IfMoved,
    No,
}

/// How a partition request's error bears on routing.
pub(crate) fn refresh_reason(error: &ClientError) -> Reroute {
    match error {
        ClientError::Broker { code: ErrorCode::NotLeader, .. }
        | ClientError::Broker { code: ErrorCode::UnknownTopicOrPartition, .. }
        | ClientError::NoLeader { .. } => Reroute::Yes,
        ClientError::Connect { .. } | ClientError::Disconnected { .. } | ClientError::Io { .. } => {
            Reroute::IfMoved
        }
        _ => Reroute::No,
    }
}

/// The error for a partition `route` gives no leader for.
pub(crate) fn unroutable(
    view: &ClusterView,
    topic: &str,
    partition: u32,
    route: Route<'_>,
) -> ClientError {
    match route {
        Route::NoLeader => ClientError::NoLeader { topic: topic.to_string(), partition },
        _ => match view.topic(topic) {
            Ok(Some(_)) => ClientError::Broker {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic {topic:?} has no partition {partition}"),
            },
            _ => ClientError::UnknownTopic(topic.to_string()),
        },
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.wake.notify_all();
        self.shared.refreshed.notify(usize::MAX);
        self.shared.closing.notify(usize::MAX);
    }
}

/// The refresh thread: refreshes when the schedule says, until the router
/// is dropped.
fn refresh_loop(shared: &Shared) {
    loop {
        let topics = {
            let mut state = shared.state();
            loop {
                if state.closed {
                    return;
                }
                let now = Instant::now();
                if state.schedule.due(now) {
                    break;
                }
                match state.schedule.next_at(now) {
                    Some(at) => {
                        state = shared
                            .wake
                            .wait_timeout(state, at.saturating_duration_since(now))
                            .map(|(s, _)| s)
                            .unwrap_or_else(|p| p.into_inner().0)
                    }
                    None => unreachable!("only this thread refreshes"),
                }
            }
            state.schedule.start();
            state.started += 1;
            state.topics.clone()
        };
        let result = fetch_view(&shared.pool, &topics, Some(&shared.closing));
        let mut state = shared.state();
        if state.closed {
            return;
        }
        let now = Instant::now();
        match result {
            Ok(view) => {
                let changed = *state.view != view;
                if changed {
                    tracing::debug!(brokers = view.brokers().count(), "metadata changed");
                }
                state.view = Arc::new(view);
                state.schedule.succeeded(now, changed);
                state.last_error = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "refreshing metadata failed; trying again later");
                state.schedule.failed(now);
                state.last_error = Some(e);
            }
        }
        state.finished += 1;
        drop(state);
        shared.refreshed.notify(usize::MAX);
        if let Some(hook) = shared.hook.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            hook();
        }
    }
}

/// Asks the bootstrap link for the metadata of `topics` (and every
/// broker). `closing`, if given, abandons the wait when it fires.
fn fetch_view(
    pool: &BrokerPool,
    topics: &BTreeSet<String>,
    closing: Option<&Event>,
) -> Result<ClusterView, ClientError> {
    let conn = pool.bootstrap().connection()?;
    let request = MetadataRequest { topics: Some(topics.iter().cloned().collect()) };
    let call = std::pin::pin!(conn.call::<_, MetadataResponse>(&request, &[]));
    // `wait`, not `block_on`: `Router::start` may run inside an
    // executor's task (a consumer made in async code).
    let answer = match closing {
        None => wait(call)?,
        Some(closing) => {
            let closed = closing.listen();
            match wait(select(call, closed)) {
                Either::Left((answer, _)) => answer?,
                Either::Right(_) => return Err(ClientError::Closed),
            }
        }
    };
    let view = ClusterView::new(answer.0, Asked::Topics(topics.clone()), conn.addr().ip());
    pool.bootstrap()
        .learn(view.brokers().filter_map(|b| view.broker_address(b.node_id)).map(str::to_string));
    Ok(view)
}
