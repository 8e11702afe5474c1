//! The record batch: the unit Mamba stores on disk and sends on the wire.
//!
//! A batch is a fixed 64-byte little-endian header followed by the records as
//! an rkyv archive, padded with zeros to a multiple of 16 bytes:
//!
//! ```text
//! offset size field
//!      0    8 base_offset        u64   patched by the leader, not under crc
//!      8    4 batch_length       u32   header + archive, without padding
//!     12    4 leader_epoch       u32   patched by the leader, not under crc
//!     16    4 crc                u32   CRC32C of bytes [20, batch_length)
//!     20    1 magic              u8    format version, currently 1
//!     21    1 (reserved, 0)
//!     22    2 attributes         u16
//!     24    4 last_offset_delta  u32
//!     28    4 record_count       u32
//!     32    8 first_timestamp_ms i64
//!     40    8 max_timestamp_ms   i64
//!     48    8 producer_id        u64   NO_PRODUCER_ID when not idempotent
//!     56    2 producer_epoch     u16
//!     58    2 (reserved, 0)
//!     60    4 base_sequence      u32   NO_SEQUENCE when not idempotent
//!     64      records            rkyv archive of Vec<Record>
//! ```
//!
//! Untrusted bytes become a [`BatchView`] only through [`BatchView::validate`],
//! which checks length bounds, the CRC and the archive (bytecheck) before any
//! zero-copy access.

use crate::batch_writer::{BatchWriter, RecordRef};
use crate::ids::{LeaderEpoch, Offset};
use crate::limits::{
    align_up, BATCH_ALIGN_BYTES, BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORD_COUNT_MAX,
};
use rkyv::util::AlignedVec;
use rkyv::vec::ArchivedVec;

/// Current batch format version, written in every header.
pub const MAGIC: u8 = 1;
/// `producer_id` of a batch written without idempotence.
pub const NO_PRODUCER_ID: u64 = u64::MAX;
/// `base_sequence` of a batch written without idempotence.
pub const NO_SEQUENCE: u32 = u32::MAX;

/// Byte positions of the header fields.
mod at {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const LEADER_EPOCH: usize = 12;
    pub const CRC: usize = 16;
    pub const CRC_COVERED_FROM: usize = 20;
    pub const MAGIC: usize = 20;
    pub const ATTRIBUTES: usize = 22;
    pub const LAST_OFFSET_DELTA: usize = 24;
    pub const RECORD_COUNT: usize = 28;
    pub const FIRST_TIMESTAMP_MS: usize = 32;
    pub const MAX_TIMESTAMP_MS: usize = 40;
    pub const PRODUCER_ID: usize = 48;
    pub const PRODUCER_EPOCH: usize = 56;
    pub const BASE_SEQUENCE: usize = 60;
}

/// One record as producers write it and consumers read it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Record {
    pub offset_delta: u32,
    pub timestamp_delta_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<RecordHeader>,
}

/// A record header: a name and opaque bytes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RecordHeader {
    pub name: String,
    pub value: Vec<u8>,
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("truncated batch: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated { needed_bytes: usize, available_bytes: usize },
    #[error(
        "batch length {length_bytes} is outside [{}, {}]",
        BATCH_HEADER_BYTES,
        BATCH_BYTES_MAX
    )]
    BadLength { length_bytes: u32 },
    #[error("bad magic {found} (this build reads format {MAGIC})")]
    BadMagic { found: u8 },
    #[error("checksum mismatch: header says {expected:#010x}, data hashes to {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("records archive is invalid: {reason}")]
    BadArchive { reason: String },
    #[error("header disagrees with records: {reason}")]
    Inconsistent { reason: &'static str },
    #[error("batch bytes are not {BATCH_ALIGN_BYTES}-byte aligned in memory")]
    Misaligned,
    #[error("padding after the batch is not zero")]
    DirtyPadding,
}

