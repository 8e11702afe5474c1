//! `mamba`: the one binary operators run.

mod log_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

// DMA buffers beyond glommio's registered memory come from the global
// allocator; mimalloc reuses large buffers where glibc would mmap/munmap
// each one (a page fault per 4 KiB on every write).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "mamba", version, about = "Mamba, a thread-per-core message queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Look at and repair a data directory offline (no broker running).
    ///
    /// PATH may be a data directory, a topic directory
    /// (<data-dir>/topics/<topic>) or a partition directory
    /// (<data-dir>/topics/<topic>/<partition>).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Log(command) => log_cmd::run(command),
    }
}
