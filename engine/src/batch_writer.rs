//! Builds a record batch record by record, copying each key and value once,
//! straight from the caller's memory into the batch buffer.
//!
//! The records archive is rkyv's layout of `Vec<Record>`: every record's
//! out-of-line data (key, value, headers) first, then the array of fixed-size
//! `ArchivedRecord`s pointing back at it, then the root `ArchivedVec`. That
//! order lets a producer write each record's bytes as it arrives ([`push`])
//! and only the small array and the header at [`finish`], so a send costs one
//! copy of its payload and no allocation. The result is byte for byte what
//! serializing a `Vec<Record>` gives (a test holds us to that), and it goes
//! through the same [`BatchView::validate`] as any batch.
//!
//! [`push`]: BatchWriter::push
//! [`finish`]: BatchWriter::finish
//! [`BatchView::validate`]: crate::batch::BatchView::validate

use crate::batch::{
    stored_bytes, ArchivedRecord, ArchivedRecordHeader, Batch, BatchError, NO_PRODUCER_ID,
    NO_SEQUENCE,
};
use crate::limits::{
    BATCH_ALIGN_BYTES, BATCH_BYTES_MAX, BATCH_HEADER_BYTES, BATCH_RECORD_COUNT_MAX,
};
use rkyv::rancor::{Fallible, Source, Strategy};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{munge::munge, Archive, Place, Serialize};
use std::marker::PhantomData;

/// Bytes one record adds to the archive besides its key, value and headers:
/// its `ArchivedRecord` entry (for batch size estimates).
pub const RECORD_OVERHEAD_BYTES: usize = std::mem::size_of::<ArchivedRecord>();

/// A record as borrowed input.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    pub timestamp_ms: i64,
}

impl RecordRef<'_> {
    /// What the record adds to a batch, in bytes.
    pub fn encoded_bytes(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| std::mem::size_of::<ArchivedRecordHeader>() + n.len() + v.len())
                .sum::<usize>()
    }
}

/// A batch being filled.
#[derive(Debug)]
pub struct BatchWriter {
    /// Header space, then the out-of-line data of the records so far.
    bytes: AlignedVec<BATCH_ALIGN_BYTES>,
    records: Vec<Pending>,
    min_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

/// One pushed record: its fixed fields and where its data went.
#[derive(Debug, Clone, Copy)]
struct Pending {
    timestamp_ms: i64,
    key: Option<Run<u8>>,
    value: Run<u8>,
    headers: Run<ArchivedRecordHeader>,
}

/// `len` elements of `T` already written at `pos`: archives as the
/// `ArchivedVec` pointing at them.
#[derive(Debug)]
struct Run<T> {
    pos: usize,
    len: usize,
    _element: PhantomData<T>,
}

impl<T> Clone for Run<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Run<T> {}

impl<T> Run<T> {
    fn new(pos: usize, len: usize) -> Run<T> {
        Run { pos, len, _element: PhantomData }
    }
}

impl<T> Archive for Run<T> {
    type Archived = ArchivedVec<T>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<T>>) {
        ArchivedVec::resolve_from_len(self.len, resolver, out);
    }
}

impl<T, S: Fallible + ?Sized> Serialize<S> for Run<T> {
    fn serialize(&self, _: &mut S) -> Result<VecResolver, S::Error> {
        Ok(VecResolver::from_pos(self.pos))
    }
}

/// A record's entry: its offset delta is its index in the batch, its
/// timestamp a delta from the batch's earliest.
struct Indexed<'a> {
    index: u32,
    base_timestamp_ms: i64,
    record: &'a Pending,
}

impl Archive for Indexed<'_> {
    type Archived = ArchivedRecord;
    type Resolver = ();

    fn resolve(&self, (): (), out: Place<ArchivedRecord>) {
        munge!(let ArchivedRecord { offset_delta, timestamp_delta_ms, key, value, headers } = out);
        let r = self.record;
        self.index.resolve((), offset_delta);
        r.timestamp_ms.saturating_sub(self.base_timestamp_ms).resolve((), timestamp_delta_ms);
        r.key.resolve(r.key.map(|k| VecResolver::from_pos(k.pos)), key);
        r.value.resolve(VecResolver::from_pos(r.value.pos), value);
        r.headers.resolve(VecResolver::from_pos(r.headers.pos), headers);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for Indexed<'_> {
    fn serialize(&self, _: &mut S) -> Result<(), S::Error> {
        Ok(())
    }
}

/// The root: the array of records, written at `finish`.
struct Records<'a>(&'a [Indexed<'a>]);

impl Archive for Records<'_> {
    type Archived = ArchivedVec<ArchivedRecord>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for Records<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::<ArchivedRecord>::serialize_from_slice(self.0, serializer)
    }
}

/// A header as borrowed input, archived like `RecordHeader`.
struct HeaderRef<'a> {
    name: &'a str,
    value: &'a [u8],
}

