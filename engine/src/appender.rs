//! Turns appends of arbitrary length into block-aligned O_DIRECT writes.
//!
//! Appended bytes are copied into block-aligned chunks. A flush hands out the
//! chunks as writes and keeps the last partial block in memory: the next
//! flush rewrites that block in place with the new bytes after it (the
//! Redpanda appender technique), so nothing is ever padded between appends
//! and the file holds zeros only after its logical end.
//!
//! Lifecycle: created for an empty file or resumed over a recovered tail;
//! owned by the partition's writer on one shard; `take_flush` and
//! `flush_done` alternate, never two flushes in flight.
//!
//! Invariants: `current_start_bytes` is block aligned; the file holds the
//! appended bytes up to `flushed_end_bytes`; `end_bytes >= flushed_end_bytes`.

use crate::limits::{align_down, align_up, BLOCK_BYTES};
use crate::storage::{FileRef, IoBuf};

/// Flushes up to this size are copied out of the chunk buffer; larger ones
/// write the chunk buffer itself.
const SMALL_FLUSH_BYTES: usize = 64 * 1024;

pub struct Appender {
    file: FileRef,
    chunk_bytes: usize,
    /// Logical end: every byte appended so far.
    end_bytes: u64,
    /// Logical end of what has been written to the file.
    flushed_end_bytes: u64,
    /// File position of the first byte of `current`.
    current_start_bytes: u64,
    current: IoBuf,
    current_len: usize,
    /// Full chunks waiting for the next flush, with their file positions.
    sealed: Vec<(u64, IoBuf)>,
    flush_in_flight: bool,
}

/// The writes one flush must perform; positions and lengths are aligned.
pub struct FlushWork {
    pub writes: Vec<(u64, IoBuf)>,
    /// The logical end these writes make durable once written (and synced).
    pub end_bytes: u64,
}

impl Appender {
    /// An appender over a file whose logical content ends at `end_bytes`;
    /// `tail_block` holds the bytes of the last partial block
    /// (`end_bytes % BLOCK_BYTES` of them).
    pub fn resume(
        file: FileRef,
        chunk_bytes: usize,
        end_bytes: u64,
        tail_block: &[u8],
    ) -> Appender {
        assert!((chunk_bytes as u64).is_multiple_of(BLOCK_BYTES));
        assert!(chunk_bytes as u64 >= BLOCK_BYTES);
        assert_eq!(tail_block.len() as u64, end_bytes % BLOCK_BYTES, "tail block length");
        // Buffers start at one block and grow to `chunk_bytes` only for
        // partitions that take that much between flushes: a shard may hold
        // thousands of idle partitions (three appenders each).
        let mut current = file.alloc_buffer(BLOCK_BYTES as usize);
        current[..tail_block.len()].copy_from_slice(tail_block);
        Appender {
            file,
            chunk_bytes,
            end_bytes,
            flushed_end_bytes: end_bytes,
            current_start_bytes: align_down(end_bytes, BLOCK_BYTES),
            current,
            current_len: tail_block.len(),
            sealed: Vec::new(),
            flush_in_flight: false,
        }
    }

    pub fn file(&self) -> &FileRef {
        &self.file
    }

    pub fn end_bytes(&self) -> u64 {
        self.end_bytes
    }

    pub fn flushed_end_bytes(&self) -> u64 {
        self.flushed_end_bytes
    }

