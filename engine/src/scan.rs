//! Reads a segment batch by batch and says where its valid data ends.
//!
//! Used by recovery at open, by `mamba log check|dump|recover`, and by the
//! fuzz target over arbitrary segment files: one code path, so the offline
//! tools report exactly what the engine would do.

use crate::batch::{peek_stored_bytes, BatchView};
use crate::ids::Offset;
use crate::limits::{align_down, align_up, BATCH_HEADER_BYTES, BLOCK_BYTES, READ_CHUNK_BYTES};
use crate::storage::{FileRef, StorageResult};
use rkyv::util::AlignedVec;

/// How the valid data of a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// At the end of the file, or followed only by zeros (the padding of the
    /// last block, or blocks a crash left unwritten).
    Clean,
    /// Followed by bytes that are not a valid batch: a torn write or
    /// corruption. Everything from `valid_end_bytes` on is discarded.
    Torn { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// File position just after the last valid batch.
    pub valid_end_bytes: u64,
    /// Offset after the last valid batch (the first expected one when none).
    pub next_offset: Offset,
    pub batch_count: u64,
    pub end: ScanEnd,
}

/// A window of file bytes, re-read in aligned chunks as the scan advances.
pub(crate) struct Window<'f> {
    file: &'f FileRef,
    file_size_bytes: u64,
    start_bytes: u64,
    bytes: AlignedVec<16>,
}

impl<'f> Window<'f> {
    /// A window over the first `file_size_bytes` of `file`.
    pub(crate) fn new(file: &'f FileRef, file_size_bytes: u64) -> Window<'f> {
        Window { file, file_size_bytes, start_bytes: 0, bytes: AlignedVec::new() }
    }

    /// Makes `[position, position + len)` available, as far as the file
    /// has it; returns the bytes available from `position` (maybe fewer).
    pub(crate) async fn get(&mut self, position: u64, len: usize) -> StorageResult<&[u8]> {
        let have_end = self.start_bytes + self.bytes.len() as u64;
        let want_end = position.saturating_add(len as u64).min(self.file_size_bytes);
        if position < self.start_bytes || want_end > have_end {
            let start = align_down(position, BLOCK_BYTES);
            let end =
                align_up(position.saturating_add(len.max(READ_CHUNK_BYTES) as u64), BLOCK_BYTES)
                    .min(align_up(self.file_size_bytes, BLOCK_BYTES));
            let read = self.file.read_at(start, (end.max(start) - start) as usize).await?;
            self.bytes.clear();
            self.bytes.extend_from_slice(&read);
            self.start_bytes = start;
        }
        let from = (position - self.start_bytes) as usize;
        let available = self
            .bytes
            .len()
            .saturating_sub(from)
            .min(len)
            .min(self.file_size_bytes.saturating_sub(position) as usize);
        Ok(&self.bytes[from.min(self.bytes.len())..from.min(self.bytes.len()) + available])
    }
}

/// Scans `file` from `start_bytes` (a batch boundary), expecting the first
/// batch there to have base offset `expected_offset` and each next one to
/// follow on without a gap. `on_batch` sees every valid batch and its
/// position. Stops at the first invalid batch; never panics on bad bytes.
pub async fn scan_segment(
    file: &FileRef,
    file_size_bytes: u64,
    start_bytes: u64,
    expected_offset: Offset,
    mut on_batch: impl FnMut(&BatchView<'_>, u64),
) -> StorageResult<ScanOutcome> {
    let mut window = Window::new(file, file_size_bytes);
    let mut position = start_bytes;
    let mut next_offset = expected_offset;
    let mut batch_count = 0u64;
    let end = loop {
        if position >= file_size_bytes {
            break ScanEnd::Clean;
        }
        let head = window.get(position, BATCH_HEADER_BYTES).await?;
        if head.iter().all(|&b| b == 0) {
            break rest_is_zero(&mut window, position).await?;
        }
        if head.len() < BATCH_HEADER_BYTES {
            break ScanEnd::Torn { reason: format!("{} bytes of a batch header", head.len()) };
        }
        let Some(stored) = peek_stored_bytes(head) else {
            break ScanEnd::Torn { reason: "batch length out of bounds".to_string() };
        };
        let bytes = window.get(position, stored).await?;
        let view = match BatchView::validate(bytes) {
            Ok(view) => view,
            Err(e) => break ScanEnd::Torn { reason: e.to_string() },
        };
        let base = view.header().base_offset;
        if base != next_offset {
            break ScanEnd::Torn {
                reason: format!("batch at offset {base} where offset {next_offset} was expected"),
            };
        }
        on_batch(&view, position);
        next_offset = view.header().last_offset().plus(1);
        batch_count += 1;
        position += stored as u64;
    };
    Ok(ScanOutcome { valid_end_bytes: position, next_offset, batch_count, end })
}

async fn rest_is_zero(window: &mut Window<'_>, from: u64) -> StorageResult<ScanEnd> {
    let mut position = from;
    while position < window.file_size_bytes {
        let chunk = window.get(position, READ_CHUNK_BYTES).await?;
        if let Some(i) = chunk.iter().position(|&b| b != 0) {
            return Ok(ScanEnd::Torn {
                reason: format!(
                    "non-zero byte at position {} after the end marker",
                    position + i as u64
                ),
            });
        }
        if chunk.is_empty() {
            break;
        }
        position += chunk.len() as u64;
    }
    Ok(ScanEnd::Clean)
}
