//! Writing: produce, and the idempotent producer's id (init_producer_id).
use super::{ApiKey, Slice};

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

super::messages! {
    ApiKey::Produce => ProduceRequest, ProduceResponse;
    ApiKey::InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
}
