//! [`Storage`] in memory, with optional, seeded fault injection.
//!
//! Without faults it backs `memory` topics: the same log code runs, only the
//! bytes live in RAM and vanish with the process. With a [`FaultPlan`] it is
//! the simulated disk of the crash tests: writes stay volatile until `sync`,
//! a `crash` keeps a random subset of the 512-byte sectors of every write not
//! yet synced (later writes over earlier ones, as a disk may reorder them),
//! and writes or syncs fail at random. All randomness comes from one seed, so
//! a failing run replays exactly.
//!
//! Every future completes on first poll, so tests can drive the engine with a
//! plain `block_on`.

use crate::storage::{
    assert_aligned, FileRef, IoBuf, ReadBuf, Storage, StorageError, StorageFile, StorageResult,
};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A disk sector: the unit a crash never tears.
pub const SECTOR_BYTES: usize = 512;
/// What a fresh buffer holds before anyone writes it.
const UNWRITTEN_BYTE: u8 = 0xA5;

/// What goes wrong, and how often.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Each write fails with EIO with probability 1/`write_error_one_in` (0: never).
    pub write_error_one_in: u32,
    /// Each sync fails with EIO with probability 1/`sync_error_one_in` (0: never).
    pub sync_error_one_in: u32,
}

#[derive(Default)]
struct MemFileState {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash for sure.
    durable: Vec<u8>,
    /// Writes since the last successful sync, in order.
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct MemFsState {
    files: BTreeMap<PathBuf, Rc<RefCell<MemFileState>>>,
    dirs: BTreeSet<PathBuf>,
    faults: Option<(FaultPlan, fastrand::Rng)>,
}

impl MemFsState {
    fn fail(&mut self, pick: impl Fn(&FaultPlan) -> u32) -> bool {
        match &mut self.faults {
            Some((plan, rng)) => {
                let one_in = pick(plan);
                one_in > 0 && rng.u32(0..one_in) == 0
            }
            None => false,
        }
    }
}

/// An in-memory file tree; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct MemFs {
    state: Rc<RefCell<MemFsState>>,
}

impl MemFs {
    /// A file tree that never fails.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// A file tree that fails and tears as `plan` says.
    pub fn with_faults(plan: FaultPlan) -> MemFs {
        let rng = fastrand::Rng::with_seed(plan.seed);
        let fs = MemFs::default();
        fs.state.borrow_mut().faults = Some((plan, rng));
        fs
    }

    /// Stops injecting write and sync errors (crashes still tear).
    pub fn heal(&self) {
        if let Some((plan, _)) = &mut self.state.borrow_mut().faults {
            plan.write_error_one_in = 0;
            plan.sync_error_one_in = 0;
        }
    }

    /// Simulates power loss: every file keeps its synced bytes plus a random
    /// subset of the sectors written since. Open handles must be dropped by
    /// the caller (as a crashed process would lose them).
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        let mut rng = match &mut state.faults {
            Some((_, rng)) => rng.fork(),
            None => fastrand::Rng::with_seed(0),
        };
        for file in state.files.values() {
            let mut f = file.borrow_mut();
            let mut survived = f.durable.clone();
            for (position, data) in std::mem::take(&mut f.unsynced) {
                for (i, sector) in data.chunks(SECTOR_BYTES).enumerate() {
                    if rng.bool() {
                        write_into(&mut survived, position as usize + i * SECTOR_BYTES, sector);
                    }
                }
            }
            f.current = survived.clone();
            f.durable = survived;
        }
    }

    /// The current bytes of a file (for tests and corruption injection).
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        self.state.borrow().files.get(path).map(|f| f.borrow().current.clone())
    }

    /// Replaces a file's bytes, durably (for corruption tests).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        let file = state.files.entry(path.to_path_buf()).or_default();
        let mut f = file.borrow_mut();
        f.current = bytes.clone();
        f.durable = bytes;
        f.unsynced.clear();
    }

    /// Paths of all files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().files.keys().cloned().collect()
    }
}

