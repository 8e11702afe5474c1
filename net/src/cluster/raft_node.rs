//! One metadata-quorum node: raft-rs's `RawNode` over our durable
//! `RaftStore`, with the transport and the state machine injected.
//!
//! The embedding task (on shard 0 of the broker) calls `tick` on a timer,
//! `step` for each message received, `propose` for a metadata change, and
//! `handle_ready` after any of them. `handle_ready` follows raft-rs's
//! order for a synchronous Ready: messages a leader may send at once go
//! first; then the snapshot is installed, committed entries are applied,
//! new entries and the hard state are made durable, and only then are the
//! messages that promise them (votes, append responses) sent; the
//! `LightReady` after `advance` does the same for the commit index.
//!
//! Lifecycle: `open` loads the store and restores the state machine from
//! the snapshot; entries after it are applied again as raft commits them
//! (the state machine lives in memory only). Owned by one task; the store
//! does its I/O through the `Engine` handle.
//!
//! **Invariant:** entries reach the state machine once each, in index
//! order, and never before they are durable here (asserted in `apply`).

use std::collections::BTreeMap;
use std::future::Future;

use futures::channel::oneshot;
use mamba_engine::Engine;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, StateRole};

use super::raft_store::{RaftStore, RaftStoreError};

/// Where the node's messages go; `send` must not block (queue and return).
pub trait Transport {
    fn send(&self, to: u64, message: Message);
}

/// The replicated application (the metadata state).
pub trait StateMachine {
    /// Applies the committed entry at `index`.
    fn apply(&mut self, index: u64, data: &[u8]);
    /// The whole state, for a snapshot at the last applied index.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, data: &[u8]);
}

