//! The Raft task: one per broker, on shard 0. It drives this broker's
//! `RaftNode` (voter or learner) with ticks and the messages peers send,
//! applies committed metadata records to the broker's `MetadataState`,
//! publishes each new state to the `ClusterHandle`, and — while this node
//! leads the quorum — acts as the controller: it answers broker
//! heartbeats (registering, unfencing), fences brokers silent past their
//! session, adds registered brokers to the quorum as learners, and turns
//! admin requests into records (placing new partitions).
//!
//! Everything here runs on one task and never blocks: proposals are
//! handed to raft and their outcome awaited by small spawned tasks;
//! messages leave through `Peers` threads.

use super::config::ClusterConfig;
use super::election::{self, Eligibility};
use super::handle::{AdminCommand, AdminError, ClusterHandle, ClusterView, Command};
use super::metadata::limits::PRODUCER_ID_BLOCK_SIZE_MAX;
use super::metadata::{
    BrokerId, BrokerRegistration, ConfigEntry, IncarnationId, MetadataError, MetadataRecord,
    MetadataState, Partition, PartitionChange, ProducerIdBlock, Topic, TopicCreation, TopicId,
};
use super::placement::{place, BrokerLoad, PlacementRequest};
use super::raft_node::{ProposeError, RaftNode, RaftNodeConfig, StateMachine, Transport};
use super::{operator, settings};
use crate::protocol::*;
use crate::runtime;
use futures::FutureExt;
use mamba_engine::Engine;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Message as RaftMessage};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cluster setting that says the first leader adopted the topics its
/// data directory held before the cluster existed (a single-node broker's
/// data directory opened as a one-node cluster). Until it is set no
/// broker removes a local topic the metadata does not name.
pub(crate) const BOOTSTRAPPED_SETTING: &str = "cluster.bootstrapped";

/// The Raft log's own topic: local to every broker, never in the metadata.
pub(crate) const METADATA_TOPIC: &str = super::raft_store::METADATA_TOPIC;

/// How long a proposal may take to commit before its caller hears
/// `NoQuorum`.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A controller duty is proposed again only after this long without the
/// state showing it done (a lost proposal is retried; a slow one is not
/// duplicated).
const DUTY_RETRY: Duration = Duration::from_secs(2);

/// The replication factor of topics that name none (fewer when fewer
/// brokers are alive).
const DEFAULT_REPLICATION_FACTOR: u32 = 3;

/// How often partitions move back to their preferred leaders.
const PREFERRED_LEADER_INTERVAL: Duration = Duration::from_secs(5);

/// Refusals remembered for proposers to collect.
const REFUSALS_MAX: usize = 1024;

/// The metadata state, as raft's state machine. Records the index each
/// refused record had, so its proposer can say why.
struct MetadataMachine {
    state: MetadataState,
    refusals: Rc<RefCell<BTreeMap<u64, MetadataError>>>,
    /// The index at which each broker's current registration applied: it
    /// has caught up once it applied that far.
    registered_at: HashMap<BrokerId, u64>,
}

impl StateMachine for MetadataMachine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        let outcome = MetadataRecord::decode(data).map_err(|e| e.to_string()).and_then(|record| {
            let registered = match &record {
                MetadataRecord::RegisterBroker(r) => Some(r.broker_id),
                _ => None,
            };
            self.state.apply(index, &record).map_err(|e| {
                let mut refusals = self.refusals.borrow_mut();
                refusals.insert(index, e.clone());
                while refusals.len() > REFUSALS_MAX {
                    refusals.pop_first();
                }
                e.to_string()
            })?;
            if let Some(id) = registered {
                self.registered_at.insert(id, index);
            }
            Ok(())
        });
        if let Err(reason) = outcome {
            // Every broker refuses it alike: a no-op in the log.
            tracing::debug!(index, %reason, "metadata record refused");
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    fn restore(&mut self, data: &[u8]) {
        match MetadataState::restore(data) {
            Ok(state) => {
                self.state = state;
                self.registered_at.clear();
            }
            // The store checked the snapshot's checksum; a state that does
            // not restore is a bug or a newer format: keep what we have
            // and say so loudly.
            Err(e) => tracing::error!(error = %e, "cannot restore a metadata snapshot"),
        }
    }
}

/// Raft's outgoing messages, collected during a Ready and sent together.
#[derive(Clone, Default)]
struct Outbox {
    messages: Rc<RefCell<Vec<RaftMessage>>>,
}

impl Transport for Outbox {
    fn send(&self, _to: u64, message: RaftMessage) {
        self.messages.borrow_mut().push(message);
    }
}

/// A controller duty, for `DUTY_RETRY`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Duty {
    Init,
    Adopt,
    Register(BrokerId, IncarnationId),
    Unfence(BrokerId, IncarnationId),
    Fence(BrokerId, IncarnationId),
    AddLearner(u64),
    /// A partition change at the partition epoch it starts from.
    ChangePartition(TopicId, u32, u32),
    /// Standing operator work (`operator::Work::Other`).
    Operator(String),
    RemoveLearner(u64),
}

