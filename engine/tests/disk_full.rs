//! A partition log on real O_DIRECT files whose disk fills up: every write
//! fails with ENOSPC (injected through the storage seam, so the test needs
//! no root and no small file system) while recovery, which writes nothing
//! into an empty segment, keeps succeeding. The writer fences and recovers
//! once per attempt, for as long as the disk stays full. The files are real
//! because descriptors are what leaked: `MemFs` handles share one in-memory
//! file and hold nothing a process could run out of.

use futures::future::LocalBoxFuture;
use futures::FutureExt;
use mamba_engine::batch::{iter_batches, Batch, BatchBuilder, NewRecord};
use mamba_engine::config::Durability;
use mamba_engine::disk::{prime_io_poll_probe, DiskStorage};
use mamba_engine::error::EngineError;
use mamba_engine::ids::{LeaderEpoch, Offset};
use mamba_engine::partition::{AppendMode, LogOptions, PartitionLog};
use mamba_engine::runtime::{spawn_executor, ExecutorOptions};
use mamba_engine::segment::LOG_SUFFIX;
use mamba_engine::storage::{
    FileRef, IoBuf, ReadBuf, Storage, StorageError, StorageFile, StorageRef, StorageResult,
};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A broker's own partitions are led at epoch 0, which needs no leader
/// epoch file: the only writes are the log's, the ones this test fails.
const LEADER: AppendMode = AppendMode::Leader { epoch: LeaderEpoch(0) };
/// Fence events while the disk is full; the issue saw 96 leave 97 fds.
const FENCE_COUNT: usize = 32;

/// `DiskStorage` whose writes fail with ENOSPC while `full` is set.
struct FullDisk {
    full: Rc<Cell<bool>>,
}

struct FullDiskFile {
    file: FileRef,
    full: Rc<Cell<bool>>,
}

impl StorageFile for FullDiskFile {
    fn path(&self) -> &Path {
        self.file.path()
    }
    fn alloc_buffer(&self, size_bytes: usize) -> IoBuf {
        self.file.alloc_buffer(size_bytes)
    }
    fn write_at(&self, buf: IoBuf, position_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        if self.full.get() {
            let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
            let error = StorageError::new("write", self.file.path(), enospc);
            return async move { Err(error) }.boxed_local();
        }
        self.file.write_at(buf, position_bytes)
    }
    fn read_at(
        &self,
        position_bytes: u64,
        size_bytes: usize,
    ) -> LocalBoxFuture<'_, StorageResult<ReadBuf>> {
        self.file.read_at(position_bytes, size_bytes)
    }
    fn sync(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        self.file.sync()
    }
    fn truncate(&self, size_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        self.file.truncate(size_bytes)
    }
    fn size_bytes(&self) -> LocalBoxFuture<'_, StorageResult<u64>> {
        self.file.size_bytes()
    }
    fn close(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        self.file.close()
    }
}

impl Storage for FullDisk {
    fn open<'a>(
        &'a self,
        path: &'a Path,
        create: bool,
    ) -> LocalBoxFuture<'a, StorageResult<FileRef>> {
        async move {
            let file = DiskStorage.open(path, create).await?;
            Ok(Rc::new(FullDiskFile { file, full: self.full.clone() }) as FileRef)
        }
        .boxed_local()
    }
    fn create_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        DiskStorage.create_dir_all(path)
    }
    fn sync_dir<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        DiskStorage.sync_dir(path)
    }
    fn remove_file<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        DiskStorage.remove_file(path)
    }
    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        DiskStorage.remove_dir_all(path)
    }
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        DiskStorage.rename(from, to)
    }
    fn list_files(&self, path: &Path) -> StorageResult<Vec<String>> {
        DiskStorage.list_files(path)
    }
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 20,
        segment_ms: 1_000_000,
        retention_ms: None,
        retention_bytes: None,
        durability: Durability::Fsync,
        tail_cache_bytes: 0,
    }
}