/// The fixed header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    pub batch_length: u32,
    pub leader_epoch: LeaderEpoch,
    pub crc: u32,
    pub magic: u8,
    pub attributes: u16,
    pub last_offset_delta: u32,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: u64,
    pub producer_epoch: u16,
    pub base_sequence: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl BatchHeader {
    /// Decodes the header fields without checking anything but the length of
    /// `bytes`. Use [`BatchView::validate`] for untrusted input.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: bytes.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: Offset(u64_at(bytes, at::BASE_OFFSET)),
            batch_length: u32_at(bytes, at::BATCH_LENGTH),
            leader_epoch: LeaderEpoch(u32_at(bytes, at::LEADER_EPOCH)),
            crc: u32_at(bytes, at::CRC),
            magic: bytes[at::MAGIC],
            attributes: u16_at(bytes, at::ATTRIBUTES),
            last_offset_delta: u32_at(bytes, at::LAST_OFFSET_DELTA),
            record_count: u32_at(bytes, at::RECORD_COUNT),
            first_timestamp_ms: u64_at(bytes, at::FIRST_TIMESTAMP_MS) as i64,
            max_timestamp_ms: u64_at(bytes, at::MAX_TIMESTAMP_MS) as i64,
            producer_id: u64_at(bytes, at::PRODUCER_ID),
            producer_epoch: u16_at(bytes, at::PRODUCER_EPOCH),
            base_sequence: u32_at(bytes, at::BASE_SEQUENCE),
        })
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(u64::from(self.last_offset_delta))
    }

    /// The number of bytes the batch occupies in a segment or frame,
    /// including the zero padding to the next 16-byte boundary.
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(self.batch_length as usize)
    }
}

/// Stored size of a batch whose unpadded length is `batch_length` bytes.
pub fn stored_bytes(batch_length: usize) -> usize {
    align_up(batch_length as u64, BATCH_ALIGN_BYTES as u64) as usize
}

/// Peeks at the stored size of the batch that starts `bytes`, from its
/// length field alone. `None` when fewer than a header's bytes are present or
/// the length is out of bounds. Lets a reader know how much to fetch before
/// validating.
pub fn peek_stored_bytes(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return None;
    }
    let length = u32_at(bytes, at::BATCH_LENGTH) as usize;
    if !(BATCH_HEADER_BYTES..=BATCH_BYTES_MAX).contains(&length) {
        return None;
    }
    Some(stored_bytes(length))
}

/// The record count in the header that starts `bytes`, unchecked (for
/// counting what was read; validation is the reader's). `None` when fewer
/// than a header's bytes are present.
pub fn peek_record_count(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= BATCH_HEADER_BYTES).then(|| u32_at(bytes, at::RECORD_COUNT))
}

fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[at::CRC_COVERED_FROM..])
}

/// Checks the stored batch at the start of `bytes` as far as the disk can
/// damage it: header, length bounds, format version, CRC and zero padding.
/// The records archive inside was validated when the batch was accepted;
/// a batch that passes this is byte for byte what was accepted.
pub fn verify_stored(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    let length = header.batch_length as usize;
    if !(BATCH_HEADER_BYTES..=BATCH_BYTES_MAX).contains(&length) {
        return Err(BatchError::BadLength { length_bytes: header.batch_length });
    }
    let stored_len = header.stored_bytes();
    if bytes.len() < stored_len {
        return Err(BatchError::Truncated {
            needed_bytes: stored_len,
            available_bytes: bytes.len(),
        });
    }
    if header.magic != MAGIC {
        return Err(BatchError::BadMagic { found: header.magic });
    }
    let actual = crc_of(&bytes[..length]);
    if actual != header.crc {
        return Err(BatchError::ChecksumMismatch { expected: header.crc, actual });
    }
    if bytes[length..stored_len].iter().any(|&b| b != 0) {
        return Err(BatchError::DirtyPadding);
    }
    Ok(header)
}

/// A batch whose bytes were validated: bounds, CRC, archive.
///
/// Borrows the bytes; `as_bytes` returns exactly the stored bytes (with
/// padding), ready to be written or sent as-is.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    header: BatchHeader,
    stored: &'a [u8],
    records: &'a ArchivedVec<ArchivedRecord>,
}

impl<'a> BatchView<'a> {
    /// Validates the batch at the start of `bytes` (which may continue with
    /// further batches). `bytes` must be 16-byte aligned in memory.
    pub fn validate(bytes: &'a [u8]) -> Result<BatchView<'a>, BatchError> {
        let header = verify_stored(bytes)?;
        let length = header.batch_length as usize;
        let stored_len = header.stored_bytes();
        if !(bytes.as_ptr() as usize).is_multiple_of(BATCH_ALIGN_BYTES) {
            return Err(BatchError::Misaligned);
        }
        let records = rkyv::access::<ArchivedVec<ArchivedRecord>, rkyv::rancor::BoxedError>(
            &bytes[BATCH_HEADER_BYTES..length],
        )
        .map_err(|e| BatchError::BadArchive { reason: e.to_string() })?;
        check_consistent(&header, records)?;
        Ok(BatchView { header, stored: &bytes[..stored_len], records })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The records, accessed in place.
    pub fn records(&self) -> &'a ArchivedVec<ArchivedRecord> {
        self.records
    }

    /// The batch exactly as stored, padding included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.stored
    }

