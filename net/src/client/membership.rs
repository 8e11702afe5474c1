//! A consumer's membership of a group: a thread that heartbeats to the
//! group's coordinator on its own connection, and the state it shares with
//! the consumer. The coordinator is found with `find_coordinator` and
//! found again after a `not coordinator` answer or a failed connection
//! (`group_coordinator.rs`), the heartbeat's backoff spacing the tries.
//!
//! The coordinator answers with the partitions the member may hold
//! (`assignment`). The consumer reconciles at its next poll — gives up
//! what is gone (after the rebalance listener and a commit), takes what is
//! new — and reports what it holds (`owned`); the thread sends that at once
//! (the coordinator moves a partition only once its holder said it gave it
//! up). While nothing is pending the heartbeat is a long poll: the
//! coordinator answers as soon as this member's assignment changes.
//!
//! Lifecycle: `start` joins; `leave` (or drop) sends the leave heartbeat
//! and ends the thread. A member the coordinator no longer knows (its
//! session ended) or fenced loses its partitions (`lost`, for the
//! consumer's listener) and joins again.
//!
//! Every change the thread makes is announced twice: on a `Condvar` for
//! the thread's own waits, and on an `event_listener::Event` for the
//! consumer, whose `poll_async` waits without blocking its executor.

use super::backoff::Backoff;
use super::broker_pool::BrokerPool;
use super::group_coordinator::{connection_lost, GroupCoordinator};
use super::ClientError;
use crate::group::coordinator::{LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use crate::protocol::*;
use event_listener::Event;
use futures::channel::oneshot;
use futures::future::{select, Either, FutureExt};
use futures_timer::Delay;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Partitions by topic.
pub type Partitions = BTreeMap<String, BTreeSet<u32>>;

/// How a consumer takes part in a group.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub group_id: String,
    /// The topics to read; empty under `Consumer::subscribe_pattern`,
    /// which finds them by name.
    pub topics: Vec<String>,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    /// `uniform` (default), `range` or `round-robin`.
    pub assignor: Option<String>,
    /// 0: the broker's default (10 s).
    pub session_timeout_ms: u32,
    pub client_id: String,
}

/// What the thread and the consumer share.
#[derive(Debug, Default)]
pub(crate) struct MemberState {
    pub member_id: String,
    pub epoch: i32,
    /// The subscription: what the next `subscribe_due` heartbeat sends.
    pub topics: Vec<String>,
    /// What the coordinator allows now.
    pub assignment: Partitions,
    /// What the consumer holds (reads) now.
    pub owned: Partitions,
    /// `owned` changed since the last heartbeat: send one now.
    pub report_due: bool,
    /// The subscription must go out (a join, or after a change).
    pub subscribe_due: bool,
    /// The coordinator dropped this member (session ended, fenced): what
    /// the consumer holds was taken without a chance to commit. Cleared by
    /// the consumer once its listener heard of it.
    pub lost: bool,
    pub leaving: bool,
    /// A failure no retry mends (e.g. a bad group id).
    pub fatal: Option<ClientError>,
}

struct Shared {
    state: Mutex<MemberState>,
    /// For the heartbeat thread's own waits.
    changed: Condvar,
    /// For the consumer's waits, blocking or not.
    changed_event: Event,
}

impl Shared {
    fn notify(&self) {
        self.changed.notify_all();
        self.changed_event.notify(usize::MAX);
    }
}

pub(crate) struct Membership {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Cuts the heartbeat in flight short (a long poll) when leaving.
    leave_now: Option<oneshot::Sender<()>>,
    pub options: GroupOptions,
}

/// How long a heartbeat may wait for a change when nothing is pending;
/// the coordinator caps it at its heartbeat interval.
const LONG_POLL_MS: u32 = 3_000;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

