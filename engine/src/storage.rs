//! The seam between the engine and the disk.
//!
//! Everything the engine does to files goes through [`Storage`] (a directory
//! tree) and [`StorageFile`] (positional, block-aligned write/read/sync). Two
//! implementations exist: [`crate::disk::DiskStorage`], O_DIRECT files driven
//! by the shard's io_uring, and [`crate::memfs::MemFs`], files in memory, used
//! for `memory` topics and, with a fault plan, for the crash simulation.
//!
//! Architecture Invariant: all positions and lengths passed to `write_at` and
//! `read_at` are multiples of [`BLOCK_BYTES`]; implementations assert it, so a
//! test on `MemFs` catches what O_DIRECT would reject on a real disk.

use crate::limits::{align_up, BLOCK_BYTES};
use futures::future::LocalBoxFuture;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// An I/O failure with what was being done and to which file.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct StorageError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl StorageError {
    pub fn new(op: &'static str, path: &Path, source: impl Into<io::Error>) -> StorageError {
        StorageError { op, path: path.to_path_buf(), source: source.into() }
    }

    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A block-aligned buffer handed to a write; ownership moves into the I/O.
pub enum IoBuf {
    /// glommio DMA memory (possibly registered with the ring).
    Dma(glommio::io::DmaBuffer),
    /// Plain memory, for files that are not O_DIRECT.
    Heap(Vec<u8>),
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IoBuf::Dma(b) => b.as_bytes(),
            IoBuf::Heap(b) => b,
        }
    }
}

impl IoBuf {
    /// Shortens the buffer to `size_bytes` (a multiple of the block size).
    pub fn trim_to(&mut self, size_bytes: usize) {
        assert!(size_bytes <= self.len(), "trim_to grows the buffer");
        match self {
            IoBuf::Dma(b) => b.trim_to_size(size_bytes),
            IoBuf::Heap(b) => b.truncate(size_bytes),
        }
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            IoBuf::Dma(b) => b.as_bytes_mut(),
            IoBuf::Heap(b) => b,
        }
    }
}

/// The bytes a read returned; may be shorter than asked at the end of file.
pub enum ReadBuf {
    Dma(glommio::io::ReadResult),
    Heap(Vec<u8>),
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Dma(r) => r,
            ReadBuf::Heap(v) => v,
        }
    }
}

/// One open file. Owned by a single shard (`!Send`).
pub trait StorageFile {
    fn path(&self) -> &Path;
    /// A buffer of `size_bytes` (a multiple of the block size) suitable for
    /// `write_at` on this file. Its contents are unspecified (zeroing a
    /// megabyte per write is not free): callers write every byte they hand
    /// to `write_at`, padding included.
    fn alloc_buffer(&self, size_bytes: usize) -> IoBuf;
    /// Writes all of `buf` at `position_bytes`. A short write is an error.
    fn write_at(&self, buf: IoBuf, position_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>>;
    /// Reads up to `size_bytes` at `position_bytes`; shorter only at the end
    /// of the file.
    fn read_at(
        &self,
        position_bytes: u64,
        size_bytes: usize,
    ) -> LocalBoxFuture<'_, StorageResult<ReadBuf>>;
    /// Makes every completed write durable (fdatasync).
    fn sync(&self) -> LocalBoxFuture<'_, StorageResult<()>>;
    fn truncate(&self, size_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>>;
    fn size_bytes(&self) -> LocalBoxFuture<'_, StorageResult<u64>>;
    /// Closes the file; the handle must not be used afterwards.
    fn close(&self) -> LocalBoxFuture<'_, StorageResult<()>>;
}

pub type FileRef = Rc<dyn StorageFile>;

/// A directory tree of files.
pub trait Storage {
    /// Opens a file for reading and writing, creating it if `create`.
    fn open<'a>(
        &'a self,
        path: &'a Path,
        create: bool,
    ) -> LocalBoxFuture<'a, StorageResult<FileRef>>;
    fn create_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>>;
    /// Makes the directory's entries (created, removed files) durable.
    fn sync_dir<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>>;
    fn remove_file<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>>;
    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>>;
    /// Renames `from` to `to`, replacing `to` if it exists (rename(2)); the
    /// directory entry is durable only after `sync_dir`.
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>>;
    /// File names (not paths) directly inside `path`, sorted.
    fn list_files(&self, path: &Path) -> StorageResult<Vec<String>>;
}

pub type StorageRef = Rc<dyn Storage>;

/// Asserts the O_DIRECT alignment contract.
pub fn assert_aligned(position_bytes: u64, size_bytes: usize) {
    assert!(position_bytes.is_multiple_of(BLOCK_BYTES), "unaligned position {position_bytes}");
    assert!((size_bytes as u64).is_multiple_of(BLOCK_BYTES), "unaligned size {size_bytes}");
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file
/// written (block-aligned, padding zeroed) and synced, renamed over `path`,
/// and the directory synced. A crash leaves either the old file or the new
/// one, never a mix; a stale `.tmp` is overwritten by the next call.
pub async fn write_atomically(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> StorageResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.create_dir_all(dir).await?;
    let tmp = path.with_extension("tmp");
    let file = storage.open(&tmp, true).await?;
    let aligned = align_up(bytes.len() as u64, BLOCK_BYTES) as usize;
    if aligned > 0 {
        let mut buf = file.alloc_buffer(aligned);
        buf[..bytes.len()].copy_from_slice(bytes);
        buf[bytes.len()..].fill(0);
        file.write_at(buf, 0).await?;
    }
    file.truncate(bytes.len() as u64).await?;
    file.sync().await?;
    file.close().await?;
    storage.rename(&tmp, path).await?;
    storage.sync_dir(dir).await
}
