//! `mamba consume`: print a topic's records, following it across broker
//! restarts.
//!
//! A broker must answer at the start. Once reading, a lost broker (a
//! restart, a dropped connection, a request timeout, a busy or
//! shutting-down answer) is retried with a backoff of 100 ms doubling to
//! 2 s, from the positions after the last record printed, so every record
//! is printed exactly once. One line on standard error says the broker was
//! lost and one that it is back; after `--reconnect-timeout` (60 s) with no
//! answer the command fails with the last error.
//!
//! SIGINT (Ctrl-C) and SIGTERM end it cleanly: the poll under way finishes
//! printing, under a group exactly the records printed are committed and
//! the consumer leaves the group (its partitions move to the other members
//! at once, nothing is printed twice), and it exits 0. A second signal
//! while it is stopping (say, the broker is away) ends it at once.

use crate::cli::{flush, now_ms, parse_time_ms, put, CliError, ClientArgs, Output};
use crate::template::{RecordFields, Template};
use clap::Args;
use mamba_net::client::{
    Backoff, ClientError, Consumer, ConsumerConfig, GroupOptions, OffsetReset, SeekTo,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read only this partition (default: all).
    #[arg(short, long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Read as a member of this consumer group: the group's members share
    /// the topic's partitions, reading starts at the group's committed
    /// offsets (else at --from, earliest or latest), and every record
    /// printed is committed (with --count, exactly the records printed).
    #[arg(short, long, value_name = "GROUP")]
    group: Option<String>,
    /// Where to start in each partition: earliest, latest, OFFSET, -N (N
    /// records before the end), +N (N after the log start), or a time:
    /// @2026-11-30T12:00:00Z, @-10m (that long ago), @MS (ms since the
    /// epoch).
    #[arg(long, default_value = "earliest", allow_hyphen_values = true)]
    from: String,
    /// Stop after this many records (default: follow until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Text output prints key<TAB>value.
    #[arg(long, conflicts_with = "format")]
    print_key: bool,
    /// Print each record by a template, as kcat's -f: %t topic, %p
    /// partition, %o offset, %k key, %v value, %h headers (k=v,k2=v2), %T
    /// timestamp ms; escapes \n \t \r \0 \\ and %%. Keys and values are
    /// written as raw bytes. Example: '%p %o %k=%v\n'. `json` is the same
    /// as --output json.
    #[arg(short, long, value_name = "FORMAT")]
    format: Option<String>,
    /// Give up when no broker answers for this long after the connection
    /// was lost (a duration: 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    reconnect_timeout: Duration,
    /// With --group: how long the group waits for this consumer when it
    /// goes silent (killed, hung) before its partitions move to the other
    /// members (a duration: 3s; default: the broker's, 10 s).
    #[arg(long, value_name = "DURATION", requires = "group", value_parser = humantime::parse_duration)]
    session_timeout: Option<Duration>,
}

/// The forms `--from` takes, for messages.
pub const FROM_FORMS: &str = "earliest, latest, OFFSET, -N (N before the end), +N (N after the \
     start), or a time: @2026-11-30T12:00:00Z, @-10m (that long ago) or @MS";

/// `--from`, with `now_ms` anchoring `@-10m`.
fn parse_from(text: &str, now_ms: i64) -> Result<SeekTo, String> {
    let count = |digits: &str| {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
    };
    match text {
        "earliest" => return Ok(SeekTo::Earliest),
        "latest" => return Ok(SeekTo::Latest),
        _ => {}
    }
    if let Some(time) = text.strip_prefix('@') {
        return parse_time_ms(time, now_ms)
            .map(SeekTo::Timestamp)
            .map_err(|e| format!("--from {text:?}: {e}"));
    }
    let parsed = match text.as_bytes().first() {
        Some(b'-') => count(&text[1..]).map(SeekTo::BeforeEnd),
        Some(b'+') => count(&text[1..]).map(SeekTo::AfterStart),
        _ => count(text).map(SeekTo::Offset),
    };
    parsed.ok_or_else(|| format!("--from wants {FROM_FORMS}, not {text:?}"))
}

fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// How records are printed.
enum Printer {
    Json,
    Text { print_key: bool },
    Template(Template),
}

