//! [`Storage`] on a real disk: O_DIRECT files through glommio's io_uring.
//!
//! Directory operations (create, list, remove) are rare control-path calls
//! and use the standard library; every byte of log data goes through DMA.

use crate::storage::{
    assert_aligned, FileRef, IoBuf, ReadBuf, Storage, StorageError, StorageFile, StorageResult,
};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use glommio::io::{DmaFile, OpenOptions};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Files on the local file system, opened O_DIRECT.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskStorage;

/// An O_DIRECT file.
pub struct DiskFile {
    file: DmaFile,
    path: PathBuf,
}

impl StorageFile for DiskFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, size_bytes: usize) -> IoBuf {
        // glommio 0.9 panics on an empty DMA buffer once its registered
        // memory is used up ("Buffer allocation failed"); nothing needs one.
        if size_bytes == 0 {
            return IoBuf::Heap(Vec::new());
        }
        IoBuf::Dma(self.file.alloc_dma_buffer(size_bytes))
    }

    fn write_at(&self, buf: IoBuf, position_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            assert_aligned(position_bytes, buf.len());
            let IoBuf::Dma(buf) = buf else {
                panic!("DiskFile::write_at needs a buffer from DiskFile::alloc_buffer");
            };
            let len = buf.len();
            let written = self
                .file
                .write_at(buf, position_bytes)
                .await
                .map_err(|e| StorageError::new("write", &self.path, e))?;
            if written != len {
                return Err(StorageError::new(
                    "write",
                    &self.path,
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
            let result = self
                .file
                .read_at_aligned(position_bytes, size_bytes)
                .await
                .map_err(|e| StorageError::new("read", &self.path, e))?;
            Ok(ReadBuf::Dma(result))
        }
        .boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            self.file.fdatasync().await.map_err(|e| StorageError::new("fdatasync", &self.path, e))
        }
        .boxed_local()
    }

    fn truncate(&self, size_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            self.file
                .truncate(size_bytes)
                .await
                .map_err(|e| StorageError::new("truncate", &self.path, e))
        }
        .boxed_local()
    }

    fn size_bytes(&self) -> LocalBoxFuture<'_, StorageResult<u64>> {
        async move {
            self.file
                .file_size()
                .await
                .map_err(|e| StorageError::new("stat", &self.path, e))
        }
        .boxed_local()
    }

    fn close(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        // glommio closes a DmaFile on drop when `close` is not called; an
        // explicit close needs ownership, which shared readers may still
        // hold, so the fd is released when the last `Rc` goes.
        async move { Ok(()) }.boxed_local()
    }
}

impl Storage for DiskStorage {
    fn open<'a>(
        &'a self,
        path: &'a Path,
        create: bool,
    ) -> LocalBoxFuture<'a, StorageResult<FileRef>> {
        async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .dma_open(path)
                .await
                .map_err(|e| StorageError::new(if create { "create" } else { "open" }, path, e))?;
            Ok(Rc::new(DiskFile { file, path: path.to_path_buf() }) as FileRef)
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
