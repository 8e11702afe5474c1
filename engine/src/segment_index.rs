//! The sparse offset index (`.index`) and time index (`.timeindex`) of one
//! segment.
//!
//! Every `INDEX_INTERVAL_BYTES` of log, the batch that starts there gets an
//! entry in both: `.index` maps its offset (relative to the segment's base)
//! to its file position; `.timeindex` records the largest timestamp seen in
//! the segment up to and including that batch. Entries are never written
//! for position 0 (it is implicit), so an all-zero entry marks the end of a
//! file. Index files are written with the log but not synced: recovery
//! checks them against the log and rebuilds what is missing or stale.
//!
//! Invariants: entries are strictly increasing in offset and position, and
//! non-decreasing in timestamp; every entry points at a batch start below
//! the segment's flushed end.

use crate::appender::Appender;
use crate::limits::INDEX_INTERVAL_BYTES;

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub position_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// Largest timestamp in the segment up to and including this batch.
    pub timestamp_ms: i64,
    pub relative_offset: u32,
    pub position_bytes: u32,
}

impl IndexEntry {
    fn encode(&self) -> [u8; OFFSET_ENTRY_BYTES] {
        let mut out = [0u8; OFFSET_ENTRY_BYTES];
        out[..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[4..].copy_from_slice(&self.position_bytes.to_le_bytes());
        out
    }
}

impl TimeIndexEntry {
    fn encode(&self) -> [u8; TIME_ENTRY_BYTES] {
        let mut out = [0u8; TIME_ENTRY_BYTES];
        out[..8].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
        out[12..].copy_from_slice(&self.position_bytes.to_le_bytes());
        out
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes index bytes, keeping the longest valid prefix: stops at the zero
/// end marker, at the first entry that does not increase, or at one that
/// points at or beyond `log_end_bytes`.
pub fn decode_offset_entries(bytes: &[u8], log_end_bytes: u64) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    for raw in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
        let entry =
            IndexEntry { relative_offset: le_u32(&raw[..4]), position_bytes: le_u32(&raw[4..]) };
        let increasing = entries.last().is_none_or(|last| {
            entry.relative_offset > last.relative_offset
                && entry.position_bytes > last.position_bytes
        });
        if entry.position_bytes == 0
            || !increasing
            || u64::from(entry.position_bytes) >= log_end_bytes
        {
            break;
        }
        entries.push(entry);
    }
    entries
}

/// Decodes time index bytes with the same rules as the offset index.
pub fn decode_time_entries(bytes: &[u8], log_end_bytes: u64) -> Vec<TimeIndexEntry> {
    let mut entries: Vec<TimeIndexEntry> = Vec::new();
    for raw in bytes.chunks_exact(TIME_ENTRY_BYTES) {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let entry = TimeIndexEntry {
            timestamp_ms: i64::from_le_bytes(ts),
            relative_offset: le_u32(&raw[8..12]),
            position_bytes: le_u32(&raw[12..]),
        };
        let increasing = entries.last().is_none_or(|last| {
            entry.timestamp_ms >= last.timestamp_ms
                && entry.relative_offset > last.relative_offset
                && entry.position_bytes > last.position_bytes
        });
        if entry.position_bytes == 0
            || !increasing
            || u64::from(entry.position_bytes) >= log_end_bytes
        {
            break;
        }
        entries.push(entry);
    }
    entries
}

/// Both indexes of a segment, in memory, optionally mirrored to their files.
pub struct SegmentIndex {
    offsets: Vec<IndexEntry>,
    times: Vec<TimeIndexEntry>,
    /// Position of the batch that got the last entry (0 when none).
    last_entry_position_bytes: u64,
    max_timestamp_ms: i64,
    offset_file: Option<Appender>,
    time_file: Option<Appender>,
}

impl SegmentIndex {
    pub fn new(offset_file: Option<Appender>, time_file: Option<Appender>) -> SegmentIndex {
        SegmentIndex {
            offsets: Vec::new(),
            times: Vec::new(),
            last_entry_position_bytes: 0,
            max_timestamp_ms: i64::MIN,
            offset_file,
            time_file,
        }
    }

    /// Loads entries already on disk (and in the files the appenders resume).
    pub fn load(&mut self, offsets: Vec<IndexEntry>, times: Vec<TimeIndexEntry>) {
        assert!(self.offsets.is_empty() && self.times.is_empty(), "load into a used index");
        self.last_entry_position_bytes = offsets.last().map_or(0, |e| u64::from(e.position_bytes));
        self.max_timestamp_ms = times.last().map_or(i64::MIN, |e| e.timestamp_ms);
        self.offsets = offsets;
        self.times = times;
    }