impl Printer {
    /// Appends `r` as printed to `line` (cleared first).
    fn render(&self, r: &impl RecordFields, line: &mut Vec<u8>) {
        line.clear();
        match self {
            Printer::Json => {
                let mut headers = serde_json::Map::new();
                r.for_each_header(&mut |k, v| {
                    headers.insert(k.to_string(), json!(printable(v)));
                });
                let object = json!({
                    "partition": r.partition(),
                    "offset": r.offset(),
                    "timestamp_ms": r.timestamp_ms(),
                    "key": r.key().map(printable),
                    "value": printable(r.value()),
                    "headers": headers,
                });
                line.extend_from_slice(object.to_string().as_bytes());
                line.push(b'\n');
            }
            Printer::Text { print_key } => {
                if *print_key {
                    line.extend_from_slice(printable(r.key().unwrap_or(b"")).as_bytes());
                    line.push(b'\t');
                }
                line.extend_from_slice(printable(r.value()).as_bytes());
                line.push(b'\n');
            }
            Printer::Template(template) => template.render(r, line),
        }
    }
}

/// Standard output is written in pieces of this size.
const STDOUT_BUFFER_BYTES: usize = 64 << 10;

/// Waits between attempts while the broker is away.
const RECONNECT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Since when the broker has been away, and what the last attempt said.
struct Outage {
    since: Instant,
    backoff: Backoff,
    last_error: ClientError,
}

impl Outage {
    /// The command's error when it gives up while the broker is away.
    fn give_up(&self, why: impl std::fmt::Display) -> CliError {
        CliError::from(self.last_error.clone()).context(why)
    }
}

/// Set by SIGINT or SIGTERM: stop after the current poll.
fn stop_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The second signal exits at once (status 1), for a stop that
        // hangs; the first asks the loop to stop.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| {
                CliError::from(format!("installing the handler of signal {signal}: {e}"))
            })?;
    }
    Ok(stop)
}

pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let printer = match (args.format.as_deref(), args.client.output()) {
        (Some("json"), _) | (None, Output::Json) => Printer::Json,
        (None, Output::Text) => Printer::Text { print_key: args.print_key },
        (Some(text), Output::Text) => Printer::Template(Template::parse(text)?),
        (Some(text), Output::Json) => {
            return Err(CliError::usage(format!(
                "--format {text:?} and --output json both say how to print records: use one"
            )))
        }
    };
    let from = parse_from(&args.from, now_ms())?;
    let session_timeout_ms = match args.session_timeout {
        None => 0,
        Some(t) => u32::try_from(t.as_millis()).ok().filter(|ms| *ms > 0).ok_or_else(|| {
            CliError::usage(format!(
                "--session-timeout {}: give at least 1ms (the broker enforces its own bounds)",
                humantime::format_duration(t)
            ))
        })?,
    };
    let stop = stop_on_signals()?;
    let mut consumer = match &args.group {
        None => {
            let mut consumer = Consumer::connect(&args.client.brokers, ConsumerConfig::default())?;
            let partitions: Vec<u32> = args.partition.into_iter().collect();
            consumer.assign(&args.topic, &partitions, from)?;
            consumer
        }
        Some(group) => {
            let auto_offset_reset = match from {
                SeekTo::Earliest => OffsetReset::Earliest,
                SeekTo::Latest => OffsetReset::Latest,
                _ => {
                    return Err(CliError::usage(format!(
                        "with --group, --from says where a partition without a committed \
                         offset starts: earliest or latest, not {:?}; to move a group's \
                         offsets use `mamba group reset-offsets`",
                        args.from
                    )))
                }
            };
            // Commits are explicit: what was printed, no more.
            let config = ConsumerConfig {
                enable_auto_commit: false,
                auto_offset_reset,
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::connect(&args.client.brokers, config)?;
            consumer.subscribe(GroupOptions {
                group_id: group.clone(),
                topics: vec![args.topic.clone()],
                instance_id: None,
                assignor: None,
                session_timeout_ms,
                client_id: "mamba-cli".into(),
            })?;
            consumer
        }
    };
    let result = print_records(&mut consumer, &args, &printer, &stop);
    if args.group.is_some() {
        // Leave at once: the group's other members take the partitions.
        if let Err(e) = consumer.close() {
            tracing::debug!(error = %e, "leaving the group");
        }
    }
    result
}

