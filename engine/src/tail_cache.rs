//! Recent batches of one partition kept in memory, so readers that follow
//! the tail of the log are served without disk reads.
//!
//! Owned by the partition on its shard. Bounded by a byte budget; the oldest
//! batches go first (but the newest batch always stays).
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
