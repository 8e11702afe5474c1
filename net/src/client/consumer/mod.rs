//! The consumer: reads partitions from positions, checking every batch's
//! CRC again (end to end). The partitions are the caller's choice
//! (`assign`), or a group's (`subscribe`, `subscribe_pattern`: see
//! `group.rs`), whose committed offsets give where they start.
//!
//! Each partition is read from its leader: a fetch per broker carries the
//! partitions it leads (`fetches.rs`), and list-offsets (seeks, resets)
//! go to the leader too. The leaders come from the consumer's `Router`,
//! which refreshes its metadata when a broker answers `not leader` or a
//! partition has no leader; such a partition is simply fetched again
//! after the refresh, from its position.
//!
//! Like Kafka's consumer it pre-fetches: once a broker's fetch answers
//! with data, the next fetch to that broker (from the positions after it)
//! goes out before the records are handed over, so the brokers work while
//! the caller does. A poll hands over one broker's answer, taking the
//! brokers in turn. Records are handed over borrowed from the answer
//! ([`Consumer::poll_each`]) or copied out ([`Consumer::poll`]).
//!
//! Broker restarts and lost connections: a poll whose fetch failed
//! (`Disconnected`, `Timeout`, a busy or shutting-down broker; see
//! [`ClientError::is_retriable`]) returns the error and leaves every
//! position where it was, so the next poll connects again and fetches
//! from the first record not handed over: nothing is skipped or handed
//! over twice. How long to keep trying is the caller's choice;
//! [`super::Backoff`] spaces the attempts.

mod fetches;
mod group;

pub use group::RebalanceListener;

use super::blocking::wait;
use super::broker_pool::BrokerPool;
use super::connection::decode_answer;
use super::router::{refresh_reason, Reroute, Router};
use super::{ClientError, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::protocol::*;
use fetches::{FetchSettings, Fetches};
use futures::future::{select, Either};
use futures_timer::Delay;
use group::GroupMember;
use mamba_engine::batch::{iter_batches, peek_stored_bytes, BatchHeader, RecordView};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
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
    /// How often the metadata (partition leaders) is refreshed even when
    /// no broker said it changed, and under `subscribe_pattern` how often
    /// the broker's topic list is matched again, so new topics are picked
    /// up (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age_ms: u64,
}

/// Where a group's partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail the poll (`ClientError::InvalidArgument`).
    Error,
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
            metadata_max_age_ms: 5_000,
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

/// Lifecycle: `connect`; `assign` (or `seek`) partitions, or `subscribe`
/// to a group; then `poll` as long as wanted (and `close` under a group);
/// positions only move past records handed over. `pause`d partitions keep
/// their positions but are not fetched until `resume`d.
///
/// # Delivery under a group
///
/// At least once: `poll` hands a record over once, but the group's
/// committed offset is what the next owner of its partition starts from,
/// so a record handed over and not yet committed is delivered again
///
/// - after a crash, or a lost session (the membership thread reached no
///   coordinator for the session timeout — network, a stopped process —
///   or the member was fenced: the listener's `on_lost`), between
///   processing a record and committing it;
/// - after a revocation whose commit failed (coordinator unreachable or
///   moved, member fenced): the partition moves anyway and the next owner
///   starts from the last commit that succeeded (auto commit logs the
///   failure; a listener's own commit in `on_revoked` gets it returned);
/// - with auto commit on, for everything handed over since the last
///   auto commit, when one of the above happens.
///
/// Nothing is skipped as long as a commit names only processed records:
/// with auto commit on, a poll commits what the *previous* polls handed
/// over, so process each poll's records before the next poll; with it off,
/// `commit_offsets` exactly what was processed.
///
/// Effectively once for an idempotent sink needs the commit and the
/// output to be one: either store the offsets in the sink, in the same
/// transaction as the output, and `seek` each partition to its stored
/// offset in the listener's `on_assigned` (the group's commit is then only
/// a hint); or key every write by (topic, partition, offset), so a
/// redelivered record overwrites itself.
pub struct Consumer {
    /// The partitions' leaders, and the connections to them.
    router: Router,
    config: ConsumerConfig,
    /// (topic, partition) -> next offset to read.
    positions: BTreeMap<(String, u32), u64>,
    /// Keys of `positions` left out of fetches.
    paused: BTreeSet<(String, u32)>,
    /// The fetches sent for the current positions (paused partitions left
    /// out), one per broker at most.
    fetches: Fetches,
    /// Set by `subscribe` or `subscribe_pattern`.
    group: Option<GroupMember>,
}

