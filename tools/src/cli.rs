//! What every client command shares: the `--brokers`/`--output` flags, the
//! one error type (printed as text, or as JSON on standard error), and
//! writing to standard output that ends quietly on a closed pipe.

use clap::{Args, ValueEnum};
use mamba_net::client::{Admin, ClientError};
use mamba_net::protocol::ErrorCode;
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

/// `println!` that ends quietly on a closed pipe (see `emit`).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::emit(&mut std::io::stdout().lock(), &format!($($arg)*))
    };
}
pub(crate) use say;

pub const DEFAULT_BROKERS: &str = "127.0.0.1:9400";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// `--output`, for commands that talk to no broker.
#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// text for people, json (one object per line) for programs; errors
    /// then go to standard error as {"error": {...}}.
    #[arg(short, long, global = true, value_enum, default_value = "text")]
    pub output: Output,
}

/// The flags of every command that talks to a broker.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Brokers to talk to, comma-separated HOST[:PORT] (port 9400 when
    /// left out).
    #[arg(short, long, global = true, env = "MAMBA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl ClientArgs {
    pub fn output(&self) -> Output {
        self.output.output
    }

    pub fn admin(&self) -> Result<Admin, CliError> {
        Admin::connect(&self.brokers).map_err(CliError::from)
    }
}

/// Codes of errors the CLI raises itself; the broker's own codes
/// (`ErrorCode`, 1–999) pass through unchanged.
pub mod local_code {
    /// A flag, argument or setting has a value the command cannot use.
    pub const USAGE: u16 = 1000;
    /// No broker could be reached, or the connection was lost.
    pub const CONNECTION: u16 = 1001;
    /// Reading or writing a local file or stream failed.
    pub const IO: u16 = 1003;
    /// The command failed in a way no other code describes.
    pub const FAILED: u16 = 1005;
}

/// A failed command: what happened (`message`, naming the value involved
/// and what to do), and a stable `code`/`name` for scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u16,
    pub name: &'static str,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError { code: local_code::USAGE, name: "usage", message: message.into() }
    }

    pub fn io(message: impl Into<String>) -> CliError {
        CliError { code: local_code::IO, name: "io", message: message.into() }
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError { code: local_code::FAILED, name: "failed", message: message.into() }
    }

    /// The same error, its message prefixed with where it happened.
    pub fn context(self, what: impl std::fmt::Display) -> CliError {
        CliError { message: format!("{what}: {}", self.message), ..self }
    }

    /// Whether the broker answered with `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_u16()
    }

    /// Prints the error on standard error, as `output` asks, and gives the
    /// exit status: 2 for usage errors (as for flags clap rejects), else 1.
    pub fn report(&self, output: Output) -> ExitCode {
        match output {
            Output::Json => {
                let error = json!({"error": {"code": self.code, "name": self.name, "message": self.message}});
                eprintln!("{error}");
            }
            Output::Text => eprintln!("mamba: {}", self.message),
        }
        ExitCode::from(if self.code == local_code::USAGE { 2 } else { 1 })
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        let message = e.to_string();
        match e {
            ClientError::Broker { code, .. } => {
                CliError { code: code.as_u16(), name: code.name(), message }
            }
            ClientError::UnknownTopic(_) => {
                let code = ErrorCode::UnknownTopicOrPartition;
                CliError { code: code.as_u16(), name: code.name(), message }
            }
            // A refused or timed out connection may mean no broker runs
            // there; a bad address does not.
            ClientError::Connect { .. } => CliError {
                code: local_code::CONNECTION,
                name: "connection",
                message: format!(
                    "{message} (is `mamba serve` running there? set --brokers or MAMBA_BROKERS)"
                ),
            },
            ClientError::Address { .. } | ClientError::InvalidArgument(_) => {
                CliError::usage(message)
            }
            ClientError::Io { .. } | ClientError::Disconnected { .. } => {
                CliError { code: local_code::CONNECTION, name: "connection", message }
            }
            _ => CliError::failed(message),
        }
    }
}

/// Most errors built from text are about a value the user gave.
impl From<String> for CliError {
    fn from(message: String) -> CliError {
        CliError::usage(message)
    }
}

/// Writes `line` to standard output; a closed pipe (`| head`) ends the
/// process quietly with status 0, as a reader that stopped reading wants.
pub fn emit(out: &mut impl Write, line: &str) -> Result<(), CliError> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::io(format!("writing to standard output: {e}"))),
    }
}

/// "1 partition", "4 partitions".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
