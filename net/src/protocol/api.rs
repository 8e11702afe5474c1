//! API keys: which request a frame carries. Part of the protocol: a key is
//! never renumbered or reused.

use std::ops::RangeInclusive;

macro_rules! api_keys {
    ($($variant:ident = $key:literal, $name:literal, $versions:expr;)+) => {
        /// An API of the wire protocol.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ApiKey {
            $($variant = $key,)+
        }

        impl ApiKey {
            /// Every API this build speaks.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$variant,)+];

            /// The API of a frame's key; `None` for keys this build does
            /// not know.
            pub fn from_u16(key: u16) -> Option<ApiKey> {
                match key {
                    $($key => Some(ApiKey::$variant),)+
                    _ => None,
                }
            }

            /// Its name, as in PROTOCOL.md and messages (`list_offsets`).
            pub fn name(self) -> &'static str {
                match self {
                    $(ApiKey::$variant => $name,)+
                }
            }

            /// The versions of it this build speaks.
            pub fn versions(self) -> RangeInclusive<u16> {
                match self {
                    $(ApiKey::$variant => $versions,)+
                }
            }
        }
    };
}

api_keys! {
    ApiVersions = 0, "api_versions", 0..=0;
    Metadata = 1, "metadata", 1..=1;
    CreateTopics = 2, "create_topics", 0..=0;
    DeleteTopics = 3, "delete_topics", 0..=0;
    DescribeConfigs = 4, "describe_configs", 0..=0;
    AlterConfigs = 5, "alter_configs", 0..=0;
    Produce = 6, "produce", 0..=0;
    Fetch = 7, "fetch", 0..=0;
    ListOffsets = 8, "list_offsets", 0..=0;
    InitProducerId = 9, "init_producer_id", 0..=0;
    CreatePartitions = 10, "create_partitions", 0..=0;
    DescribePartitions = 11, "describe_partitions", 0..=0;
    DescribeBroker = 12, "describe_broker", 0..=0;
    GroupHeartbeat = 13, "consumer_group_heartbeat", 0..=0;
    OffsetCommit = 14, "offset_commit", 0..=0;
    OffsetFetch = 15, "offset_fetch", 0..=0;
    ResetOffsets = 16, "reset_offsets", 0..=0;
    ListGroups = 17, "list_groups", 0..=0;
    DescribeGroups = 18, "describe_groups", 0..=0;
    DeleteGroups = 19, "delete_groups", 0..=0;
    FindCoordinator = 20, "find_coordinator", 0..=0;
    RaftMessages = 21, "raft_messages", 0..=0;
    BrokerHeartbeat = 22, "broker_heartbeat", 0..=0;
    ClusterStatus = 23, "cluster_status", 0..=0;
    AlterVoters = 24, "alter_voters", 0..=0;
    AllocateProducerIds = 25, "allocate_producer_ids", 0..=0;
    ReplicaFetch = 26, "replica_fetch", 0..=0;
    AlterPartition = 27, "alter_partition", 0..=0;
    ClusterAction = 28, "cluster_action", 0..=0;
}

impl ApiKey {
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dense_unique_and_round_trip() {
        for (i, api) in ApiKey::ALL.iter().enumerate() {
            assert_eq!(api.as_u16(), i as u16, "{api} keeps its number");
            assert_eq!(ApiKey::from_u16(api.as_u16()), Some(*api));
        }
        assert_eq!(ApiKey::from_u16(ApiKey::ALL.len() as u16), None);
        assert_eq!(ApiKey::from_u16(u16::MAX), None);
    }
}