    /// The records with their absolute offsets and timestamps.
    pub fn iter(&self) -> impl Iterator<Item = RecordView<'a>> + 'a {
        let base = self.header.base_offset;
        let first_ts = self.header.first_timestamp_ms;
        self.records.iter().map(move |r| RecordView {
            offset: base.plus(u64::from(r.offset_delta.to_native())),
            timestamp_ms: first_ts.saturating_add(r.timestamp_delta_ms.to_native()),
            record: r,
        })
    }
}

fn check_consistent(
    header: &BatchHeader,
    records: &ArchivedVec<ArchivedRecord>,
) -> Result<(), BatchError> {
    let inconsistent = |reason| Err(BatchError::Inconsistent { reason });
    if header.record_count == 0 {
        return inconsistent("a batch carries at least one record");
    }
    if header.record_count > BATCH_RECORD_COUNT_MAX {
        return inconsistent("too many records in one batch");
    }
    if records.len() != header.record_count as usize {
        return inconsistent("record_count differs from the number of records");
    }
    if header.max_timestamp_ms < header.first_timestamp_ms {
        return inconsistent("max_timestamp_ms is before first_timestamp_ms");
    }
    let mut previous: Option<u32> = None;
    for record in records.iter() {
        let delta = record.offset_delta.to_native();
        if previous.is_some_and(|p| delta <= p) {
            return inconsistent("offset deltas are not increasing");
        }
        previous = Some(delta);
    }
    if previous != Some(header.last_offset_delta) {
        return inconsistent("last_offset_delta differs from the last record's");
    }
    Ok(())
}

/// A record inside a validated batch, with absolute offset and timestamp.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub record: &'a ArchivedRecord,
}

impl<'a> RecordView<'a> {
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key.as_ref().map(|k| k.as_slice())
    }
    pub fn value(&self) -> &'a [u8] {
        self.record.value.as_slice()
    }
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.record.headers.iter().map(|h| (h.name.as_str(), h.value.as_slice()))
    }
}

/// Patches the leader-assigned fields of a stored batch in place. Both sit
/// before the CRC-covered range, so the CRC stays valid.
pub fn patch_base_offset_and_epoch(batch: &mut [u8], base_offset: Offset, epoch: LeaderEpoch) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "patching a batch shorter than its header");
    batch[at::BASE_OFFSET..at::BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_le_bytes());
    batch[at::LEADER_EPOCH..at::LEADER_EPOCH + 4].copy_from_slice(&epoch.0.to_le_bytes());
}

/// An owned batch in 16-byte aligned memory: what producers build and what
/// `Engine::append` takes.
#[derive(Clone)]
pub struct Batch {
    bytes: AlignedVec<BATCH_ALIGN_BYTES>,
    header: BatchHeader,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("header", &self.header).finish_non_exhaustive()
    }
}

impl Batch {
    /// Copies untrusted bytes holding exactly one batch into aligned memory
    /// and validates them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Batch, BatchError> {
        let mut aligned = AlignedVec::<BATCH_ALIGN_BYTES>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Batch::from_aligned(aligned)
    }

    /// Validates untrusted aligned bytes holding exactly one batch, in place.
    pub fn from_aligned(bytes: AlignedVec<BATCH_ALIGN_BYTES>) -> Result<Batch, BatchError> {
        let header = *BatchView::validate(&bytes)?.header();
        if header.stored_bytes() != bytes.len() {
            return Err(BatchError::Inconsistent { reason: "bytes continue after the batch" });
        }
        Ok(Batch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The stored bytes, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A validated view of this batch (cannot fail: it was validated when built).
    pub fn view(&self) -> BatchView<'_> {
        match BatchView::validate(&self.bytes) {
            Ok(view) => view,
            Err(e) => panic!("a Batch holds validated bytes, yet: {e}"),
        }
    }

    /// The stored bytes as a shareable buffer, without a copy (the alignment
    /// of the allocation is kept).
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.bytes)
    }

    /// Renumbers an idempotent producer's batch (after an earlier batch of
    /// its partition failed for good, or under a new epoch); the CRC covers
    /// both fields, so it is computed again.
    pub fn set_producer_sequence(&mut self, producer_epoch: u16, base_sequence: u32) {
        self.header.producer_epoch = producer_epoch;
        self.header.base_sequence = base_sequence;
        self.bytes[at::PRODUCER_EPOCH..at::PRODUCER_EPOCH + 2]
            .copy_from_slice(&producer_epoch.to_le_bytes());
        self.bytes[at::BASE_SEQUENCE..at::BASE_SEQUENCE + 4]
            .copy_from_slice(&base_sequence.to_le_bytes());
        let length = self.header.batch_length as usize;
        self.header.crc = crc_of(&self.bytes[..length]);
        self.bytes[at::CRC..at::CRC + 4].copy_from_slice(&self.header.crc.to_le_bytes());
    }

    /// Sets the leader-assigned fields.
    pub fn set_base_offset_and_epoch(&mut self, base_offset: Offset, epoch: LeaderEpoch) {
        patch_base_offset_and_epoch(&mut self.bytes, base_offset, epoch);
        self.header.base_offset = base_offset;
        self.header.leader_epoch = epoch;
    }
}

