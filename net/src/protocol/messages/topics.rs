//! Topic administration: create_topics, delete_topics, describe_configs,
//! alter_configs, create_partitions, describe_partitions.
use super::ApiKey;

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
    /// Each follower as its leader last saw it fetch (empty for a single
    /// replica).
    pub followers: Vec<FollowerProgress>,
}

/// Where a follower's copy of a partition stands, as its leader saw it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FollowerProgress {
    pub broker_id: u32,
    /// Its log end: the next offset it fetches.
    pub log_end_offset: u64,
    /// Everything before this is durable on it.
    pub durable_offset: u64,
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

super::messages! {
    ApiKey::CreateTopics => CreateTopicsRequest, TopicResults;
    ApiKey::DeleteTopics => DeleteTopicsRequest;
    ApiKey::DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
    ApiKey::AlterConfigs => AlterConfigsRequest;
    ApiKey::CreatePartitions => CreatePartitionsRequest;
    ApiKey::DescribePartitions => DescribePartitionsRequest, DescribePartitionsResponse;
}
