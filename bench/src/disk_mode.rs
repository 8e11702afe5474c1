//! `mamba-bench disk`: the raw limit of the data disk, measured through the
//! same io_uring O_DIRECT path the engine uses but with no engine logic:
//! sequential writes with a fixed queue depth, sequential reads of what was
//! written, and the latency of a 4 KiB write followed by fdatasync (the floor
//! of an fsync append).

use crate::stats::{latency_histogram, record_us, LatencyUs};
use futures::stream::{FuturesUnordered, StreamExt};
use mamba_engine::disk::{prime_io_poll_probe, DiskStorage};
use mamba_engine::runtime::{spawn_executor, ExecutorOptions};
use mamba_engine::storage::Storage;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub dir: PathBuf,
    pub write_bytes: usize,
    pub queue_depth: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    pub write_bytes_per_s: f64,
    pub read_bytes_per_s: f64,
    pub written_bytes: u64,
    pub fdatasync_latency_us: LatencyUs,
}

const FILE_NAME: &str = "mamba-bench-disk.tmp";

pub fn run(options: DiskOptions) -> Result<DiskReport, String> {
    let executor =
        ExecutorOptions { name: "mamba-bench-disk".into(), core: None, io_memory_bytes: 1 << 20 };
    let thread = spawn_executor(executor, move || measure(options)).map_err(|e| e.to_string())?;
    thread.join().map_err(|_| "disk benchmark thread panicked".to_string())??
}

async fn measure(options: DiskOptions) -> Result<DiskReport, String> {
    let err = |e: mamba_engine::storage::StorageError| e.to_string();
    if options.write_bytes == 0 || !options.write_bytes.is_multiple_of(4096) {
        return Err(format!(
            "--write-bytes must be a positive multiple of 4096, got {}",
            options.write_bytes
        ));
    }
    prime_io_poll_probe(&options.dir).await.map_err(err)?;
    let path = options.dir.join(FILE_NAME);
    let file = DiskStorage.open(&path, true).await.map_err(err)?;
    file.truncate(0).await.map_err(err)?;
    let result = async {
        // Sequential writes, `queue_depth` in flight.
        // Data to write, prepared once: the loop measures the disk, not a fill.
        let mut rng = fastrand::Rng::with_seed(7);
        let pattern: Vec<u8> = (0..options.write_bytes).map(|_| rng.u8(..)).collect();
        let start = Instant::now();
        let mut position = 0u64;
        let mut in_flight = FuturesUnordered::new();
        while start.elapsed() < options.duration || !in_flight.is_empty() {
            while in_flight.len() < options.queue_depth && start.elapsed() < options.duration {
                let mut buf = file.alloc_buffer(options.write_bytes);
                buf.copy_from_slice(&pattern);
                in_flight.push(file.write_at(buf, position));
                position += options.write_bytes as u64;
            }
            if let Some(result) = in_flight.next().await {
                result.map_err(err)?;
            }
        }
        let write_s = start.elapsed().as_secs_f64();
        file.sync().await.map_err(err)?;
        let written = position;

        // Sequential reads of the same bytes.
        let start = Instant::now();
        let mut read_position = 0u64;
        let mut read_bytes = 0u64;
        let mut reads = FuturesUnordered::new();
        while read_position < written || !reads.is_empty() {
            while reads.len() < options.queue_depth
                && read_position < written
                && start.elapsed() < options.duration
            {
                reads.push(file.read_at(read_position, options.write_bytes));
                read_position += options.write_bytes as u64;
            }
            match reads.next().await {
                Some(result) => read_bytes += result.map_err(err)?.len() as u64,
                None => break,
            }
        }
        let read_s = start.elapsed().as_secs_f64();

        // 4 KiB write + fdatasync, one at a time.
        let mut histogram = latency_histogram();
        let start = Instant::now();
        let mut position = 0u64;
        while start.elapsed() < options.duration.min(Duration::from_secs(3)) {
            let t = Instant::now();
            let buf = file.alloc_buffer(4096);
            file.write_at(buf, position).await.map_err(err)?;
            file.sync().await.map_err(err)?;
            record_us(&mut histogram, t.elapsed().as_micros() as u64);
            position += 4096;
        }
        Ok(DiskReport {
            write_bytes_per_s: written as f64 / write_s,
            read_bytes_per_s: read_bytes as f64 / read_s.max(1e-9),
            written_bytes: written,
            fdatasync_latency_us: LatencyUs::of(&histogram),
        })
    }
    .await;
    drop(file);
    DiskStorage.remove_file(&path).await.map_err(err)?;
    result
}
