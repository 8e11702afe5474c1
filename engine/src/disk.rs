//! [`Storage`] on a real disk: O_DIRECT files through glommio's io_uring.
//!
//! Directory operations (create, list, remove) are rare control-path calls
//! and use the standard library; every byte of log data goes through DMA.

use crate::metrics;
use crate::storage::{
    assert_aligned, FileRef, IoBuf, ReadBuf, Storage, StorageError, StorageFile, StorageResult,
};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::io::{DmaFile, OpenOptions};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// Counts a failed I/O against the shard doing it.
fn count_error<T, E>(result: &Result<T, E>) {
    if result.is_err() {
        metrics::on_shard(|m| m.io_errors_total.add(1));
    }
}

/// Files on the local file system, opened O_DIRECT.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskStorage;

/// Open descriptors per shard (thread) before the least recently used
/// idle ones are closed; set by `set_open_files_max`.
const OPEN_FILES_MAX_DEFAULT: usize = 256;

/// The descriptors of a shard's files. A `DiskFile` is a handle that stays
/// valid whether or not its descriptor is open: every operation reopens it
/// if the cache closed it. With thousands of partitions per shard, most
/// idle, descriptors would otherwise run out long before memory does.
///
/// Closing and reopening is safe for the log's durability: fdatasync acts
/// on the file, not on the descriptor, and O_DIRECT writes report their
/// errors when they complete.
struct OpenFiles {
    /// Slots whose descriptor is open (maybe dropped since: pruned lazily).
    open: Vec<std::rc::Weak<Slot>>,
    /// Advances on every use; a slot's `last_used` orders evictions.
    clock: u64,
    open_files_max: usize,
}

thread_local! {
    static OPEN_FILES: RefCell<OpenFiles> = const {
        RefCell::new(OpenFiles { open: Vec::new(), clock: 0, open_files_max: OPEN_FILES_MAX_DEFAULT })
    };
}

/// Bounds the descriptors this thread's `DiskFile`s keep open (at least 16).
/// Operations in flight keep theirs until they complete, so the bound may
/// be passed briefly.
pub fn set_open_files_max(open_files_max: usize) {
    OPEN_FILES.with(|files| files.borrow_mut().open_files_max = open_files_max.max(16));
}

/// Descriptors this thread's `DiskFile`s hold open now.
pub fn open_files() -> usize {
    OPEN_FILES.with(|files| {
        files
            .borrow()
            .open
            .iter()
            .filter_map(std::rc::Weak::upgrade)
            .filter(|s| s.is_open())
            .count()
    })
}

fn tick() -> u64 {
    OPEN_FILES.with(|files| {
        let mut files = files.borrow_mut();
        files.clock += 1;
        files.clock
    })
}

/// Records that `slot` opened its descriptor; closes the least recently
/// used idle ones when the bound is passed (an eighth of the bound at once,
/// so the scan runs rarely).
fn opened(slot: &Rc<Slot>) {
    let evicted: Vec<Rc<Slot>> = OPEN_FILES.with(|files| {
        let mut files = files.borrow_mut();
        files.open.push(Rc::downgrade(slot));
        if files.open.len() <= files.open_files_max {
            return Vec::new();
        }
        let mut live: Vec<Rc<Slot>> =
            files.open.iter().filter_map(std::rc::Weak::upgrade).filter(|s| s.is_open()).collect();
        let max = files.open_files_max;
        let mut evicted = Vec::new();
        if live.len() > max {
            live.sort_by_key(|s| s.last_used.get());
            let excess = live.len() - max + max / 8;
            evicted = live.drain(..excess.min(live.len())).collect();
        }
        files.open = live.iter().map(Rc::downgrade).collect();
        evicted
    });
    for slot in evicted {
        // Dropping the last handle closes the descriptor (glommio closes it
        // asynchronously); an operation in flight holds its own.
        drop(slot.file.borrow_mut().take());
    }
}

/// A file's path and, while it is open, its descriptor.
struct Slot {
    path: PathBuf,
    file: RefCell<Option<Rc<DmaFile>>>,
    last_used: Cell<u64>,
}

impl Slot {
    fn is_open(&self) -> bool {
        self.file.borrow().is_some()
    }
}

/// An O_DIRECT file (see `OpenFiles` for its descriptor's lifecycle).
pub struct DiskFile {
    slot: Rc<Slot>,
}

async fn open_dma(path: &Path, create: bool) -> StorageResult<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::new(if create { "create" } else { "open" }, path, e))
}

impl DiskFile {
    /// The open descriptor, reopening the file if the cache closed it.
    async fn dma(&self) -> StorageResult<Rc<DmaFile>> {
        self.slot.last_used.set(tick());
        if let Some(file) = self.slot.file.borrow().as_ref() {
            return Ok(file.clone());
        }
        let file = Rc::new(open_dma(&self.slot.path, false).await?);
        if let Some(raced) = self.slot.file.borrow().as_ref() {
            // Another operation reopened it meanwhile; ours closes on drop.
            return Ok(raced.clone());
        }
        *self.slot.file.borrow_mut() = Some(file.clone());
        opened(&self.slot);
        Ok(file)
    }
}

impl StorageFile for DiskFile {
    fn path(&self) -> &Path {
        &self.slot.path
    }

    fn alloc_buffer(&self, size_bytes: usize) -> IoBuf {
        // glommio 0.9 panics on an empty DMA buffer once its registered
        // memory is used up ("Buffer allocation failed"); nothing needs one.
        if size_bytes == 0 {
            return IoBuf::Heap(Vec::new());
        }
        IoBuf::Dma(glommio::allocate_dma_buffer(size_bytes))
    }

