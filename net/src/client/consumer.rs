//! The consumer: reads assigned partitions from chosen positions, checking
//! every batch's CRC again (end to end). Consumer groups come later; the
//! positions here are the consumer's own.
//!
//! Like Kafka's consumer it pre-fetches: once a fetch answers with data,
//! the next fetch (from the positions after it) goes out before the records
//! are handed over, so the broker works while the caller does. Records are
//! handed over borrowed from the answer ([`Consumer::poll_each`]) or copied
//! out ([`Consumer::poll`]).
//!
//! Broker restarts and lost connections: a poll whose fetch failed
//! (`Disconnected`, `Timeout`, a busy or shutting-down broker; see
//! [`ClientError::is_retriable`]) returns the error and leaves every
//! position where it was, so the next poll connects again (through the
//! consumer's [`Link`]) and fetches from the first record not handed over:
//! nothing is skipped or handed over twice. How long to keep trying is the
//! caller's choice; [`super::Backoff`] spaces the attempts.

use super::connection::{decode_answer, Waiter};
use super::membership::{GroupOptions, Membership, Partitions};
use super::{ClientError, Link, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::protocol::*;
use futures::channel::oneshot;
use mamba_engine::batch::{iter_batches, peek_stored_bytes, BatchHeader, RecordView};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bound on one fetch's records, all partitions together.
    pub fetch_max_bytes: u32,
    /// Bound per partition.
    pub partition_max_bytes: u32,
    /// A fetch waits for at least this many bytes (or the poll timeout).
    pub fetch_min_bytes: u32,
    /// A request with no answer for this long fails with
    /// `ClientError::Timeout` and its connection is replaced; a fetch may
    /// take its long poll (the poll timeout) on top.
    pub request_timeout_ms: u64,
    /// Under a group: commit what `poll` handed out every
    /// `auto_commit_interval_ms`, and before giving a partition up.
    pub enable_auto_commit: bool,
    pub auto_commit_interval_ms: u64,
    /// Under a group, where a partition with no committed offset starts.
    pub auto_offset_reset: OffsetReset,
}

/// Where a group's partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail the poll (`ClientError::InvalidArgument`).
    Error,
}

/// Told of partitions a group member gains and gives up; called from
/// `poll`, before a revocation is reported to the coordinator (with auto
/// commit on, the revoked partitions are committed right after
/// `on_revoked`).
pub trait RebalanceListener: Send {
    fn on_assigned(&mut self, partitions: &Partitions);
    fn on_revoked(&mut self, partitions: &Partitions);
}

/// A consumer's part in a group.
struct GroupMember {
    membership: Membership,
    /// What this consumer reads (and reported to the coordinator).
    owned: Partitions,
    listener: Option<Box<dyn RebalanceListener>>,
    /// The last commit of every position (auto commit counts from it; a
    /// commit of some partitions, as of revoked ones, does not).
    last_commit: Instant,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            fetch_max_bytes: 16 << 20,
            partition_max_bytes: 4 << 20,
            fetch_min_bytes: 1,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            auto_offset_reset: OffsetReset::Latest,
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Earliest,
    Latest,
    Offset(u64),
    /// N records before the end (not before the log start).
    BeforeEnd(u64),
    /// N records after the log start (`Offset(start + N)`).
    AfterStart(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record borrowed from a fetch answer.
#[derive(Debug, Clone, Copy)]
pub struct Delivered<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub record: RecordView<'a>,
}

type FetchAnswer = oneshot::Receiver<Result<Frame, ClientError>>;

/// Lifecycle: `connect`, `assign` (or `seek`) partitions, then `poll` as
/// long as wanted; positions only move past records handed over.
pub struct Consumer {
    conn: Link,
    config: ConsumerConfig,
    /// (topic, partition) -> next offset to read.
    positions: BTreeMap<(String, u32), u64>,
    /// The fetch already sent for the current positions.
    prefetched: Option<FetchAnswer>,
    /// Set by `subscribe`.
    group: Option<GroupMember>,
}

impl Consumer {
    pub fn connect(brokers: &str, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        Ok(Consumer {
            conn: Link::connect(brokers, request_timeout)?,
            config,
            positions: BTreeMap::new(),
            prefetched: None,
            group: None,
        })
    }

