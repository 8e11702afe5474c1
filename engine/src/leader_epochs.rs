//! A partition's leader epoch history (Kafka's `leader-epoch-checkpoint`):
//! for every leader epoch with batches in the log, the offset of its first
//! batch.
//!
//! Replication rests on it. A follower that rejoins asks its leader where
//! the epoch of its own last batch ends in the leader's log
//! ([`LeaderEpochHistory::end_offset_for`], Kafka's OffsetForLeaderEpoch)
//! and cuts its log there before fetching, so logs that diverged under an
//! old leader agree again without losing what a new leader acknowledged
//! (Kafka's KIP-101 and KIP-279).
//!
//! Entries are ordered with both the epoch and the start offset strictly
//! increasing. The history is a function of the log: batch headers carry
//! their leader epoch, and epochs only grow along a log, so each epoch's
//! entry is the base offset of its first batch. `PartitionLog` keeps it so:
//!
//! - **appends**: the entry of a new epoch reaches the file (atomically,
//!   synced) before the first batch of that epoch enters the log, so after
//!   a crash the file is a superset of what the log holds. A batch of an
//!   epoch older than the latest is refused;
//! - **truncation** (and recovery after an I/O error) cuts the entries
//!   starting at or past the new log end, and the file is rewritten; should
//!   that fail, the next append rewrites it before the log grows past them
//!   (until then, open would cut them too);
//! - **retention** drops, in memory, the entries wholly before the log
//!   start, keeping the latest that starts at or before it (so the epoch of
//!   the first batch stays known). The file is not rewritten for it: the
//!   extra entries lie before the log start, and open drops them too;
//! - an **empty log** holds no epoch: a follower that cut its whole log
//!   takes whatever epoch its leader sends next, as in Kafka.
//!
//! # The file
//!
//! `leader-epoch-checkpoint` in the partition's directory, plain text like
//! the recovery points, so an operator can read it, replaced atomically
//! (temporary file, fdatasync, rename, directory fsync):
//!
//! ```text
//! mamba leader epochs v1
//! 0 0
//! 3 120
//! 5 300
//! crc32c 6645241c
//! ```
//!
//! A header line, one `epoch start_offset` line per entry (decimal), and a
//! trailer with the CRC32C (hex) of every byte before it. At most
//! [`LEADER_EPOCH_ENTRIES_MAX`] entries; past that the oldest is forgotten,
//! as retention would.
//!
//! **No file means one epoch, 0, from the log start.** That is what every
//! partition of a single broker holds, and every log written before this
//! file existed: the default path writes nothing it did not write before.
//! The file appears with the first batch of an epoch other than 0 and is
//! kept from then on.
//!
//! # Recovery
//!
//! At open the file is read and the entries at or past the log end (a
//! crash after the file was written, before the batch was durable) are
//! cut; those wholly before the log start are dropped. The history is then
//! checked against the batch headers of the last two segments, which open
//! reads anyway for the producer states: since epochs only grow, a history
//! missing an epoch disagrees with the last batch. A damaged file
//! ([`EpochFileError`], naming the path and what is wrong with it) or a
//! disagreement is not damage to the log: the history is rebuilt from the
//! batch headers of every segment and the file rewritten, as a missing
//! segment index is rebuilt. Only a failure to read or write the file (a
//! storage error) keeps the partition from opening.

use crate::ids::{LeaderEpoch, Offset};
use crate::limits::{
    align_up, BLOCK_BYTES, LEADER_EPOCH_ENTRIES_MAX, LEADER_EPOCH_FILE_BYTES_MAX,
    LEADER_EPOCH_FRAME_BYTES_MAX,
};
use crate::storage::{Storage, StorageResult};
use std::path::{Path, PathBuf};

/// The file's name in a partition's directory.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const HEADER_V1: &str = "mamba leader epochs v1";
const TRAILER_PREFIX: &str = "crc32c ";

