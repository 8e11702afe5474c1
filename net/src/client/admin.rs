//! Topic and consumer group administration, and metadata.
//!
//! Topic admin and metadata requests may go to any broker (in a cluster
//! the broker forwards them to the controller): they go through the
//! bootstrap [`Link`], which opens a new connection after a broker
//! restart or a timed out request. The requests of a group go to its
//! coordinator (`group_coordinator.rs`). Admin requests are not retried
//! automatically (creating a topic twice is not the same as once), except
//! a group request answered `not coordinator`, which did nothing and goes
//! to the coordinator found again; the caller sees any other error and
//! may call again.

use super::broker_pool::BrokerPool;
use super::cluster_view::{Asked, ClusterView, Route};
use super::group_coordinator::{find_coordinator, Coordinator, GroupCoordinator};
use super::{ClientError, Connection, Link, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::protocol::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// A request with no answer for this long fails with
    /// `ClientError::Timeout` (and its connection is replaced).
    pub request_timeout_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig { request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT }
    }
}

/// A partition of a consumer group as `group describe` shows it: what the
/// group committed, where the partition ends, and which member holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLag {
    pub committed: Option<u64>,
    /// The high watermark: where a consumer that caught up stands.
    pub end: Option<u64>,
    /// Why `end` is unknown.
    pub error: Option<String>,
    /// The member that holds it now.
    pub owner: Option<String>,
}

impl PartitionLag {
    /// Records between the committed offset and the end; unknown without
    /// either (a commit past the end, after the log was cut, counts 0).
    pub fn lag(&self) -> Option<u64> {
        Some(self.end?.saturating_sub(self.committed?))
    }
}

/// A topic as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
    pub configs: Vec<ConfigEntry>,
}

pub struct Admin {
    pool: Arc<BrokerPool>,
}

/// One change to the voters of the metadata quorum (Raft changes one at
/// a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoterChange {
    /// Makes a registered broker (a learner) a voter.
    Add(u64),
    /// Makes a voter a learner again.
    Remove(u64),
}

fn first_result(results: TopicResults) -> Result<(), ClientError> {
    match results.results.into_iter().next() {
        Some(r) => ClientError::from_code(r.error_code, r.message).map_or(Ok(()), Err),
        None => Err(ClientError::Protocol("empty result list".into())),
    }
}

impl Admin {
    pub fn connect(brokers: &str) -> Result<Admin, ClientError> {
        Admin::connect_with(brokers, AdminConfig::default())
    }

    pub fn connect_with(brokers: &str, config: AdminConfig) -> Result<Admin, ClientError> {
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        Ok(Admin { pool: Arc::new(BrokerPool::connect(brokers, request_timeout)?) })
    }

    /// The bootstrap link: any broker of the list.
    fn link(&self) -> &Link {
        self.pool.bootstrap()
    }

