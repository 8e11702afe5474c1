//! Engine errors as wire codes: the one place the broker maps them, at
//! its boundary (the protocol's codec knows no engine).

use crate::protocol::ErrorCode;
use mamba_engine::EngineError;

/// The wire code of an engine error.
pub(crate) fn error_code(e: &EngineError) -> ErrorCode {
    use EngineError as E;
    match e {
        E::Storage(_) | E::Fenced(_) => ErrorCode::StorageError,
        E::Corrupt { .. } => ErrorCode::CorruptData,
        E::Offline(cause) => error_code(cause),
        E::InvalidBatch(_) => ErrorCode::CorruptBatch,
        E::UnknownTopic(_) | E::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
        // Another broker holds it: the client refreshes metadata and goes
        // there, as after a leader change.
        E::NotHosted { .. } => ErrorCode::NotLeader,
        E::TopicExists(_) => ErrorCode::TopicAlreadyExists,
        E::InvalidConfig(_) => ErrorCode::InvalidConfig,
        E::PartitionsNotIncreased { .. } => ErrorCode::InvalidPartitions,
        E::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        E::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
        E::OffsetMismatch { .. } => ErrorCode::InvalidRequest,
        // Replication's own calls (leadership, replicated batches): a
        // request built on a stale view of the partition's leadership.
        E::StaleLeaderEpoch { .. } => ErrorCode::InvalidRequest,
        // Only a replica that stopped leading cuts its log: the client
        // goes to the new leader (an idempotent producer's retry there is
        // answered as a duplicate if the leader has the batch).
        E::Truncated { .. } => ErrorCode::NotLeader,
        E::Busy => ErrorCode::Busy,
        E::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        E::ProducerFenced { .. } => ErrorCode::InvalidProducer,
        E::ShuttingDown => ErrorCode::ShuttingDown,
        E::DataDir { .. } => ErrorCode::StorageError,
    }
}

/// The code a result field carries for `e`.
pub(crate) fn code_of(e: &EngineError) -> u16 {
    error_code(e).as_u16()
}