/// The header line and the trailer line (prefix, 8 hex digits), newlines
/// included.
const FRAME_BYTES: usize = HEADER_V1.len() + 1 + TRAILER_PREFIX.len() + 8 + 1;
const _: () = assert!(FRAME_BYTES <= LEADER_EPOCH_FRAME_BYTES_MAX);

/// One leader epoch of a log and where its first batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    /// The base offset of the epoch's first batch.
    pub start_offset: Offset,
}

/// Where a leader epoch ends in a log: the answer to Kafka's
/// OffsetForLeaderEpoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    /// The log knows no epoch at or below the one asked (it is older than
    /// every epoch the log holds, or the log is empty). Kafka answers epoch
    /// -1 and offset -1; a follower then falls back to its high watermark.
    Undefined,
    /// `epoch` is the largest epoch at or below the one asked that the log
    /// holds, and its batches end before `end_offset`: the start of the
    /// next larger epoch, or the log end offset when `epoch` is the latest.
    Known { epoch: LeaderEpoch, end_offset: Offset },
}

/// What appending a batch of some epoch means for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// The latest epoch: the batch continues it.
    Latest,
    /// Above the latest (or the first batch): the batch starts an epoch,
    /// whose entry must be recorded first.
    New,
    /// Below the latest: a leader that lost its leadership, or a follower
    /// fed from a log that diverged. Refused.
    Stale { latest: LeaderEpoch },
}

