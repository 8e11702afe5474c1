//! Between brokers, on the cluster port: Raft messages of the metadata
//! quorum and broker heartbeats to its leader (the controller). For
//! operators, on either port: the cluster's status and voter changes.

use super::ApiKey;

/// Raft messages from one node of the metadata quorum to another, each
/// encoded as raft-rs's protobuf `eraftpb::Message` (validated on receipt:
/// size, decoding, and that it names the sender and the receiver).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftMessagesRequest {
    /// The sender's cluster id; empty before it knows one.
    pub cluster_id: String,
    pub from: u64,
    pub messages: Vec<Vec<u8>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftMessagesResponse {
    pub error_code: u16,
    pub message: String,
}

/// A broker tells the controller it is alive, where it listens and how
/// far it has applied the metadata log. The first heartbeat of an
/// incarnation (a process start) registers it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerHeartbeatRequest {
    /// The broker's cluster id; empty before it knows one.
    pub cluster_id: String,
    pub broker_id: u32,
    /// Random per process start.
    pub incarnation_id: u64,
    pub client_address: String,
    pub cluster_address: String,
    pub http_address: String,
    pub rack: Option<String>,
    /// The last metadata log index the broker applied.
    pub metadata_applied_index: u64,
    /// The broker is stopping (controlled shutdown): fence it now, so its
    /// leaderships move to in-sync replicas before it goes.
    pub want_shutdown: bool,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerHeartbeatResponse {
    /// `not controller` (30): ask `leader_id` at `leader_cluster_address`.
    pub error_code: u16,
    pub message: String,
    pub cluster_id: String,
    pub leader_id: Option<u64>,
    pub leader_cluster_address: String,
    /// The broker leads nothing until unfenced (registered and caught up).
    pub fenced: bool,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
pub struct ClusterStatusRequest {}

/// A voter of the metadata quorum, as its leader sees it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VoterStatus {
    pub node_id: u64,
    pub cluster_address: String,
    /// `leader`, `follower`, `learner`.
    pub role: String,
    /// Entries the leader has that this node has not acknowledged (0 for
    /// the leader); `None` when the answering node does not lead.
    pub log_lag: Option<u64>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerStatus {
    pub node_id: u32,
    pub client_address: String,
    pub cluster_address: String,
    pub rack: Option<String>,
    /// `alive`, `fenced` or `decommissioning`.
    pub status: String,
    /// It leads only where no other in-sync replica can (`cluster
    /// failover`, until `cluster failback`; or decommissioning).
    pub drained: bool,
    /// Since the controller last heard from it; `None` when the answering
    /// node is not the controller or never heard from it.
    pub last_heartbeat_age_ms: Option<u64>,
    pub partitions_led: u32,
    pub partitions_hosted: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OfflinePartition {
    pub topic: String,
    pub partition: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatusResponse {
    pub error_code: u16,
    pub message: String,
    pub cluster_id: String,
    /// The node that answered.
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// The answering node's last applied metadata index.
    pub applied_index: u64,
    /// Voters and learners of the quorum.
    pub voters: Vec<VoterStatus>,
    pub brokers: Vec<BrokerStatus>,
    pub offline_partitions: Vec<OfflinePartition>,
    /// The digest of the applied metadata state (equal on brokers that
    /// applied the same log).
    pub metadata_digest: u64,
    /// The operator settings (`cluster config set`) that are set.
    pub settings: Vec<ClusterSetting>,
    /// Partitions moving to other replicas (`cluster move`,
    /// decommissioning).
    pub moves: Vec<PartitionMove>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterSetting {
    pub name: String,
    pub value: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    /// The replicas it moves to.
    pub target: Vec<u32>,
}

/// An operator's action on leaderships and replicas (either port; any
/// broker forwards it to the controller). The answer comes once the
/// controller committed the action's first record; the moves and
/// leadership changes it starts follow (watch `cluster status` and
/// `topic describe`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterActionRequest {
    pub action: ClusterAction,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ClusterAction {
    /// Leaderships off broker `from` (`None`: the cluster's primary); it
    /// leads only where no other in-sync replica can, until failback.
    Failover { from: Option<u32> },
    /// Broker `to` may lead again (`None`: the drained primary, or the
    /// only drained broker).
    Failback { to: Option<u32> },
    /// `to` leads the partition, and becomes its preferred leader.
    TransferLeader { topic: String, partition: u32, to: u32 },
    /// The partition's replicas become `replicas`: the new ones copy the
    /// log, then the old ones go.
    MoveReplicas { topic: String, partition: u32, replicas: Vec<u32> },
    /// Every replica of the broker moves away; once it is stopped and
    /// hosts nothing, the cluster forgets it.
    Decommission { broker_id: u32 },
    /// Sets (or with `None` removes) an operator setting.
    SetSetting { name: String, value: Option<String> },
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterActionResponse {
    pub error_code: u16,
    pub message: String,
}

/// Adds a registered broker to the voters (or removes one): a Raft
/// membership change, so a dead controller can be replaced.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterVotersRequest {
    pub add: Vec<u64>,
    pub remove: Vec<u64>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterVotersResponse {
    pub error_code: u16,
    pub message: String,
}

/// A broker asks the controller for a block of producer ids to hand out
/// (cluster port only). Blocks come from the metadata log in order, so no
/// two producers in the cluster share an id.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AllocateProducerIdsRequest {
    /// The asking broker's cluster id; empty before it knows one.
    pub cluster_id: String,
    pub broker_id: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AllocateProducerIdsResponse {
    /// `not controller` (30): ask `leader_id` at `leader_cluster_address`.
    pub error_code: u16,
    pub message: String,
    pub leader_id: Option<u64>,
    pub leader_cluster_address: String,
    /// The block: ids `start .. start + size`, for this broker alone.
    pub start: u64,
    pub size: u64,
}

/// A follower's fetch from the leader of its partitions (cluster port
/// only): many partitions, long poll. The answer carries each partition's
/// stored batches byte for byte in the payload, as `fetch` does.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchRequest {
    /// The follower's cluster id.
    pub cluster_id: String,
    /// The follower's broker id.
    pub replica_id: u32,
    /// Long poll: wait up to this long for `min_bytes`.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Bound on the whole answer's records.
    pub max_bytes: u32,
    pub partitions: Vec<ReplicaFetchPartition>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchPartition {
    pub topic: String,
    pub partition: u32,
    /// The leader epoch the follower believes current: a leader at another
    /// epoch refuses the partition (`fenced leader epoch` when the
    /// follower's is older, `unknown leader epoch` when newer).
    pub current_leader_epoch: u32,
    /// The follower's log end: the next offset it needs.
    pub fetch_offset: u64,
    /// The epoch of the follower's last batch (`None`: its log is empty).
    /// The leader checks it against its own history (KIP-320): where they
    /// disagree it answers `diverging_epoch` instead of records.
    pub last_fetched_epoch: Option<u32>,
    /// Everything below this is durable on the follower under the topic's
    /// policy (its local high watermark): what the leader's high watermark
    /// may count.
    pub durable_offset: u64,
    pub max_bytes: u32,
}

/// Where the leader's history of an epoch ends (OffsetForLeaderEpoch).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    pub epoch: u32,
    pub end_offset: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResult {
    pub topic: String,
    pub partition: u32,
    pub error_code: u16,
    pub message: String,
    /// The leader's epoch for the partition.
    pub leader_epoch: u32,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// The end of what the leader serves its followers (its own durable
    /// end).
    pub log_end_offset: u64,
    /// Set when the follower's log disagrees with the leader's at or
    /// before `fetch_offset`: the largest epoch at or below the follower's
    /// last fetched epoch that the leader holds, and where it ends there.
    /// The follower truncates to it and fetches again; `records` is empty.
    pub diverging_epoch: Option<EpochEndOffset>,
    /// Stored batches, byte for byte, in the payload.
    pub records: super::Slice,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchResponse {
    /// A request-level refusal (another cluster, not the cluster port).
    pub error_code: u16,
    pub message: String,
    pub partitions: Vec<ReplicaFetchResult>,
}

/// A partition's leader asks the controller to change its in-sync replica
/// set (cluster port only): shrink it by followers that fell behind,
/// grow it by followers that caught up. Applied only at the leader and
/// partition epochs the leader names; the answer is the partition as the
/// metadata has it then.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub cluster_id: String,
    /// The leader asking.
    pub broker_id: u32,
    pub topic: String,
    pub partition: u32,
    pub leader_epoch: u32,
    pub partition_epoch: u32,
    pub isr: Vec<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionResponse {
    /// `not controller` (30): ask `leader_id` at `leader_cluster_address`;
    /// `fenced leader epoch` (34): the asking broker no longer leads, or
    /// its view of the partition is stale.
    pub error_code: u16,
    pub message: String,
    pub leader_id: Option<u64>,
    pub leader_cluster_address: String,
    pub leader_epoch: u32,
    pub partition_epoch: u32,
    pub isr: Vec<u32>,
}

super::messages! {
    ApiKey::RaftMessages => RaftMessagesRequest, RaftMessagesResponse;
    ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
    ApiKey::ClusterStatus => ClusterStatusRequest, ClusterStatusResponse;
    ApiKey::AlterVoters => AlterVotersRequest, AlterVotersResponse;
    ApiKey::AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
    ApiKey::ReplicaFetch => ReplicaFetchRequest, ReplicaFetchResponse;
    ApiKey::AlterPartition => AlterPartitionRequest, AlterPartitionResponse;
    ApiKey::ClusterAction => ClusterActionRequest, ClusterActionResponse;
}
