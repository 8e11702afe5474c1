//! `ClusterHandle`: what the rest of the broker sees of the cluster — the
//! latest applied metadata (a `ClusterView`, replaced whole on change) and
//! the way to the Raft task on shard 0 (commands over a bounded channel).
//! Thread-safe; every shard's handlers share one.

use super::config::ClusterConfig;
use super::metadata::{BrokerId, ConfigEntry, MetadataState, ProducerIdBlock};
use super::peers::Peers;
use super::producer_ids::ProducerIdSource;
use crate::client::{decode_answer, ClientError, Waiter};
use crate::protocol::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    ClusterStatusResponse, ErrorCode, Message, Request,
};
use futures::channel::oneshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// The metadata as this broker last applied it, and what it knows of the
/// quorum's leader.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub metadata: Arc<MetadataState>,
    pub leader_id: Option<u64>,
    pub term: u64,
}

/// The metadata names no such topic or partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownPartition;

impl ClusterView {
    /// The broker that leads `partition` of `topic` and may serve it: its
    /// leader, unless that broker is fenced (then the partition is
    /// offline: `Ok(None)`).
    pub fn serving_leader(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Option<BrokerId>, UnknownPartition> {
        let t = self.metadata.topic(topic).ok_or(UnknownPartition)?;
        let p = t.partitions.get(partition as usize).ok_or(UnknownPartition)?;
        Ok(p.leader.filter(|id| self.metadata.broker(*id).is_some_and(|b| !b.fenced)))
    }
}

impl ClusterView {
    /// A topic's settings as the metadata holds them (settings this
    /// version does not know are skipped, with a warning).
    pub fn topic_config(&self, name: &str) -> Option<mamba_engine::TopicConfig> {
        let topic = self.metadata.topic(name)?;
        let partitions = topic.partitions.len() as u32;
        let mut config = mamba_engine::TopicConfig { partitions, ..Default::default() };
        for (name, value) in &topic.configs {
            let entry = crate::protocol::ConfigEntry { name: name.clone(), value: value.clone() };
            if let Err(e) = crate::topic_config::apply(&mut config, std::slice::from_ref(&entry)) {
                tracing::warn!(topic = %topic.name, error = %e, "a topic setting this broker does not take");
            }
        }
        Some(config)
    }
}

/// A metadata change an operator or client asked for.
#[derive(Debug, Clone)]
pub enum AdminCommand {
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: Vec<ConfigEntry>,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopicConfigs {
        name: String,
        set: Vec<ConfigEntry>,
        remove: Vec<String>,
    },
    CreatePartitions {
        name: String,
        partition_count: u32,
    },
    /// Creates the topic unless it exists; no error either way.
    EnsureTopic {
        name: String,
        partitions: u32,
        configs: Vec<ConfigEntry>,
    },
    AddVoter {
        node_id: u64,
    },
    RemoveVoter {
        node_id: u64,
    },
    /// Failover, failback, transfer-leader, move, decommission, settings.
    Operator(super::operator::OperatorAction),
}

/// Why a metadata change did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Another node leads the quorum (its id and cluster address, when
    /// known): forward there.
    #[error("not the controller (the controller is {})", leader.as_ref().map_or("unknown: no quorum yet".to_string(), |(id, addr)| format!("node {id} at {addr}")))]
    NotController { leader: Option<(u64, String)> },
    /// No majority of voters answers (the text says what waited).
    #[error("{0}")]
    NoQuorum(String),
    /// The quorum has a leader that has not initialized the cluster yet.
    #[error("the cluster is starting; retry")]
    NotReady,
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
}

impl AdminError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::NotController { .. } => ErrorCode::NotController,
            AdminError::NoQuorum(_) | AdminError::NotReady => ErrorCode::NoQuorum,
            AdminError::Refused { code, .. } => *code,
        }
    }
}

/// Work for the Raft task.
pub(crate) enum Command {
    Raft(Vec<raft::eraftpb::Message>),
    Heartbeat(BrokerHeartbeatRequest, oneshot::Sender<BrokerHeartbeatResponse>),
    Admin(AdminCommand, oneshot::Sender<Result<(), AdminError>>),
    Status(oneshot::Sender<ClusterStatusResponse>),
    /// Reserve the next block of producer ids for a broker.
    AllocateProducerIds(BrokerId, oneshot::Sender<Result<ProducerIdBlock, AdminError>>),
    /// A partition leader's in-sync set change.
    AlterPartition(AlterPartitionRequest, oneshot::Sender<AlterPartitionResponse>),
}