/// Prints records until `--count`, `--timeout-ms`, a signal (`stop`) or an
/// error; under a group, commits what each poll printed.
fn print_records(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    printer: &Printer,
    stop: &AtomicBool,
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let poll = Duration::from_millis(args.timeout_ms.unwrap_or(500).min(500));
    let mut outage: Option<Outage> = None;
    loop {
        // Checked between polls: what a poll printed is committed before.
        if args.count.is_some_and(|n| seen >= n) || stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if args.timeout_ms.is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t)) {
            // Quiet because the broker is away is a failure, not the end.
            return match &outage {
                None => Ok(()),
                Some(outage) => {
                    Err(outage.give_up("no record within --timeout-ms, the broker away"))
                }
            };
        }
        // Records are printed borrowed from the fetch answer (no copy),
        // into a buffer flushed once per answer.
        let mut out = std::io::BufWriter::with_capacity(STDOUT_BUFFER_BYTES, stdout.lock());
        let mut line = Vec::new();
        let mut failed = None;
        // Under a group: the next offset of each partition printed from.
        let mut printed: BTreeMap<u32, u64> = BTreeMap::new();
        let under_group = args.group.is_some();
        let polled = consumer.poll_each(poll, |d| {
            if failed.is_some() || args.count.is_some_and(|n| seen >= n) {
                return;
            }
            seen += 1;
            last_record = Instant::now();
            printer.render(&d, &mut line);
            if let Err(e) = put(&mut out, &line) {
                failed = Some(e);
            }
            if under_group {
                printed.insert(d.partition, d.record.offset.0 + 1);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        flush(&mut out)?;
        if !printed.is_empty() {
            let printed: Vec<((String, u32), u64)> =
                printed.into_iter().map(|(p, next)| ((args.topic.clone(), p), next)).collect();
            consumer.commit_offsets(&printed)?;
        }
        match polled {
            Ok(_) => {
                if outage.take().is_some() {
                    eprintln!("mamba: the broker answers again; reading on from where it stopped");
                }
            }
            Err(e) if e.is_retriable() => wait_for_broker(&mut outage, &e, args)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// After a retriable failure: says the broker is lost (once per outage),
/// gives up after `--reconnect-timeout`, else waits a backoff step.
fn wait_for_broker(
    outage: &mut Option<Outage>,
    error: &ClientError,
    args: &ConsumeArgs,
) -> Result<(), CliError> {
    let outage = outage.get_or_insert_with(|| {
        eprintln!(
            "mamba: lost the broker ({error}); reconnecting to {} for up to {}",
            args.client.brokers,
            humantime::format_duration(args.reconnect_timeout)
        );
        Outage {
            since: Instant::now(),
            backoff: Backoff::new(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_MAX),
            last_error: error.clone(),
        }
    });
    outage.last_error = error.clone();
    let away = outage.since.elapsed();
    if away >= args.reconnect_timeout {
        return Err(outage.give_up(format_args!(
            "no broker answered for {} (--reconnect-timeout)",
            humantime::format_duration(args.reconnect_timeout)
        )));
    }
    std::thread::sleep(outage.backoff.next_wait().min(args.reconnect_timeout - away));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_every_documented_form() {
        let now = 1_764_504_000_000;
        assert_eq!(parse_from("earliest", now), Ok(SeekTo::Earliest));
        assert_eq!(parse_from("latest", now), Ok(SeekTo::Latest));
        assert_eq!(parse_from("42", now), Ok(SeekTo::Offset(42)));
        assert_eq!(parse_from("-5", now), Ok(SeekTo::BeforeEnd(5)));
        assert_eq!(parse_from("+7", now), Ok(SeekTo::AfterStart(7)));
        assert_eq!(parse_from("@-10m", now), Ok(SeekTo::Timestamp(now - 600_000)));
        assert_eq!(parse_from("@2025-11-30T12:00:00Z", now), Ok(SeekTo::Timestamp(now)));
        for bad in ["", "-", "+x", "soon", "-1.5", "@yesterday"] {
            let e = parse_from(bad, now).expect_err(bad);
            assert!(e.contains("@-10m"), "{e}");
        }
        assert!(parse_from("soon", now).expect_err("soon").contains("-N (N before the end)"));
    }
}
