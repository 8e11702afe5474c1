//! Recent batches of one partition kept in memory, so readers that follow
//! the tail of the log are served without disk reads.
//!
//! Owned by the partition on its shard. Bounded by a byte budget (its share
//! of the shard's, see `PartitionLog::share_tail_cache`); the oldest batches
//! go first (but the newest batch always stays).
//!
//! Invariant: batches are contiguous in offset and ascending.

use crate::batch::BatchHeader;
use crate::ids::Offset;
use bytes::Bytes;
use std::collections::VecDeque;

struct CachedBatch {
    base_offset: Offset,
    last_offset: Offset,
    bytes: Bytes,
}

pub struct TailCache {
    batches: VecDeque<CachedBatch>,
    size_bytes: usize,
    size_bytes_max: usize,
}

impl TailCache {
    pub fn new(size_bytes_max: usize) -> TailCache {
        TailCache { batches: VecDeque::new(), size_bytes: 0, size_bytes_max }
    }

    pub fn push(&mut self, header: &BatchHeader, bytes: Bytes) {
        if let Some(last) = self.batches.back() {
            assert_eq!(last.last_offset.plus(1), header.base_offset, "cache must stay contiguous");
        }
        self.size_bytes += bytes.len();
        self.batches.push_back(CachedBatch {
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            bytes,
        });
        self.evict();
    }

    /// Changes the budget, evicting down to it now.
    pub fn set_size_bytes_max(&mut self, size_bytes_max: usize) {
        self.size_bytes_max = size_bytes_max;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size_bytes > self.size_bytes_max && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.size_bytes -= old.bytes.len();
            }
        }
    }

    /// Batches from the one holding `offset`, below `high_watermark`, up to
    /// `max_bytes` (at least one). `None` when `offset` is older than the cache.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        high_watermark: Offset,
    ) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for batch in self.batches.iter().skip(start) {
            if batch.base_offset >= high_watermark {
                break;
            }
            if !out.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    /// Forgets batches at or after `offset` (a batch boundary).
    pub fn truncate(&mut self, offset: Offset) {
        while self.batches.back().is_some_and(|b| b.base_offset >= offset) {
            if let Some(b) = self.batches.pop_back() {
                self.size_bytes -= b.bytes.len();
            }
        }
        if self.batches.back().is_some_and(|b| b.last_offset >= offset) {
            // `offset` falls inside a batch: nothing cached can be trusted.
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.size_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{NO_PRODUCER_ID, NO_SEQUENCE};
    use crate::ids::LeaderEpoch;

    /// A one-record batch at `offset`.
    fn header_at(offset: u64) -> BatchHeader {
        BatchHeader {
            base_offset: Offset(offset),
            batch_length: 1024,
            leader_epoch: LeaderEpoch(0),
            crc: 0,
            magic: crate::batch::MAGIC,
            attributes: 0,
            last_offset_delta: 0,
            record_count: 1,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: 0,
            base_sequence: NO_SEQUENCE,
        }
    }

    #[test]
    fn a_smaller_share_evicts_the_oldest_batches_at_once() {
        let mut cache = TailCache::new(1 << 20);
        for i in 0..8u64 {
            cache.push(&header_at(i), Bytes::from(vec![0u8; 1024]));
        }
        assert!(cache.read(Offset(0), 1 << 20, Offset(8)).is_some());
        cache.set_size_bytes_max(3 * 1024);
        assert!(cache.read(Offset(0), 1 << 20, Offset(8)).is_none(), "old batches left");
        let kept = cache.read(Offset(5), 1 << 20, Offset(8)).expect("the newest stay");
        assert_eq!(kept.len(), 3);
        cache.set_size_bytes_max(0);
        assert_eq!(cache.read(Offset(7), 1 << 20, Offset(8)).map(|c| c.len()), Some(1));
    }
}