/// How long an admin request waits for the quorum to have a leader.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What an admin request hears when no controller was elected while it
/// waited.
fn no_leader_elected() -> AdminError {
    AdminError::NoQuorum(format!(
        "waiting for quorum: no controller elected within {} s (a majority of the voters must be up and reach each other)",
        LEADER_WAIT.as_secs()
    ))
}

/// Commands queued for the Raft task before senders wait.
pub(crate) const COMMANDS_MAX: usize = 4096;

/// This broker's addresses, as it registers them.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub client: String,
    pub cluster: String,
    pub http: String,
}

pub struct ClusterHandle {
    pub(crate) config: ClusterConfig,
    view: RwLock<Arc<ClusterView>>,
    /// Notified whenever the view is replaced.
    pub(crate) view_changed: event_listener::Event,
    pub(crate) commands: async_channel::Sender<Command>,
    pub(crate) peers: Peers,
    addresses: RwLock<Addresses>,
    /// Cluster addresses of nodes met before the metadata names them: the
    /// controllers this broker's heartbeats reached (or were pointed to).
    /// A broker that joins through seeds knows no other node's address
    /// until it has applied the metadata, and it applies the metadata only
    /// by answering the leader's Raft messages: without these it could
    /// never answer, and would never catch up.
    learned_addresses: Mutex<HashMap<u64, String>>,
    producer_ids: ProducerIdSource,
    /// Set when this broker cannot be part of the cluster (another
    /// cluster's data, a duplicate node id): `mamba serve` exits with it.
    fatal: Mutex<Option<String>>,
    pub(crate) fatal_event: event_listener::Event,
    replication: Arc<crate::replication::Replication>,
}

impl ClusterHandle {
    pub(crate) fn new(
        config: ClusterConfig,
    ) -> (Arc<ClusterHandle>, async_channel::Receiver<Command>) {
        let (commands, inbox) = async_channel::bounded(COMMANDS_MAX);
        let handle = ClusterHandle {
            view: RwLock::new(Arc::new(ClusterView::default())),
            view_changed: event_listener::Event::new(),
            commands,
            peers: Peers::default(),
            addresses: RwLock::new(Addresses::default()),
            learned_addresses: Mutex::new(HashMap::new()),
            producer_ids: ProducerIdSource::default(),
            fatal: Mutex::new(None),
            fatal_event: event_listener::Event::new(),
            replication: Arc::new(crate::replication::Replication::new(
                BrokerId(config.node_id),
                config.replication.clone(),
            )),
            config,
        };
        let handle = Arc::new(handle);
        handle.replication.fetchers.set_handle(&handle);
        (handle, inbox)
    }

    pub fn node_id(&self) -> u32 {
        self.config.node_id
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn publish(&self, view: ClusterView) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        self.view_changed.notify(usize::MAX);
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_addresses(&self, addresses: Addresses) {
        *self.addresses.write().unwrap_or_else(|p| p.into_inner()) = addresses;
    }

    /// This broker's side of partition replication.
    pub fn replication(&self) -> &Arc<crate::replication::Replication> {
        &self.replication
    }

    /// Why this broker had to leave the cluster, if it had to.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_fatal(&self, reason: String) {
        tracing::error!(%reason, "this broker cannot serve in the cluster");
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.fatal_event.notify(usize::MAX);
    }

    /// Waits until `fatal` is set.
    pub async fn wait_fatal(&self) -> String {
        loop {
            let listener = self.fatal_event.listen();
            if let Some(reason) = self.fatal() {
                return reason;
            }
            listener.await;
        }
    }

    /// Asks the Raft task; `None` once it stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Applies a metadata change through the quorum's leader, when this
    /// node is it (`NotController` otherwise: forward the request).
    ///
    /// While no leader is known (an election, a cluster starting) it waits
    /// for one, up to `LEADER_WAIT`.
    pub async fn admin(&self, command: AdminCommand) -> Result<(), AdminError> {
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        loop {
            let listener = self.view_changed.listen();
            let outcome = self
                .ask(|reply| Command::Admin(command.clone(), reply))
                .await
                .unwrap_or_else(|| Err(AdminError::NoQuorum("the broker is stopping".into())));
            let leaderless = matches!(
                outcome,
                Err(AdminError::NotController { leader: None } | AdminError::NotReady)
            );
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !leaderless {
                return outcome;
            }
            if left.is_zero() {
                return match outcome {
                    Err(AdminError::NotController { leader: None }) => Err(no_leader_elected()),
                    other => other,
                };
            }
            // The next view (a leader known, or a new term) or the deadline.
            futures::select! {
                () = futures::FutureExt::fuse(listener) => {}
                () = futures::FutureExt::fuse(futures_timer::Delay::new(left)) => {}
            }
        }
    }

