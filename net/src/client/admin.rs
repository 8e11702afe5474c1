//! Topic administration and metadata.

use super::{connect_any, ClientError, Connection};
use crate::protocol::*;

/// A topic as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
    pub configs: Vec<ConfigEntry>,
}

pub struct Admin {
    conn: Connection,
}

fn first_result(results: TopicResults) -> Result<(), ClientError> {
    match results.results.into_iter().next() {
        Some(r) => ClientError::from_code(r.error_code, r.message).map_or(Ok(()), Err),
        None => Err(ClientError::Protocol("empty result list".into())),
    }
}

impl Admin {
    pub fn connect(brokers: &str) -> Result<Admin, ClientError> {
        Ok(Admin { conn: connect_any(brokers)? })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
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

    /// The offset for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        self.conn.list_offset(topic, partition, timestamp).await
    }
}