impl Consumer {
    /// Connects to the first of `brokers` (comma-separated `HOST[:PORT]`)
    /// that answers, and learns the cluster's brokers from it.
    pub fn connect(brokers: &str, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let pool = Arc::new(BrokerPool::connect(brokers, request_timeout)?);
        let router = Router::start(pool, Duration::from_millis(config.metadata_max_age_ms))?;
        Ok(Consumer {
            router,
            config,
            positions: BTreeMap::new(),
            paused: BTreeSet::new(),
            fetches: Fetches::default(),
            group: None,
        })
    }

    /// The partitions this consumer reads now (paused ones included).
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.positions.keys().cloned().collect()
    }

    /// The partitions of `topic`, from the cluster's metadata.
    pub fn partitions(&self, topic: &str) -> Result<Vec<u32>, ClientError> {
        let t = wait(self.router.topic(topic))?;
        Ok(t.partitions.iter().map(|p| p.partition).collect())
    }

    /// Reads `partitions` of `topic` (all of them when empty) from `from`.
    /// Under a group the coordinator assigns: refused.
    pub fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        from: SeekTo,
    ) -> Result<(), ClientError> {
        if self.group.is_some() {
            return Err(ClientError::InvalidArgument(
                "this consumer subscribed to a group, whose coordinator assigns its partitions"
                    .into(),
            ));
        }
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

    /// Moves a partition's position: the next poll reads from there. Without
    /// a group, seeking a partition not read yet starts reading it; under
    /// a group only a partition this consumer holds now may move (others
    /// are refused with `InvalidArgument`), and it moves until the group
    /// takes it away: one that comes back starts at the group's commit.
    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<(), ClientError> {
        let key = (topic.to_string(), partition);
        if let Some(g) = &self.group {
            if !self.positions.contains_key(&key) {
                return Err(ClientError::InvalidArgument(format!(
                    "cannot seek {topic}/{partition}: group {:?} has not assigned it to this                      consumer (it holds {:?})",
                    g.membership.options.group_id,
                    self.assignment()
                )));
            }
        }
        // A fetch already sent reads from the old position.
        self.fetches.clear();
        let list = |timestamp| wait(self.router.list_offset(topic, partition, timestamp));
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
        self.positions.insert(key, offset);
        Ok(())
    }

    /// The next offset `poll` reads from this partition (one past the last
    /// record handed over, or where a seek put it); `None` when this
    /// consumer does not read it.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Stops fetching these partitions; they stay assigned (under a group:
    /// still held, still committed) and keep their positions, so `resume`
    /// goes on from the first record not handed over. A partition the
    /// group takes away is no longer paused if it comes back. Partitions
    /// this consumer does not read are refused (nothing is paused then).
    pub fn pause(&mut self, partitions: &[(String, u32)]) -> Result<(), ClientError> {
        self.refuse_unassigned("pause", partitions)?;
        // The fetches sent ahead read them too.
        self.fetches.clear();
        self.paused.extend(partitions.iter().cloned());
        Ok(())
    }

    /// Fetches these partitions again, from their positions. Partitions
    /// this consumer does not read are refused; resuming one not paused
    /// does nothing.
    pub fn resume(&mut self, partitions: &[(String, u32)]) -> Result<(), ClientError> {
        self.refuse_unassigned("resume", partitions)?;
        // The fetches sent ahead leave them out: without this they would
        // wait for their long polls.
        self.fetches.clear();
        for key in partitions {
            self.paused.remove(key);
        }
        Ok(())
    }

    /// The partitions paused now.
    pub fn paused(&self) -> Vec<(String, u32)> {
        self.paused.iter().cloned().collect()
    }

    fn refuse_unassigned(&self, op: &str, partitions: &[(String, u32)]) -> Result<(), ClientError> {
        match partitions.iter().find(|key| !self.positions.contains_key(*key)) {
            Some((topic, partition)) => Err(ClientError::InvalidArgument(format!(
                "cannot {op} {topic}/{partition}: this consumer does not read it (it reads {:?})",
                self.assignment()
            ))),
            None => Ok(()),
        }
    }

    /// Waits up to `timeout` for records of the assigned partitions.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        wait(self.poll_async(timeout))
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
        wait(self.poll_each_async(timeout, each))
    }

    pub async fn poll_each_async(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(Delivered<'_>),
    ) -> Result<usize, ClientError> {
        if let Some(g) = &self.group {
            if g.listener_running {
                return Err(ClientError::InvalidArgument(
                    "poll from a rebalance listener: the rebalance that called it is not done"
                        .into(),
                ));
            }
            self.refresh_subscription().await?;
            self.reconcile().await?;
            if self.positions.is_empty() {
                // Nothing to read yet: wait for the coordinator's answer,
                // without blocking an executor's thread.
                if let Some(g) = &self.group {
                    g.membership.assignment_changed(timeout).await;
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
        if self.positions.keys().all(|key| self.paused.contains(key)) {
            // Nothing to fetch: the poll waits its timeout, or under a
            // group until the coordinator changes something.
            match &self.group {
                Some(g) => g.membership.assignment_changed(timeout).await,
                None => Delay::new(timeout).await,
            }
            return Ok(0);
        }
        // Nothing went out, the leaders cannot be reached: positions stay,
        // the next poll sends again.
        self.send_fetches(timeout)?;
        if self.fetches.is_empty() {
            // Every partition waits for its leader to be known (none now,
            // or it moved): wait for the refresh, within the poll's time,
            // and send once more; still none makes an empty poll.
            let started = Instant::now();
            self.wait_for_leaders(timeout).await;
            self.send_fetches(timeout.saturating_sub(started.elapsed()))?;
        }
        // Under a group, a revocation does not wait out the fetches' long
        // polls: the poll ends at once with nothing, the fetches stay sent
        // ahead (`reconcile` drops them if its partitions changed), and the
        // next poll gives the partitions up within a round trip.
        let answered = match &self.group {
            Some(g) => {
                let answer = std::pin::pin!(self.fetches.next_answer());
                match select(answer, std::pin::pin!(g.membership.news())).await {
                    Either::Left((answered, _)) => answered,
                    Either::Right(_) => return Ok(0),
                }
            }
            None => self.fetches.next_answer().await,
        };
        let Some(answered) = answered else { return Ok(0) };
        let frame = answered.inspect_err(|e| {
            if refresh_reason(e) != Reroute::No {
                self.router.request_refresh();
            }
        })?;
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
                if refresh_reason(&e) == Reroute::Yes {
                    // Another broker leads it now (or will): fetch it there
                    // once the view says where, from the same position.
                    tracing::debug!(topic = %p.topic, partition = p.partition, error = %e, "rerouting");
                    let ticket = self.router.request_refresh();
                    self.fetches.reroute((p.topic.clone(), p.partition), ticket);
                    continue;
                }
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
            // to the fetches sent ahead: if one cannot go out (a connection
            // just died), the next poll sends it from the positions.
            if let Err(e) = self.send_fetches(timeout) {
                tracing::debug!(error = %e, "could not fetch ahead");
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
                        // fetches sent ahead skipped them.
                        self.fetches.clear();
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

    /// Sends a fetch to each leader that has none out (see `fetches.rs`),
    /// for the partitions it leads; paused ones are left out.
    fn send_fetches(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let settings = FetchSettings {
            max_wait: timeout,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            partition_max_bytes: self.config.partition_max_bytes,
        };
        self.fetches.send(&self.router, &self.positions, &self.paused, settings)
    }

    /// Waits up to `timeout` for the metadata refresh the partitions wait
    /// for (under a group, at most until the coordinator changes
    /// something).
    async fn wait_for_leaders(&self, timeout: Duration) {
        let Some(ticket) = self.fetches.awaited_refresh() else {
            return Delay::new(timeout).await;
        };
        let refreshed = std::pin::pin!(self.router.wait_refreshed(ticket, timeout));
        match &self.group {
            Some(g) => {
                // Either way there is nothing more to wait for.
                let _either = select(refreshed, std::pin::pin!(g.membership.news())).await;
            }
            None => refreshed.await,
        }
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