fn batch(value: &str) -> Batch {
    let mut b = BatchBuilder::new();
    b.push(NewRecord {
        key: None,
        value: value.as_bytes().to_vec(),
        headers: vec![],
        timestamp_ms: 0,
    });
    b.build().expect("batch")
}

/// Descriptors of this process open on `.log` files under `dir`.
fn log_descriptor_count(dir: &Path) -> usize {
    let entries = std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd");
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .filter(|target| target.to_string_lossy().ends_with(LOG_SUFFIX))
        .count()
}

/// What the log looked like once the disk had room again.
#[derive(Debug)]
struct Outcome {
    log_descriptors: usize,
    segment_count: usize,
    /// Record values read back after reopening the log from disk.
    values_after_reopen: Vec<String>,
}

/// Every record value from offset 0 of a log holding a few small batches.
async fn read_values(log: &PartitionLog) -> Result<Vec<String>, String> {
    let read = log.read(Offset::ZERO, 1 << 20).await.map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for chunk in &read.chunks {
        for batch in iter_batches(chunk) {
            let batch = batch.map_err(|e| e.to_string())?;
            values.extend(batch.iter().map(|r| String::from_utf8_lossy(r.value()).into_owned()));
        }
    }
    Ok(values)
}

async fn fill_the_disk_then_free_it(dir: PathBuf) -> Result<Outcome, String> {
    prime_io_poll_probe(&dir).await.map_err(|e| e.to_string())?;
    let full = Rc::new(Cell::new(false));
    let storage: StorageRef = Rc::new(FullDisk { full: full.clone() });
    let log_dir = dir.join("topics/t/0");
    let (log, _) = PartitionLog::open(storage.clone(), &log_dir, options(), None, 0)
        .await
        .map_err(|e| e.to_string())?;
    full.set(true);
    for i in 0..FENCE_COUNT {
        log.append(batch(&format!("lost-{i}")), LEADER, 0).await.map_err(|e| e.to_string())?;
        match log.flush().await {
            Err(EngineError::Fenced(_)) => {}
            other => return Err(format!("flush on a full disk: {other:?}")),
        }
        // What the shard's writer does each round while fenced.
        log.recover_after_error(0).await.map_err(|e| e.to_string())?;
    }
    full.set(false);
    log.append(batch("kept"), LEADER, 0).await.map_err(|e| e.to_string())?;
    // The write and fdatasync also carry to the kernel the asynchronous
    // closes glommio queued for handles dropped before them.
    log.flush().await.map_err(|e| e.to_string())?;
    let log_descriptors = log_descriptor_count(&log_dir);
    let segment_count = log.segment_count();
    log.close().await.map_err(|e| e.to_string())?;
    drop(log);
    let (reopened, _) = PartitionLog::open(storage, &log_dir, options(), None, 0)
        .await
        .map_err(|e| e.to_string())?;
    let values_after_reopen = read_values(&reopened).await?;
    reopened.close().await.map_err(|e| e.to_string())?;
    Ok(Outcome { log_descriptors, segment_count, values_after_reopen })
}

#[test]
fn fences_on_a_full_disk_leave_one_descriptor_on_the_active_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let options =
        ExecutorOptions { name: "disk-full-test".into(), core: None, io_memory_bytes: 1 << 20 };
    let thread = spawn_executor(options, move || fill_the_disk_then_free_it(path)).expect("spawn");
    let outcome = thread.join().expect("executor panicked").expect("executor").expect("run");
    // Nothing reached the disk while it was full: the log is one segment,
    // on one descriptor, holding the one batch written after.
    assert_eq!(outcome.log_descriptors, 1, "{outcome:?}");
    assert_eq!(outcome.segment_count, 1, "{outcome:?}");
    assert_eq!(outcome.values_after_reopen, ["kept"], "{outcome:?}");
}