    /// Joins `options.group_id` for `options.topics`: the group's
    /// coordinator spreads their partitions over its members, and `poll`
    /// reads those this consumer holds, from the group's committed offsets.
    pub fn subscribe(&mut self, options: GroupOptions) -> Result<(), ClientError> {
        if self.group.is_some() || !self.positions.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a consumer either subscribes once or assigns partitions itself".into(),
            ));
        }
        let link = Link::connect(self.conn.brokers(), self.conn.request_timeout())?;
        let membership = Membership::start(link, options)?;
        self.group = Some(GroupMember {
            membership,
            owned: Partitions::new(),
            listener: None,
            last_commit: Instant::now(),
        });
        Ok(())
    }

    /// Told of partitions gained and given up under a group.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        if let Some(g) = &mut self.group {
            g.listener = Some(listener);
        }
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// Commits the positions of every partition read (what `poll` handed
    /// out), waiting for the answer.
    pub fn commit_sync(&mut self) -> Result<(), ClientError> {
        futures::executor::block_on(self.commit_async())
    }

    /// Commits exactly these next offsets, e.g. the records a program has
    /// processed when it stops in the middle of a poll's records.
    pub fn commit_offsets(&mut self, offsets: &[((String, u32), u64)]) -> Result<(), ClientError> {
        futures::executor::block_on(self.commit_positions(offsets))
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

    async fn commit_positions(
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
        let (answer, _) = self.conn.call::<_, OffsetCommitResponse>(&request, &[]).await?;
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
        let committed = futures::executor::block_on(self.committed_async(&wanted))?;
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
        let (answer, _) = self.conn.call::<_, OffsetFetchResponse>(&request, &[]).await?;
        if let Some(e) = ClientError::from_code(answer.error_code, answer.message) {
            return Err(e);
        }
        Ok(answer
            .offsets
            .into_iter()
            .filter_map(|o| Some(((o.topic, o.partition), u64::try_from(o.offset).ok()?)))
            .collect())
    }

    /// Leaves the group (committing first, with auto commit on); its
    /// partitions move to the other members at once.
    pub fn close(mut self) -> Result<(), ClientError> {
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

    /// Under a group: gives up what the coordinator took away (listener,
    /// commit, then report) and takes what it gave, from the committed
    /// offsets.
    async fn reconcile(&mut self) -> Result<(), ClientError> {
        let Some(g) = &self.group else { return Ok(()) };
        let assignment = {
            let state = g.membership.state();
            if let Some(e) = &state.fatal {
                return Err(e.clone());
            }
            state.assignment.clone()
        };
        if assignment == g.owned {
            return Ok(());
        }
        let revoked = difference(&g.owned, &assignment);
        let added = difference(&assignment, &g.owned);
        self.prefetched = None;
        if !revoked.is_empty() {
            if let Some(listener) = self.group.as_mut().and_then(|g| g.listener.as_mut()) {
                listener.on_revoked(&revoked);
            }
            let positions: Vec<((String, u32), u64)> = revoked
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .filter_map(|k| self.positions.get(&k).map(|o| (k, *o)))
                .collect();
            if self.config.enable_auto_commit {
                if let Err(e) = self.commit_positions(&positions).await {
                    // The next owner reads again from the last commit.
                    tracing::debug!(error = %e, "committing revoked partitions");
                }
            }
            for (key, _) in &positions {
                self.positions.remove(key);
            }
        }
        let committed =
            if added.is_empty() { BTreeMap::new() } else { self.committed_async(&added).await? };
        for (topic, partitions) in &added {
            for &partition in partitions {
                let start = match committed.get(&(topic.clone(), partition)) {
                    Some(offset) => *offset,
                    None => match self.config.auto_offset_reset {
                        OffsetReset::Earliest => {
                            self.conn.list_offset(topic, partition, EARLIEST_TIMESTAMP).await?
                        }
                        OffsetReset::Latest => {
                            self.conn.list_offset(topic, partition, LATEST_TIMESTAMP).await?
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
        if let Some(g) = &mut self.group {
            if !added.is_empty() {
                if let Some(listener) = g.listener.as_mut() {
                    listener.on_assigned(&added);
                }
            }
            g.owned = assignment.clone();
            g.membership.report_owned(assignment);
        }
        Ok(())
    }

    /// The partitions of `topic`, from the broker.
    pub fn partitions(&self, topic: &str) -> Result<Vec<u32>, ClientError> {
        let t = futures::executor::block_on(self.conn.topic_metadata(topic))?;
        Ok(t.partitions.iter().map(|p| p.partition).collect())
    }

    /// Reads `partitions` of `topic` (all of them when empty) from `from`.
    pub fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        from: SeekTo,
    ) -> Result<(), ClientError> {
        let all = self.partitions(topic)?;
        let chosen: Vec<u32> =
            if partitions.is_empty() { all.clone() } else { partitions.to_vec() };
        for p in &chosen {
            if !all.contains(p) {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {topic:?} has no partition {p}"
                )));
            }
        }
        for p in chosen {
            self.positions.insert((topic.to_string(), p), 0);
            self.seek(topic, p, from)?;
        }
        Ok(())
    }

    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<(), ClientError> {
        // A fetch already sent reads from the old position.
        self.prefetched = None;
        let list = |timestamp| {
            futures::executor::block_on(self.conn.list_offset(topic, partition, timestamp))
        };
        let offset = match to {
            SeekTo::Offset(offset) => offset,
            SeekTo::Earliest => list(EARLIEST_TIMESTAMP)?,
            SeekTo::Latest => list(LATEST_TIMESTAMP)?,
            SeekTo::Timestamp(ts) => list(ts)?,
            SeekTo::BeforeEnd(n) => {
                let start = list(EARLIEST_TIMESTAMP)?;
                list(LATEST_TIMESTAMP)?.saturating_sub(n).max(start)
            }
            // Past the end, the first poll says so, naming the range.
            SeekTo::AfterStart(n) => list(EARLIEST_TIMESTAMP)?.saturating_add(n),
        };
        self.positions.insert((topic.to_string(), partition), offset);
        Ok(())
    }

    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Waits up to `timeout` for records of the assigned partitions.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        futures::executor::block_on(self.poll_async(timeout))
    }

    pub async fn poll_async(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        let mut records = Vec::new();
        self.poll_each_async(timeout, |d| {
            let r = d.record;
            records.push(ConsumerRecord {
                topic: d.topic.to_string(),
                partition: d.partition,
                offset: r.offset.0,
                timestamp_ms: r.timestamp_ms,
                key: r.key().map(<[u8]>::to_vec),
                value: r.value().to_vec(),
                headers: r.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
            });
        })
        .await?;
        Ok(records)
    }

    /// Waits up to `timeout` for records and calls `each` with every one,
    /// in offset order per partition, borrowed from the answer (no copy).
    /// Returns how many there were.
    pub fn poll_each(
        &mut self,
        timeout: Duration,
        each: impl FnMut(Delivered<'_>),
    ) -> Result<usize, ClientError> {
        futures::executor::block_on(self.poll_each_async(timeout, each))
    }

    pub async fn poll_each_async(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(Delivered<'_>),
    ) -> Result<usize, ClientError> {
        if self.group.is_some() {
            self.reconcile().await?;
            if self.positions.is_empty() {
                // Nothing to read yet: wait for the coordinator's answer.
                if let Some(g) = &self.group {
                    g.membership.wait_for_assignment(timeout);
                }
                self.reconcile().await?;
                return Ok(0);
            }
            let interval = Duration::from_millis(self.config.auto_commit_interval_ms);
            let due = self.group.as_ref().is_some_and(|g| g.last_commit.elapsed() >= interval);
            if self.config.enable_auto_commit && due {
                self.commit_async().await?;
            }
        }
        if self.positions.is_empty() {
            return Err(ClientError::InvalidArgument("assign partitions before polling".into()));
        }
        let answer = match self.prefetched.take() {
            Some(answer) => answer,
            None => self.send_fetch(timeout)?,
        };
        let disconnected = || ClientError::Disconnected { addr: self.conn.brokers().to_string() };
        let frame = answer.await.map_err(|_| disconnected())??;
        let answer = decode_answer::<FetchResponse>(&frame)?;
        // Where each partition continues, from the batch headers, so the
        // next fetch can go out before the records are checked and handed
        // over.
        let mut parts = Vec::with_capacity(answer.partitions.len());
        for p in &answer.partitions {
            if p.error_code == ErrorCode::OffsetOutOfRange.as_u16() {
                let offset = self.position(&p.topic, p.partition).unwrap_or(0);
                return Err(ClientError::OffsetOutOfRange {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset,
                    log_start_offset: p.log_start_offset,
                    log_end_offset: p.high_watermark,
                });
            }
            if let Some(e) = ClientError::from_code(p.error_code, p.message.clone()) {
                return Err(e);
            }
            let bytes = slice_of(frame.payload(), p.records)
                .ok_or_else(|| ClientError::Protocol("records slice outside the payload".into()))?;
            parts.push((p, bytes, 0));
        }
        for (p, bytes, from) in &mut parts {
            let key = (p.topic.clone(), p.partition);
            *from = self.positions.get(&key).copied().unwrap_or(0);
            let next = next_offset_after(bytes).map_or(*from, |n| n.max(*from));
            self.positions.insert(key, next);
        }
        if parts.iter().any(|(_, bytes, _)| !bytes.is_empty()) {
            // The records of this answer are handed over whatever happens
            // to the fetch sent ahead: if it cannot go out (the connection
            // just died), the next poll sends one from the positions.
            match self.send_fetch(timeout) {
                Ok(answer) => self.prefetched = Some(answer),
                Err(e) => tracing::debug!(error = %e, "could not fetch ahead"),
            }
        }
        let mut delivered = 0;
        for (i, &(p, bytes, from)) in parts.iter().enumerate() {
            let mut next = from;
            for batch in iter_batches(bytes) {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        // Read again from the bad batch, and the partitions
                        // after it from where this poll found them; the
                        // fetch sent ahead skipped them.
                        self.prefetched = None;
                        self.positions.insert((p.topic.clone(), p.partition), next);
                        for &(q, _, q_from) in &parts[i + 1..] {
                            self.positions.insert((q.topic.clone(), q.partition), q_from);
                        }
                        return Err(e.into());
                    }
                };
                for record in batch.iter() {
                    if record.offset.0 >= next {
                        each(Delivered { topic: &p.topic, partition: p.partition, record });
                        delivered += 1;
                    }
                }
                next = next.max(batch.header().last_offset().0 + 1);
            }
        }
        Ok(delivered)
    }

    fn send_fetch(&self, timeout: Duration) -> Result<FetchAnswer, ClientError> {
        let request = FetchRequest {
            max_wait_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            partitions: self
                .positions
                .iter()
                .map(|((topic, partition), offset)| FetchPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    max_bytes: self.config.partition_max_bytes,
                })
                .collect(),
        };
        let (tx, rx) = oneshot::channel();
        // The broker may hold a fetch for its whole long poll before it
        // answers: that is not a late answer.
        let deadline = self.conn.request_timeout() + timeout;
        self.conn.connection()?.send_within(&request, &[], Some(Waiter::Channel(tx)), deadline)?;
        Ok(rx)
    }
}

/// The offset after the last batch in `bytes`, from the headers alone
/// (`None` when there is no whole batch).
fn next_offset_after(mut bytes: &[u8]) -> Option<u64> {
    let mut next = None;
    while let Some(stored) = peek_stored_bytes(bytes).filter(|n| *n <= bytes.len()) {
        next = Some(BatchHeader::decode(bytes).ok()?.last_offset().0 + 1);
        bytes = &bytes[stored..];
    }
    next
}

/// What `a` holds that `b` does not.
fn difference(a: &Partitions, b: &Partitions) -> Partitions {
    a.iter()
        .filter_map(|(topic, ps)| {
            let rest: std::collections::BTreeSet<u32> = match b.get(topic) {
                Some(other) => ps.difference(other).copied().collect(),
                None => ps.clone(),
            };
            (!rest.is_empty()).then(|| (topic.clone(), rest))
        })
        .collect()
}