/// The entries of one log, both fields strictly increasing. Pure: no I/O
/// (`read` and `write` below move it to and from its file). Owned by the
/// partition log on its shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochHistory {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochHistory {
    /// The history a missing file stands for: epoch 0 from the log start,
    /// when the log holds anything.
    pub fn epoch_zero(log_start_offset: Offset, log_end_offset: Offset) -> LeaderEpochHistory {
        let mut history = LeaderEpochHistory::default();
        if log_start_offset < log_end_offset {
            history.push(EpochEntry { epoch: LeaderEpoch(0), start_offset: log_start_offset });
        }
        history
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.latest().map(|e| e.epoch)
    }

    /// Whether a missing file could stand for this history (see the module
    /// docs): it holds no epoch but 0.
    pub fn is_epoch_zero_only(&self) -> bool {
        self.entries.iter().all(|e| e.epoch == LeaderEpoch(0))
    }

    /// The epoch of the batch at `offset` as the history says: that of the
    /// last entry starting at or before it.
    pub fn epoch_at(&self, offset: Offset) -> Option<LeaderEpoch> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    pub fn check_append(&self, epoch: LeaderEpoch) -> EpochCheck {
        match self.latest_epoch() {
            None => EpochCheck::New,
            Some(latest) if epoch > latest => EpochCheck::New,
            Some(latest) if epoch == latest => EpochCheck::Latest,
            Some(latest) => EpochCheck::Stale { latest },
        }
    }

    /// Adds the entry of a new epoch (`check_append` said `New`). At
    /// `LEADER_EPOCH_ENTRIES_MAX` entries the oldest is forgotten.
    pub fn push(&mut self, entry: EpochEntry) {
        if let Some(latest) = self.latest() {
            assert!(entry.epoch > latest.epoch, "leader epochs only grow along a log");
            assert!(
                entry.start_offset > latest.start_offset,
                "an epoch starts after the first batch of the one before"
            );
        }
        if self.entries.len() == LEADER_EPOCH_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.entries.push(entry);
    }

    /// Removes the entries starting at or after `offset` (the log was cut
    /// there). Returns whether any went.
    pub fn truncate_from(&mut self, offset: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        let cut = keep < self.entries.len();
        self.entries.truncate(keep);
        cut
    }

    /// Drops the entries wholly before `log_start_offset`, keeping the
    /// latest that starts at or before it: the epoch of the first batch.
    pub fn trim_before(&mut self, log_start_offset: Offset) {
        let at_or_before = self.entries.partition_point(|e| e.start_offset <= log_start_offset);
        if at_or_before > 1 {
            self.entries.drain(..at_or_before - 1);
        }
    }

    /// Where `epoch` ends in a log ending before `log_end_offset`: Kafka's
    /// OffsetForLeaderEpoch (see [`EpochEnd`]).
    pub fn end_offset_for(&self, epoch: LeaderEpoch, log_end_offset: Offset) -> EpochEnd {
        let at_or_below = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(found) = at_or_below.checked_sub(1).map(|i| self.entries[i]) else {
            return EpochEnd::Undefined;
        };
        let end_offset = match self.entries.get(at_or_below) {
            Some(next) => next.start_offset,
            None => {
                assert!(found.start_offset < log_end_offset, "the latest epoch starts in the log");
                log_end_offset
            }
        };
        EpochEnd::Known { epoch: found.epoch, end_offset }
    }

    /// The file's bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{HEADER_V1}\n");
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch.0, e.start_offset.0));
        }
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("{TRAILER_PREFIX}{crc:08x}\n"));
        text.into_bytes()
    }

    /// Decodes the file's bytes, checking the checksum and every entry.
    pub fn decode(bytes: &[u8]) -> Result<LeaderEpochHistory, EpochFileDamage> {
        if bytes.len() > LEADER_EPOCH_FILE_BYTES_MAX {
            return Err(EpochFileDamage::TooLarge {
                size_bytes: bytes.len() as u64,
                limit_bytes: LEADER_EPOCH_FILE_BYTES_MAX as u64,
            });
        }
        let malformed = |line: usize, reason: &'static str| EpochFileDamage::Malformed {
            line_number: line,
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(0, "not UTF-8 text"))?;
        let text = text.strip_suffix('\n').ok_or(malformed(0, "no final newline"))?;
        let (body, trailer) = text.split_at(text.rfind('\n').map_or(0, |i| i + 1));
        let stored = trailer
            .strip_prefix(TRAILER_PREFIX)
            .filter(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or(malformed(0, "no checksum trailer"))?;
        let computed = crc32c::crc32c(body.as_bytes());
        if computed != stored {
            return Err(EpochFileDamage::ChecksumMismatch { stored, computed });
        }
        let mut lines = body.lines();
        if lines.next() != Some(HEADER_V1) {
            return Err(malformed(1, "unknown header"));
        }
        let mut history = LeaderEpochHistory::default();
        for (i, line) in lines.enumerate() {
            let line_number = i + 2;
            if history.entries.len() == LEADER_EPOCH_ENTRIES_MAX {
                return Err(malformed(line_number, "more entries than a history holds"));
            }
            let (epoch, offset) =
                line.split_once(' ').ok_or(malformed(line_number, "not `epoch offset`"))?;
            let epoch = parse_decimal(epoch)
                .and_then(|e| u32::try_from(e).ok())
                .ok_or(malformed(line_number, "bad epoch"))?;
            let start_offset =
                parse_decimal(offset).ok_or(malformed(line_number, "bad start offset"))?;
            let entry =
                EpochEntry { epoch: LeaderEpoch(epoch), start_offset: Offset(start_offset) };
            if let Some(latest) = history.latest() {
                if entry.epoch <= latest.epoch || entry.start_offset <= latest.start_offset {
                    return Err(malformed(line_number, "entries are not strictly increasing"));
                }
            }
            history.entries.push(entry);
        }
        Ok(history)
    }
}

/// A decimal number of digits only (no sign, no spaces).
fn parse_decimal(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What is wrong with a leader epoch file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochFileDamage {
    #[error("{size_bytes} bytes, more than a history of the most entries takes ({limit_bytes})")]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    /// `line_number` counts from 1; 0 when the fault is the file as a whole.
    #[error("line {line_number}: {reason}")]
    Malformed { line_number: usize, reason: &'static str },
}

/// A leader epoch file that cannot be used, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader epoch file {} is damaged: {damage}", .path.display())]
pub struct EpochFileError {
    pub path: PathBuf,
    pub damage: EpochFileDamage,
}

/// What a partition's directory holds of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredHistory {
    /// No file: epoch 0 from the log start (see the module docs).
    Absent,
    Intact(LeaderEpochHistory),
    Damaged(EpochFileError),
}

/// The file's path in the partition directory `dir`.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(LEADER_EPOCH_FILE)
}