impl Archive for HeaderRef<'_> {
    type Archived = ArchivedRecordHeader;
    type Resolver = (StringResolver, VecResolver);

    fn resolve(&self, resolver: Self::Resolver, out: Place<ArchivedRecordHeader>) {
        munge!(let ArchivedRecordHeader { name, value } = out);
        ArchivedString::resolve_from_str(self.name, resolver.0, name);
        ArchivedVec::resolve_from_len(self.value.len(), resolver.1, value);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for HeaderRef<'_>
where
    S::Error: Source,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok((
            ArchivedString::serialize_from_str(self.name, serializer)?,
            ArchivedVec::<u8>::serialize_from_slice(self.value, serializer)?,
        ))
    }
}

impl BatchWriter {
    /// An empty batch whose buffer holds about `capacity_bytes` before it
    /// grows.
    pub fn with_capacity(capacity_bytes: usize) -> BatchWriter {
        let mut bytes = AlignedVec::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        bytes.resize(BATCH_HEADER_BYTES, 0);
        BatchWriter { bytes, records: Vec::new(), min_timestamp_ms: 0, max_timestamp_ms: 0 }
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The batch's size if it were finished now, in bytes (within a few
    /// bytes of alignment).
    pub fn estimated_bytes(&self) -> usize {
        self.bytes.len() + self.records.len() * RECORD_OVERHEAD_BYTES + 16
    }

    /// Whether `record` still fits under `limit_bytes` and the record count
    /// limit (a first record always fits: a batch is never empty).
    pub fn fits(&self, record: &RecordRef<'_>, limit_bytes: usize) -> bool {
        self.records.is_empty()
            || (self.records.len() < BATCH_RECORD_COUNT_MAX as usize
                && self.estimated_bytes() + record.encoded_bytes() <= limit_bytes)
    }

    /// Appends a record: its key, value and headers are copied into the
    /// batch now.
    pub fn push(&mut self, record: &RecordRef<'_>) -> Result<(), BatchError> {
        if self.records.len() >= BATCH_RECORD_COUNT_MAX as usize {
            return Err(BatchError::Inconsistent {
                reason: "a batch carries between 1 and 2^20 records",
            });
        }
        if self.records.is_empty() {
            self.min_timestamp_ms = record.timestamp_ms;
            self.max_timestamp_ms = record.timestamp_ms;
        }
        self.min_timestamp_ms = self.min_timestamp_ms.min(record.timestamp_ms);
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        // rkyv writes the fields' data in declaration order: key, value,
        // headers (bytes need no alignment).
        let key = record.key.map(|k| self.append(k));
        let value = self.append(record.value);
        let headers = self.push_headers(record.headers)?;
        self.records.push(Pending { timestamp_ms: record.timestamp_ms, key, value, headers });
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> Run<u8> {
        let pos = self.bytes.len();
        self.bytes.extend_from_slice(data);
        Run::new(pos, data.len())
    }

    fn push_headers(
        &mut self,
        headers: &[(&str, &[u8])],
    ) -> Result<Run<ArchivedRecordHeader>, BatchError> {
        if headers.is_empty() {
            // rkyv aligns even an empty array (with zero bytes).
            let aligned =
                self.bytes.len().next_multiple_of(std::mem::align_of::<ArchivedRecordHeader>());
            self.bytes.resize(aligned, 0);
            return Ok(Run::new(aligned, 0));
        }
        let refs: Vec<HeaderRef<'_>> =
            headers.iter().map(|&(name, value)| HeaderRef { name, value }).collect();
        let bytes = &mut self.bytes;
        // The resolver keeps the array's position private; the array is the
        // last thing rkyv wrote, so the position is known anyway.
        let _resolver = rkyv::util::with_arena(|arena| {
            let mut serializer = rkyv::ser::Serializer::new(
                &mut *bytes,
                arena.acquire(),
                rkyv::ser::sharing::Unshare,
            );
            ArchivedVec::<ArchivedRecordHeader>::serialize_from_slice(
                &refs,
                Strategy::<_, rkyv::rancor::Error>::wrap(&mut serializer),
            )
        })
        .map_err(|e: rkyv::rancor::Error| BatchError::BadArchive { reason: e.to_string() })?;
        let array_bytes = headers.len() * std::mem::size_of::<ArchivedRecordHeader>();
        Ok(Run::new(self.bytes.len() - array_bytes, headers.len()))
    }

    /// Writes the record array, the header and the CRC. `producer` is the
    /// idempotent producer's (id, epoch, base sequence), if any.
    pub fn finish(self, producer: Option<(u64, u16, u32)>) -> Result<Batch, BatchError> {
        let record_count = u32::try_from(self.records.len()).unwrap_or(u32::MAX);
        if record_count == 0 {
            return Err(BatchError::Inconsistent {
                reason: "a batch carries between 1 and 2^20 records",
            });
        }
        let indexed: Vec<Indexed<'_>> = self
            .records
            .iter()
            .enumerate()
            .map(|(i, record)| Indexed {
                index: i as u32,
                base_timestamp_ms: self.min_timestamp_ms,
                record,
            })
            .collect();
        let bytes =
            rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&Records(&indexed), self.bytes)
                .map_err(|e| BatchError::BadArchive { reason: e.to_string() })?;
        let length = bytes.len();
        if length > BATCH_BYTES_MAX {
            return Err(BatchError::BadLength {
                length_bytes: u32::try_from(length).unwrap_or(u32::MAX),
            });
        }
        let (producer_id, producer_epoch, base_sequence) =
            producer.unwrap_or((NO_PRODUCER_ID, 0, NO_SEQUENCE));
        let mut bytes = bytes;
        bytes.resize(stored_bytes(length), 0);
        Ok(crate::batch::seal(
            bytes,
            crate::batch::BatchHeader {
                base_offset: crate::ids::Offset::ZERO,
                batch_length: length as u32,
                leader_epoch: crate::ids::LeaderEpoch(0),
                crc: 0,
                magic: crate::batch::MAGIC,
                attributes: 0,
                last_offset_delta: record_count - 1,
                record_count,
                first_timestamp_ms: self.min_timestamp_ms,
                max_timestamp_ms: self.max_timestamp_ms,
                producer_id,
                producer_epoch,
                base_sequence,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchView, Record, RecordHeader};

    type Sample = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn sample() -> Vec<Sample> {
        vec![
            (None, b"plain".to_vec(), vec![]),
            (Some(b"k".to_vec()), vec![], vec![]),
            (Some(vec![]), vec![7; 1000], vec![("short".into(), b"v".to_vec())]),
            (
                Some(b"key-2".to_vec()),
                b"x".to_vec(),
                vec![
                    ("a-header-name-longer-than-inline".into(), vec![1, 2, 3]),
                    ("h".into(), vec![]),
                ],
            ),
            (None, vec![0; 13], vec![]),
        ]
    }

    #[test]
    fn archive_is_byte_for_byte_what_rkyv_writes_for_vec_of_records() {
        let mut writer = BatchWriter::with_capacity(0);
        let mut records = Vec::new();
        for (i, (key, value, headers)) in sample().into_iter().enumerate() {
            let refs: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            let timestamp_ms = 1_000 + i as i64;
            let record =
                RecordRef { key: key.as_deref(), value: &value, headers: &refs, timestamp_ms };
            writer.push(&record).expect("push");
            records.push(Record {
                offset_delta: i as u32,
                timestamp_delta_ms: i as i64,
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| RecordHeader { name, value })
                    .collect(),
            });
        }
        let batch = writer.finish(Some((9, 1, 40))).expect("finish");
        let mut expected = AlignedVec::<BATCH_ALIGN_BYTES>::new();
        expected.resize(BATCH_HEADER_BYTES, 0);
        let expected = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&records, expected)
            .expect("rkyv");
        let length = batch.header().batch_length as usize;
        assert_eq!(&batch.as_bytes()[BATCH_HEADER_BYTES..length], &expected[BATCH_HEADER_BYTES..]);
        let header = batch.header();
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (9, 1, 40));
        assert_eq!(header.record_count, 5);
    }

    #[test]
    fn records_read_back_with_their_timestamps_even_out_of_order() {
        let mut writer = BatchWriter::with_capacity(64);
        let stamps = [5_000i64, 4_000, 6_000, 4_500];
        for (i, ts) in stamps.iter().enumerate() {
            let value = vec![i as u8; i * 3];
            let headers: [(&str, &[u8]); 1] = [("n", b"v")];
            writer
                .push(&RecordRef {
                    key: Some(b"k"),
                    value: &value,
                    headers: &headers,
                    timestamp_ms: *ts,
                })
                .expect("push");
        }
        let batch = writer.finish(None).expect("finish");
        let view = BatchView::validate(batch.as_bytes()).expect("valid");
        assert_eq!(view.header().first_timestamp_ms, 4_000);
        assert_eq!(view.header().max_timestamp_ms, 6_000);
        let read: Vec<(u64, i64, usize)> =
            view.iter().map(|r| (r.offset.0, r.timestamp_ms, r.value().len())).collect();
        assert_eq!(read, vec![(0, 5_000, 0), (1, 4_000, 3), (2, 6_000, 6), (3, 4_500, 9)]);
        assert!(view.iter().all(|r| r.headers().eq([("n", &b"v"[..])])));
    }

    #[test]
    fn size_estimate_bounds_the_finished_batch() {
        let mut writer = BatchWriter::with_capacity(0);
        let value = [3u8; 100];
        let record = RecordRef { value: &value, ..RecordRef::default() };
        while writer.fits(&record, 64 << 10) {
            writer.push(&record).expect("push");
        }
        let estimate = writer.estimated_bytes();
        let batch = writer.finish(None).expect("finish");
        assert!(batch.as_bytes().len() <= estimate, "{} > {estimate}", batch.as_bytes().len());
        assert!(batch.as_bytes().len() <= 64 << 10);
    }

    #[test]
    fn an_empty_batch_is_refused() {
        assert!(BatchWriter::with_capacity(0).finish(None).is_err());
    }
}
