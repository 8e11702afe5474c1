//! A consumer's membership of a group: a thread that heartbeats to the
//! group's coordinator on its own connection, and the state it shares with
//! the consumer.
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
//! and ends the thread: a long poll under way is abandoned for it, so the
//! member's partitions move within a round trip, not at the end of the
//! poll. A member the coordinator no longer knows (its
//! session ended) or fenced loses its partitions and joins again.

use super::backoff::Backoff;
use super::{ClientError, Link};
use crate::protocol::*;
use futures::channel::oneshot;
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
    /// What the coordinator allows now.
    pub assignment: Partitions,
    /// What the consumer holds (reads) now.
    pub owned: Partitions,
    /// `owned` changed since the last heartbeat: send one now.
    pub report_due: bool,
    /// The subscription must go out (a join, or after a change).
    pub subscribe_due: bool,
    pub leaving: bool,
    /// A failure no retry mends (e.g. a bad group id).
    pub fatal: Option<ClientError>,
}

struct Shared {
    state: Mutex<MemberState>,
    changed: Condvar,
}

pub(crate) struct Membership {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Fired (or dropped) by `leave`: ends a long poll under way.
    leave_now: Option<oneshot::Sender<()>>,
    pub options: GroupOptions,
}

/// How long a heartbeat may wait for a change when nothing is pending;
/// the coordinator caps it at its heartbeat interval.
const LONG_POLL_MS: u32 = 3_000;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The longest a member goes without a heartbeat reaching the coordinator:
/// a third of its session (as Kafka asks of `heartbeat.interval.ms`), so a
/// long poll and one late answer never outlast it.
fn keep_alive_max(options: &GroupOptions) -> Duration {
    match options.session_timeout_ms {
        0 => Duration::from_millis(u64::from(LONG_POLL_MS)),
        ms => Duration::from_millis(u64::from(ms / 3).min(u64::from(LONG_POLL_MS))),
    }
}

impl Membership {
    pub fn start(link: Link, options: GroupOptions) -> Result<Membership, ClientError> {
        if let Some(name) = &options.assignor {
            if !["uniform", "range", "round-robin"].contains(&name.as_str()) {
                return Err(ClientError::InvalidArgument(format!(
                    "unknown assignor {name:?}: use uniform, range or round-robin"
                )));
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(MemberState { subscribe_due: true, ..MemberState::default() }),
            changed: Condvar::new(),
        });
        let (thread_shared, thread_options) = (shared.clone(), options.clone());
        let (leave_now, mut leave_signal) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("mamba-group-{}", options.group_id))
            .spawn(move || {
                heartbeat_loop(&link, &thread_shared, &thread_options, &mut leave_signal)
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
        self.shared.changed.notify_all();
    }

    /// Waits up to `timeout` for the assignment to differ from `owned`.
    pub fn wait_for_assignment(&self, timeout: Duration) {
        let state = self.state();
        if state.assignment != state.owned || state.fatal.is_some() {
            return;
        }
        let _waited = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.assignment == s.owned && s.fatal.is_none());
    }

    /// Leaves the group (its partitions move at once) and ends the thread.
    pub fn leave(&mut self) {
        {
            let mut state = self.state();
            state.leaving = true;
            self.shared.changed.notify_all();
        }
        // Dropping the sender wakes a waiting long poll as sending would.
        self.leave_now.take();
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
    link: &Link,
    shared: &Shared,
    options: &GroupOptions,
    leave_signal: &mut oneshot::Receiver<()>,
) {
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let keep_alive = keep_alive_max(options);
    let long_poll_ms = keep_alive.as_millis() as u32;
    let mut interval = keep_alive;
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
                member_epoch: if state.leaving { -1 } else { state.epoch },
                instance_id: options.instance_id.clone(),
                client_id: options.client_id.clone(),
                subscribed_topics: state.subscribe_due.then(|| options.topics.clone()),
                assignor: options.assignor.clone(),
                owned: Some(TopicAssignment::list(&state.owned)),
                session_timeout_ms: options.session_timeout_ms,
                max_wait_ms: if pending || state.report_due || state.leaving {
                    0
                } else {
                    long_poll_ms
                },
            };
            state.report_due = false;
            request
        };
        let leaving = request.member_epoch == -1;
        last_sent = Instant::now();
        let call = link.call::<_, GroupHeartbeatResponse>(&request, &[]);
        let answer = if request.max_wait_ms > 0 {
            // A long poll gives way to a leave: its answer, if it comes, is
            // dropped, and the loop sends the leave at once.
            let call = std::pin::pin!(call);
            match futures::executor::block_on(futures::future::select(call, &mut *leave_signal)) {
                futures::future::Either::Left((answer, _)) => answer,
                futures::future::Either::Right(_) => continue,
            }
        } else {
            futures::executor::block_on(call)
        };
        let mut state = lock();
        let mut retry_after = None;
        match answer {
            Ok((answer, _)) if answer.error_code == 0 => {
                backoff.reset();
                if leaving {
                    return;
                }
                state.subscribe_due = false;
                state.member_id = answer.member_id;
                state.epoch = answer.member_epoch;
                state.assignment = TopicAssignment::map(&answer.assignment);
                interval = Duration::from_millis(u64::from(answer.heartbeat_interval_ms.max(100)))
                    .min(keep_alive);
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
                        state.subscribe_due = true;
                        if leaving {
                            return;
                        }
                    }
                    code if code.is_retriable() => retry_after = Some(backoff.next_wait()),
                    _ => {
                        state.fatal = Some(ClientError::Broker { code, message: answer.message });
                        shared.changed.notify_all();
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
                // The report did not arrive: send it again.
                state.report_due = true;
                retry_after = Some(backoff.next_wait());
            }
        }
        drop(state);
        shared.changed.notify_all();
        if let Some(step) = retry_after {
            std::thread::sleep(step);
        }
    }
}
