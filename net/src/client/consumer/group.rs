//! The consumer's part in a group: joining (by topic list or pattern),
//! commits, and the reconciliation each poll starts with — the rebalance
//! listener, the commit of what is given up, the report to the
//! coordinator, and the committed offsets where new partitions start.
//!
//! The membership thread (`membership.rs`) talks to the coordinator; this
//! side runs on the thread that polls and never waits for that thread
//! except in `Membership::assignment_changed`, which does not block.
//! Commits and offset fetches go to the group's coordinator too, over the
//! consumer's own connection to it (`group_coordinator.rs`: found again
//! when it answers `not coordinator` or its connection fails).

use super::{Consumer, OffsetReset};
use crate::client::blocking::wait;
use crate::client::broker_pool::BrokerPool;
use crate::client::group_coordinator::GroupCoordinator;
use crate::client::membership::{GroupOptions, Membership, Partitions};
use crate::client::topic_pattern::TopicPattern;
use crate::client::ClientError;
use crate::protocol::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Told of partitions a group member gains, gives up and loses; called
/// from `poll` on the polling thread, with the consumer itself (the
/// listener is taken out of it while it runs), so a listener does what a
/// Kafka user does inside `onPartitionsRevoked`/`onPartitionsAssigned`:
///
/// - in `on_revoked`, commit the offsets of its choosing
///   (`consumer.commit_offsets`, or `commit_sync` for every position)
///   before the revocation is reported to the coordinator: the next owner
///   starts exactly there. `position` still answers for the partitions
///   being revoked. With auto commit on, the consumer commits their
///   positions right after `on_revoked` (overriding an earlier commit of
///   the listener for the same partitions).
/// - in `on_assigned`, `seek` the new partitions, e.g. to offsets kept in
///   the listener's own store (see "Delivery" on [`Consumer`]); they
///   already start at the group's committed offsets.
/// - `pause`/`resume`, `position`, `committed` as anywhere else.
///
/// The consumer's blocking calls work there even under `poll_async`
/// (they block that thread for their round trip). Polling from a
/// listener is refused (`InvalidArgument`): the reconciliation that called
/// it is not finished.
pub trait RebalanceListener: Send {
    /// New partitions, at their start positions, before the first fetch.
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &Partitions);
    /// Partitions the coordinator takes away, while this consumer still
    /// holds them (positions and commit rights).
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &Partitions);
    /// Partitions taken away without a chance to commit: the session
    /// ended (no heartbeat for the session timeout) or the member was
    /// fenced, so others may already read them. The consumer commits
    /// nothing for them; a commit made here is refused. By default the
    /// same as `on_revoked` (Kafka's `onPartitionsLost`).
    fn on_lost(&mut self, consumer: &mut Consumer, partitions: &Partitions) {
        self.on_revoked(consumer, partitions);
    }
}

/// A consumer's part in a group. Lifecycle: made by `subscribe` or
/// `subscribe_pattern`, reconciled by every poll, ended by `close` (or
/// drop, which leaves without committing).
pub(super) struct GroupMember {
    pub(super) membership: Membership,
    /// Where commits and offset fetches go.
    coordinator: GroupCoordinator,
    /// What this consumer reads (and reported to the coordinator).
    owned: Partitions,
    listener: Option<Box<dyn RebalanceListener>>,
    /// A listener callback is running (it was taken out of `listener`).
    pub(super) listener_running: bool,
    /// Set by `subscribe_pattern`.
    pattern: Option<TopicPattern>,
    /// The last commit of every position: auto commit counts from it (a
    /// commit of some partitions, as of revoked ones, does not restart it,
    /// or a member that rebalances often never commits what it keeps).
    pub(super) last_commit: Instant,
}

impl Consumer {
    /// Joins `options.group_id` for `options.topics`: the group's
    /// coordinator spreads their partitions over its members, and `poll`
    /// reads those this consumer holds, from the group's committed offsets.
    pub fn subscribe(&mut self, options: GroupOptions) -> Result<(), ClientError> {
        self.refuse_second_subscription()?;
        let topics = options.topics.clone();
        self.join(options, topics, None)
    }