    /// Copies `bytes` to the end of the file's buffered content.
    pub fn append(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.current_len == self.current.len() {
                self.make_room();
            }
            let n = (self.current.len() - self.current_len).min(bytes.len());
            self.current[self.current_len..self.current_len + n].copy_from_slice(&bytes[..n]);
            self.current_len += n;
            self.end_bytes += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// The current buffer is full: double it up to a chunk, or seal it.
    fn make_room(&mut self) {
        let capacity = self.current.len();
        if capacity < self.chunk_bytes {
            let mut bigger = self.file.alloc_buffer((capacity * 2).min(self.chunk_bytes));
            bigger[..self.current_len].copy_from_slice(&self.current[..self.current_len]);
            self.current = bigger;
        } else {
            let next = self.file.alloc_buffer(self.chunk_bytes);
            let full = std::mem::replace(&mut self.current, next);
            self.sealed.push((self.current_start_bytes, full));
            self.current_start_bytes += capacity as u64;
            self.current_len = 0;
        }
    }

    /// Hands out everything appended since the last flush as aligned writes.
    /// The partial last block is written (zero-padded) and also kept, to be
    /// rewritten with what follows it.
    pub fn take_flush(&mut self) -> Option<FlushWork> {
        assert!(!self.flush_in_flight, "two flushes in flight on {:?}", self.file.path());
        if self.end_bytes == self.flushed_end_bytes {
            return None;
        }
        let mut writes = std::mem::take(&mut self.sealed);
        if self.current_len > 0 {
            let aligned_len = align_up(self.current_len as u64, BLOCK_BYTES) as usize;
            let kept_start = align_down(self.current_len as u64, BLOCK_BYTES) as usize;
            let kept = self.current_len - kept_start;
            if aligned_len <= SMALL_FLUSH_BYTES {
                // Small flush (the latency case): copy the few blocks out and
                // keep the chunk buffer, instead of a fresh chunk per flush.
                let mut out = self.file.alloc_buffer(aligned_len);
                out[..self.current_len].copy_from_slice(&self.current[..self.current_len]);
                out[self.current_len..].fill(0);
                writes.push((self.current_start_bytes, out));
                self.current.copy_within(kept_start..self.current_len, 0);
            } else {
                // Large flush (the throughput case): write the chunk itself.
                let mut next = self.file.alloc_buffer(self.current.len());
                next[..kept].copy_from_slice(&self.current[kept_start..self.current_len]);
                let mut out = std::mem::replace(&mut self.current, next);
                out[self.current_len..aligned_len].fill(0);
                out.trim_to(aligned_len);
                writes.push((self.current_start_bytes, out));
            }
            self.current_start_bytes += kept_start as u64;
            self.current_len = kept;
        }
        self.flush_in_flight = true;
        Some(FlushWork { writes, end_bytes: self.end_bytes })
    }

    /// Hands out only the whole blocks appended since the last flush; the
    /// partial last block stays in memory. Index files flush this way: a
    /// write only every 4 KiB of entries, and recovery rebuilds the tail.
    pub fn take_whole_blocks(&mut self) -> Option<FlushWork> {
        assert!(!self.flush_in_flight, "two flushes in flight on {:?}", self.file.path());
        let whole_len = align_down(self.current_len as u64, BLOCK_BYTES) as usize;
        if self.sealed.is_empty() && whole_len == 0 {
            return None;
        }
        let mut writes = std::mem::take(&mut self.sealed);
        if whole_len > 0 {
            let mut out = self.file.alloc_buffer(whole_len);
            out.copy_from_slice(&self.current[..whole_len]);
            writes.push((self.current_start_bytes, out));
            self.current.copy_within(whole_len..self.current_len, 0);
            self.current_start_bytes += whole_len as u64;
            self.current_len -= whole_len;
        }
        self.flush_in_flight = true;
        Some(FlushWork { writes, end_bytes: self.current_start_bytes })
    }

    /// Records that the writes of `take_flush` completed.
    pub fn flush_done(&mut self, end_bytes: u64) {
        assert!(self.flush_in_flight);
        assert!(end_bytes >= self.flushed_end_bytes);
        assert!(end_bytes <= self.end_bytes);
        self.flushed_end_bytes = end_bytes;
        self.flush_in_flight = false;
    }
}

/// Performs a flush's writes concurrently.
pub async fn write_all(file: &FileRef, work: FlushWork) -> crate::storage::StorageResult<u64> {
    let end = work.end_bytes;
    let writes = work.writes.into_iter().map(|(position, buf)| file.write_at(buf, position));
    for result in futures::future::join_all(writes).await {
        result?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfs::MemFs;
    use crate::storage::Storage;
    use futures::executor::block_on;
    use std::path::Path;

    #[test]
    fn appends_land_contiguously_across_flushes_and_chunks() {
        let fs = MemFs::new();
        let path = Path::new("/f");
        let file = block_on(fs.open(path, true)).expect("open");
        let mut appender = Appender::resume(file.clone(), 8192, 0, &[]);
        let mut expected = Vec::new();
        for round in 0..40u32 {
            let piece: Vec<u8> = (0..(round * 397 % 5000 + 1)).map(|i| (i + round) as u8).collect();
            appender.append(&piece);
            expected.extend_from_slice(&piece);
            if round % 3 == 0 {
                let work = appender.take_flush().expect("dirty");
                let end = block_on(write_all(&file, work)).expect("write");
                appender.flush_done(end);
                let on_disk = fs.file_bytes(path).expect("file");
                assert_eq!(on_disk.len() as u64, align_up(expected.len() as u64, BLOCK_BYTES));
                assert_eq!(&on_disk[..expected.len()], &expected[..]);
                assert!(on_disk[expected.len()..].iter().all(|&b| b == 0));
            }
        }
    }
}