    /// Records a batch appended at `position_bytes`; adds entries when an
    /// interval of log has passed since the last one.
    pub fn on_batch(&mut self, relative_offset: u32, position_bytes: u64, max_timestamp_ms: i64) {
        self.max_timestamp_ms = self.max_timestamp_ms.max(max_timestamp_ms);
        if position_bytes < self.last_entry_position_bytes + INDEX_INTERVAL_BYTES {
            return;
        }
        let position = u32::try_from(position_bytes).expect("segments are smaller than 4 GiB");
        let entry = IndexEntry { relative_offset, position_bytes: position };
        if let Some(last) = self.offsets.last() {
            assert!(entry.relative_offset > last.relative_offset, "index offsets must increase");
        }
        let time = TimeIndexEntry {
            timestamp_ms: self.max_timestamp_ms,
            relative_offset,
            position_bytes: position,
        };
        if let Some(f) = &mut self.offset_file {
            f.append(&entry.encode());
        }
        if let Some(f) = &mut self.time_file {
            f.append(&time.encode());
        }
        self.offsets.push(entry);
        self.times.push(time);
        self.last_entry_position_bytes = position_bytes;
    }

    /// The last entry at or before `relative_offset`: where a scan for it starts.
    pub fn lookup_offset(&self, relative_offset: u32) -> IndexEntry {
        let i = self.offsets.partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            IndexEntry { relative_offset: 0, position_bytes: 0 }
        } else {
            self.offsets[i - 1]
        }
    }

    /// Where a scan for the first record at or after `timestamp_ms` starts:
    /// the last entry whose running maximum is still below it (every batch
    /// before that entry is older).
    pub fn lookup_time(&self, timestamp_ms: i64) -> IndexEntry {
        let i = self.times.partition_point(|e| e.timestamp_ms < timestamp_ms);
        if i == 0 {
            IndexEntry { relative_offset: 0, position_bytes: 0 }
        } else {
            let e = self.times[i - 1];
            IndexEntry { relative_offset: e.relative_offset, position_bytes: e.position_bytes }
        }
    }

    /// Accounts for batches after the last entry, seen by a scan.
    pub fn raise_max_timestamp(&mut self, timestamp_ms: i64) {
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    pub fn offsets(&self) -> &[IndexEntry] {
        &self.offsets
    }

    pub fn times(&self) -> &[TimeIndexEntry] {
        &self.times
    }

    pub fn files_mut(&mut self) -> (Option<&mut Appender>, Option<&mut Appender>) {
        (self.offset_file.as_mut(), self.time_file.as_mut())
    }

    /// Drops the file appenders (the segment is closed for writing).
    pub fn detach_files(&mut self) -> (Option<Appender>, Option<Appender>) {
        (self.offset_file.take(), self.time_file.take())
    }

    /// Encoded bytes of every entry, for rewriting the files.
    pub fn encoded(&self) -> (Vec<u8>, Vec<u8>) {
        let offsets = self.offsets.iter().flat_map(|e| e.encode()).collect();
        let times = self.times.iter().flat_map(|e| e.encode()).collect();
        (offsets, times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_interval_and_lookups_find_the_floor() {
        let mut index = SegmentIndex::new(None, None);
        let mut position = 0u64;
        for rel in 0..100u32 {
            index.on_batch(rel, position, 1000 + i64::from(rel));
            position += 1024;
        }
        assert_eq!(index.offsets().len(), 24);
        assert_eq!(index.lookup_offset(0).position_bytes, 0);
        let e = index.lookup_offset(50);
        assert!(e.relative_offset <= 50 && e.relative_offset + 4 > 50);
        assert_eq!(u64::from(e.position_bytes), u64::from(e.relative_offset) * 1024);
        let t = index.lookup_time(1050);
        assert!(t.relative_offset < 50);
    }

    #[test]
    fn decoding_keeps_the_valid_prefix() {
        let mut index = SegmentIndex::new(None, None);
        for rel in 0..10u32 {
            index.on_batch(rel, u64::from(rel) * 4096, 5);
        }
        let (mut bytes, _) = index.encoded();
        assert_eq!(decode_offset_entries(&bytes, 1 << 30).len(), 9);
        // Entries pointing beyond the log are stale.
        assert_eq!(decode_offset_entries(&bytes, 4096 * 5).len(), 4);
        // A non-increasing entry ends the valid prefix.
        bytes[5 * 8..5 * 8 + 4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode_offset_entries(&bytes, 1 << 30).len(), 5);
    }
}
