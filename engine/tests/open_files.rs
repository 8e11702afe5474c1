//! A shard keeps a bounded number of file descriptors open, however many
//! segment files its partitions have: idle ones are closed and reopened on
//! use, and nothing written is lost or unsynced across that.

use mamba_engine::disk::{open_files, prime_io_poll_probe, set_open_files_max, DiskStorage};
use mamba_engine::runtime::{spawn_executor, ExecutorOptions};
use mamba_engine::storage::{FileRef, Storage};
use std::path::PathBuf;

const FILES: usize = 200;
const OPEN_MAX: usize = 32;

/// Descriptors of this process open on files under `dir`.
fn descriptors_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("fd dir")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

async fn write_many_files(dir: PathBuf) -> Result<(usize, usize), String> {
    prime_io_poll_probe(&dir).await.map_err(|e| e.to_string())?;
    set_open_files_max(OPEN_MAX);
    let storage = DiskStorage;
    let mut files: Vec<FileRef> = Vec::new();
    for i in 0..FILES {
        let file =
            storage.open(&dir.join(format!("f{i}")), true).await.map_err(|e| e.to_string())?;
        let mut buf = file.alloc_buffer(4096);
        buf.fill(i as u8);
        file.write_at(buf, 0).await.map_err(|e| e.to_string())?;
        files.push(file);
    }
    let open_after_writes = open_files();
    // Every handle still works: its descriptor reopens on use.
    for (i, file) in files.iter().enumerate() {
        file.sync().await.map_err(|e| e.to_string())?;
        let read = file.read_at(0, 4096).await.map_err(|e| e.to_string())?;
        if read.iter().any(|&b| b != i as u8) {
            return Err(format!("file {i} reads back other bytes"));
        }
        if file.size_bytes().await.map_err(|e| e.to_string())? != 4096 {
            return Err(format!("file {i} has the wrong size"));
        }
    }
    // Let glommio's asynchronous closes reach the kernel.
    mamba_engine::runtime::sleep(std::time::Duration::from_millis(20)).await;
    Ok((open_after_writes, descriptors_under(&dir)))
}

#[test]
fn a_shard_keeps_a_bounded_number_of_descriptors_and_every_handle_still_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::fs::canonicalize(dir.path()).expect("canonical");
    let options =
        ExecutorOptions { name: "open-files-test".into(), core: None, io_memory_bytes: 1 << 20 };
    let thread = spawn_executor(options, move || write_many_files(path)).expect("spawn");
    let (open_after_writes, descriptors) =
        thread.join().expect("executor panicked").expect("executor").expect("run");
    assert!(open_after_writes <= OPEN_MAX, "{open_after_writes} descriptors kept open");
    assert!(descriptors <= OPEN_MAX + 1, "{descriptors} descriptors on the files");
}
