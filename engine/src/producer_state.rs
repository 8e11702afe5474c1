//! Idempotent producers: per partition, the last sequence numbers each
//! producer id wrote, so a retried batch is answered with its original
//! offsets instead of being written twice, and a gap is refused.
//!
//! Owned by the partition log on its shard. Rebuilt at open by scanning the
//! active segment (a producer whose last batch is older than that is
//! treated as new: it may continue from any sequence).

use crate::batch::{BatchHeader, NO_PRODUCER_ID};
use crate::error::EngineError;
use crate::ids::Offset;
use crate::partition::AppendInfo;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: as many as a producer may have in
/// flight to one partition and retry.
pub const RECENT_BATCHES_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    base_sequence: u32,
    last_sequence: u32,
    info: AppendInfo,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: u16,
    recent: VecDeque<Written>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent, or the next batch of its producer: append it.
    Append,
    /// Already written: answer with these offsets, write nothing.
    Duplicate(AppendInfo),
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<u64, Producer>,
}

fn last_sequence(h: &BatchHeader) -> u32 {
    h.base_sequence.wrapping_add(h.record_count.saturating_sub(1))
}

impl ProducerStates {
    /// Checks an incoming batch against what its producer wrote before.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, EngineError> {
        if h.producer_id == NO_PRODUCER_ID {
            return Ok(SequenceCheck::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < p.epoch {
            return Err(EngineError::ProducerFenced {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current_epoch: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            // A new epoch starts its sequences afresh.
            return Ok(SequenceCheck::Append);
        }
        if let Some(w) = p
            .recent
            .iter()
            .find(|w| w.base_sequence == h.base_sequence && w.last_sequence == last_sequence(h))
        {
            return Ok(SequenceCheck::Duplicate(w.info));
        }
        let expected = p.recent.back().map_or(0, |w| w.last_sequence.wrapping_add(1));
        if h.base_sequence != expected {
            return Err(EngineError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch that was appended (with its offsets).
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id == NO_PRODUCER_ID {
            return;
        }
        let p = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        p.recent.push_back(Written {
            base_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            info: AppendInfo { base_offset: h.base_offset, last_offset: h.last_offset() },
        });
        while p.recent.len() > RECENT_BATCHES_MAX {
            p.recent.pop_front();
        }
    }

    /// Forgets batches at or after `offset` (after a truncation).
    pub fn truncate(&mut self, offset: Offset) {
        for p in self.producers.values_mut() {
            p.recent.retain(|w| w.info.last_offset < offset);
        }
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, NewRecord};
    use crate::ids::LeaderEpoch;

    fn header(seq: u32, records: usize, at: u64) -> BatchHeader {
        let mut b = BatchBuilder::new().producer(7, 0, seq);
        for _ in 0..records {
            b.push(NewRecord::default());
        }
        let mut batch = b.build().expect("batch");
        batch.set_base_offset_and_epoch(Offset(at), LeaderEpoch(0));
        *batch.header()
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut states = ProducerStates::default();
        let first = header(0, 3, 0);
        assert!(matches!(states.check(&first), Ok(SequenceCheck::Append)));
        states.record(&first);
        let retry = header(0, 3, 99);
        let original = AppendInfo { base_offset: Offset(0), last_offset: Offset(2) };
        assert!(
            matches!(states.check(&retry), Ok(SequenceCheck::Duplicate(info)) if info == original)
        );
        assert!(matches!(states.check(&header(3, 1, 3)), Ok(SequenceCheck::Append)));
        assert!(matches!(
            states.check(&header(5, 1, 3)),
            Err(EngineError::OutOfOrderSequence { expected: 3, got: 5, .. })
        ));
    }
}