#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    pub id: u64,
    /// The voters of a brand-new cluster; ignored once the store exists.
    pub voters_initial: Vec<u64>,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Entries past the snapshot before a new one is taken.
    pub snapshot_entries_max: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error(transparent)]
    Store(#[from] RaftStoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("committed conf change at index {index} does not decode: {source}")]
    BadConfChange {
        index: u64,
        #[source]
        source: protobuf::ProtobufError,
    },
}

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader_hint` is the leader this
    /// node knows of.
    #[error("not the metadata leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<u64> },
    /// Its log position was taken by another leader's entry: it did not
    /// commit and will not.
    #[error("the proposal was overwritten by a new leader")]
    Overwritten,
    /// Another membership change is still being applied.
    #[error("another membership change is in progress")]
    ChangePending,
    /// The node stopped or installed a snapshot before the entry was
    /// applied: it may or may not have committed.
    #[error("the proposal's outcome is unknown")]
    Unknown,
}

struct Pending {
    term: u64,
    reply: oneshot::Sender<Result<u64, ProposeError>>,
}

pub struct RaftNode<T: Transport, S: StateMachine> {
    raw: RawNode<RaftStore>,
    transport: T,
    machine: S,
    /// Proposals of this node by log index, answered when that index is
    /// applied.
    pending: BTreeMap<u64, Pending>,
    applied: u64,
    snapshot_entries_max: u64,
    /// A membership change was applied since the last snapshot: the next
    /// `maybe_snapshot` takes one (see there).
    conf_changed: bool,
}

impl<T: Transport, S: StateMachine> RaftNode<T, S> {
    pub async fn open(
        engine: Engine,
        config: &RaftNodeConfig,
        transport: T,
        mut machine: S,
    ) -> Result<RaftNode<T, S>, RaftNodeError> {
        assert!(config.snapshot_entries_max > 0, "snapshot_entries_max must be positive");
        let store = RaftStore::open(engine, &config.voters_initial).await?;
        let applied = store.snapshot_index();
        if applied > 0 {
            machine.restore(store.snapshot_data());
        }
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            // A leader cut off from a majority steps down instead of
            // taking proposals it cannot commit; a node that was cut off
            // does not disrupt the quorum with a higher term on return.
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&raft_config, store, &logger)?;
        // The only voter need not wait out an election timeout: a
        // one-node cluster takes requests as soon as it starts.
        let voters = &raw.store().conf_state().voters;
        if voters.len() == 1 && voters[0] == config.id {
            raw.campaign()?;
        }
        Ok(RaftNode {
            raw,
            transport,
            machine,
            pending: BTreeMap::new(),
            applied,
            snapshot_entries_max: config.snapshot_entries_max,
            conf_changed: false,
        })
    }

    /// Advances the logical clock one tick; true if there may be a Ready.
    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    /// Takes a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<(), RaftNodeError> {
        Ok(self.raw.step(message)?)
    }

    /// Proposes `data`; the future answers the index it committed at once
    /// this node applied it.
    pub fn propose(
        &mut self,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<u64, ProposeError>> + 'static {
        let started = self.start_proposal(data);
        async move {
            match started {
                Ok(answer) => answer.await.unwrap_or(Err(ProposeError::Unknown)),
                Err(e) => Err(e),
            }
        }
    }

    fn start_proposal(
        &mut self,
        data: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<u64, ProposeError>>, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), data).is_err() {
            // A leader refuses while it transfers leadership.
            return Err(self.not_leader());
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, last_before + 1, "a proposal is one entry");
        let (reply, answer) = oneshot::channel();
        self.pending.insert(index, Pending { term: self.raw.raft.term, reply });
        Ok(answer)
    }

    /// Proposes a membership change (one voter or learner at a time); the
    /// future answers once it is applied, as `propose`'s.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> impl Future<Output = Result<u64, ProposeError>> + 'static {
        let started = self.start_conf_change(change);
        async move {
            match started {
                Ok(answer) => answer.await.unwrap_or(Err(ProposeError::Unknown)),
                Err(e) => Err(e),
            }
        }
    }

    fn start_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<oneshot::Receiver<Result<u64, ProposeError>>, ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(self.not_leader());
        }
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose_conf_change(Vec::new(), change).is_err() {
            // One change at a time: another is pending.
            return Err(ProposeError::ChangePending);
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, last_before + 1, "a proposal is one entry");
        let (reply, answer) = oneshot::channel();
        self.pending.insert(index, Pending { term: self.raw.raft.term, reply });
        Ok(answer)
    }

    /// The voters and learners of the configuration applied last.
    pub fn conf_state(&self) -> &raft::eraftpb::ConfState {
        self.raw.store().conf_state()
    }

    /// Each peer's acknowledged log index, as the leader tracks it (empty
    /// on other nodes): (node id, matched index, is learner).
    pub fn progress(&self) -> Vec<(u64, u64, bool)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let learners = &self.conf_state().learners;
        let mut out: Vec<_> = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (*id, p.matched, learners.contains(id)))
            .collect();
        out.sort_unstable();
        out
    }

    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// Tells raft a message to `node_id` could not be delivered, so it
    /// probes instead of streaming appends.
    pub fn report_unreachable(&mut self, node_id: u64) {
        self.raw.report_unreachable(node_id);
    }

    fn not_leader(&self) -> ProposeError {
        let leader = self.raw.raft.leader_id;
        ProposeError::NotLeader {
            leader_hint: (leader != raft::INVALID_ID && leader != self.id()).then_some(leader),
        }
    }

    /// Persists, sends and applies everything raft has ready, in the order
    /// that keeps every promise durable before it is made.
    pub async fn handle_ready(&mut self) -> Result<(), RaftNodeError> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            // A leader's appends and heartbeats may go out while it writes
            // the same entries itself.
            self.send(ready.take_messages());
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.raw.mut_store().apply_snapshot(&snapshot).await?;
                self.machine.restore(&snapshot.data);
                self.applied = snapshot.get_metadata().index;
                tracing::info!(
                    index = self.applied,
                    term = snapshot.get_metadata().term,
                    "installed a metadata snapshot from the leader (this node was behind its log)"
                );
                self.conf_changed = false;
                self.fail_pending_through(self.applied);
            }
            let committed = ready.take_committed_entries();
            self.apply(committed)?;
            self.raw.mut_store().append(ready.entries()).await?;
            if let Some(hard_state) = ready.hs() {
                self.raw.mut_store().set_hard_state(hard_state.clone())?;
            }
            // Votes and append acknowledgements: durable from here on.
            self.send(ready.take_persisted_messages());
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit)?;
            }
            self.send(light.take_messages());
            self.apply(light.take_committed_entries())?;
            self.raw.advance_apply_to(self.applied);
            self.maybe_snapshot().await?;
        }
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            self.transport.send(message.to, message);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), RaftNodeError> {
        for entry in entries {
            assert_eq!(entry.index, self.applied + 1, "entries are applied in order, once");
            assert!(
                entry.index <= self.raw.store().last_index_now(),
                "an entry is applied only once durable here"
            );
            match entry.get_entry_type() {
                // An empty normal entry is a new leader's no-op.
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => self.machine.apply(entry.index, &entry.data),
                EntryType::EntryConfChange => {
                    let mut change = ConfChange::default();
                    change.merge_from_bytes(&entry.data).map_err(|source| {
                        RaftNodeError::BadConfChange { index: entry.index, source }
                    })?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.raw.mut_store().set_conf_state(conf_state);
                    self.conf_changed = true;
                }
                EntryType::EntryConfChangeV2 => {
                    let mut change = ConfChangeV2::default();
                    change.merge_from_bytes(&entry.data).map_err(|source| {
                        RaftNodeError::BadConfChange { index: entry.index, source }
                    })?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.raw.mut_store().set_conf_state(conf_state);
                    self.conf_changed = true;
                }
            }
            self.applied = entry.index;
            if let Some(pending) = self.pending.remove(&entry.index) {
                let outcome = if pending.term == entry.term {
                    Ok(entry.index)
                } else {
                    Err(ProposeError::Overwritten)
                };
                // The proposer may have stopped waiting; nothing to tell.
                let _ignored = pending.reply.send(outcome);
            }
        }
        Ok(())
    }

    /// Answers `Unknown` to the proposals at or below `index`: a snapshot
    /// replaced what this node knew of them.
    fn fail_pending_through(&mut self, index: u64) {
        let later = self.pending.split_off(&(index + 1));
        for (_, pending) in std::mem::replace(&mut self.pending, later) {
            // The proposer may have stopped waiting; nothing to tell.
            let _ignored = pending.reply.send(Err(ProposeError::Unknown));
        }
    }

    /// Snapshots the state machine once the log past the last snapshot
    /// holds `snapshot_entries_max` applied entries, so the log (and the
    /// in-memory mirror of it) stays bounded; and after every membership
    /// change.
    ///
    /// Why after a membership change: a node added to the quorum starts
    /// with an empty store that names no voters (a broker joining through
    /// seeds). It must get the configuration from a snapshot — the log's
    /// entries from index 1 hold only changes relative to the bootstrap
    /// configuration, which is in the bootstrap snapshot alone, so
    /// applying them to an empty one fails ("removed all voters") — and
    /// raft-rs refuses a snapshot whose configuration does not name the
    /// receiver. Compacting once the change that added it is applied does
    /// both: the leader no longer has the entries from index 1, so it
    /// sends its snapshot, and that snapshot's configuration names the
    /// new node. Membership changes are rare and the metadata is small.
    async fn maybe_snapshot(&mut self) -> Result<(), RaftNodeError> {
        let snapshot_index = self.raw.store().snapshot_index();
        let due = self.applied - snapshot_index >= self.snapshot_entries_max;
        let conf_changed = self.conf_changed && self.applied > snapshot_index;
        if !due && !conf_changed {
            return Ok(());
        }
        let data = self.machine.snapshot();
        self.raw.mut_store().compact(self.applied, data).await?;
        self.conf_changed = false;
        Ok(())
    }

    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this node knows of, if any.
    pub fn leader_id(&self) -> Option<u64> {
        let leader = self.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    pub fn state_machine(&self) -> &S {
        &self.machine
    }
}

impl<T: Transport, S: StateMachine> Drop for RaftNode<T, S> {
    /// Proposals still waiting learn that their outcome is unknown
    /// (they may commit under the next leader).
    fn drop(&mut self) {
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ignored = pending.reply.send(Err(ProposeError::Unknown));
        }
    }
}