    /// Joins `options.group_id` for every topic whose whole name matches
    /// `pattern` (a `regex` crate expression; internal topics, named
    /// `__…`, never match), now and as topics come and go: the broker's
    /// topic list is read again every `metadata_max_age_ms` (at a poll),
    /// and a change of the matching set is sent to the coordinator at
    /// once. `options.topics` must be empty.
    pub fn subscribe_pattern(
        &mut self,
        options: GroupOptions,
        pattern: &str,
    ) -> Result<(), ClientError> {
        self.refuse_second_subscription()?;
        if !options.topics.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "subscribe_pattern({pattern:?}) finds its topics by name; options.topics \
                 ({:?}) must be empty",
                options.topics
            )));
        }
        let mut pattern = TopicPattern::new(pattern, self.config.metadata_max_age_ms)?;
        let now = Instant::now();
        let topics = pattern.matching(wait(self.topic_names())?.iter().map(String::as_str));
        pattern.refreshed(now);
        tracing::debug!(pattern = pattern.pattern(), ?topics, "subscribing by pattern");
        self.join(options, topics, Some(pattern))
    }

    fn refuse_second_subscription(&self) -> Result<(), ClientError> {
        if self.group.is_some() || !self.positions.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a consumer either subscribes once or assigns partitions itself".into(),
            ));
        }
        Ok(())
    }

    fn join(
        &mut self,
        options: GroupOptions,
        topics: Vec<String>,
        pattern: Option<TopicPattern>,
    ) -> Result<(), ClientError> {
        // The heartbeats have connections of their own: a long poll never
        // waits behind the consumer's requests, nor they behind it.
        let pool = self.router.pool();
        let own = BrokerPool::connect(pool.bootstrap().brokers(), pool.request_timeout())?;
        let coordinator = GroupCoordinator::new(pool.clone(), &options.group_id);
        let membership = Membership::start(Arc::new(own), options, topics)?;
        self.group = Some(GroupMember {
            membership,
            coordinator,
            owned: Partitions::new(),
            listener: None,
            listener_running: false,
            pattern,
            last_commit: Instant::now(),
        });
        Ok(())
    }

    /// Told of partitions gained, given up and lost under a group (see
    /// [`RebalanceListener`]). Without a group there is nothing to tell:
    /// refused.
    pub fn set_rebalance_listener(
        &mut self,
        listener: Box<dyn RebalanceListener>,
    ) -> Result<(), ClientError> {
        let Some(g) = &mut self.group else {
            return Err(ClientError::InvalidArgument(
                "a rebalance listener needs a group: subscribe first".into(),
            ));
        };
        g.listener = Some(listener);
        Ok(())
    }

    /// The topics the group subscription covers now (the pattern's
    /// matches, or the list given).
    pub fn subscription(&self) -> Vec<String> {
        self.group.as_ref().map(|g| g.membership.state().topics.clone()).unwrap_or_default()
    }

    /// Commits the positions of every partition read (what `poll` handed
    /// out), waiting for the answer.
    pub fn commit_sync(&mut self) -> Result<(), ClientError> {
        wait(self.commit_async())
    }

    /// Commits exactly these next offsets, e.g. the records a program has
    /// processed when it stops in the middle of a poll's records.
    pub fn commit_offsets(&mut self, offsets: &[((String, u32), u64)]) -> Result<(), ClientError> {
        wait(self.commit_positions(offsets))
    }

    /// `commit_sync` as a future.
    pub async fn commit_async(&mut self) -> Result<(), ClientError> {
        let positions: Vec<((String, u32), u64)> =
            self.positions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        self.commit_positions(&positions).await?;
        if let Some(g) = &mut self.group {
            g.last_commit = Instant::now();
        }
        Ok(())
    }

    pub(super) async fn commit_positions(
        &mut self,
        positions: &[((String, u32), u64)],
    ) -> Result<(), ClientError> {
        let Some(g) = &self.group else {
            return Err(ClientError::InvalidArgument(
                "commit needs a group: subscribe first".into(),
            ));
        };
        if positions.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = {
            let state = g.membership.state();
            (state.member_id.clone(), state.epoch)
        };
        let request = OffsetCommitRequest {
            group_id: g.membership.options.group_id.clone(),
            member_id,
            member_epoch,
            offsets: positions
                .iter()
                .map(|((topic, partition), offset)| CommitOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        let answer =
            g.coordinator.call::<_, OffsetCommitResponse>(&request, |a| a.error_code).await?;
        if let Some(e) = ClientError::from_code(answer.error_code, answer.message) {
            return Err(e);
        }
        for p in answer.partitions {
            if let Some(e) = ClientError::from_code(
                p.error_code,
                format!("{}/{}: {}", p.topic, p.partition, p.message),
            ) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The group's committed offset of a partition (`None`: none).
    pub fn committed(&self, topic: &str, partition: u32) -> Result<Option<u64>, ClientError> {
        let wanted = Partitions::from([(topic.to_string(), [partition].into())]);
        let committed = wait(self.committed_async(&wanted))?;
        Ok(committed.get(&(topic.to_string(), partition)).copied())
    }

    /// The group's committed offsets of `wanted`, in one request;
    /// partitions without one are left out.
    async fn committed_async(
        &self,
        wanted: &Partitions,
    ) -> Result<BTreeMap<(String, u32), u64>, ClientError> {
        let Some(g) = &self.group else {
            return Err(ClientError::InvalidArgument("committed offsets need a group".into()));
        };
        let request = OffsetFetchRequest {
            group_id: g.membership.options.group_id.clone(),
            partitions: Some(TopicAssignment::list(wanted)),
        };
        let answer =
            g.coordinator.call::<_, OffsetFetchResponse>(&request, |a| a.error_code).await?;
        if let Some(e) = ClientError::from_code(answer.error_code, answer.message) {
            return Err(e);
        }
        Ok(answer
            .offsets
            .into_iter()
            .filter_map(|o| Some(((o.topic, o.partition), u64::try_from(o.offset).ok()?)))
            .collect())
    }

    /// Leaves the group, its partitions moving to the other members at
    /// once: the listener's `on_revoked` first, then (with auto commit on)
    /// a commit of the positions. A failed commit is returned after the
    /// leave.
    pub fn close(mut self) -> Result<(), ClientError> {
        let owned = self.group.as_ref().map(|g| g.owned.clone()).unwrap_or_default();
        if !owned.is_empty() {
            self.call_listener(|listener, consumer| listener.on_revoked(consumer, &owned));
        }
        let committed = if self.group.is_some() && self.config.enable_auto_commit {
            self.commit_sync()
        } else {
            Ok(())
        };
        if let Some(mut g) = self.group.take() {
            g.membership.leave();
        }
        committed
    }

    /// The broker's topic names.
    async fn topic_names(&self) -> Result<Vec<String>, ClientError> {
        let request = MetadataRequest { topics: None };
        let link = self.router.pool().bootstrap();
        let (metadata, _) = link.call::<_, MetadataResponse>(&request, &[]).await?;
        Ok(metadata.topics.into_iter().filter(|t| t.error_code == 0).map(|t| t.name).collect())
    }

    /// Under a pattern subscription, once every `metadata_max_age_ms`:
    /// matches the pattern against the broker's topics again and
    /// subscribes to the result (sent only if it changed). A failure
    /// fails the poll; the next one tries again.
    pub(super) async fn refresh_subscription(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let due = self
            .group
            .as_ref()
            .and_then(|g| g.pattern.as_ref())
            .is_some_and(|pattern| pattern.refresh_due(now));
        if !due {
            return Ok(());
        }
        let names = self.topic_names().await?;
        let Some(g) = &mut self.group else { return Ok(()) };
        let Some(pattern) = &mut g.pattern else { return Ok(()) };
        let topics = pattern.matching(names.iter().map(String::as_str));
        pattern.refreshed(now);
        if topics != g.membership.state().topics {
            tracing::info!(pattern = pattern.pattern(), ?topics, "the pattern matches new topics");
        }
        g.membership.set_topics(topics);
        Ok(())
    }

    /// Runs `f` with the listener taken out, so it may use the consumer.
    fn call_listener(&mut self, f: impl FnOnce(&mut dyn RebalanceListener, &mut Consumer)) {
        let Some(g) = &mut self.group else { return };
        let Some(mut listener) = g.listener.take() else { return };
        g.listener_running = true;
        f(listener.as_mut(), self);
        if let Some(g) = &mut self.group {
            g.listener_running = false;
            // One set by the listener itself replaces it.
            if g.listener.is_none() {
                g.listener = Some(listener);
            }
        }
    }

    /// Stops reading `partitions`: positions and pauses go, so one that
    /// comes back starts again from the group's commit, unpaused.
    fn forget(&mut self, partitions: &Partitions) {
        for (topic, ps) in partitions {
            for &p in ps {
                let key = (topic.clone(), p);
                self.positions.remove(&key);
                self.paused.remove(&key);
            }
        }
    }

    /// Under a group: gives up what the coordinator took away (listener,
    /// commit, then report) and takes what it gave, from the committed
    /// offsets.
    pub(super) async fn reconcile(&mut self) -> Result<(), ClientError> {
        let Some(g) = &mut self.group else { return Ok(()) };
        let (assignment, lost) = {
            let mut state = g.membership.state();
            if let Some(e) = &state.fatal {
                return Err(e.clone());
            }
            (state.assignment.clone(), std::mem::take(&mut state.lost))
        };
        if lost {
            // Others may read these already: nothing is committed, and
            // what comes back starts from the group's commit again.
            let gone = std::mem::take(&mut g.owned);
            g.membership.report_owned(Partitions::new());
            if !gone.is_empty() {
                tracing::info!(?gone, "lost the group's partitions");
                self.fetches.clear();
                self.call_listener(|listener, consumer| listener.on_lost(consumer, &gone));
                self.forget(&gone);
            }
        }
        let Some(g) = &self.group else { return Ok(()) };
        if assignment == g.owned {
            return Ok(());
        }
        let revoked = difference(&g.owned, &assignment);
        let added = difference(&assignment, &g.owned);
        self.fetches.clear();
        if !revoked.is_empty() {
            self.call_listener(|listener, consumer| listener.on_revoked(consumer, &revoked));
            if self.config.enable_auto_commit {
                let positions: Vec<((String, u32), u64)> = revoked
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                    .filter_map(|k| self.positions.get(&k).map(|o| (k, *o)))
                    .collect();
                if let Err(e) = self.commit_positions(&positions).await {
                    // The next owner reads again from the last commit.
                    tracing::debug!(error = %e, "committing revoked partitions");
                }
            }
            self.forget(&revoked);
        }
        let committed =
            if added.is_empty() { BTreeMap::new() } else { self.committed_async(&added).await? };
        for (topic, partitions) in &added {
            for &partition in partitions {
                let start = match committed.get(&(topic.clone(), partition)) {
                    Some(offset) => *offset,
                    None => match self.config.auto_offset_reset {
                        OffsetReset::Earliest => {
                            self.router.list_offset(topic, partition, EARLIEST_TIMESTAMP).await?
                        }
                        OffsetReset::Latest => {
                            self.router.list_offset(topic, partition, LATEST_TIMESTAMP).await?
                        }
                        OffsetReset::Error => {
                            return Err(ClientError::InvalidArgument(format!(
                                "{topic}/{partition} has no committed offset and auto_offset_reset is error"
                            )))
                        }
                    },
                };
                self.positions.insert((topic.clone(), partition), start);
            }
        }
        if !added.is_empty() {
            self.call_listener(|listener, consumer| listener.on_assigned(consumer, &added));
        }
        if let Some(g) = &mut self.group {
            g.owned = assignment.clone();
            g.membership.report_owned(assignment);
        }
        Ok(())
    }
}

/// What `a` holds that `b` does not.
fn difference(a: &Partitions, b: &Partitions) -> Partitions {
    a.iter()
        .filter_map(|(topic, ps)| {
            let rest: BTreeSet<u32> = match b.get(topic) {
                Some(other) => ps.difference(other).copied().collect(),
                None => ps.clone(),
            };
            (!rest.is_empty()).then(|| (topic.clone(), rest))
        })
        .collect()
}
