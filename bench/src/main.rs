//! `mamba-bench`: Mamba's load generator and benchmarks.

mod disk_mode;
mod engine_mode;
mod machine;
mod stats;

use clap::{Parser, Subcommand, ValueEnum};
use mamba_engine::Durability;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// glommio allocates DMA buffers beyond its registered memory with the
// global allocator; glibc's malloc would mmap and unmap every 1 MiB write
// buffer (page faults on each write). mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mamba-bench",
    version,
    about = "Measure what Mamba (and the disk under it) can do"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Fsync,
    None,
}

#[derive(Subcommand)]
enum Mode {
    /// Append through the embeddable engine API (no network), then read
    /// everything back and verify it.
    Engine {
        /// Data directory; left in place for inspection. Default: a
        /// temporary directory, removed afterwards.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Partitions of the benchmark topic; one writer thread each.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Size of each message value, in bytes.
        #[arg(long, default_value_t = 1024)]
        message_bytes: usize,
        /// Records per appended batch.
        #[arg(long, default_value_t = 64)]
        batch_records: usize,
        /// Durability policy of the benchmark topic.
        #[arg(long, value_enum, default_value = "fsync")]
        durability: DurabilityArg,
        /// How long to append, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Engine shards (executor threads). Default: one per core.
        #[arg(long)]
        shards: Option<u32>,
        /// Appends each writer keeps in flight.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The disk's own limit: sequential O_DIRECT writes and reads through
    /// io_uring with no engine logic, and 4 KiB write+fdatasync latency.
    Disk {
        /// Directory on the disk to measure (a temporary file is written there).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Size of each write, in bytes (a multiple of 4096).
        #[arg(long, default_value_t = 1 << 20)]
        write_bytes: usize,
        /// Writes (and reads) kept in flight.
        #[arg(long, default_value_t = 4)]
        queue_depth: usize,
        /// How long each phase runs, in seconds.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mamba-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The given directory, or a temporary one removed when the guard drops.
fn data_dir(given: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), String> {
    match given {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("mamba-bench-")
                .tempdir_in(std::env::current_dir().map_err(|e| e.to_string())?)
                .map_err(|e| format!("creating a temporary data directory: {e}"))?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let machine = machine::Machine::detect();
    match cli.mode {
        Mode::Engine {
            data_dir: dir,
            partitions,
            message_bytes,
            batch_records,
            durability,
            duration_s,
            shards,
            in_flight,
            output,
        } => {
            if partitions == 0 || batch_records == 0 || in_flight == 0 {
                return Err(
                    "--partitions, --batch-records and --in-flight must be at least 1".into()
                );
            }
            let (dir, _temp) = data_dir(dir)?;
            let durability = match durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::None => Durability::None,
            };
            let options = engine_mode::EngineOptions {
                data_dir: dir.clone(),
                partitions,
                message_bytes,
                batch_records,
                durability,
                duration: Duration::from_secs(duration_s),
                shards,
                in_flight,
            };
            let report = engine_mode::run(options)?;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({
                        "mode": "engine",
                        "params": {
                            "data_dir": dir, "partitions": partitions, "message_bytes": message_bytes,
                            "batch_records": batch_records, "durability": durability.to_string(),
                            "duration_s": duration_s, "shards": shards, "in_flight": in_flight,
                        },
                        "machine": machine,
                        "result": report,
                    })
                ),
                Output::Text => {
                    println!("engine: {partitions} partitions, {message_bytes} B messages, {batch_records} per batch, durability {durability}");
                    println!(
                        "  append  {:.0} records/s, {} payload ({} stored)",
                        report.records_per_s,
                        stats::rate(report.bytes_per_s),
                        stats::rate(report.stored_bytes_per_s)
                    );
                    println!("  latency {}", report.append_latency_us);
                    println!(
                        "  read    {} ({} records verified)",
                        stats::rate(report.read_bytes_per_s),
                        report.verified_records
                    );
                }
            }
        }
        Mode::Disk { data_dir: dir, write_bytes, queue_depth, duration_s, output } => {
            let (dir, _temp) = data_dir(dir)?;
            let report = disk_mode::run(disk_mode::DiskOptions {
                dir: dir.clone(),
                write_bytes,
                queue_depth: queue_depth.max(1),
                duration: Duration::from_secs(duration_s.max(1)),
            })?;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({
                        "mode": "disk",
                        "params": { "data_dir": dir, "write_bytes": write_bytes, "queue_depth": queue_depth, "duration_s": duration_s },
                        "machine": machine,
                        "result": report,
                    })
                ),
                Output::Text => {
                    println!(
                        "disk: {} writes, queue depth {queue_depth}, in {}",
                        write_bytes,
                        dir.display()
                    );
                    println!("  write     {}", stats::rate(report.write_bytes_per_s));
                    println!("  read      {}", stats::rate(report.read_bytes_per_s));
                    println!("  4 KiB write+fdatasync {}", report.fdatasync_latency_us);
                }
            }
        }
    }
    Ok(())
}
