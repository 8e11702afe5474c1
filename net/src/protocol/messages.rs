//! Request and response bodies, one pair per API. Bodies are rkyv archives,
//! validated (bytecheck) when decoded; record batches never go in a body but
//! in the frame payload, referenced by [`Slice`].

use rkyv::util::AlignedVec;

/// API keys. Part of the protocol: never renumbered.
pub mod api {
    pub const API_VERSIONS: u16 = 0;
    pub const METADATA: u16 = 1;
    pub const CREATE_TOPICS: u16 = 2;
    pub const DELETE_TOPICS: u16 = 3;
    pub const DESCRIBE_CONFIGS: u16 = 4;
    pub const ALTER_CONFIGS: u16 = 5;
    pub const PRODUCE: u16 = 6;
    pub const FETCH: u16 = 7;
    pub const LIST_OFFSETS: u16 = 8;
    pub const INIT_PRODUCER_ID: u16 = 9;
    pub const CREATE_PARTITIONS: u16 = 10;
    pub const DESCRIBE_PARTITIONS: u16 = 11;
    pub const DESCRIBE_BROKER: u16 = 12;
}

/// What this build speaks: (api key, lowest version, highest version, name).
pub const SUPPORTED_APIS: &[(u16, u16, u16, &str)] = &[
    (api::API_VERSIONS, 0, 0, "api_versions"),
    (api::METADATA, 0, 0, "metadata"),
    (api::CREATE_TOPICS, 0, 0, "create_topics"),
    (api::DELETE_TOPICS, 0, 0, "delete_topics"),
    (api::DESCRIBE_CONFIGS, 0, 0, "describe_configs"),
    (api::ALTER_CONFIGS, 0, 0, "alter_configs"),
    (api::PRODUCE, 0, 0, "produce"),
    (api::FETCH, 0, 0, "fetch"),
    (api::LIST_OFFSETS, 0, 0, "list_offsets"),
    (api::INIT_PRODUCER_ID, 0, 0, "init_producer_id"),
    (api::CREATE_PARTITIONS, 0, 0, "create_partitions"),
    (api::DESCRIBE_PARTITIONS, 0, 0, "describe_partitions"),
    (api::DESCRIBE_BROKER, 0, 0, "describe_broker"),
];

/// Why a body could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad message body: {reason}")]
pub struct BodyError {
    pub reason: String,
}

/// A request or response body.
pub trait Message: Sized {
    const API_KEY: u16;
    const VERSION: u16 = 0;
    fn encode(&self) -> Result<AlignedVec, BodyError>;
    /// Validates and decodes untrusted bytes (16-byte aligned).
    fn decode(bytes: &[u8]) -> Result<Self, BodyError>;
}

macro_rules! messages {
    ($($api:expr => $($ty:ident),+;)+) => {$($(
        impl Message for $ty {
            const API_KEY: u16 = $api;
            fn encode(&self) -> Result<AlignedVec, BodyError> {
                rkyv::to_bytes::<rkyv::rancor::Error>(self).map_err(|e| BodyError { reason: e.to_string() })
            }
            fn decode(bytes: &[u8]) -> Result<Self, BodyError> {
                rkyv::from_bytes::<$ty, rkyv::rancor::BoxedError>(bytes).map_err(|e| BodyError { reason: e.to_string() })
            }
        }
    )+)+};
}

messages! {
    api::API_VERSIONS => ApiVersionsRequest, ApiVersionsResponse;
    api::METADATA => MetadataRequest, MetadataResponse;
    api::CREATE_TOPICS => CreateTopicsRequest, TopicResults;
    api::DELETE_TOPICS => DeleteTopicsRequest;
    api::DESCRIBE_CONFIGS => DescribeConfigsRequest, DescribeConfigsResponse;
    api::ALTER_CONFIGS => AlterConfigsRequest;
    api::PRODUCE => ProduceRequest, ProduceResponse;
    api::FETCH => FetchRequest, FetchResponse;
    api::LIST_OFFSETS => ListOffsetsRequest, ListOffsetsResponse;
    api::INIT_PRODUCER_ID => InitProducerIdRequest, InitProducerIdResponse;
    api::CREATE_PARTITIONS => CreatePartitionsRequest;
    api::DESCRIBE_PARTITIONS => DescribePartitionsRequest, DescribePartitionsResponse;
    api::DESCRIBE_BROKER => DescribeBrokerRequest, DescribeBrokerResponse;
    FRAME_ERROR => ErrorResponse;
}