impl Membership {
    /// Joins with `topics` as the subscription (`options.topics`, or what a
    /// pattern matched).
    pub fn start(
        pool: Arc<BrokerPool>,
        options: GroupOptions,
        topics: Vec<String>,
    ) -> Result<Membership, ClientError> {
        if let Some(name) = &options.assignor {
            if !["uniform", "range", "round-robin"].contains(&name.as_str()) {
                return Err(ClientError::InvalidArgument(format!(
                    "unknown assignor {name:?}: use uniform, range or round-robin"
                )));
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(MemberState {
                topics,
                subscribe_due: true,
                ..MemberState::default()
            }),
            changed: Condvar::new(),
            changed_event: Event::new(),
        });
        let (thread_shared, thread_options) = (shared.clone(), options.clone());
        let (leave_now, leave_asked) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("mamba-group-{}", options.group_id))
            .spawn(move || {
                let coordinator = GroupCoordinator::new(pool, &thread_options.group_id);
                heartbeat_loop(&coordinator, &thread_shared, &thread_options, leave_asked)
            })
            .map_err(|e| {
                ClientError::InvalidArgument(format!("starting the heartbeat thread: {e}"))
            })?;
        Ok(Membership { shared, thread: Some(thread), leave_now: Some(leave_now), options })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, MemberState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports what the consumer holds now; the heartbeat goes out at once.
    pub fn report_owned(&self, owned: Partitions) {
        let mut state = self.state();
        state.owned = owned;
        state.report_due = true;
        self.shared.notify();
    }

    /// Subscribes to `topics` from now on; a change goes out with the next
    /// heartbeat, at once.
    pub fn set_topics(&self, topics: Vec<String>) {
        let mut state = self.state();
        if state.topics != topics {
            state.topics = topics;
            state.subscribe_due = true;
            self.shared.notify();
        }
    }

    /// Whether there is something for the consumer to do: an assignment
    /// that differs from `owned`, a loss, or a fatal error.
    pub fn has_news(&self) -> bool {
        let s = self.state();
        s.assignment != s.owned || s.lost || s.fatal.is_some()
    }

    /// Waits up to `timeout` for something for the consumer to do: an
    /// assignment that differs from `owned`, a loss, or a fatal error.
    /// Never blocks the thread that polls it (the timeout is a
    /// `futures-timer` delay, the wake an `Event`), so it serves
    /// `poll_async` on any executor, and `poll` through `blocking::wait`.
    pub async fn assignment_changed(&self, timeout: Duration) {
        let news = std::pin::pin!(self.news());
        // Either way there is nothing more to wait for.
        let _either = select(news, Delay::new(timeout)).await;
    }

    /// Resolves once `has_news` holds; no timer, so it costs nothing on a
    /// poll's path beyond one listener.
    pub async fn news(&self) {
        loop {
            // Listen before looking, so a change between the two still
            // wakes this wait.
            let listener = self.shared.changed_event.listen();
            if self.has_news() {
                return;
            }
            listener.await;
        }
    }

