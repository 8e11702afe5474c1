//! A group's committed offsets: where its members resume each partition.
//!
//! No I/O: the coordinator checks who may commit (see `Group::commit`),
//! this store keeps the values and forgets them after retention.

use super::coordinator::TopicPartition;
use std::collections::BTreeMap;

/// Bound on the metadata string a commit may carry (Kafka's
/// `offset.metadata.max.bytes` default).
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;

/// One committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: u64,
    /// The application's note (Kafka's commit metadata).
    pub metadata: String,
    pub commit_ms: i64,
}

/// Committed offsets by partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetStore {
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl OffsetStore {
    pub fn get(&self, partition: &TopicPartition) -> Option<&CommittedOffset> {
        self.offsets.get(partition)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &CommittedOffset)> {
        self.offsets.iter()
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Stores `committed` for `partition`. The caller checked the
    /// committer; this checks the value.
    pub fn put(
        &mut self,
        partition: TopicPartition,
        committed: CommittedOffset,
    ) -> Result<(), String> {
        if committed.metadata.len() > COMMIT_METADATA_BYTES_MAX {
            return Err(format!(
                "commit metadata of {} bytes is over the {COMMIT_METADATA_BYTES_MAX}-byte limit",
                committed.metadata.len()
            ));
        }
        self.offsets.insert(partition, committed);
        Ok(())
    }

    pub fn remove(&mut self, partition: &TopicPartition) -> Option<CommittedOffset> {
        self.offsets.remove(partition)
    }

    /// Forgets offsets committed before `now_ms - retention_ms`; returns
    /// which. Only a group without members expires its offsets (Kafka's
    /// `offsets.retention.ms`), which the caller decides.
    pub fn expire(&mut self, retention_ms: u64, now_ms: i64) -> Vec<TopicPartition> {
        let horizon_ms = now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
        let expired: Vec<TopicPartition> = self
            .offsets
            .iter()
            .filter(|(_, c)| c.commit_ms < horizon_ms)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in &expired {
            self.offsets.remove(tp);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, commit_ms: i64) -> CommittedOffset {
        CommittedOffset { offset, metadata: String::new(), commit_ms }
    }

    #[test]
    fn commits_replace_and_old_ones_expire() {
        let mut store = OffsetStore::default();
        store.put(("t".into(), 0), at(10, 1_000)).expect("put");
        store.put(("t".into(), 0), at(20, 2_000)).expect("put");
        store.put(("t".into(), 1), at(5, 9_000)).expect("put");
        assert_eq!(store.get(&("t".into(), 0)).map(|c| c.offset), Some(20));
        assert_eq!(store.expire(5_000, 10_000), vec![("t".to_string(), 0)]);
        assert_eq!(store.len(), 1);
        let huge = CommittedOffset { metadata: "x".repeat(5000), ..at(1, 1) };
        let err = store.put(("t".into(), 2), huge).expect_err("too long");
        assert!(err.contains("4096"), "{err}");
        assert!(store.get(&("t".into(), 2)).is_none(), "nothing stored");
    }
}
