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

super::messages! {
    ApiKey::RaftMessages => RaftMessagesRequest, RaftMessagesResponse;
    ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
    ApiKey::ClusterStatus => ClusterStatusRequest, ClusterStatusResponse;
    ApiKey::AlterVoters => AlterVotersRequest, AlterVotersResponse;
    ApiKey::AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
}
