//! The engine's error type: operating errors as values, with context.

use crate::batch::BatchError;
use crate::ids::{LeaderEpoch, Offset, PartitionId};
use crate::storage::StorageError;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The disk failed; the cause is shared by every request it affected.
    #[error("storage error: {0}")]
    Storage(Arc<StorageError>),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: PartitionId },
    /// The partition exists in the topic, but this broker holds none of it
    /// (another broker hosts it; see `Engine::sync_topic`).
    #[error("topic {topic:?} partition {partition} is not hosted on this broker")]
    NotHosted { topic: String, partition: PartitionId },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("{0}")]
    InvalidConfig(String),
    /// A topic asked to keep or lower its partition count: topics only grow.
    #[error("{}", partitions_not_increased(.topic, *.partition_count, *.requested))]
    PartitionsNotIncreased { topic: String, partition_count: u32, requested: u32 },
    #[error("offset {offset} is out of range [{log_start_offset}, {high_watermark}]")]
    OffsetOutOfRange { offset: Offset, log_start_offset: Offset, high_watermark: Offset },
    #[error("batch of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    MessageTooLarge { size_bytes: usize, limit_bytes: usize },
    #[error("follower append at offset {got} where the log ends at {expected}")]
    OffsetMismatch { expected: Offset, got: Offset },
    /// A leader epoch older than the partition's latest: told to lead at
    /// it (`Engine::set_leader_epoch`), stamping a leader append with it
    /// after a newer epoch was replicated in, or a replicated batch of it
    /// after the log holds a newer one. Leader epochs only grow.
    #[error("leader epoch {epoch} is older than the partition's latest, {latest}")]
    StaleLeaderEpoch { epoch: LeaderEpoch, latest: LeaderEpoch },
    /// The partition stopped taking writes after an I/O error; it takes
    /// them again once the log has been re-verified (see `Partition`).
    #[error("partition is fenced after a storage error: {0}")]
    Fenced(Arc<StorageError>),
    /// Stored data failed verification: damage, not a torn write. The
    /// partition serves what lies before it; `mamba log check` shows it
    /// and `mamba log recover --force` cuts the log there.
    #[error("corrupt data at offset {offset} in {path} (byte {position_bytes}): {reason}")]
    Corrupt { path: String, offset: Offset, position_bytes: u64, reason: String },
    /// The partition could not be opened and serves nothing until an
    /// operator repairs it; the rest of the broker serves on.
    #[error("partition offline: {0}")]
    Offline(Box<EngineError>),
    #[error("producer {producer_id}: sequence {got} where {expected} was expected")]
    OutOfOrderSequence { producer_id: u64, expected: u32, got: u32 },
    #[error("producer {producer_id}: epoch {epoch} is older than the current {current_epoch}")]
    ProducerFenced { producer_id: u64, epoch: u16, current_epoch: u16 },
    /// An append that was not yet durable when a truncation (a replica's
    /// diverging tail, `Engine::truncate_partition`) or a start over
    /// (`Engine::reset_partition`) removed its offsets: its records are
    /// not in the log.
    #[error(
        "the batch at offset {base_offset} was cut from the log (at {cut}) before it was durable"
    )]
    Truncated { base_offset: Offset, cut: Offset },
    #[error("busy: the shard's queue is full, retry later")]
    Busy,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
}

/// Why a topic cannot have `requested` partitions, and what to do instead.
fn partitions_not_increased(topic: &str, partition_count: u32, requested: u32) -> String {
    if requested == partition_count {
        return format!(
            "topic {topic:?} has {partition_count} partitions already; nothing to add (ask for more to grow it)"
        );
    }
    format!(
        "topic {topic:?} has {partition_count} partitions and cannot shrink to {requested}: \
         partitions are never removed, because keyed records would map to other partitions \
         and the records and offsets of the removed partitions would be lost (as in Kafka); \
         to have fewer, create a new topic and copy the records into it"
    )
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> EngineError {
        EngineError::Storage(Arc::new(e))
    }
}

pub type EngineResult<T> = Result<T, EngineError>;