    /// The live connection to a broker of the list (a new one if the last
    /// one died), for requests this type has no method for.
    pub fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        self.link().connection()
    }

    /// Everything the cluster's metadata holds: its id, the controller,
    /// every broker (address, rack, status) and every topic's partitions
    /// (leader, leader epoch, replicas, in-sync replicas).
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        let conn = self.connection()?;
        let request = MetadataRequest { topics: None };
        let (answer, _) = conn.call::<_, MetadataResponse>(&request, &[]).await?;
        Ok(ClusterView::new(answer, Asked::All, conn.addr().ip()))
    }

    /// The broker that coordinates `group_id` (its requests go there).
    pub async fn find_coordinator(&self, group_id: &str) -> Result<Coordinator, ClientError> {
        find_coordinator(&self.pool, group_id).await
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), ClientError> {
        let request = CreateTopicsRequest {
            topics: vec![CreateTopic { name: name.to_string(), partitions, configs }],
        };
        let (results, _) = self.link().call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicsRequest { names: vec![name.to_string()] };
        let (results, _) = self.link().call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn alter_topic(
        &self,
        name: &str,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), ClientError> {
        let request =
            AlterConfigsRequest { topics: vec![AlterTopic { name: name.to_string(), configs }] };
        let (results, _) = self.link().call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        Ok(self.link().call::<_, MetadataResponse>(&MetadataRequest { topics }, &[]).await?.0)
    }

    /// One topic's metadata; an unknown topic is `UnknownTopic`.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        self.link().topic_metadata(topic).await
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicMeta>, ClientError> {
        Ok(self.metadata(None).await?.topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let topic = self.link().topic_metadata(name).await?;
        let request = DescribeConfigsRequest { names: vec![name.to_string()] };
        let (configs, _) = self.link().call::<_, DescribeConfigsResponse>(&request, &[]).await?;
        let configs = configs.topics.into_iter().next().map(|t| t.configs).unwrap_or_default();
        Ok(TopicDescription { name: topic.name, partitions: topic.partitions, configs })
    }

    /// Grows a topic to `partition_count` partitions in total. Records
    /// already written stay where they are; keyed records sent from now on
    /// may map to other partitions than before (as in Kafka). A count not
    /// above the current one is refused (`invalid partitions`): partitions
    /// are never removed.
    pub async fn create_partitions(
        &self,
        name: &str,
        partition_count: u32,
    ) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest {
            topics: vec![NewPartitions { name: name.to_string(), partition_count }],
        };
        let (results, _) = self.link().call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    /// What each partition stores (offsets, bytes, segments) of `topics`,
    /// or of every topic. Per-topic and per-partition errors (an unknown
    /// name, an offline partition) come back in the entries.
    pub async fn describe_partitions(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<Vec<TopicPartitions>, ClientError> {
        let request = DescribePartitionsRequest { topics };
        let (mut answer, _) =
            self.link().call::<_, DescribePartitionsResponse>(&request, &[]).await?;
        // In a cluster a broker describes the partitions it leads; the
        // others come from their leaders.
        let elsewhere = answer
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code == ErrorCode::NotLeader.as_u16());
        if elsewhere {
            self.describe_at_leaders(&request, &mut answer.topics).await?;
        }
        Ok(answer.topics)
    }

    /// Replaces each `not leader` entry of `topics` by its leader's.
    async fn describe_at_leaders(
        &self,
        request: &DescribePartitionsRequest,
        topics: &mut [TopicPartitions],
    ) -> Result<(), ClientError> {
        let view = self.cluster().await?;
        let mut leaders = std::collections::BTreeSet::new();
        for t in topics.iter() {
            for p in t.partitions.iter().filter(|p| p.error_code == ErrorCode::NotLeader.as_u16()) {
                if let Route::Leader { node_id, addr } = view.route(&t.name, p.partition) {
                    leaders.insert((node_id, addr.to_string()));
                }
            }
        }
        for (node_id, address) in leaders {
            // A leader that does not answer (dead, not fenced yet) leaves
            // its partitions with the `not leader` entry that names it.
            let asked = match self.pool.connection(node_id, &address) {
                Ok(conn) => conn.call::<_, DescribePartitionsResponse>(request, &[]).await,
                Err(e) => Err(e),
            };
            let theirs = match asked {
                Ok((theirs, _)) => theirs,
                Err(e) => {
                    tracing::debug!(node_id, %address, error = %e, "a leader did not describe its partitions");
                    continue;
                }
            };
            for (mine, theirs) in topics.iter_mut().zip(theirs.topics) {
                for (p, q) in mine.partitions.iter_mut().zip(theirs.partitions) {
                    if p.error_code == ErrorCode::NotLeader.as_u16() && q.error_code == 0 {
                        *p = q;
                    }
                }
            }
        }
        Ok(())
    }

    /// The broker's identity, listeners, uptime, partitions and disk. A
    /// broker that is shutting down answers `shutting down`.
    pub async fn describe_broker(&self) -> Result<DescribeBrokerResponse, ClientError> {
        let (answer, _) =
            self.link().call::<_, DescribeBrokerResponse>(&DescribeBrokerRequest {}, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message.clone()) {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// The offsets for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`)
    /// of several partitions of a topic, in that order, each asked of its
    /// leader (one request per leader); each result carries its own error
    /// (`not leader` when the partition moved meanwhile, `unknown topic or
    /// partition`). A partition without a leader fails the call
    /// (`NoLeader`).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        timestamp: i64,
    ) -> Result<Vec<ListOffsetsResult>, ClientError> {
        let view = self.topic_view(topic).await?;
        let mut by_leader: BTreeMap<(u32, &str), Vec<u32>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for &partition in partitions {
            match view.route(topic, partition) {
                Route::Leader { node_id, addr } => {
                    by_leader.entry((node_id, addr)).or_default().push(partition)
                }
                Route::NoLeader => {
                    return Err(ClientError::NoLeader { topic: topic.to_string(), partition })
                }
                // The topic's first broker answers them as it does.
                Route::Unknown | Route::NotAsked => unknown.push(partition),
            }
        }
        let ask = |conn: Arc<Connection>, partitions: Vec<u32>| async move {
            let partitions = partitions
                .into_iter()
                .map(|partition| ListOffsetsPartition {
                    topic: topic.to_string(),
                    partition,
                    timestamp,
                })
                .collect();
            let request = ListOffsetsRequest { partitions };
            let (answer, _) = conn.call::<_, ListOffsetsResponse>(&request, &[]).await?;
            Ok::<_, ClientError>(answer.partitions)
        };
        let mut results = Vec::with_capacity(partitions.len());
        for ((node_id, addr), led) in by_leader {
            results.extend(ask(self.pool.connection(node_id, addr)?, led).await?);
        }
        if !unknown.is_empty() {
            results.extend(ask(self.connection()?, unknown).await?);
        }
        Ok(partitions
            .iter()
            .filter_map(|p| {
                let at = results.iter().position(|r| r.partition == *p)?;
                Some(results.swap_remove(at))
            })
            .collect())
    }

    /// The offset for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`),
    /// asked of the partition's leader.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        let view = self.topic_view(topic).await?;
        match view.route(topic, partition) {
            Route::Leader { node_id, addr } => {
                self.pool.connection(node_id, addr)?.list_offset(topic, partition, timestamp).await
            }
            Route::NoLeader => Err(ClientError::NoLeader { topic: topic.to_string(), partition }),
            Route::Unknown | Route::NotAsked => {
                self.link().list_offset(topic, partition, timestamp).await
            }
        }
    }

    /// The cluster as far as `topic` is concerned: its partitions' leaders
    /// and the brokers' addresses.
    async fn topic_view(&self, topic: &str) -> Result<ClusterView, ClientError> {
        let conn = self.connection()?;
        let request = MetadataRequest { topics: Some(vec![topic.to_string()]) };
        let (answer, _) = conn.call::<_, MetadataResponse>(&request, &[]).await?;
        let asked = Asked::Topics([topic.to_string()].into());
        Ok(ClusterView::new(answer, asked, conn.addr().ip()))
    }

    /// Every consumer group of the cluster, by id: each alive broker lists
    /// the groups it coordinates (a fenced broker coordinates none that
    /// anyone can reach now).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let view = self.cluster().await?;
        let brokers: Vec<(u32, String)> = view
            .brokers()
            .filter(|b| b.status == "alive")
            .filter_map(|b| Some((b.node_id, view.broker_address(b.node_id)?.to_string())))
            .collect();
        let mut groups = BTreeMap::new();
        if brokers.is_empty() {
            // The metadata lists no alive broker yet: ask the one we know.
            let conn = self.connection()?;
            for g in list_groups_at(&conn).await? {
                groups.insert(g.group_id.clone(), g);
            }
        }
        for (node_id, address) in brokers {
            let conn = self.pool.connection(node_id, &address)?;
            for g in list_groups_at(&conn).await? {
                groups.insert(g.group_id.clone(), g);
            }
        }
        Ok(groups.into_values().collect())
    }

    /// The consumer groups the broker this admin was given coordinates
    /// (each group has one coordinator, so a broker reporting on these
    /// alone reports each group once in a cluster).
    pub async fn list_groups_coordinated_here(&self) -> Result<Vec<GroupListing>, ClientError> {
        let conn = self.connection()?;
        list_groups_at(&conn).await
    }

    /// Members, assignments and committed offsets of `group_ids`, in that
    /// order, each asked of its coordinator; each entry carries its own
    /// error (`group not found`, ...).
    pub async fn describe_groups(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<GroupDescription>, ClientError> {
        self.by_coordinator(group_ids, |conn, group_ids| async move {
            let request = DescribeGroupsRequest { group_ids };
            let (answer, _) = conn.call::<_, DescribeGroupsResponse>(&request, &[]).await?;
            Ok(answer.groups.into_iter().map(|g| (g.group_id.clone(), g)).collect())
        })
        .await
    }

    /// Deletes groups and their offsets, each at its coordinator; each
    /// result carries its own error (`group not empty` while it has
    /// members, `group not found`).
    pub async fn delete_groups(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<GroupResult>, ClientError> {
        self.by_coordinator(group_ids, |conn, group_ids| async move {
            let request = DeleteGroupsRequest { group_ids };
            let (answer, _) = conn.call::<_, DeleteGroupsResponse>(&request, &[]).await?;
            Ok(answer.results.into_iter().map(|r| (r.group_id.clone(), r)).collect())
        })
        .await
    }

    /// Asks about `group_ids` at their coordinators: `ask` runs once per
    /// coordinator, over its connection, with the ids it coordinates, and
    /// answers `(group id, result)` pairs; the results come back in the
    /// order of `group_ids`. An id no coordinator is named for (`invalid
    /// group id`, ...) is asked of the bootstrap broker, which answers it
    /// with its error as it always did.
    async fn by_coordinator<T, F, Asked>(
        &self,
        group_ids: &[String],
        ask: F,
    ) -> Result<Vec<T>, ClientError>
    where
        T: Clone,
        F: Fn(Arc<Connection>, Vec<String>) -> Asked,
        Asked: std::future::Future<Output = Result<Vec<(String, T)>, ClientError>>,
    {
        let found = futures::future::join_all(
            group_ids.iter().map(|group_id| find_coordinator(&self.pool, group_id)),
        )
        .await;
        let mut by_coordinator: BTreeMap<Option<(u32, String)>, Vec<String>> = BTreeMap::new();
        for (group_id, found) in group_ids.iter().zip(found) {
            let coordinator = match found {
                Ok(c) => Some((c.node_id, c.addr)),
                Err(ClientError::Broker { .. }) => None,
                Err(e) => return Err(e),
            };
            let ids = by_coordinator.entry(coordinator).or_default();
            if !ids.contains(group_id) {
                ids.push(group_id.clone());
            }
        }
        let mut answered = Vec::with_capacity(group_ids.len());
        for (coordinator, ids) in by_coordinator {
            let conn = match coordinator {
                Some((node_id, addr)) => self.pool.connection(node_id, &addr)?,
                None => self.connection()?,
            };
            answered.extend(ask(conn, ids).await?);
        }
        group_ids
            .iter()
            .map(|id| {
                let found = answered.iter().find(|(group_id, _)| group_id == id);
                found.map(|(_, t)| t.clone()).ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "the coordinator did not answer for group {id:?}"
                    ))
                })
            })
            .collect()
    }

    /// A group's committed offsets: of `partitions` (offset -1 where none
    /// is committed), or every one it committed. Asked of its coordinator.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicAssignment>>,
    ) -> Result<Vec<FetchedOffset>, ClientError> {
        let request = OffsetFetchRequest { group_id: group_id.to_string(), partitions };
        let coordinator = GroupCoordinator::new(self.pool.clone(), group_id);
        let answer = coordinator.call::<_, OffsetFetchResponse>(&request, |a| a.error_code).await?;
        match ClientError::from_code(answer.error_code, answer.message) {
            Some(e) => Err(e),
            None => Ok(answer.offsets),
        }
    }

    /// Sets a group's committed offsets, at its coordinator. The broker
    /// refuses it while the group has members (`group not empty`, in each
    /// partition's result); each result carries its own error.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: Vec<CommitOffset>,
    ) -> Result<Vec<PartitionResult>, ClientError> {
        let request = ResetOffsetsRequest { group_id: group_id.to_string(), offsets };
        let coordinator = GroupCoordinator::new(self.pool.clone(), group_id);
        let answer =
            coordinator.call::<_, OffsetCommitResponse>(&request, |a| a.error_code).await?;
        match ClientError::from_code(answer.error_code, answer.message) {
            Some(e) => Err(e),
            None => Ok(answer.partitions),
        }
    }

    /// The partitions of a described group — those it committed and those
    /// its members hold — with their ends (high watermarks, asked of the
    /// leaders), so their lag.
    pub async fn group_lags(
        &self,
        d: &GroupDescription,
    ) -> Result<BTreeMap<(String, u32), PartitionLag>, ClientError> {
        let mut lags: BTreeMap<(String, u32), PartitionLag> = BTreeMap::new();
        for o in &d.offsets {
            let entry = lags.entry((o.topic.clone(), o.partition)).or_default();
            entry.committed = u64::try_from(o.offset).ok();
        }
        for m in &d.members {
            for t in &m.assignment {
                for &p in &t.partitions {
                    lags.entry((t.topic.clone(), p)).or_default().owner = Some(m.member_id.clone());
                }
            }
        }
        let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (topic, p) in lags.keys() {
            by_topic.entry(topic.clone()).or_default().push(*p);
        }
        for (topic, partitions) in by_topic {
            for r in self.list_offsets(&topic, &partitions, LATEST_TIMESTAMP).await? {
                if let Some(entry) = lags.get_mut(&(topic.clone(), r.partition)) {
                    if r.error_code == 0 {
                        entry.end = Some(r.offset);
                    } else {
                        entry.error = Some(r.message);
                    }
                }
            }
        }
        Ok(lags)
    }

    /// The cluster as the answering broker sees it: the metadata quorum's
    /// leader and voters, the brokers, offline partitions and the digest
    /// of the metadata it applied. Log lags and heartbeat ages are known
    /// only when the answering broker is the controller (`node_id ==
    /// leader_id`); ask that broker for them.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, ClientError> {
        let (answer, _) =
            self.link().call::<_, ClusterStatusResponse>(&ClusterStatusRequest {}, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message.clone()) {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// An operator's action on leaderships and replicas (failover,
    /// failback, transfer-leader, move, decommission, settings); any
    /// broker takes it and forwards it to the controller. `Ok` once the
    /// controller committed it; what it sets going follows.
    pub async fn cluster_action(&self, action: ClusterAction) -> Result<(), ClientError> {
        let request = ClusterActionRequest { action };
        let (answer, _) = self.link().call::<_, ClusterActionResponse>(&request, &[]).await?;
        ClientError::from_code(answer.error_code, answer.message).map_or(Ok(()), Err)
    }

    /// Adds or removes one voter of the metadata quorum; any broker takes
    /// it and forwards it to the controller.
    pub async fn alter_voters(&self, change: VoterChange) -> Result<(), ClientError> {
        let request = match change {
            VoterChange::Add(node_id) => AlterVotersRequest { add: vec![node_id], remove: vec![] },
            VoterChange::Remove(node_id) => {
                AlterVotersRequest { add: vec![], remove: vec![node_id] }
            }
        };
        let (answer, _) = self.link().call::<_, AlterVotersResponse>(&request, &[]).await?;
        ClientError::from_code(answer.error_code, answer.message).map_or(Ok(()), Err)
    }
}

/// The groups one broker coordinates.
async fn list_groups_at(conn: &Connection) -> Result<Vec<GroupListing>, ClientError> {
    let (answer, _) = conn.call::<_, ListGroupsResponse>(&ListGroupsRequest {}, &[]).await?;
    match ClientError::from_code(answer.error_code, answer.message) {
        Some(e) => Err(e),
        None => Ok(answer.groups),
    }
}