    /// Leaves the group (its partitions move at once; a static member's
    /// wait for its restart until its session ends) and ends the thread.
    pub fn leave(&mut self) {
        {
            let mut state = self.state();
            state.leaving = true;
            self.shared.notify();
        }
        if let Some(leave_now) = self.leave_now.take() {
            // Err: the thread already ended.
            let _ended = leave_now.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(group = %self.options.group_id, "the heartbeat thread panicked");
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
    }
}

fn heartbeat_loop(
    coordinator: &GroupCoordinator,
    shared: &Shared,
    options: &GroupOptions,
    leave_asked: oneshot::Receiver<()>,
) {
    // Fused: it interrupts one heartbeat, never the leave that follows.
    let mut leave_asked = leave_asked.fuse();
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut interval = Duration::from_millis(u64::from(LONG_POLL_MS));
    let mut last_sent = Instant::now() - interval;
    loop {
        // Wait until something must go out: a report, a leave, or the
        // heartbeat interval.
        let request = {
            let mut state = lock();
            loop {
                let due = state.report_due || state.subscribe_due || state.leaving;
                let quiet = state.assignment == state.owned;
                // Reconciled: a long poll goes out at once and waits at the
                // coordinator; pending: only reports and keep-alives.
                if due || quiet || last_sent.elapsed() >= interval {
                    break;
                }
                let left = interval.saturating_sub(last_sent.elapsed());
                state = shared
                    .changed
                    .wait_timeout(state, left)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if state.leaving && state.member_id.is_empty() {
                return;
            }
            let pending = state.assignment != state.owned;
            let request = GroupHeartbeatRequest {
                group_id: options.group_id.clone(),
                member_id: state.member_id.clone(),
                member_epoch: match (state.leaving, &options.instance_id) {
                    (false, _) => state.epoch,
                    (true, None) => LEAVE_EPOCH,
                    // A static member leaves for a restart: the coordinator
                    // keeps its partitions for its session, so a restart
                    // with the same instance id moves nothing.
                    (true, Some(_)) => STATIC_LEAVE_EPOCH,
                },
                instance_id: options.instance_id.clone(),
                client_id: options.client_id.clone(),
                subscribed_topics: state.subscribe_due.then(|| state.topics.clone()),
                assignor: options.assignor.clone(),
                owned: Some(TopicAssignment::list(&state.owned)),
                session_timeout_ms: options.session_timeout_ms,
                max_wait_ms: if pending || state.report_due || state.leaving {
                    0
                } else {
                    LONG_POLL_MS
                },
            };
            state.report_due = false;
            request
        };
        let leaving = matches!(request.member_epoch, LEAVE_EPOCH | STATIC_LEAVE_EPOCH);
        let sent_topics = request.subscribed_topics.clone();
        last_sent = Instant::now();
        // A long poll waits at the coordinator for up to the heartbeat
        // interval: leaving does not wait it out (closing a consumer would
        // take seconds), it drops it and sends the leave at once.
        let call = async {
            let conn = coordinator.connection().await?;
            conn.call::<_, GroupHeartbeatResponse>(&request, &[]).await
        };
        let answer = futures::executor::block_on(async {
            match futures::future::select(std::pin::pin!(call), &mut leave_asked).await {
                Either::Left((answer, _)) => Some(answer),
                Either::Right(_) => None,
            }
        });
        let Some(answer) = answer else { continue };
        let mut state = lock();
        let mut retry_after = None;
        match answer {
            Ok((answer, _)) if answer.error_code == 0 => {
                backoff.reset();
                if leaving {
                    return;
                }
                // A subscription changed while this heartbeat was out
                // still has to go.
                if sent_topics.as_ref() == Some(&state.topics) {
                    state.subscribe_due = false;
                }
                state.member_id = answer.member_id;
                state.epoch = answer.member_epoch;
                state.assignment = TopicAssignment::map(&answer.assignment);
                interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(100)));
            }
            Ok((answer, _)) => {
                let code = ErrorCode::from_u16(answer.error_code);
                match code {
                    ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch => {
                        // Lost: give up everything, join again.
                        tracing::info!(group = %options.group_id, %code, "lost the group's partitions; joining again");
                        state.member_id.clear();
                        state.epoch = 0;
                        state.assignment.clear();
                        state.lost = true;
                        state.subscribe_due = true;
                        if leaving {
                            return;
                        }
                    }
                    code if code.is_retriable() => {
                        if code == ErrorCode::NotCoordinator {
                            coordinator.forget();
                        }
                        retry_after = Some(backoff.next_wait());
                    }
                    _ => {
                        state.fatal = Some(ClientError::Broker { code, message: answer.message });
                        drop(state);
                        shared.notify();
                        return;
                    }
                }
            }
            Err(e) if leaving => {
                tracing::debug!(error = %e, "leaving the group; its session ends on its own");
                return;
            }
            Err(e) => {
                tracing::debug!(group = %options.group_id, error = %e, "heartbeat failed; retrying");
                if connection_lost(&e) || matches!(e, ClientError::Timeout { .. }) {
                    // It may have moved, or be gone: ask where it is now.
                    coordinator.forget();
                }
                // The report did not arrive: send it again.
                state.report_due = true;
                retry_after = Some(backoff.next_wait());
            }
        }
        drop(state);
        shared.notify();
        if let Some(step) = retry_after {
            std::thread::sleep(step);
        }
    }
}
