//! `mamba`: the one binary operators run.

mod client_cmd;
mod log_cmd;
mod serve;

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
    /// Brokers to talk to, comma-separated HOST[:PORT] (port 9400 when
    /// left out).
    #[arg(short, long, global = true, env = "MAMBA_BROKERS", default_value = serve::DEFAULT_LISTEN)]
    brokers: String,
    #[arg(short, long, global = true, value_enum, default_value = "text")]
    output: Output,
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
    /// Run a broker (single node for now).
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(client_cmd::TopicCommand),
    /// Send one record per line of standard input.
    Produce(client_cmd::ProduceArgs),
    /// Print records of a topic.
    Consume(client_cmd::ConsumeArgs),
    /// Look at and repair a data directory offline (no broker running).
    ///
    /// PATH may be a data directory, a topic directory
    /// (<data-dir>/topics/<topic>) or a partition directory
    /// (<data-dir>/topics/<topic>/<partition>).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Print a shell completion script: `mamba completions bash >
    /// /etc/bash_completion.d/mamba` (also zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `mamba man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    // Before any thread starts; see the function.
    mamba_engine::runtime::keep_freed_memory();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = mamba_engine::runtime::disable_transparent_huge_pages() {
        tracing::warn!(error = %e, "transparent huge pages stay on; expect latency spikes");
    }
    let result = match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "mamba", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout()).map_err(|e| format!("writing the man page: {e}"))
        }
        Command::Log(command) => return log_cmd::run(command, cli.output),
        Command::Serve(args) => serve::run(args),
        Command::Topic(command) => client_cmd::topic(&cli.brokers, cli.output, command),
        Command::Produce(args) => client_cmd::produce(&cli.brokers, cli.output, args),
        Command::Consume(args) => client_cmd::consume(&cli.brokers, cli.output, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mamba: {e}");
            ExitCode::FAILURE
        }
    }
}
