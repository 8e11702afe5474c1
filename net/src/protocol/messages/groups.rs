//! Consumer groups: the member heartbeat that joins, leaves and carries
//! assignments (consumer_group_heartbeat), committed offsets (offset_commit,
//! offset_fetch, reset_offsets), and administration (list_groups,
//! describe_groups, delete_groups), and where a group's coordinator is
//! (find_coordinator).

use super::ApiKey;

/// Partitions of one topic.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicAssignment {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// Partitions by topic, as members and coordinators keep them.
pub type PartitionMap = std::collections::BTreeMap<String, std::collections::BTreeSet<u32>>;

impl TopicAssignment {
    /// `map` on the wire.
    pub fn list(map: &PartitionMap) -> Vec<TopicAssignment> {
        map.iter()
            .map(|(topic, ps)| TopicAssignment {
                topic: topic.clone(),
                partitions: ps.iter().copied().collect(),
            })
            .collect()
    }

    /// The wire's lists as a map (a partition named twice counts once).
    pub fn map(list: &[TopicAssignment]) -> PartitionMap {
        list.iter().map(|t| (t.topic.clone(), t.partitions.iter().copied().collect())).collect()
    }
}

/// A member's heartbeat (Kafka's ConsumerGroupHeartbeat, KIP-848).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatRequest {
    pub group_id: String,
    /// Empty to join: the coordinator names the member.
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's restart, else the
    /// epoch of the member's last answer.
    pub member_epoch: i32,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    pub client_id: String,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topics: Option<Vec<String>>,
    /// `uniform`, `range` or `round-robin`; the first member's choice holds.
    pub assignor: Option<String>,
    /// What the member holds now; `None`: unchanged.
    pub owned: Option<Vec<TopicAssignment>>,
    /// 0: the broker's default.
    pub session_timeout_ms: u32,
    /// The answer comes at once when the member's assignment changed, else
    /// after at most this long (a long poll).
    pub max_wait_ms: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatResponse {
    pub error_code: u16,
    pub message: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    /// Every partition the member may own now; it gives up the others
    /// (committing first) and says so in its next heartbeat.
    pub assignment: Vec<TopicAssignment>,
}

/// One offset to commit.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
    pub metadata: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    /// Empty, with epoch -1, for a consumer outside the group protocol
    /// (taken only while the group has no members).
    pub member_id: String,
    pub member_epoch: i32,
    pub offsets: Vec<CommitOffset>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: u32,
    pub error_code: u16,
    pub message: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitResponse {
    /// For the request as a whole (e.g. `not coordinator`).
    pub error_code: u16,
    pub message: String,
    pub partitions: Vec<PartitionResult>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchRequest {
    pub group_id: String,
    /// `None`: every partition the group committed.
    pub partitions: Option<Vec<TopicAssignment>>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: u32,
    /// -1: nothing committed.
    pub offset: i64,
    pub metadata: String,
    pub commit_ms: i64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OffsetFetchResponse {
    pub error_code: u16,
    pub message: String,
    pub offsets: Vec<FetchedOffset>,
}

/// Sets a group's offsets (Kafka's AlterConsumerGroupOffsets): refused with
/// `group not empty` while the group has members. Answered with
/// `OffsetCommitResponse`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ResetOffsetsRequest {
    pub group_id: String,
    pub offsets: Vec<CommitOffset>,
}

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default,
)]
pub struct ListGroupsRequest {}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    pub member_count: u32,
    pub assignor: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    pub error_code: u16,
    pub message: String,
    pub groups: Vec<GroupListing>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsRequest {
    pub group_ids: Vec<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub member_epoch: i32,
    /// What it holds now.
    pub assignment: Vec<TopicAssignment>,
    /// What it is moving towards.
    pub target: Vec<TopicAssignment>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub error_code: u16,
    pub message: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<FetchedOffset>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupsResponse {
    pub groups: Vec<GroupDescription>,
}

/// Deletes groups and their offsets; refused with `group not empty` while
/// a group has members.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsRequest {
    pub group_ids: Vec<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupResult {
    pub group_id: String,
    pub error_code: u16,
    pub message: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupsResponse {
    pub results: Vec<GroupResult>,
}

/// Which broker coordinates a group (Kafka's FindCoordinator): the one to
/// send its heartbeats, commits and offset fetches to.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    pub group_id: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// Not 0: no coordinator now (e.g. `invalid group id`, or the group's
    /// partition of `__consumer_offsets` has no leader); `message` says why.
    pub error_code: u16,
    pub message: String,
    pub node_id: u32,
    /// Where clients reach it, as in `metadata`'s brokers.
    pub host: String,
    pub port: u16,
}

super::messages! {
    ApiKey::GroupHeartbeat => GroupHeartbeatRequest, GroupHeartbeatResponse;
    ApiKey::OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
    ApiKey::OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
    ApiKey::ResetOffsets => ResetOffsetsRequest;
    ApiKey::ListGroups => ListGroupsRequest, ListGroupsResponse;
    ApiKey::DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
    ApiKey::DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
    ApiKey::FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
}