pub(crate) struct Controller {
    node: RaftNode<Outbox, MetadataMachine>,
    outbox: Outbox,
    handle: Arc<ClusterHandle>,
    engine: Engine,
    config: ClusterConfig,
    refusals: Rc<RefCell<BTreeMap<u64, MetadataError>>>,
    /// When this leader last heard from each broker (reset on election:
    /// the session clock for fencing).
    last_heartbeat: HashMap<BrokerId, Instant>,
    /// The registered run of each broker this leader really heard from,
    /// and when: tells a second broker with the same id from a restart.
    heard: HashMap<BrokerId, (IncarnationId, Instant)>,
    duties: HashMap<Duty, Instant>,
    was_leader: bool,
    published: (u64, Option<u64>, u64),
    /// The applied index the last elections pass saw, and when the last
    /// preferred-leader pass ran.
    elected_at: u64,
    balanced_at: Instant,
    /// What decided preferred leaders at the last preferred-leader pass
    /// (primaries, drained brokers): a change runs the next pass at once.
    placement_seen: u64,
    /// The quorum leader this node last heard from, and when: a new
    /// controller starts that broker's session then, not at its election
    /// (it was elected because that leader went silent; its own session
    /// had been running since).
    leader_heard: Option<(u64, Instant)>,
}

impl Controller {
    pub(crate) async fn open(
        engine: Engine,
        handle: Arc<ClusterHandle>,
    ) -> Result<Controller, super::raft_node::RaftNodeError> {
        let config = handle.config.clone();
        let refusals = Rc::new(RefCell::new(BTreeMap::new()));
        let machine = MetadataMachine {
            state: MetadataState::default(),
            refusals: refusals.clone(),
            registered_at: HashMap::new(),
        };
        let outbox = Outbox::default();
        let node_config = RaftNodeConfig {
            id: u64::from(config.node_id),
            voters_initial: if config.is_initial_voter() {
                config.initial_voter_ids()
            } else {
                Vec::new()
            },
            election_ticks: config.election_ticks,
            heartbeat_ticks: config.heartbeat_ticks,
            snapshot_entries_max: config.snapshot_entries_max,
        };
        let node = RaftNode::open(engine.clone(), &node_config, outbox.clone(), machine).await?;
        let mut controller = Controller {
            node,
            outbox,
            handle,
            engine,
            config,
            refusals,
            last_heartbeat: HashMap::new(),
            heard: HashMap::new(),
            duties: HashMap::new(),
            was_leader: false,
            published: (u64::MAX, None, 0),
            elected_at: u64::MAX,
            balanced_at: Instant::now(),
            placement_seen: 0,
            leader_heard: None,
        };
        // Apply what this node's own log holds as committed before the
        // broker serves (`Cluster::start` returns once this did): else a
        // restarted broker answers "unknown topic" for its own topics until
        // the Raft task's first tick, or a leader's first message.
        controller.node.handle_ready().await?;
        controller.flush();
        controller.publish();
        Ok(controller)
    }

    fn state(&self) -> &MetadataState {
        &self.node.state_machine().state
    }

    fn me(&self) -> BrokerId {
        BrokerId(self.config.node_id)
    }