fn write_into(target: &mut Vec<u8>, position: usize, data: &[u8]) {
    if target.len() < position + data.len() {
        target.resize(position + data.len(), 0);
    }
    target[position..position + data.len()].copy_from_slice(data);
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

struct MemFile {
    fs: MemFs,
    path: PathBuf,
    state: Rc<RefCell<MemFileState>>,
}

impl StorageFile for MemFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn alloc_buffer(&self, size_bytes: usize) -> IoBuf {
        // Not zeros: code that forgets to fill its padding shows up here.
        IoBuf::Heap(vec![UNWRITTEN_BYTE; size_bytes])
    }

    fn write_at(&self, buf: IoBuf, position_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            assert_aligned(position_bytes, buf.len());
            if self.fs.state.borrow_mut().fail(|p| p.write_error_one_in) {
                return Err(StorageError::new("write", &self.path, eio("write")));
            }
            let mut f = self.state.borrow_mut();
            write_into(&mut f.current, position_bytes as usize, &buf);
            f.unsynced.push((position_bytes, buf.to_vec()));
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
            let f = self.state.borrow();
            let start = (position_bytes as usize).min(f.current.len());
            let end = (start + size_bytes).min(f.current.len());
            Ok(ReadBuf::Heap(f.current[start..end].to_vec()))
        }
        .boxed_local()
    }

    fn sync(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            if self.fs.state.borrow_mut().fail(|p| p.sync_error_one_in) {
                // As on Linux, a failed sync gives no guarantee about which
                // of the unsynced writes reached the disk.
                return Err(StorageError::new("fdatasync", &self.path, eio("fdatasync")));
            }
            let mut f = self.state.borrow_mut();
            f.durable = f.current.clone();
            f.unsynced.clear();
            Ok(())
        }
        .boxed_local()
    }

    fn truncate(&self, size_bytes: u64) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move {
            // Truncation is a metadata operation; the model makes it durable
            // at once (ext4 journals it), which is the harder case for
            // recovery: bytes before it may still be volatile.
            let mut f = self.state.borrow_mut();
            let size = size_bytes as usize;
            f.current.resize(size, 0);
            f.durable.resize(size, 0);
            for (position, data) in &mut f.unsynced {
                let keep = size.saturating_sub(*position as usize).min(data.len());
                data.truncate(keep);
            }
            Ok(())
        }
        .boxed_local()
    }

    fn size_bytes(&self) -> LocalBoxFuture<'_, StorageResult<u64>> {
        async move { Ok(self.state.borrow().current.len() as u64) }.boxed_local()
    }

    fn close(&self) -> LocalBoxFuture<'_, StorageResult<()>> {
        async move { Ok(()) }.boxed_local()
    }
}

impl Storage for MemFs {
    fn open<'a>(
        &'a self,
        path: &'a Path,
        create: bool,
    ) -> LocalBoxFuture<'a, StorageResult<FileRef>> {
        async move {
            let mut state = self.state.borrow_mut();
            let file = match state.files.get(path) {
                Some(f) => f.clone(),
                None if create => {
                    let f = Rc::new(RefCell::new(MemFileState::default()));
                    state.files.insert(path.to_path_buf(), f.clone());
                    f
                }
                None => {
                    return Err(StorageError::new(
                        "open",
                        path,
                        io::Error::from(io::ErrorKind::NotFound),
                    ))
                }
            };
            Ok(Rc::new(MemFile { fs: self.clone(), path: path.to_path_buf(), state: file })
                as FileRef)
        }
        .boxed_local()
    }

    fn create_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            self.state.borrow_mut().dirs.insert(path.to_path_buf());
            Ok(())
        }
        .boxed_local()
    }

    fn sync_dir<'a>(&'a self, _path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move { Ok(()) }.boxed_local()
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            self.state.borrow_mut().files.remove(path);
            Ok(())
        }
        .boxed_local()
    }

    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            let mut state = self.state.borrow_mut();
            state.files.retain(|p, _| !p.starts_with(path));
            state.dirs.retain(|p| !p.starts_with(path));
            Ok(())
        }
        .boxed_local()
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> LocalBoxFuture<'a, StorageResult<()>> {
        async move {
            // Like removals, a rename is durable at once in this model
            // (journalled metadata); the bytes it moves are as durable as
            // their last sync made them.
            let mut state = self.state.borrow_mut();
            let Some(file) = state.files.remove(from) else {
                return Err(StorageError::new(
                    "rename",
                    from,
                    io::Error::from(io::ErrorKind::NotFound),
                ));
            };
            state.files.insert(to.to_path_buf(), file);
            Ok(())
        }
        .boxed_local()
    }

    fn list_files(&self, path: &Path) -> StorageResult<Vec<String>> {
        let state = self.state.borrow();
        Ok(state
            .files
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }
}
