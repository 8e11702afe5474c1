//! Topic and consumer group administration, and metadata.
//!
//! Requests go through a [`Link`]: after a broker restart or a timed out
//! request the next call opens a new connection. Admin requests are not
//! retried automatically (creating a topic twice is not the same as once);
//! the caller sees the error and may call again.

use super::{ClientError, Connection, Link, REQUEST_TIMEOUT_MS_DEFAULT};
use crate::protocol::*;
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

/// A topic as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
    pub configs: Vec<ConfigEntry>,
}

pub struct Admin {
    conn: Link,
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
        Ok(Admin { conn: Link::connect(brokers, request_timeout)? })
    }

    /// The live connection (a new one if the last one died), for requests
    /// this type has no method for.
    pub fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        self.conn.connection()
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
        let (results, _) = self.conn.call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicsRequest { names: vec![name.to_string()] };
        let (results, _) = self.conn.call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn alter_topic(
        &self,
        name: &str,
        configs: Vec<ConfigEntry>,
    ) -> Result<(), ClientError> {
        let request =
            AlterConfigsRequest { topics: vec![AlterTopic { name: name.to_string(), configs }] };
        let (results, _) = self.conn.call::<_, TopicResults>(&request, &[]).await?;
        first_result(results)
    }

    pub async fn metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        Ok(self.conn.call::<_, MetadataResponse>(&MetadataRequest { topics }, &[]).await?.0)
    }

    /// One topic's metadata; an unknown topic is `UnknownTopic`.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        self.conn.topic_metadata(topic).await
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicMeta>, ClientError> {
        Ok(self.metadata(None).await?.topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let topic = self.conn.topic_metadata(name).await?;
        let request = DescribeConfigsRequest { names: vec![name.to_string()] };
        let (configs, _) = self.conn.call::<_, DescribeConfigsResponse>(&request, &[]).await?;
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
        let (results, _) = self.conn.call::<_, TopicResults>(&request, &[]).await?;
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
        let (answer, _) = self.conn.call::<_, DescribePartitionsResponse>(&request, &[]).await?;
        Ok(answer.topics)
    }

    /// The broker's identity, listeners, uptime, partitions and disk. A
    /// broker that is shutting down answers `shutting down`.
    pub async fn describe_broker(&self) -> Result<DescribeBrokerResponse, ClientError> {
        let (answer, _) =
            self.conn.call::<_, DescribeBrokerResponse>(&DescribeBrokerRequest {}, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message.clone()) {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// The offsets for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`)
    /// of several partitions of a topic, in one request; each result
    /// carries its own error.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        timestamp: i64,
    ) -> Result<Vec<ListOffsetsResult>, ClientError> {
        let partitions = partitions
            .iter()
            .map(|&partition| ListOffsetsPartition {
                topic: topic.to_string(),
                partition,
                timestamp,
            })
            .collect();
        let request = ListOffsetsRequest { partitions };
        let (answer, _) = self.conn.call::<_, ListOffsetsResponse>(&request, &[]).await?;
        Ok(answer.partitions)
    }

    /// The offset for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        self.conn.list_offset(topic, partition, timestamp).await
    }

    /// Every consumer group the broker coordinates, by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let (answer, _) =
            self.conn.call::<_, ListGroupsResponse>(&ListGroupsRequest {}, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message) {
            Some(e) => Err(e),
            None => Ok(answer.groups),
        }
    }

    /// Members, assignments and committed offsets of `group_ids`, in that
    /// order; each entry carries its own error (`group not found`, ...).
    pub async fn describe_groups(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<GroupDescription>, ClientError> {
        let request = DescribeGroupsRequest { group_ids: group_ids.to_vec() };
        let (answer, _) = self.conn.call::<_, DescribeGroupsResponse>(&request, &[]).await?;
        Ok(answer.groups)
    }

    /// Deletes groups and their offsets; each result carries its own error
    /// (`group not empty` while it has members, `group not found`).
    pub async fn delete_groups(
        &self,
        group_ids: &[String],
    ) -> Result<Vec<GroupResult>, ClientError> {
        let request = DeleteGroupsRequest { group_ids: group_ids.to_vec() };
        let (answer, _) = self.conn.call::<_, DeleteGroupsResponse>(&request, &[]).await?;
        Ok(answer.results)
    }

    /// A group's committed offsets: of `partitions` (offset -1 where none
    /// is committed), or every one it committed.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicAssignment>>,
    ) -> Result<Vec<FetchedOffset>, ClientError> {
        let request = OffsetFetchRequest { group_id: group_id.to_string(), partitions };
        let (answer, _) = self.conn.call::<_, OffsetFetchResponse>(&request, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message) {
            Some(e) => Err(e),
            None => Ok(answer.offsets),
        }
    }

    /// Sets a group's committed offsets. The broker refuses it while the
    /// group has members (`group not empty`, in each partition's result);
    /// each result carries its own error.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        offsets: Vec<CommitOffset>,
    ) -> Result<Vec<PartitionResult>, ClientError> {
        let request = ResetOffsetsRequest { group_id: group_id.to_string(), offsets };
        let (answer, _) = self.conn.call::<_, OffsetCommitResponse>(&request, &[]).await?;
        match ClientError::from_code(answer.error_code, answer.message) {
            Some(e) => Err(e),
            None => Ok(answer.partitions),
        }
    }
}
