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
    /// A broker did not answer a request within the request timeout.
    pub const TIMEOUT: u16 = 1002;
    /// Reading or writing a local file or stream failed.
    pub const IO: u16 = 1003;
    /// An input record cannot be used (a JSON line that does not parse,
    /// text that does not follow the template).
    pub const INPUT: u16 = 1004;
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

    pub fn input(message: impl Into<String>) -> CliError {
        CliError { code: local_code::INPUT, name: "bad input", message: message.into() }
    }

    pub fn failed(message: impl Into<String>) -> CliError {
        CliError { code: local_code::FAILED, name: "failed", message: message.into() }
    }

    /// The same error with what to do about it.
    pub fn hint(self, what_to_do: impl std::fmt::Display) -> CliError {
        CliError { message: format!("{} ({what_to_do})", self.message), ..self }
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
                let message = format!("{message} (`mamba topic list` shows the topics)");
                CliError { code: code.as_u16(), name: code.name(), message }
            }
            ClientError::OffsetOutOfRange { .. } => {
                let code = ErrorCode::OffsetOutOfRange;
                CliError { code: code.as_u16(), name: code.name(), message }
            }
            ClientError::Timeout { .. } => {
                CliError { code: local_code::TIMEOUT, name: "timeout", message }
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
    written(writeln!(out, "{line}").and_then(|()| out.flush()))
}

/// Writes `bytes` to a buffered standard output without flushing (a
/// caller that prints many records flushes once per batch with `flush`).
pub fn put(out: &mut impl Write, bytes: &[u8]) -> Result<(), CliError> {
    written(out.write_all(bytes))
}

pub fn flush(out: &mut impl Write) -> Result<(), CliError> {
    written(out.flush())
}

/// A closed pipe ends the process quietly with status 0; other write
/// failures are errors.
fn written(result: std::io::Result<()>) -> Result<(), CliError> {
    match result {
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

/// The forms a point in time takes after `@`, for error messages.
pub const TIME_FORMS: &str =
    "@2026-11-30T12:00:00Z (UTC), @-10m (that long ago: s, m, h, d), or @MS (ms since the epoch)";

/// A point in time as ms since the epoch, from the text after `@`:
/// RFC 3339 (`2026-11-30T12:00:00Z`), a duration ago (`-10m`, `-1h30m`),
/// or ms since the epoch. `now_ms` anchors the relative form.
pub fn parse_time_ms(text: &str, now_ms: i64) -> Result<i64, String> {
    let bad = |why: String| format!("bad time {text:?}: {why}; use {TIME_FORMS}");
    if let Some(ago) = text.strip_prefix('-') {
        let ago = humantime::parse_duration(ago).map_err(|e| bad(e.to_string()))?;
        let ago_ms = i64::try_from(ago.as_millis()).map_err(|_| bad("too long ago".into()))?;
        return Ok(now_ms.saturating_sub(ago_ms).max(0));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad("out of range".into()));
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|e| bad(e.to_string()))?;
    let since_epoch =
        at.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("before 1970".into()))?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| bad("out of range".into()))
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_rfc3339_a_duration_ago_or_epoch_ms() {
        let now = 1_764_504_000_000; // 2025-11-30T12:00:00Z
        assert_eq!(parse_time_ms("2025-11-30T12:00:00Z", now), Ok(now));
        assert_eq!(parse_time_ms("2025-11-30T11:50:00Z", now), Ok(now - 600_000));
        assert_eq!(parse_time_ms("-10m", now), Ok(now - 600_000));
        assert_eq!(parse_time_ms("-1h30m", now), Ok(now - 5_400_000));
        assert_eq!(parse_time_ms("1764504000000", now), Ok(now));
        for bad in ["", "yesterday", "-10 parsecs", "2025-13-01T00:00:00Z"] {
            let err = parse_time_ms(bad, now).expect_err(bad);
            assert!(err.contains("@-10m") && err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn json_errors_have_code_name_and_message() {
        let e = CliError::usage("--from wants …");
        assert_eq!((e.code, e.name), (local_code::USAGE, "usage"));
        let broker = CliError::from(ClientError::Broker {
            code: ErrorCode::InvalidConfig,
            message: "retention.ms must be a duration".into(),
        });
        assert_eq!((broker.code, broker.name), (10, "invalid config"));
    }

    #[test]
    fn timeouts_and_offsets_out_of_range_keep_their_codes_and_name_the_values() {
        let timeout = CliError::from(ClientError::Timeout {
            request: "fetch",
            addr: "127.0.0.1:9400".into(),
            waited_ms: 30_000,
        });
        assert_eq!((timeout.code, timeout.name), (local_code::TIMEOUT, "timeout"));
        assert!(timeout.message.contains("fetch") && timeout.message.contains("30000 ms"));
        let range = CliError::from(ClientError::OffsetOutOfRange {
            topic: "t".into(),
            partition: 2,
            offset: 9000,
            log_start_offset: 0,
            log_end_offset: 1500,
        });
        assert_eq!((range.code, range.name), (4, "offset out of range"));
        assert_eq!(
            range.message,
            "partition 2 of topic t has offsets 0..1500; 9000 is beyond the end"
        );
    }
}
