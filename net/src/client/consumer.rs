//! The consumer: reads assigned partitions from chosen positions, checking
//! every batch's CRC again (end to end). Consumer groups come later; the
//! positions here are the consumer's own.

use super::{connect_any, ClientError, Connection};
use crate::protocol::*;
use mamba_engine::batch::iter_batches;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bound on one fetch's records, all partitions together.
    pub fetch_max_bytes: u32,
    /// Bound per partition.
    pub partition_max_bytes: u32,
    /// A fetch waits for at least this many bytes (or the poll timeout).
    pub fetch_min_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            fetch_max_bytes: 16 << 20,
            partition_max_bytes: 4 << 20,
            fetch_min_bytes: 1,
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Earliest,
    Latest,
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub struct Consumer {
    conn: Connection,
    config: ConsumerConfig,
    /// (topic, partition) -> next offset to read.
    positions: BTreeMap<(String, u32), u64>,
}

impl Consumer {
    pub fn connect(brokers: &str, config: ConsumerConfig) -> Result<Consumer, ClientError> {
        Ok(Consumer { conn: connect_any(brokers)?, config, positions: BTreeMap::new() })
    }

    /// The partitions of `topic`, from the broker.
    pub fn partitions(&self, topic: &str) -> Result<Vec<u32>, ClientError> {
        let t = futures::executor::block_on(self.conn.topic_metadata(topic))?;
        Ok(t.partitions.iter().map(|p| p.partition).collect())
    }

    /// Reads `partitions` of `topic` (all of them when empty) from `from`.
    pub fn assign(
        &mut self,
        topic: &str,
        partitions: &[u32],
        from: SeekTo,
    ) -> Result<(), ClientError> {
        let all = self.partitions(topic)?;
        let chosen: Vec<u32> =
            if partitions.is_empty() { all.clone() } else { partitions.to_vec() };
        for p in &chosen {
            if !all.contains(p) {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {topic:?} has no partition {p}"
                )));
            }
        }
        for p in chosen {
            self.positions.insert((topic.to_string(), p), 0);
            self.seek(topic, p, from)?;
        }
        Ok(())
    }

    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<(), ClientError> {
        let timestamp = match to {
            SeekTo::Offset(offset) => {
                self.positions.insert((topic.to_string(), partition), offset);
                return Ok(());
            }
            SeekTo::Earliest => EARLIEST_TIMESTAMP,
            SeekTo::Latest => LATEST_TIMESTAMP,
            SeekTo::Timestamp(ts) => ts,
        };
        let offset =
            futures::executor::block_on(self.conn.list_offset(topic, partition, timestamp))?;
        self.positions.insert((topic.to_string(), partition), offset);
        Ok(())
    }

    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Waits up to `timeout` for records of the assigned partitions.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        futures::executor::block_on(self.poll_async(timeout))
    }

    pub async fn poll_async(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.positions.is_empty() {
            return Err(ClientError::InvalidArgument("assign partitions before polling".into()));
        }
        let request = FetchRequest {
            max_wait_ms: timeout.as_millis().min(u128::from(u32::MAX)) as u32,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            partitions: self
                .positions
                .iter()
                .map(|((topic, partition), offset)| FetchPartition {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                    max_bytes: self.config.partition_max_bytes,
                })
                .collect(),
        };
        let (answer, frame) = self.conn.call::<_, FetchResponse>(&request, &[]).await?;
        let mut records = Vec::new();
        for p in answer.partitions {
            if let Some(e) = ClientError::from_code(p.error_code, p.message) {
                return Err(e);
            }
            let bytes = slice_of(frame.payload(), p.records)
                .ok_or_else(|| ClientError::Protocol("records slice outside the payload".into()))?;
            let key = (p.topic.clone(), p.partition);
            let mut next = self.positions.get(&key).copied().unwrap_or(0);
            for batch in iter_batches(bytes) {
                let batch = batch?;
                for r in batch.iter() {
                    if r.offset.0 < next {
                        continue;
                    }
                    records.push(ConsumerRecord {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: r.offset.0,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key().map(<[u8]>::to_vec),
                        value: r.value().to_vec(),
                        headers: r.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
                    });
                }
                next = next.max(batch.header().last_offset().0 + 1);
            }
            self.positions.insert(key, next);
        }
        Ok(records)
    }
}
