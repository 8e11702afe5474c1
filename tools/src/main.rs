//! `mamba`: the one binary operators run.

mod broker_cmd;
mod cli;
mod cluster_actions;
mod cluster_cmd;
mod consume_cmd;
mod group_cmd;
mod human;
mod log_cmd;
mod produce_cmd;
mod record_input;
mod serve;
mod serve_config;
mod template;
mod topic_cmd;

use clap::{Parser, Subcommand};
use cli::{CliError, Output};
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

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
enum Command {
    /// Run a broker: a one-node cluster, or a member of a bigger one.
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter (or grow) and delete topics; their offsets.
    Topic(topic_cmd::TopicArgs),
    /// What a broker is: version, node id, data directory, shards,
    /// listeners, uptime, partitions, free disk.
    Broker(broker_cmd::BrokerArgs),
    /// Check that a broker serves: exit 0 and print "ok", else exit 1.
    Health(broker_cmd::HealthArgs),
    /// Send records: one per line of standard input, JSON lines, a
    /// template's fields, or whole files.
    Produce(produce_cmd::ProduceArgs),
    /// Print records of a topic, following it across broker restarts.
    Consume(consume_cmd::ConsumeArgs),
    /// List, describe (members, committed offsets, lag), reset the offsets
    /// of, and delete consumer groups.
    Group(group_cmd::GroupArgs),
    /// The cluster: its controller, voters and brokers (status, brokers);
    /// add or remove a voter of the metadata quorum (voters).
    Cluster(cluster_cmd::ClusterArgs),
    /// Look at and repair a data directory offline (no broker running).
    ///
    /// PATH may be a data directory, a topic directory
    /// (<data-dir>/topics/<topic>) or a partition directory
    /// (<data-dir>/topics/<topic>/<partition>).
    Log(log_cmd::LogArgs),
    /// Print a shell completion script: `mamba completions bash >
    /// /etc/bash_completion.d/mamba` (also zsh, fish, elvish, powershell).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
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
    let output = match &cli.command {
        Command::Topic(args) => args.client.output(),
        Command::Broker(args) => args.client.output(),
        Command::Health(args) => args.client.output(),
        Command::Produce(args) => args.client.output(),
        Command::Consume(args) => args.client.output(),
        Command::Group(args) => args.client.output(),
        Command::Cluster(args) => args.client.output(),
        Command::Log(args) => args.output.output,
        Command::Serve(_) | Command::Completions { .. } | Command::Man => Output::Text,
    };
    let result: Result<(), CliError> = match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "mamba", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout())
                .map_err(|e| CliError::io(format!("writing the man page: {e}")))
        }
        Command::Log(args) => return log_cmd::run(args),
        Command::Serve(args) => serve::run(args).map_err(CliError::failed),
        Command::Topic(args) => topic_cmd::run(args),
        Command::Broker(args) => broker_cmd::info(args),
        Command::Health(args) => broker_cmd::health(args),
        Command::Produce(args) => produce_cmd::run(args),
        Command::Consume(args) => consume_cmd::run(args),
        Command::Group(args) => group_cmd::run(args),
        Command::Cluster(args) => cluster_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(output),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every command, argument and flag says what it is for in `--help`
    /// (and so in the man page and completions).
    #[test]
    fn every_command_and_argument_is_documented() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "mamba", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }
}
