//! Every error a broker can answer with: one numbered code per cause.
//! Codes are part of the protocol; they are never reused or renumbered.

/// A wire error code. `None` (0) means success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    None = 0,
    /// The broker failed in a way no other code describes.
    Unknown = 1,
    /// A record batch failed validation (bounds, CRC, archive).
    CorruptBatch = 2,
    UnknownTopicOrPartition = 3,
    OffsetOutOfRange = 4,
    /// A batch or frame exceeds the broker's size limit.
    MessageTooLarge = 5,
    UnsupportedVersion = 6,
    UnsupportedApi = 7,
    /// The request is malformed (bad frame, undecodable body, bad field).
    InvalidRequest = 8,
    TopicAlreadyExists = 9,
    InvalidConfig = 10,
    /// A limit was reached; retry after a backoff.
    Busy = 11,
    /// This broker does not lead the partition (clusters, later).
    NotLeader = 12,
    /// The disk failed; reads still work.
    StorageError = 13,
    /// A batch's producer sequence is not the next expected one.
    OutOfOrderSequence = 14,
    /// The producer id is unknown or its epoch is stale.
    InvalidProducer = 15,
    ShuttingDown = 16,
    /// The request was well-formed but timed out on the broker.
    Timeout = 17,
    /// Stored data of the partition failed verification (damage on disk,
    /// not a torn write): the message names the file, byte and offset.
    /// The batches before it are still served; the partition may be
    /// offline until an operator repairs it.
    CorruptData = 18,
    /// A topic cannot have the partition count asked for: partitions are
    /// only ever added (Kafka's INVALID_PARTITIONS).
    InvalidPartitions = 19,
    /// The group has no member of that id (it left or timed out): join
    /// again with epoch 0.
    UnknownMemberId = 20,
    /// The member's epoch is not its current one: it was fenced (a
    /// zombie); join again with epoch 0, giving up every partition.
    FencedMemberEpoch = 21,
    /// This broker does not coordinate the group (clusters, later).
    NotCoordinator = 22,
    /// The coordinator is still reading the group's state; retry.
    CoordinatorLoading = 23,
    /// The operation needs a group without members.
    GroupNotEmpty = 24,
    /// The session timeout asked for is outside the broker's bounds.
    InvalidSessionTimeout = 25,
    /// The group has as many members as a group may have.
    GroupFull = 26,
    /// No such group.
    GroupNotFound = 27,
    /// A group id must be 1 to 255 bytes without control characters.
    InvalidGroupId = 28,
    /// A commit for a partition the member does not own.
    NotAssigned = 29,
    /// This node does not lead the metadata quorum; the message names the
    /// one that does, when known.
    NotController = 30,
    /// The request comes from a broker of another cluster (another data
    /// directory's cluster id).
    ClusterIdMismatch = 31,
    /// Another live broker has this node id.
    DuplicateBrokerId = 32,
    /// The metadata quorum has no majority reachable: metadata cannot
    /// change now.
    NoQuorum = 33,
    /// The request names an older leader epoch than the partition's
    /// current one: the sender's view is stale (refresh metadata).
    FencedLeaderEpoch = 34,
    /// The request names a newer leader epoch than this broker knows: it
    /// has not applied the change yet; retry.
    UnknownLeaderEpoch = 35,
    /// `acks=all` needs at least `min.insync.replicas` in-sync replicas
    /// and the partition has fewer: nothing was written.
    NotEnoughReplicas = 36,
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        use ErrorCode::*;
        match code {
            0 => None,
            2 => CorruptBatch,
            3 => UnknownTopicOrPartition,
            4 => OffsetOutOfRange,
            5 => MessageTooLarge,
            6 => UnsupportedVersion,
            7 => UnsupportedApi,
            8 => InvalidRequest,
            9 => TopicAlreadyExists,
            10 => InvalidConfig,
            11 => Busy,
            12 => NotLeader,
            13 => StorageError,
            14 => OutOfOrderSequence,
            15 => InvalidProducer,
            16 => ShuttingDown,
            17 => Timeout,
            18 => CorruptData,
            19 => InvalidPartitions,
            20 => UnknownMemberId,
            21 => FencedMemberEpoch,
            22 => NotCoordinator,
            23 => CoordinatorLoading,
            24 => GroupNotEmpty,
            25 => InvalidSessionTimeout,
            26 => GroupFull,
            27 => GroupNotFound,
            28 => InvalidGroupId,
            29 => NotAssigned,
            30 => NotController,
            31 => ClusterIdMismatch,
            32 => DuplicateBrokerId,
            33 => NoQuorum,
            34 => FencedLeaderEpoch,
            35 => UnknownLeaderEpoch,
            36 => NotEnoughReplicas,
            _ => Unknown,
        }
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether a client should retry the request as is, after a backoff.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::NotLeader
                | ErrorCode::Timeout
                | ErrorCode::StorageError
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoading
                | ErrorCode::NotController
                | ErrorCode::NoQuorum
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::NotEnoughReplicas
        )
    }

    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            None => "none",
            Unknown => "unknown server error",
            CorruptBatch => "corrupt batch",
            UnknownTopicOrPartition => "unknown topic or partition",
            OffsetOutOfRange => "offset out of range",
            MessageTooLarge => "message too large",
            UnsupportedVersion => "unsupported version",
            UnsupportedApi => "unsupported api",
            InvalidRequest => "invalid request",
            TopicAlreadyExists => "topic already exists",
            InvalidConfig => "invalid config",
            Busy => "busy",
            NotLeader => "not leader",
            StorageError => "storage error",
            OutOfOrderSequence => "out of order sequence",
            InvalidProducer => "invalid producer",
            ShuttingDown => "shutting down",
            Timeout => "timeout",
            CorruptData => "corrupt data",
            InvalidPartitions => "invalid partitions",
            UnknownMemberId => "unknown member id",
            FencedMemberEpoch => "fenced member epoch",
            NotCoordinator => "not coordinator",
            CoordinatorLoading => "coordinator loading",
            GroupNotEmpty => "group not empty",
            InvalidSessionTimeout => "invalid session timeout",
            GroupFull => "group full",
            GroupNotFound => "group not found",
            InvalidGroupId => "invalid group id",
            NotAssigned => "not assigned",
            NotController => "not controller",
            ClusterIdMismatch => "cluster id mismatch",
            DuplicateBrokerId => "duplicate broker id",
            NoQuorum => "no metadata quorum",
            FencedLeaderEpoch => "fenced leader epoch",
            UnknownLeaderEpoch => "unknown leader epoch",
            NotEnoughReplicas => "not enough replicas",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=36u16 {
            if code == 1 {
                continue;
            }
            assert_eq!(ErrorCode::from_u16(code).as_u16(), code);
        }
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::Unknown);
    }
}