/// A record to put in a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: i64,
}

/// Builds a batch from owned records (see [`BatchWriter`] for borrowed
/// ones, without a copy per record).
#[derive(Debug)]
pub struct BatchBuilder {
    writer: BatchWriter,
    producer: Option<(u64, u16, u32)>,
    /// The first record that did not fit the format, reported by `build`.
    error: Option<BatchError>,
}

impl Default for BatchBuilder {
    fn default() -> BatchBuilder {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder { writer: BatchWriter::with_capacity(4096), producer: None, error: None }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: u64, producer_epoch: u16, base_sequence: u32) -> Self {
        self.producer = Some((producer_id, producer_epoch, base_sequence));
        self
    }

    pub fn record_count(&self) -> usize {
        self.writer.record_count()
    }

    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    pub fn push(&mut self, record: NewRecord) {
        let headers: Vec<(&str, &[u8])> =
            record.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let pushed = self.writer.push(&RecordRef {
            key: record.key.as_deref(),
            value: &record.value,
            headers: &headers,
            timestamp_ms: record.timestamp_ms,
        });
        if let Err(e) = pushed {
            self.error.get_or_insert(e);
        }
    }

    /// Encodes the batch with base offset 0 and epoch 0 (the leader patches
    /// both) and computes its CRC.
    pub fn build(self) -> Result<Batch, BatchError> {
        match self.error {
            Some(e) => Err(e),
            None => self.writer.finish(self.producer),
        }
    }
}

/// Completes a batch whose records are encoded: writes `header` (with the
/// CRC it computes) into the first bytes. The caller built the archive, so
/// it is trusted; debug builds validate it anyway.
pub(crate) fn seal(mut bytes: AlignedVec<BATCH_ALIGN_BYTES>, mut header: BatchHeader) -> Batch {
    let length = header.batch_length as usize;
    assert_eq!(bytes.len(), stored_bytes(length), "sealing a batch of another length");
    encode_header(&header, &mut bytes[..BATCH_HEADER_BYTES]);
    header.crc = crc_of(&bytes[..length]);
    bytes[at::CRC..at::CRC + 4].copy_from_slice(&header.crc.to_le_bytes());
    debug_assert_eq!(BatchView::validate(&bytes).map(|v| *v.header()), Ok(header));
    Batch { bytes, header }
}

fn encode_header(h: &BatchHeader, out: &mut [u8]) {
    out[at::BASE_OFFSET..][..8].copy_from_slice(&h.base_offset.0.to_le_bytes());
    out[at::BATCH_LENGTH..][..4].copy_from_slice(&h.batch_length.to_le_bytes());
    out[at::LEADER_EPOCH..][..4].copy_from_slice(&h.leader_epoch.0.to_le_bytes());
    out[at::CRC..][..4].copy_from_slice(&h.crc.to_le_bytes());
    out[at::MAGIC] = h.magic;
    out[at::MAGIC + 1] = 0;
    out[at::ATTRIBUTES..][..2].copy_from_slice(&h.attributes.to_le_bytes());
    out[at::LAST_OFFSET_DELTA..][..4].copy_from_slice(&h.last_offset_delta.to_le_bytes());
    out[at::RECORD_COUNT..][..4].copy_from_slice(&h.record_count.to_le_bytes());
    out[at::FIRST_TIMESTAMP_MS..][..8].copy_from_slice(&h.first_timestamp_ms.to_le_bytes());
    out[at::MAX_TIMESTAMP_MS..][..8].copy_from_slice(&h.max_timestamp_ms.to_le_bytes());
    out[at::PRODUCER_ID..][..8].copy_from_slice(&h.producer_id.to_le_bytes());
    out[at::PRODUCER_EPOCH..][..2].copy_from_slice(&h.producer_epoch.to_le_bytes());
    out[at::PRODUCER_EPOCH + 2..][..2].copy_from_slice(&[0, 0]);
    out[at::BASE_SEQUENCE..][..4].copy_from_slice(&h.base_sequence.to_le_bytes());
}