/// Reads the history of the partition in `dir`. A storage error is an
/// error; a file that cannot be decoded is `Damaged`.
pub async fn read(storage: &dyn Storage, dir: &Path) -> StorageResult<StoredHistory> {
    if !storage.list_files(dir)?.iter().any(|name| name == LEADER_EPOCH_FILE) {
        return Ok(StoredHistory::Absent);
    }
    let path = file_path(dir);
    let file = storage.open(&path, false).await?;
    let size_bytes = file.size_bytes().await?;
    let decoded = if size_bytes > LEADER_EPOCH_FILE_BYTES_MAX as u64 {
        Err(EpochFileDamage::TooLarge {
            size_bytes,
            limit_bytes: LEADER_EPOCH_FILE_BYTES_MAX as u64,
        })
    } else {
        let aligned = align_up(size_bytes, BLOCK_BYTES) as usize;
        let bytes = file.read_at(0, aligned).await?;
        let size = (size_bytes as usize).min(bytes.len());
        LeaderEpochHistory::decode(&bytes[..size])
    };
    file.close().await?;
    Ok(match decoded {
        Ok(history) => StoredHistory::Intact(history),
        Err(damage) => StoredHistory::Damaged(EpochFileError { path, damage }),
    })
}

/// Replaces the history file of the partition in `dir`, atomically and
/// durably.
pub async fn write(
    storage: &dyn Storage,
    dir: &Path,
    history: &LeaderEpochHistory,
) -> StorageResult<()> {
    crate::storage::write_atomically(storage, &file_path(dir), &history.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfs::MemFs;
    use futures::executor::block_on;

    fn entry(epoch: u32, start: u64) -> EpochEntry {
        EpochEntry { epoch: LeaderEpoch(epoch), start_offset: Offset(start) }
    }

    /// Epochs 2 from 10, 5 from 40, 9 from 70.
    fn sample() -> LeaderEpochHistory {
        let mut history = LeaderEpochHistory::default();
        for e in [entry(2, 10), entry(5, 40), entry(9, 70)] {
            assert_eq!(history.check_append(e.epoch), EpochCheck::New);
            history.push(e);
        }
        history
    }

    fn known(epoch: u32, end: u64) -> EpochEnd {
        EpochEnd::Known { epoch: LeaderEpoch(epoch), end_offset: Offset(end) }
    }

    #[test]
    fn end_offsets_follow_kafkas_offset_for_leader_epoch() {
        let history = sample();
        let log_end = Offset(100);
        let end = |epoch| history.end_offset_for(LeaderEpoch(epoch), log_end);
        assert_eq!(end(1), EpochEnd::Undefined, "older than every epoch");
        assert_eq!(end(2), known(2, 40), "a known epoch ends where the next starts");
        assert_eq!(end(3), known(2, 40), "a gap answers the epoch below it");
        assert_eq!(end(5), known(5, 70));
        assert_eq!(end(9), known(9, 100), "the latest epoch ends at the log end");
        assert_eq!(end(12), known(9, 100), "a newer epoch than any answers the latest");
        let empty = LeaderEpochHistory::default();
        assert_eq!(empty.end_offset_for(LeaderEpoch(3), Offset(0)), EpochEnd::Undefined);
    }

    #[test]
    fn appends_of_older_epochs_are_stale_and_the_epoch_of_each_offset_is_known() {
        let history = sample();
        assert_eq!(history.check_append(LeaderEpoch(9)), EpochCheck::Latest);
        assert_eq!(history.check_append(LeaderEpoch(10)), EpochCheck::New);
        assert_eq!(
            history.check_append(LeaderEpoch(5)),
            EpochCheck::Stale { latest: LeaderEpoch(9) }
        );
        assert_eq!(history.epoch_at(Offset(9)), None);
        assert_eq!(history.epoch_at(Offset(10)), Some(LeaderEpoch(2)));
        assert_eq!(history.epoch_at(Offset(69)), Some(LeaderEpoch(5)));
        assert_eq!(history.epoch_at(Offset(1000)), Some(LeaderEpoch(9)));
    }

    #[test]
    fn truncation_cuts_epochs_starting_at_the_cut_and_trimming_keeps_the_first_batchs_epoch() {
        let mut history = sample();
        assert!(!history.truncate_from(Offset(71)), "epoch 9 has batches below 71");
        assert!(history.truncate_from(Offset(70)));
        assert_eq!(history.entries(), &[entry(2, 10), entry(5, 40)]);
        let mut history = sample();
        history.trim_before(Offset(39));
        assert_eq!(history.entries(), &[entry(2, 10), entry(5, 40), entry(9, 70)]);
        history.trim_before(Offset(40));
        assert_eq!(history.entries(), &[entry(5, 40), entry(9, 70)]);
        history.trim_before(Offset(99));
        assert_eq!(history.entries(), &[entry(9, 70)], "the latest epoch always stays");
    }

    #[test]
    fn a_history_at_its_limit_forgets_its_oldest_epoch() {
        let mut history = LeaderEpochHistory::default();
        for i in 0..LEADER_EPOCH_ENTRIES_MAX as u32 + 2 {
            history.push(entry(i, u64::from(i) * 2));
        }
        assert_eq!(history.entries().len(), LEADER_EPOCH_ENTRIES_MAX);
        assert_eq!(history.entries()[0], entry(2, 4));
        let decoded = LeaderEpochHistory::decode(&history.encode()).expect("a full history");
        assert_eq!(decoded, history);
    }

    #[test]
    fn the_file_is_the_text_the_module_docs_show() {
        let mut history = LeaderEpochHistory::default();
        for e in [entry(0, 0), entry(3, 120), entry(5, 300)] {
            history.push(e);
        }
        let text = "mamba leader epochs v1\n0 0\n3 120\n5 300\ncrc32c 6645241c\n";
        assert_eq!(String::from_utf8(history.encode()).expect("text"), text);
    }

    #[test]
    fn the_file_round_trips_and_any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        assert_eq!(LeaderEpochHistory::decode(&bytes), Ok(sample()));
        assert_eq!(
            LeaderEpochHistory::decode(&LeaderEpochHistory::default().encode()),
            Ok(LeaderEpochHistory::default())
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(LeaderEpochHistory::decode(&bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(LeaderEpochHistory::decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(LeaderEpochHistory::decode(b"").is_err());
    }

    #[test]
    fn entries_out_of_order_are_malformed_even_under_a_valid_checksum() {
        let mut text = format!("{HEADER_V1}\n3 10\n2 20\n");
        let crc = crc32c::crc32c(text.as_bytes());
        text.push_str(&format!("{TRAILER_PREFIX}{crc:08x}\n"));
        assert_eq!(
            LeaderEpochHistory::decode(text.as_bytes()),
            Err(EpochFileDamage::Malformed {
                line_number: 3,
                reason: "entries are not strictly increasing"
            })
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_its_path() {
        let fs = MemFs::new();
        let dir = Path::new("/data/topics/t/0");
        block_on(async {
            assert_eq!(read(&fs, dir).await.expect("read"), StoredHistory::Absent);
            write(&fs, dir, &sample()).await.expect("write");
            assert_eq!(read(&fs, dir).await.expect("read"), StoredHistory::Intact(sample()));
            let path = file_path(dir);
            let mut bytes = fs.file_bytes(&path).expect("the file");
            bytes[30] ^= 0x20;
            fs.set_file_bytes(&path, bytes);
            match read(&fs, dir).await.expect("read") {
                StoredHistory::Damaged(e) => {
                    assert_eq!(e.path, path);
                    assert!(matches!(e.damage, EpochFileDamage::ChecksumMismatch { .. }));
                    let message = e.to_string();
                    assert!(
                        message.contains("/data/topics/t/0/leader-epoch-checkpoint"),
                        "{message}"
                    );
                }
                other => panic!("expected a damaged file, got {other:?}"),
            }
        });
    }
}