    fn write_at(&self, buf: IoBuf, position_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            assert_aligned(position_bytes, buf.len());
            let IoBuf::Dma(buf) = buf else {
                panic!("DiskFile::write_at needs a buffer from DiskFile::alloc_buffer");
            };
            let len = buf.len();
            let path = &self.slot.path;
            let file = self.dma().await?;
            let started = Instant::now();
            let written = file.write_at(buf, position_bytes).await;
            metrics::on_shard(|m| m.write_latency.record(started.elapsed()));
            count_error(&written);
            if let Ok(n) = &written {
                metrics::on_shard(|m| m.bytes_written_total.add(*n as u64));
            }
            let written = written.map_err(|e| StorageError::new("write", path, e))?;
            if written != len {
                return Err(StorageError::new(
                    "write",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write: {written} of {len} bytes at {position_bytes}"),
                    ),
                ));
            }
            Ok(())
        }
        .boxed_local()
    }

    fn read_at(
        &self,
        position_bytes: u64,
        size_bytes: usize,
    ) -> LocalBoxFuture<'_, StorageResult<ReadBuf>> {
        async move {
            assert_aligned(position_bytes, size_bytes);
            // glommio 0.9 panics on an empty read once its registered memory
            // is used up (it asks for a zero-byte buffer, which its fallback
            // allocator refuses): an empty file's index, read at open, did
            // that past ~1 100 partitions.
            if size_bytes == 0 {
                return Ok(ReadBuf::Heap(Vec::new()));
            }
            let result = self.dma().await?.read_at_aligned(position_bytes, size_bytes).await;
            count_error(&result);
            let result = result.map_err(|e| StorageError::new("read", &self.slot.path, e))?;
            Ok(ReadBuf::Dma(result))
        }
        .boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            let file = self.dma().await?;
            let started = Instant::now();
            let synced = file.fdatasync().await;
            metrics::on_shard(|m| m.fdatasync_latency.record(started.elapsed()));
            count_error(&synced);
            synced.map_err(|e| StorageError::new("fdatasync", &self.slot.path, e))
        }
        .boxed_local()
    }

    fn truncate(&self, size_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            self.dma()
                .await?
                .truncate(size_bytes)
                .await
                .map_err(|e| StorageError::new("truncate", &self.slot.path, e))
        }
        .boxed_local()
    }

    fn size_bytes(&self) -> LocalBoxFuture<'_, StorageResult<u64>> {
        async move {
            self.dma()
                .await?
                .file_size()
                .await
                .map_err(|e| StorageError::new("stat", &self.slot.path, e))
        }
        .boxed_local()
    }

    fn close(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        // The descriptor goes now (operations in flight keep theirs until
        // they complete); the handle stays usable and reopens on next use.
        async move {
            drop(self.slot.file.borrow_mut().take());
            Ok(())
        }
        .boxed_local()
    }
}

impl Storage for DiskStorage {
    fn open<'a>(
        &'a self,
        path: &'a Path,
        create: bool,
    ) -> LocalBoxFuture<'a, StorageResult<FileRef>> {
        async move {
            // Opened now, so a missing file is an error here, not later.
            let file = Rc::new(open_dma(path, create).await?);
            let slot = Rc::new(Slot {
                path: path.to_path_buf(),
                file: RefCell::new(Some(file)),
                last_used: Cell::new(tick()),
            });
            opened(&slot);
            Ok(Rc::new(DiskFile { slot }) as FileRef)
        }
        .boxed_local()
    }

    fn create_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            std::fs::create_dir_all(path).map_err(|e| StorageError::new("mkdir", path, e))
        }
        .boxed_local()
    }

    fn sync_dir<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            let dir = glommio::io::Directory::open(path)
                .await
                .map_err(|e| StorageError::new("open dir", path, e))?;
            dir.sync().await.map_err(|e| StorageError::new("fsync dir", path, e))?;
            dir.close().await.map_err(|e| StorageError::new("close dir", path, e))
        }
        .boxed_local()
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StorageError::new("unlink", path, e)),
            }
        }
        .boxed_local()
    }

    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            match std::fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StorageError::new("rmdir", path, e)),
            }
        }
        .boxed_local()
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        // A metadata operation on small control files (checkpoints), rare
        // enough to run on the shard's thread.
        async move { std::fs::rename(from, to).map_err(|e| StorageError::new("rename", from, e)) }
            .boxed_local()
    }

    fn list_files(&self, path: &Path) -> StorageResult<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(path).map_err(|e| StorageError::new("list", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::new("list", path, e))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Name of the marker file that works around glommio 0.9's io-poll probe.
pub const PROBE_MARKER_FILE: &str = ".mamba-io-probe";

/// Works around a glommio 0.9 bug: the first DMA file opened on a device
/// decides whether the device supports polled I/O by reading from it; when
/// that file is new and empty the probe wrongly says yes on disks without
/// io_poll, and every later DMA read fails with EOPNOTSUPP (os error 95).
/// Opening (and reading) one non-empty file first makes the probe see real
/// data. Call once per shard before any other DMA file in `dir`.
pub async fn prime_io_poll_probe(dir: &Path) -> StorageResult<()> {
    let marker = dir.join(PROBE_MARKER_FILE);
    let wanted = b"mamba data directory: this file lets the io_uring poll probe read real data\n";
    let current = std::fs::read(&marker).ok();
    if current.as_deref().is_none_or(|c| c.is_empty()) {
        std::fs::write(&marker, wanted).map_err(|e| StorageError::new("write", &marker, e))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .dma_open(&marker)
        .await
        .map_err(|e| StorageError::new("open", &marker, e))?;
    let read = file.read_at(0, 512).await;
    let closed = file.close().await;
    read.map_err(|e| StorageError::new("read", &marker, e))?;
    closed.map_err(|e| StorageError::new("close", &marker, e))?;
    Ok(())
}
