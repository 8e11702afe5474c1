//! Who speaks what, and where things are: api_versions, metadata,
//! describe_broker.
use super::ApiKey;

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
pub struct ApiVersionsRequest {}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<ApiVersionRange>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// `None`: every topic.
    pub topics: Option<Vec<String>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub node_id: u32,
    /// Where clients reach it.
    pub host: String,
    pub port: u16,
    /// Its cores; 0 when the answering broker does not know (another
    /// broker's).
    pub shards: u32,
    pub rack: Option<String>,
    /// `alive`, `fenced` (silent past its session, or not caught up with
    /// the metadata yet: it leads nothing) or `decommissioning`.
    pub status: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub partition: u32,
    /// The broker that takes its produce and fetch requests; `None` while
    /// it is offline (no in-sync replica alive).
    pub leader: Option<u32>,
    /// Rises with every leader change.
    pub leader_epoch: u32,
    /// Every broker that holds a copy; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// The replicas that have everything the leader acknowledged.
    pub isr: Vec<u32>,
    /// Where a move takes its replicas (`cluster move`, decommissioning);
    /// empty when it is not moving.
    pub target_replicas: Vec<u32>,
    /// The shard (core) that owns it on the answering broker, when that
    /// broker holds a replica.
    pub shard: Option<u32>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub error_code: u16,
    pub partitions: Vec<PartitionMeta>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub cluster_id: String,
    /// The broker that leads the metadata quorum, when known.
    pub controller_id: Option<u32>,
    /// Every registered broker.
    pub brokers: Vec<BrokerMeta>,
    pub topics: Vec<TopicMeta>,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
pub struct DescribeBrokerRequest {}

/// An address the broker listens on, and for what (`client`; later
/// `http`, `cluster`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub address: String,
}

/// The data directory's filesystem (statvfs), or why it could not be read.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    pub error_code: u16,
    pub message: String,
    pub total_bytes: u64,
    /// What the broker may still write (without the root reserve).
    pub free_bytes: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribeBrokerResponse {
    /// `shutting down` (16) while the broker stops: it serves no more
    /// requests; the counts below are then 0.
    pub error_code: u16,
    pub message: String,
    pub node_id: u32,
    /// The broker's release, e.g. `0.1.0`.
    pub version: String,
    /// Absolute path of the data directory on the broker's machine.
    pub data_dir: String,
    pub shards: u32,
    pub listeners: Vec<Listener>,
    /// When the broker started serving, in ms since the Unix epoch.
    pub started_ms: i64,
    /// How long it has been serving (a monotonic clock: immune to clock
    /// changes, unlike `now - started_ms`).
    pub uptime_ms: u64,
    pub topic_count: u32,
    pub partitions_online: u32,
    /// Partitions that could not be opened; `describe_partitions` says why.
    pub partitions_offline: u32,
    pub disk: DiskUsage,
}

super::messages! {
    ApiKey::ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
    ApiKey::DescribeBroker => DescribeBrokerRequest, DescribeBrokerResponse;
}

/// Version 1: brokers with rack and status, partitions with their leader
/// (or none), leader epoch, replicas and in-sync replicas.
impl super::Request for MetadataRequest {
    const API_KEY: ApiKey = ApiKey::Metadata;
    const VERSION: u16 = 1;
}
super::body!(MetadataRequest);
super::body!(MetadataResponse);
