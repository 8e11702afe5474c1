//! Reading: fetch, and where to start (list_offsets).
use super::{ApiKey, Slice};

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

super::messages! {
    ApiKey::Fetch => FetchRequest, FetchResponse;
    ApiKey::ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
}