/// Not an API: the key under which a frame-level error body is described.
pub const FRAME_ERROR: u16 = u16::MAX;

/// The body of a response whose header carries a frame-level error code.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub message: String,
}

/// A range of the frame payload: `offset` and `len` in bytes from its start.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
pub struct Slice {
    pub offset: u32,
    pub len: u32,
}

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
    pub host: String,
    pub port: u16,
    pub shards: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub partition: u32,
    pub leader: u32,
    /// The shard (core) of the leader that owns the partition.
    pub shard: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub error_code: u16,
    pub partitions: Vec<PartitionMeta>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    pub brokers: Vec<BrokerMeta>,
    pub topics: Vec<TopicMeta>,
}

/// A topic setting by name (`storage`, `durability`, `retention.ms`,
/// `retention.bytes`, `segment.bytes`, `segment.ms`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: u32,
    pub configs: Vec<ConfigEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    pub topics: Vec<CreateTopic>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub error_code: u16,
    pub message: String,
}

/// The response of create, delete and alter: one result per topic.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicResults {
    pub results: Vec<TopicResult>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribeConfigsRequest {
    pub names: Vec<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigs {
    pub name: String,
    pub error_code: u16,
    pub message: String,
    pub partitions: u32,
    pub configs: Vec<ConfigEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribeConfigsResponse {
    pub topics: Vec<TopicConfigs>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterTopic {
    pub name: String,
    pub configs: Vec<ConfigEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterConfigsRequest {
    pub topics: Vec<AlterTopic>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub topic: String,
    pub partition: u32,
    /// One record batch in the payload.
    pub batch: Slice,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// 0: no response; 1: after the append; -1 (all): once durable under
    /// the topic's policy.
    pub acks: i8,
    pub timeout_ms: u32,
    pub partitions: Vec<ProducePartition>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub topic: String,
    pub partition: u32,
    pub error_code: u16,
    pub message: String,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    pub partitions: Vec<ProducePartitionResult>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub max_bytes: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Long poll: wait up to this long for `min_bytes` to arrive.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Bound on the whole response's records.
    pub max_bytes: u32,
    pub partitions: Vec<FetchPartition>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResult {
    pub topic: String,
    pub partition: u32,
    pub error_code: u16,
    pub message: String,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Stored batches, byte for byte, in the payload.
    pub records: Slice,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub partitions: Vec<FetchPartitionResult>,
}

/// `timestamp` values with a special meaning in ListOffsets.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    pub topic: String,
    pub partition: u32,
    /// `LATEST_TIMESTAMP`, `EARLIEST_TIMESTAMP`, or a time in ms.
    pub timestamp: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub partitions: Vec<ListOffsetsPartition>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResult {
    pub topic: String,
    pub partition: u32,
    pub error_code: u16,
    /// Why, for people, when `error_code` is not 0.
    pub message: String,
    /// The offset; for a timestamp with no record at or after it, the high
    /// watermark (where such a record would go).
    pub offset: u64,
    /// The record's timestamp (-1 for earliest/latest).
    pub timestamp: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub partitions: Vec<ListOffsetsResult>,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
pub struct InitProducerIdRequest {}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdResponse {
    pub error_code: u16,
    pub producer_id: u64,
    pub producer_epoch: u16,
}

/// Grow `name` to `partition_count` partitions in total (Kafka's
/// CreatePartitions).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NewPartitions {
    pub name: String,
    pub partition_count: u32,
}

/// Answered with `TopicResults`: `invalid partitions` for a count not
/// above the current one (partitions are never removed).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    pub topics: Vec<NewPartitions>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribePartitionsRequest {
    /// `None`: every topic.
    pub topics: Option<Vec<String>>,
}

/// One partition's log as stored on its broker.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionSummary {
    pub partition: u32,
    /// Not 0 when the partition is offline (or otherwise failed to answer):
    /// `message` says why and the numbers below are 0.
    pub error_code: u16,
    pub message: String,
    /// The first offset still stored (retention moves it up).
    pub log_start_offset: u64,
    /// The offset the next record will get.
    pub log_end_offset: u64,
    /// What consumers can read up to (exclusive): durable under the
    /// topic's policy.
    pub high_watermark: u64,
    /// The segments' log bytes (indexes not counted).
    pub size_bytes: u64,
    pub segment_count: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions {
    pub name: String,
    /// `unknown topic or partition` for a name the broker does not know.
    pub error_code: u16,
    pub message: String,
    pub partitions: Vec<PartitionSummary>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribePartitionsResponse {
    pub topics: Vec<TopicPartitions>,
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

/// Resolves a payload slice; `None` when it points outside the payload or
/// is not 16-byte aligned (batches always are).
pub fn slice_of(payload: &[u8], slice: Slice) -> Option<&[u8]> {
    let start = slice.offset as usize;
    let end = start.checked_add(slice.len as usize)?;
    if !start.is_multiple_of(16) {
        return None;
    }
    payload.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 5000,
            partitions: vec![ProducePartition {
                topic: "t".into(),
                partition: 3,
                batch: Slice { offset: 0, len: 128 },
            }],
        };
        let bytes = request.encode().expect("encode");
        assert_eq!(ProduceRequest::decode(&bytes).expect("decode"), request);
    }

    #[test]
    fn admin_bodies_round_trip_and_api_keys_are_unique() {
        let request = CreatePartitionsRequest {
            topics: vec![NewPartitions { name: "orders".into(), partition_count: 8 }],
        };
        let bytes = request.encode().expect("encode");
        assert_eq!(CreatePartitionsRequest::decode(&bytes).expect("decode"), request);
        let answer = DescribeBrokerResponse {
            error_code: 0,
            message: String::new(),
            node_id: 3,
            version: "0.1.0".into(),
            data_dir: "/var/lib/mamba".into(),
            shards: 8,
            listeners: vec![Listener { name: "client".into(), address: "10.0.0.7:9400".into() }],
            started_ms: 1_764_504_000_000,
            uptime_ms: 60_000,
            topic_count: 2,
            partitions_online: 11,
            partitions_offline: 1,
            disk: DiskUsage {
                error_code: 0,
                message: String::new(),
                total_bytes: 1 << 40,
                free_bytes: 1 << 39,
            },
        };
        let bytes = answer.encode().expect("encode");
        assert_eq!(DescribeBrokerResponse::decode(&bytes).expect("decode"), answer);
        let mut keys: Vec<u16> = SUPPORTED_APIS.iter().map(|(key, ..)| *key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SUPPORTED_APIS.len(), "every api key once");
        assert_eq!(
            keys,
            (0..SUPPORTED_APIS.len() as u16).collect::<Vec<_>>(),
            "keys are dense from 0"
        );
    }

    #[test]
    fn garbage_bodies_are_errors() {
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(&[0xff; 64]);
        assert!(FetchRequest::decode(&bytes).is_err());
        assert!(MetadataRequest::decode(&[]).is_err());
    }

    #[test]
    fn slices_outside_the_payload_are_rejected() {
        let payload = [0u8; 64];
        assert_eq!(slice_of(&payload, Slice { offset: 16, len: 32 }).map(<[u8]>::len), Some(32));
        assert!(slice_of(&payload, Slice { offset: 48, len: 32 }).is_none());
        assert!(slice_of(&payload, Slice { offset: 8, len: 8 }).is_none());
        assert!(slice_of(&payload, Slice { offset: u32::MAX, len: u32::MAX }).is_none());
    }
}