/// Iterates over the batches in a buffer of stored batches (as returned by a
/// read), validating each. Stops at the first invalid batch with its error.
pub fn iter_batches(bytes: &[u8]) -> impl Iterator<Item = Result<BatchView<'_>, BatchError>> {
    let mut rest = bytes;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        match BatchView::validate(rest) {
            Ok(view) => {
                rest = &rest[view.as_bytes().len()..];
                Some(Ok(view))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Batch {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(NewRecord {
                key: (i % 2 == 0).then(|| format!("k{i}").into_bytes()),
                value: vec![i as u8; i * 3],
                headers: vec![("h".into(), b"v".to_vec())],
                timestamp_ms: 1_000 + i as i64,
            });
        }
        b.build().expect("valid batch")
    }

    #[test]
    fn round_trips_records() {
        let batch = sample(5);
        let view = batch.view();
        assert_eq!(view.header().record_count, 5);
        assert_eq!(view.as_bytes().len() % BATCH_ALIGN_BYTES, 0);
        let records: Vec<_> = view.iter().collect();
        assert_eq!(records.len(), 5);
        assert_eq!(records[2].offset, Offset(2));
        assert_eq!(records[2].timestamp_ms, 1_002);
        assert_eq!(records[2].key(), Some(&b"k2"[..]));
        assert_eq!(records[1].key(), None);
        assert_eq!(records[4].value(), &[4u8; 12][..]);
        assert_eq!(records[0].headers().collect::<Vec<_>>(), vec![("h", &b"v"[..])]);
    }

    #[test]
    fn patching_offset_and_epoch_keeps_crc_valid() {
        let mut batch = sample(3);
        batch.set_base_offset_and_epoch(Offset(77), LeaderEpoch(5));
        let copy = Batch::from_bytes(batch.as_bytes()).expect("still valid");
        assert_eq!(copy.header().base_offset, Offset(77));
        assert_eq!(copy.header().last_offset(), Offset(79));
        assert_eq!(copy.header().leader_epoch, LeaderEpoch(5));
    }

    #[test]
    fn renumbering_a_producers_batch_recomputes_the_crc() {
        let mut batch = sample(3);
        batch.set_producer_sequence(9, 1234);
        let copy = Batch::from_bytes(batch.as_bytes()).expect("still valid");
        assert_eq!((copy.header().producer_epoch, copy.header().base_sequence), (9, 1234));
        assert_eq!(copy.view().records().len(), 3);
    }

    #[test]
    fn flipped_byte_is_a_checksum_mismatch() {
        let batch = sample(3);
        let mut bytes = batch.as_bytes().to_vec();
        bytes[BATCH_HEADER_BYTES + 3] ^= 0x40;
        match Batch::from_bytes(&bytes) {
            Err(BatchError::ChecksumMismatch { expected, actual }) => assert_ne!(expected, actual),
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_archive_says_what_was_wrong() {
        let batch = sample(3);
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(batch.as_bytes());
        let length = batch.header().batch_length as usize;
        // The root of the records archive (its last 8 bytes: the vector's
        // relative pointer and length) points far out of bounds; the CRC is
        // recomputed so only the archive check can object.
        bytes[length - 4..length].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc_of(&bytes[..length]);
        bytes[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        match BatchView::validate(&bytes) {
            Err(BatchError::BadArchive { reason }) => {
                assert!(!reason.contains("without error information"), "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected a bad archive, got {other:?}"),
        }
    }

    #[test]
    fn truncation_and_bad_lengths_are_typed_errors() {
        let batch = sample(2);
        let bytes = batch.as_bytes();
        assert!(matches!(
            Batch::from_bytes(&bytes[..bytes.len() - 16]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(Batch::from_bytes(&bytes[..10]), Err(BatchError::Truncated { .. })));
        let mut huge = bytes.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Batch::from_bytes(&huge), Err(BatchError::BadLength { .. })));
        let mut magic = bytes.to_vec();
        magic[20] = 9;
        assert!(matches!(Batch::from_bytes(&magic), Err(BatchError::BadMagic { found: 9 })));
    }

    #[test]
    fn iterates_concatenated_batches() {
        let mut all = AlignedVec::<16>::new();
        all.extend_from_slice(sample(2).as_bytes());
        all.extend_from_slice(sample(3).as_bytes());
        let counts: Vec<u32> =
            iter_batches(&all).map(|b| b.expect("valid").header().record_count).collect();
        assert_eq!(counts, vec![2, 3]);
    }
}