    /// Runs until the command channel closes (the broker stops).
    pub(crate) async fn run(mut self, commands: async_channel::Receiver<Command>) {
        let tick = Duration::from_millis(self.config.raft_tick_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let received = futures::select! {
                command = commands.recv().fuse() => Some(command),
                () = runtime::sleep(wait).fuse() => None,
            };
            match received {
                Some(Ok(command)) => self.on_command(command),
                Some(Err(_closed)) => break,
                None => {}
            }
            while let Ok(command) = commands.try_recv() {
                self.on_command(command);
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + tick;
                self.duties();
            }
            if let Err(e) = self.node.handle_ready().await {
                tracing::error!(error = %e, "the metadata log failed; this broker stops following the cluster");
                self.handle.set_fatal(format!("the metadata log failed: {e}"));
                break;
            }
            self.flush();
            self.publish();
            // Leaders for what the last records changed (a broker fenced)
            // at once, not at the next tick.
            if self.node.is_leader() && self.node.applied_index() != self.elected_at {
                self.elections();
            }
        }
        self.handle.peers.clear();
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Raft(messages) => {
                if let Some(leader) = self
                    .node
                    .leader_id()
                    .filter(|id| !self.node.is_leader() || *id != u64::from(self.config.node_id))
                {
                    if messages.iter().any(|m| m.from == leader) {
                        self.leader_heard = Some((leader, Instant::now()));
                    }
                }
                for message in messages {
                    if let Err(e) = self.node.step(message) {
                        tracing::debug!(error = %e, "raft message not taken");
                    }
                }
            }
            Command::Heartbeat(request, reply) => {
                let _gone = reply.send(self.on_heartbeat(request));
            }
            Command::Admin(command, reply) => self.on_admin(command, reply),
            Command::Status(reply) => {
                let _gone = reply.send(self.status());
            }
            Command::AllocateProducerIds(broker_id, reply) => {
                self.allocate_producer_ids(broker_id, reply);
            }
            Command::AlterPartition(request, reply) => self.alter_partition(request, reply),
        }
    }

    /// Sends what raft produced, each message to its node's cluster port.
    fn flush(&mut self) {
        let messages = std::mem::take(&mut *self.outbox.messages.borrow_mut());
        if messages.is_empty() {
            return;
        }
        let mut by_node: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for m in messages {
            match m.write_to_bytes() {
                Ok(bytes) => by_node.entry(m.to).or_default().push(bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
            }
        }
        let cluster_id = self.state().cluster_id().unwrap_or_default().to_string();
        for (to, messages) in by_node {
            let Some(address) = self.address_of(to) else {
                tracing::debug!(to, "no address for a raft peer yet");
                self.node.report_unreachable(to);
                continue;
            };
            let request = RaftMessagesRequest {
                cluster_id: cluster_id.clone(),
                from: u64::from(self.config.node_id),
                messages,
            };
            self.handle.peers.run(
                to,
                &address,
                Box::new(move |connection| {
                    let Ok(connection) = connection else { return };
                    let ignore = crate::client::Waiter::Callback(Box::new(|_| {}));
                    if let Err(e) = connection.send_with(&request, &[], Some(ignore)) {
                        tracing::debug!(to, error = %e, "raft messages not sent");
                    }
                }),
            );
        }
    }

    /// As the handle says, from the state applied here (the published
    /// view may be one Ready behind).
    fn address_of(&self, node_id: u64) -> Option<String> {
        self.handle.address_in(self.state(), node_id)
    }

    /// Replaces the handle's view when anything it shows changed.
    fn publish(&mut self) {
        let key = (self.node.applied_index(), self.node.leader_id(), self.node.term());
        if key == self.published {
            return;
        }
        self.published = key;
        self.handle.publish(ClusterView {
            metadata: Arc::new(self.state().clone()),
            leader_id: self.node.leader_id(),
            term: self.node.term(),
        });
    }

    fn leader_address(&self) -> Option<(u64, String)> {
        let leader = self.node.leader_id()?;
        Some((leader, self.address_of(leader)?))
    }

    /// Proposes `record` and spawns the wait for its outcome.
    fn propose(
        &mut self,
        record: MetadataRecord,
        reply: Option<futures::channel::oneshot::Sender<Result<(), AdminError>>>,
    ) {
        let committed = self.node.propose(record.encode());
        let refusals = self.refusals.clone();
        let leader = self.leader_address();
        runtime::spawn(async move {
            let outcome = finish(committed, refusals, leader).await;
            if let Some(reply) = reply {
                let _gone = reply.send(outcome);
            }
        })
        .detach();
    }

    /// Proposes a duty's record unless it was proposed lately.
    fn propose_duty(&mut self, duty: Duty, record: MetadataRecord) {
        let now = Instant::now();
        if self.duties.get(&duty).is_some_and(|at| now.duration_since(*at) < DUTY_RETRY) {
            return;
        }
        self.duties.insert(duty, now);
        self.propose(record, None);
    }

    fn on_heartbeat(&mut self, request: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        let cluster_id = self.state().cluster_id().unwrap_or_default().to_string();
        let answer = |code: ErrorCode, message: String, fenced: bool, this: &Self| {
            let (leader_id, address) = match this.leader_address() {
                Some((id, address)) => (Some(id), address),
                None => (this.node.leader_id(), String::new()),
            };
            BrokerHeartbeatResponse {
                error_code: code.as_u16(),
                message,
                cluster_id: cluster_id.clone(),
                leader_id,
                leader_cluster_address: address,
                fenced,
            }
        };
        if !self.node.is_leader() {
            return answer(ErrorCode::NotController, "not the controller".into(), true, self);
        }
        if !request.cluster_id.is_empty()
            && !cluster_id.is_empty()
            && request.cluster_id != cluster_id
        {
            let message = format!(
                "broker {} belongs to cluster {}, this is cluster {cluster_id}: its data directory is another cluster's",
                request.broker_id, request.cluster_id
            );
            return answer(ErrorCode::ClusterIdMismatch, message, true, self);
        }
        if cluster_id.is_empty() {
            return answer(
                ErrorCode::NoQuorum,
                "the cluster is being initialized".into(),
                true,
                self,
            );
        }
        let id = BrokerId(request.broker_id);
        let incarnation = IncarnationId(request.incarnation_id);
        let now = Instant::now();
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        let current = self.state().broker(id).cloned();
        match current {
            Some(b) if b.incarnation_id == incarnation => {
                self.last_heartbeat.insert(id, now);
                self.heard.insert(id, (incarnation, now));
                let caught_up = self
                    .node
                    .state_machine()
                    .registered_at
                    .get(&id)
                    .is_none_or(|at| request.metadata_applied_index >= *at);
                if request.want_shutdown {
                    // A controlled shutdown: fenced now, its leaderships
                    // moved by the next elections; never unfenced again.
                    if !b.fenced {
                        tracing::info!(broker = %id, "controlled shutdown: fencing");
                        self.propose_duty(
                            Duty::Fence(id, incarnation),
                            MetadataRecord::FenceBroker {
                                broker_id: id,
                                incarnation_id: incarnation,
                            },
                        );
                    }
                    return answer(ErrorCode::None, String::new(), true, self);
                }
                if b.fenced && caught_up {
                    self.propose_duty(
                        Duty::Unfence(id, incarnation),
                        MetadataRecord::UnfenceBroker {
                            broker_id: id,
                            incarnation_id: incarnation,
                        },
                    );
                }
                answer(ErrorCode::None, String::new(), b.fenced, self)
            }
            // Another run of this id heartbeat lately (really: not the
            // session a new controller grants everyone): a second broker
            // with the same id, not a restart.
            Some(b)
                if self.heard.get(&id).is_some_and(|(heard, at)| {
                    *heard == b.incarnation_id && now.duration_since(*at) < 2 * interval
                }) =>
            {
                let heard_ms =
                    self.heard.get(&id).map_or(0, |(_, at)| now.duration_since(*at).as_millis());
                let message = format!(
                    "node id {id} is in use by a live broker at {} (client {}; heard {heard_ms} ms ago)",
                    b.cluster_address, b.client_address
                );
                answer(ErrorCode::DuplicateBrokerId, message, true, self)
            }
            _ => {
                let registration = BrokerRegistration {
                    broker_id: id,
                    incarnation_id: incarnation,
                    client_address: request.client_address,
                    cluster_address: request.cluster_address,
                    http_address: request.http_address,
                    rack: request.rack,
                };
                self.last_heartbeat.insert(id, now);
                self.propose_duty(
                    Duty::Register(id, incarnation),
                    MetadataRecord::RegisterBroker(registration),
                );
                answer(ErrorCode::None, String::new(), true, self)
            }
        }
    }

    /// What the leader does on every tick.
    fn duties(&mut self) {
        let leader = self.node.is_leader();
        if leader && !self.was_leader {
            // A new controller has heard from no one yet: every broker
            // gets a full session from now.
            let now = Instant::now();
            let ids: Vec<BrokerId> = self.state().brokers().map(|b| b.id).collect();
            self.last_heartbeat = ids.into_iter().map(|id| (id, now)).collect();
            // But the previous controller: silent since this node last
            // heard from it, which is why this node stood.
            if let Some((old, heard_at)) = self.leader_heard.take() {
                if let Some(id) = u32::try_from(old).ok().map(BrokerId) {
                    if old != u64::from(self.config.node_id)
                        && self.last_heartbeat.contains_key(&id)
                    {
                        self.last_heartbeat.insert(id, heard_at);
                    }
                }
            }
            self.duties.clear();
            tracing::info!(term = self.node.term(), "leading the metadata quorum");
        }
        self.was_leader = leader;
        if !leader {
            return;
        }
        if self.state().cluster_id().is_none() {
            let cluster_id = new_cluster_id();
            self.propose_duty(Duty::Init, MetadataRecord::InitCluster { cluster_id });
            return;
        }
        if self.state().setting(BOOTSTRAPPED_SETTING).is_none() {
            self.adopt_local_topics();
        }
        // Fence brokers silent past their session.
        let session = Duration::from_millis(self.config.session_timeout_ms);
        let now = Instant::now();
        let silent: Vec<(BrokerId, IncarnationId)> = self
            .state()
            .brokers()
            .filter(|b| !b.fenced)
            .filter(|b| {
                self.last_heartbeat.get(&b.id).is_none_or(|at| now.duration_since(*at) >= session)
            })
            .map(|b| (b.id, b.incarnation_id))
            .collect();
        for (id, incarnation) in silent {
            tracing::info!(broker = %id, "no heartbeat within the session: fencing");
            self.propose_duty(
                Duty::Fence(id, incarnation),
                MetadataRecord::FenceBroker { broker_id: id, incarnation_id: incarnation },
            );
        }
        self.elections();
        // Every registered broker follows the log: as a voter or a learner.
        let conf = self.node.conf_state().clone();
        let missing: Vec<u64> = self
            .state()
            .brokers()
            .map(|b| u64::from(b.id.0))
            .filter(|id| !conf.voters.contains(id) && !conf.learners.contains(id))
            .collect();
        // And only those: a broker the cluster forgot (decommissioned)
        // leaves the log's learners.
        let forgotten: Vec<u64> = conf
            .learners
            .iter()
            .copied()
            .filter(|id| {
                u32::try_from(*id).ok().and_then(|id| self.state().broker(BrokerId(id))).is_none()
            })
            .collect();
        for node_id in forgotten {
            self.change_membership(
                Duty::RemoveLearner(node_id),
                ConfChangeType::RemoveNode,
                node_id,
            );
        }
        if let Some(node_id) = missing.first().copied() {
            self.change_membership(
                Duty::AddLearner(node_id),
                ConfChangeType::AddLearnerNode,
                node_id,
            );
        }
    }

    /// Proposes a learner change unless it was proposed lately.
    fn change_membership(&mut self, duty: Duty, change_type: ConfChangeType, node_id: u64) {
        let now = Instant::now();
        if self.duties.get(&duty).is_some_and(|at| now.duration_since(*at) < DUTY_RETRY) {
            return;
        }
        self.duties.insert(duty, now);
        let change = ConfChange { change_type, node_id, ..Default::default() };
        let applied = self.node.propose_conf_change(change);
        runtime::spawn(async move {
            if let Err(e) = applied.await {
                tracing::debug!(node_id, ?change_type, error = %e, "a learner change");
            }
        })
        .detach();
    }

    /// The first leader of a cluster made from a data directory that held
    /// topics (a single-node broker before clusters) puts them in the
    /// metadata, on this broker, then marks the cluster bootstrapped.
    fn adopt_local_topics(&mut self) {
        let me = self.me();
        if self.state().broker(me).is_none() {
            return; // registers first, through its own heartbeat
        }
        let now = Instant::now();
        if self.duties.get(&Duty::Adopt).is_some_and(|at| now.duration_since(*at) < DUTY_RETRY) {
            return;
        }
        self.duties.insert(Duty::Adopt, now);
        let local = self.engine.list_topics();
        for meta in local {
            if meta.name == METADATA_TOPIC || self.state().topic(&meta.name).is_some() {
                continue;
            }
            let partition = Partition {
                replicas: vec![me],
                leader: Some(me),
                leader_epoch: 0,
                partition_epoch: 0,
                isr: vec![me],
            };
            let configs = crate::topic_config::entries(&meta.config)
                .into_iter()
                .map(|c| ConfigEntry { name: c.name, value: c.value })
                .collect();
            tracing::info!(topic = %meta.name, partitions = meta.config.partitions, "adopting a topic of this data directory into the cluster");
            let record = MetadataRecord::CreateTopic(TopicCreation {
                name: meta.name.clone(),
                topic_id: new_topic_id(),
                configs,
                partitions: vec![partition; meta.config.partitions as usize],
            });
            self.propose(record, None);
        }
        // The producers this directory's broker served keep their ids in
        // the partitions' producer state: no block may hand those out again.
        let reserved_end = match self.engine.producer_ids_reserved_end() {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this data directory's producer ids; bootstrap retried");
                return;
            }
        };
        let mut start = self.state().next_producer_id();
        while start < reserved_end {
            let size = (reserved_end - start).min(PRODUCER_ID_BLOCK_SIZE_MAX);
            self.propose(MetadataRecord::AllocateProducerIds { broker_id: me, start, size }, None);
            start += size;
        }
        self.propose(
            MetadataRecord::SetClusterSetting {
                name: BOOTSTRAPPED_SETTING.into(),
                value: Some("true".into()),
            },
            None,
        );
    }

    /// Why this node cannot make a metadata change now, if it cannot.
    fn refuse_change(&self) -> Option<AdminError> {
        if !self.node.is_leader() {
            return Some(AdminError::NotController { leader: self.leader_address() });
        }
        if self.state().cluster_id().is_none() {
            return Some(AdminError::NotReady);
        }
        None
    }

    fn on_admin(
        &mut self,
        command: AdminCommand,
        reply: futures::channel::oneshot::Sender<Result<(), AdminError>>,
    ) {
        if let Some(refusal) = self.refuse_change() {
            let _gone = reply.send(Err(refusal));
            return;
        }
        // A new controller's own broker registers and is unfenced through
        // its first heartbeats. Until then a one-node cluster has no alive
        // broker to place partitions on, and a topic created at once after
        // `mamba serve` printed "ready" would be refused ("0 are alive"):
        // wait for it as for an election instead.
        if self.state().broker(self.me()).is_none_or(|b| b.fenced) {
            let _gone = reply.send(Err(AdminError::NotReady));
            return;
        }
        match command {
            AdminCommand::AddVoter { node_id } | AdminCommand::RemoveVoter { node_id } => {
                let add = matches!(command, AdminCommand::AddVoter { .. });
                self.change_voters(node_id, add, reply);
            }
            command => match self.record_for(command) {
                Ok(Some(record)) => self.propose(record, Some(reply)),
                Ok(None) => drop(reply.send(Ok(()))),
                Err(e) => drop(reply.send(Err(e))),
            },
        }
    }

    /// Reserves the next `BLOCK_SIZE` producer ids for `broker_id`: the
    /// block starts where the applied log's last one ended. Two requests in
    /// one commit window ask for the same start; the second is refused when
    /// applied, as `busy`, and its broker asks again.
    fn allocate_producer_ids(
        &mut self,
        broker_id: BrokerId,
        reply: futures::channel::oneshot::Sender<Result<ProducerIdBlock, AdminError>>,
    ) {
        if let Some(refusal) = self.refuse_change() {
            let _gone = reply.send(Err(refusal));
            return;
        }
        let block = ProducerIdBlock {
            broker_id,
            start: self.state().next_producer_id(),
            size: super::producer_ids::BLOCK_SIZE,
        };
        let record =
            MetadataRecord::AllocateProducerIds { broker_id, start: block.start, size: block.size };
        if let Err(e) = self.state().check(&record) {
            let _gone = reply.send(Err(refused(e)));
            return;
        }
        let committed = self.node.propose(record.encode());
        let refusals = self.refusals.clone();
        let leader = self.leader_address();
        runtime::spawn(async move {
            let outcome = finish(committed, refusals, leader).await.map(|()| block);
            let _gone = reply.send(outcome);
        })
        .detach();
    }

    fn change_voters(
        &mut self,
        node_id: u64,
        add: bool,
        reply: futures::channel::oneshot::Sender<Result<(), AdminError>>,
    ) {
        let refuse =
            |message: String| AdminError::Refused { code: ErrorCode::InvalidRequest, message };
        let conf = self.node.conf_state();
        let is_voter = conf.voters.contains(&node_id);
        let known =
            u32::try_from(node_id).ok().and_then(|id| self.state().broker(BrokerId(id))).is_some();
        let problem = if add && is_voter {
            Some(format!("node {node_id} is a voter already"))
        } else if add && !known {
            Some(format!("node {node_id} is not a registered broker: start it with --seeds first"))
        } else if !add && !is_voter {
            Some(format!("node {node_id} is not a voter"))
        } else if !add && conf.voters.len() == 1 {
            Some("the last voter cannot be removed".to_string())
        } else {
            None
        };
        if let Some(message) = problem {
            let _gone = reply.send(Err(refuse(message)));
            return;
        }
        let change = ConfChange {
            change_type: if add { ConfChangeType::AddNode } else { ConfChangeType::RemoveNode },
            node_id,
            ..Default::default()
        };
        let applied = self.node.propose_conf_change(change);
        let leader = self.leader_address();
        runtime::spawn(async move {
            let outcome = match with_timeout(applied).await {
                Ok(_) => Ok(()),
                Err(e) => Err(propose_error(e, leader)),
            };
            let _gone = reply.send(outcome);
        })
        .detach();
    }

    /// The record an admin command asks for, checked against the state
    /// (`None`: nothing to do).
    fn record_for(&self, command: AdminCommand) -> Result<Option<MetadataRecord>, AdminError> {
        let state = self.state();
        let topic_of = |name: &str| {
            state.topic(name).ok_or_else(|| AdminError::Refused {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("unknown topic {name:?}"),
            })
        };
        let record = match command {
            AdminCommand::CreateTopic { name, partitions, replication_factor, configs } => {
                let replication_factor = match replication_factor {
                    0 => self.default_replication_factor(),
                    n => n,
                };
                let partitions = self.place(partitions, replication_factor)?;
                MetadataRecord::CreateTopic(TopicCreation {
                    name,
                    topic_id: new_topic_id(),
                    configs,
                    partitions,
                })
            }
            AdminCommand::EnsureTopic { name, partitions, configs } => {
                if state.topic(&name).is_some() {
                    return Ok(None);
                }
                let partitions = self.place(partitions, self.default_replication_factor())?;
                MetadataRecord::CreateTopic(TopicCreation {
                    name,
                    topic_id: new_topic_id(),
                    configs,
                    partitions,
                })
            }
            AdminCommand::DeleteTopic { name } => {
                MetadataRecord::DeleteTopic { topic_id: topic_of(&name)?.id }
            }
            AdminCommand::AlterTopicConfigs { name, set, remove } => {
                MetadataRecord::AlterTopicConfigs { topic_id: topic_of(&name)?.id, set, remove }
            }
            AdminCommand::CreatePartitions { name, partition_count } => {
                let topic = topic_of(&name)?;
                let current = topic.partitions.len() as u32;
                if partition_count <= current {
                    let why = mamba_engine::EngineError::PartitionsNotIncreased {
                        topic: name,
                        partition_count: current,
                        requested: partition_count,
                    };
                    return Err(AdminError::Refused {
                        code: ErrorCode::InvalidPartitions,
                        message: why.to_string(),
                    });
                }
                let replication_factor =
                    topic.partitions.first().map_or(1, |p| p.replicas.len() as u32);
                let partitions = self.place(partition_count - current, replication_factor)?;
                MetadataRecord::CreatePartitions { topic_id: topic.id, partitions }
            }
            AdminCommand::Operator(action) => {
                let voters = self.node.conf_state().voters.clone();
                let may_lead = |id: BrokerId| state.broker(id).is_some_and(|b| !b.fenced);
                let drained = |id: BrokerId| settings::is_drained(state, id);
                let primary = settings::cluster_primary(state);
                let who = |t: &Topic| Eligibility::of_topic(t, primary, &may_lead, &drained);
                match operator::record_for(state, &voters, action, &who)? {
                    Some(record) => record,
                    None => return Ok(None),
                }
            }
            AdminCommand::AddVoter { .. } | AdminCommand::RemoveVoter { .. } => {
                unreachable!("membership changes are not records")
            }
        };
        state.check(&record).map_err(refused)?;
        Ok(Some(record))
    }

    /// A topic's replication factor unless it names one: 3, or every
    /// alive broker when fewer are alive.
    fn default_replication_factor(&self) -> u32 {
        let alive = self.state().brokers().filter(|b| b.is_alive()).count() as u32;
        alive.clamp(1, DEFAULT_REPLICATION_FACTOR)
    }

    /// Replicas for `count` new partitions over the alive brokers.
    fn place(&self, count: u32, replication_factor: u32) -> Result<Vec<Partition>, AdminError> {
        let state = self.state();
        let alive: Vec<(BrokerId, Option<String>)> =
            state.brokers().filter(|b| b.is_alive()).map(|b| (b.id, b.rack.clone())).collect();
        let load: BTreeMap<BrokerId, BrokerLoad> = state
            .replica_load()
            .into_iter()
            .map(|(id, (replicas, leaders))| (id, BrokerLoad { replicas, leaders }))
            .collect();
        let placed =
            place(PlacementRequest { partition_count: count, replication_factor }, &alive, &load)
                .map_err(|e| AdminError::Refused {
                code: ErrorCode::InvalidConfig,
                message: e.to_string(),
            })?;
        Ok(placed
            .into_iter()
            .map(|replicas| Partition {
                leader: replicas.first().copied(),
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect())
    }

    /// New leaders where a leader may not lead (fenced) or is drained,
    /// fenced brokers out of in-sync sets, the next step of each move and
    /// decommission; and, every `PREFERRED_LEADER_INTERVAL` or when the
    /// primaries or drained brokers changed, each partition back to its
    /// preferred leader (active-active balance, or the topic's primary:
    /// failback) when that one is in sync.
    fn elections(&mut self) {
        let applied = self.node.applied_index();
        let placement = self.placement_key();
        let balance = self.balanced_at.elapsed() >= PREFERRED_LEADER_INTERVAL
            || placement != self.placement_seen;
        if applied == self.elected_at && !balance {
            return;
        }
        self.elected_at = applied;
        if balance {
            self.balanced_at = Instant::now();
            self.placement_seen = placement;
        }
        let mut work = Vec::new();
        {
            let state = self.state();
            let may_lead = |id: BrokerId| state.broker(id).is_some_and(|b| !b.fenced);
            let drained = |id: BrokerId| settings::is_drained(state, id);
            let primary = settings::cluster_primary(state);
            let who = |t: &Topic| Eligibility::of_topic(t, primary, &may_lead, &drained);
            for topic in state.topics() {
                let who = who(topic);
                for (i, p) in topic.partitions.iter().enumerate() {
                    let i = i as u32;
                    let change = election::reelect(topic.id, i, p, &who)
                        .or_else(|| election::drain(topic.id, i, p, &who))
                        .or_else(|| {
                            balance.then(|| election::prefer(topic.id, i, p, &who)).flatten()
                        });
                    if let Some(change) = change {
                        tracing::info!(
                            topic = %topic.name, partition = i, leader = ?change.leader,
                            leader_epoch = change.leader_epoch, isr = ?change.isr,
                            "partition leadership change"
                        );
                        work.push(operator::Work::Partition {
                            topic_id: topic.id,
                            partition: i,
                            from_epoch: p.partition_epoch,
                            record: MetadataRecord::ChangePartition(change),
                        });
                    }
                }
            }
            work.extend(operator::pending(state, &who));
        }
        for w in work {
            match w {
                operator::Work::Partition { topic_id, partition, from_epoch, record } => {
                    if let MetadataRecord::ChangeReplicas(r) = &record {
                        tracing::info!(
                            %topic_id, partition, replicas = ?r.replicas, leader = ?r.change.leader,
                            isr = ?r.change.isr, "partition replica change"
                        );
                    }
                    let duty = Duty::ChangePartition(topic_id, partition, from_epoch);
                    self.propose_duty(duty, record);
                }
                operator::Work::Other { key, record } => {
                    tracing::info!(?record, "operator work");
                    self.propose_duty(Duty::Operator(key), record);
                }
            }
        }
    }

    /// A digest of what decides preferred leaders: the cluster's and each
    /// topic's primary, and the drained brokers.
    fn placement_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let state = self.state();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        state.setting(settings::LEADER_PLACEMENT).hash(&mut hasher);
        for topic in state.topics() {
            topic.configs.get(settings::LEADER_PLACEMENT).hash(&mut hasher);
        }
        for b in state.brokers() {
            settings::is_drained(state, b.id).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// A leader asks to change its partition's in-sync set: applied when it
    /// still leads at the epochs it names, and the new set keeps it and
    /// adds only brokers that may lead.
    fn alter_partition(
        &mut self,
        request: AlterPartitionRequest,
        reply: futures::channel::oneshot::Sender<AlterPartitionResponse>,
    ) {
        let respond = |code: ErrorCode, message: String, p: Option<&Partition>, this: &Self| {
            let (leader_id, leader_cluster_address) = match this.leader_address() {
                Some((id, address)) => (Some(id), address),
                None => (this.node.leader_id(), String::new()),
            };
            AlterPartitionResponse {
                error_code: code.as_u16(),
                message,
                leader_id,
                leader_cluster_address,
                leader_epoch: p.map_or(0, |p| p.leader_epoch),
                partition_epoch: p.map_or(0, |p| p.partition_epoch),
                isr: p.map_or_else(Vec::new, |p| p.isr.iter().map(|id| id.0).collect()),
            }
        };
        if let Some(refusal) = self.refuse_change() {
            let _gone = reply.send(respond(refusal.code(), refusal.to_string(), None, self));
            return;
        }
        let state = self.state();
        let Some(topic) = state.topic(&request.topic) else {
            let message = format!("unknown topic {:?}", request.topic);
            let _gone =
                reply.send(respond(ErrorCode::UnknownTopicOrPartition, message, None, self));
            return;
        };
        let Some(p) = topic.partitions.get(request.partition as usize).cloned() else {
            let message = format!("{}/{} does not exist", request.topic, request.partition);
            let _gone =
                reply.send(respond(ErrorCode::UnknownTopicOrPartition, message, None, self));
            return;
        };
        let asking = BrokerId(request.broker_id);
        if p.leader != Some(asking)
            || p.leader_epoch != request.leader_epoch
            || p.partition_epoch != request.partition_epoch
        {
            let message = format!(
                "{}/{}: broker {asking} at leader epoch {} partition epoch {} is stale (leader {:?}, epochs {} and {})",
                request.topic, request.partition, request.leader_epoch, request.partition_epoch,
                p.leader.map(|id| id.0), p.leader_epoch, p.partition_epoch
            );
            let _gone = reply.send(respond(ErrorCode::FencedLeaderEpoch, message, Some(&p), self));
            return;
        }
        let isr: Vec<BrokerId> = request.isr.iter().map(|id| BrokerId(*id)).collect();
        let joining_fenced = isr
            .iter()
            .find(|id| !p.isr.contains(id) && state.broker(**id).is_none_or(|b| b.fenced));
        if !isr.contains(&asking) || joining_fenced.is_some() {
            let message = format!(
                "{}/{}: in-sync set {:?} must keep the leader and add only unfenced brokers",
                request.topic, request.partition, request.isr
            );
            let _gone = reply.send(respond(ErrorCode::InvalidRequest, message, Some(&p), self));
            return;
        }
        let change = PartitionChange {
            topic_id: topic.id,
            partition: request.partition,
            leader: p.leader,
            isr,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch + 1,
        };
        let record = MetadataRecord::ChangePartition(change.clone());
        if let Err(e) = state.check(&record) {
            let _gone =
                reply.send(respond(ErrorCode::InvalidRequest, e.to_string(), Some(&p), self));
            return;
        }
        tracing::info!(topic = %request.topic, partition = request.partition, isr = ?request.isr, "in-sync set change");
        let committed = self.node.propose(record.encode());
        let refusals = self.refusals.clone();
        let leader = self.leader_address();
        let applied = Partition {
            replicas: p.replicas.clone(),
            leader: change.leader,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
        };
        let (leader_id, leader_cluster_address) =
            leader.clone().map_or((None, String::new()), |(id, a)| (Some(id), a));
        runtime::spawn(async move {
            let outcome = finish(committed, refusals, leader).await;
            let (code, message, p) = match outcome {
                Ok(()) => (ErrorCode::None, String::new(), &applied),
                Err(e) => (e.code(), e.to_string(), &p),
            };
            let _gone = reply.send(AlterPartitionResponse {
                error_code: code.as_u16(),
                message,
                leader_id,
                leader_cluster_address,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: p.isr.iter().map(|id| id.0).collect(),
            });
        })
        .detach();
    }

    fn status(&self) -> ClusterStatusResponse {
        let state = self.state();
        let leader = self.node.is_leader();
        let progress: HashMap<u64, u64> =
            self.node.progress().into_iter().map(|(id, matched, _)| (id, matched)).collect();
        let last = self.node.last_index();
        let conf = self.node.conf_state();
        let mut voters = Vec::new();
        for (ids, learner) in [(&conf.voters, false), (&conf.learners, true)] {
            for id in ids {
                let role = if learner {
                    "learner"
                } else if self.node.leader_id() == Some(*id) {
                    "leader"
                } else {
                    "follower"
                };
                voters.push(VoterStatus {
                    node_id: *id,
                    cluster_address: self.address_of(*id).unwrap_or_default(),
                    role: role.into(),
                    log_lag: progress.get(id).map(|matched| last.saturating_sub(*matched)),
                });
            }
        }
        let now = Instant::now();
        let brokers = state
            .brokers()
            .map(|b| BrokerStatus {
                node_id: b.id.0,
                client_address: b.client_address.clone(),
                cluster_address: b.cluster_address.clone(),
                rack: b.rack.clone(),
                status: super::metadata::broker_status_name(b).into(),
                drained: settings::is_drained(state, b.id),
                last_heartbeat_age_ms: leader
                    .then(|| self.last_heartbeat.get(&b.id))
                    .flatten()
                    .map(|at| now.duration_since(*at).as_millis() as u64),
                partitions_led: state.partitions_led_by(b.id).len() as u32,
                partitions_hosted: state.partitions_hosted_by(b.id).len() as u32,
            })
            .collect();
        let offline_partitions = state
            .offline_partitions()
            .into_iter()
            .map(|tp| OfflinePartition { topic: tp.topic, partition: tp.partition })
            .collect();
        ClusterStatusResponse {
            error_code: 0,
            message: String::new(),
            cluster_id: state.cluster_id().unwrap_or_default().to_string(),
            node_id: u64::from(self.config.node_id),
            leader_id: self.node.leader_id(),
            term: self.node.term(),
            applied_index: self.node.applied_index(),
            voters,
            brokers,
            offline_partitions,
            metadata_digest: state.digest(),
            settings: settings::OPERATOR_SETTINGS
                .iter()
                .filter_map(|(name, _)| {
                    let value = state.setting(name)?.to_string();
                    Some(ClusterSetting { name: name.to_string(), value })
                })
                .collect(),
            moves: super::reassign::moves(state)
                .into_iter()
                .map(|(topic, partition, target)| PartitionMove {
                    replicas: state
                        .topic(&topic)
                        .and_then(|t| t.partitions.get(partition as usize))
                        .map_or_else(Vec::new, |p| p.replicas.iter().map(|id| id.0).collect()),
                    topic,
                    partition,
                    target: target.iter().map(|id| id.0).collect(),
                })
                .collect(),
        }
    }
}

/// Waits for a proposal to commit (bounded) and says how it ended.
async fn finish(
    committed: impl std::future::Future<Output = Result<u64, ProposeError>>,
    refusals: Rc<RefCell<BTreeMap<u64, MetadataError>>>,
    leader: Option<(u64, String)>,
) -> Result<(), AdminError> {
    match with_timeout(committed).await {
        Ok(index) => match refusals.borrow_mut().remove(&index) {
            Some(e) => Err(refused(e)),
            None => Ok(()),
        },
        Err(e) => Err(propose_error(e, leader)),
    }
}

async fn with_timeout(
    committed: impl std::future::Future<Output = Result<u64, ProposeError>>,
) -> Result<u64, ProposeError> {
    futures::select! {
        outcome = committed.fuse() => outcome,
        () = runtime::sleep(COMMIT_TIMEOUT).fuse() => Err(ProposeError::Unknown),
    }
}

fn propose_error(e: ProposeError, leader: Option<(u64, String)>) -> AdminError {
    match e {
        ProposeError::NotLeader { .. } => AdminError::NotController { leader },
        ProposeError::ChangePending => AdminError::Refused {
            code: ErrorCode::Busy,
            message: "another membership change is in progress; retry".into(),
        },
        ProposeError::Overwritten | ProposeError::Unknown => AdminError::NoQuorum(format!(
            "waiting for quorum: the change did not commit within {} s (is a majority of the voters up and reachable?); it may still apply",
            COMMIT_TIMEOUT.as_secs()
        )),
    }
}

fn refused(e: MetadataError) -> AdminError {
    let code = match &e {
        MetadataError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
        MetadataError::UnknownTopic { .. } | MetadataError::UnknownPartition { .. } => {
            ErrorCode::UnknownTopicOrPartition
        }
        MetadataError::TooManyPartitions { .. }
        | MetadataError::NoPartitions { .. }
        | MetadataError::InvalidPartition { .. } => ErrorCode::InvalidPartitions,
        MetadataError::DuplicateSetting { .. } | MetadataError::EmptySettingName => {
            ErrorCode::InvalidConfig
        }
        MetadataError::ProducerIdBlockNotNext { .. } => ErrorCode::Busy,
        _ => ErrorCode::InvalidRequest,
    };
    AdminError::Refused { code, message: e.to_string() }
}

fn new_cluster_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn new_topic_id() -> TopicId {
    TopicId((u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..)))
}