    /// An idempotent producer id unique in the cluster, from this
    /// broker's block (a new block from the controller when it ran out).
    pub async fn allocate_producer_id(self: &Arc<Self>) -> Result<u64, AdminError> {
        self.producer_ids.next(self).await
    }

    pub(crate) fn producer_ids(&self) -> &ProducerIdSource {
        &self.producer_ids
    }

    /// Reserves a block of producer ids for `broker_id`, when this node
    /// leads the quorum (`NotController` otherwise).
    pub(crate) async fn allocate_producer_ids_here(
        &self,
        broker_id: u32,
    ) -> Result<ProducerIdBlock, AdminError> {
        self.ask(|reply| Command::AllocateProducerIds(BrokerId(broker_id), reply))
            .await
            .unwrap_or_else(|| Err(AdminError::NoQuorum("the broker is stopping".into())))
    }

    /// A leader's in-sync set change, when this node leads the quorum
    /// (`not controller` otherwise).
    pub(crate) async fn alter_partition_here(
        &self,
        request: AlterPartitionRequest,
    ) -> AlterPartitionResponse {
        self.ask(|reply| Command::AlterPartition(request, reply)).await.unwrap_or_else(|| {
            AlterPartitionResponse {
                error_code: ErrorCode::ShuttingDown.as_u16(),
                message: "the broker is stopping".into(),
                leader_id: None,
                leader_cluster_address: String::new(),
                leader_epoch: 0,
                partition_epoch: 0,
                isr: Vec::new(),
            }
        })
    }

    pub(crate) async fn heartbeat(
        &self,
        request: BrokerHeartbeatRequest,
    ) -> Option<BrokerHeartbeatResponse> {
        self.ask(|reply| Command::Heartbeat(request, reply)).await
    }

    pub async fn status(&self) -> Option<ClusterStatusResponse> {
        self.ask(Command::Status).await
    }

    /// Hands Raft messages to the Raft task; false when it is not taking
    /// any (stopping, or its queue is full: raft retries).
    pub(crate) fn deliver(&self, messages: Vec<raft::eraftpb::Message>) -> bool {
        self.commands.try_send(Command::Raft(messages)).is_ok()
    }

    /// Sends `request` to node `node_id` at its cluster address and decodes
    /// the answer.
    pub(crate) async fn call_peer<R, A>(
        &self,
        node_id: u64,
        address: &str,
        request: R,
    ) -> Result<A, ClientError>
    where
        R: Request + Send + 'static,
        A: Message,
    {
        let (tx, rx) = oneshot::channel();
        self.peers.run(
            node_id,
            address,
            Box::new(move |connection| match connection {
                Ok(connection) => {
                    if let Err(e) = connection.send_with(&request, &[], Some(Waiter::Channel(tx))) {
                        tracing::debug!(error = %e, "a request to a peer failed to go out");
                    }
                }
                Err(e) => {
                    let _no_one_waits = tx.send(Err(e));
                }
            }),
        );
        let frame =
            rx.await.map_err(|_| ClientError::Disconnected { addr: address.to_string() })??;
        decode_answer::<A>(&frame)
    }

    /// The cluster address of `node_id`: as registered, else as a voter,
    /// else as learned from a heartbeat's answer.
    pub fn address_of(&self, node_id: u64) -> Option<String> {
        self.address_in(&self.view().metadata, node_id)
    }

    /// The cluster address of `node_id` as `metadata` registers it, else
    /// as a voter, else as a heartbeat answer named it (a joining broker
    /// knows its controller before its metadata names anyone).
    pub(crate) fn address_in(&self, metadata: &MetadataState, node_id: u64) -> Option<String> {
        let registered = u32::try_from(node_id)
            .ok()
            .and_then(|id| metadata.broker(BrokerId(id)))
            .map(|b| b.cluster_address.clone());
        registered
            .or_else(|| {
                self.config
                    .voters
                    .iter()
                    .find(|v| v.node_id == node_id)
                    .map(|v| v.cluster_address.clone())
            })
            .or_else(|| self.learned_address(node_id))
    }

    /// Remembers where `node_id`'s cluster port is (a controller a
    /// heartbeat reached or was pointed to).
    pub(crate) fn learn_address(&self, node_id: u64, address: &str) {
        if node_id == u64::from(self.config.node_id) || address.is_empty() {
            return;
        }
        // One entry per node id that answered as (or was named) the
        // controller: bounded by the cluster's size.
        let mut learned = self.learned_addresses.lock().unwrap_or_else(|p| p.into_inner());
        learned.insert(node_id, address.to_string());
    }

    pub(crate) fn learned_address(&self, node_id: u64) -> Option<String> {
        self.learned_addresses.lock().unwrap_or_else(|p| p.into_inner()).get(&node_id).cloned()
    }
}
