//! `mamba consume`: print a topic's records.

use crate::cli::{emit, CliError, ClientArgs, Output};
use clap::Args;
use mamba_net::client::{Consumer, ConsumerConfig, SeekTo};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<u32>,
    /// earliest, latest, an offset, or @TIMESTAMP_MS.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Stop after this many records (default: follow until interrupted).
    #[arg(long)]
    count: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Text output prints key<TAB>value.
    #[arg(long)]
    print_key: bool,
}

fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let output = args.client.output();
    let from = match args.from.as_str() {
        "earliest" => SeekTo::Earliest,
        "latest" => SeekTo::Latest,
        s if s.starts_with('@') => {
            SeekTo::Timestamp(crate::cli::parse_time_ms(&s[1..], crate::cli::now_ms())?)
        }
        s => SeekTo::Offset(s.parse().map_err(|_| {
            format!("--from wants earliest, latest, an offset or @TIMESTAMP_MS, not {s:?}")
        })?),
    };
    let mut consumer = Consumer::connect(&args.client.brokers, ConsumerConfig::default())?;
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    consumer.assign(&args.topic, &partitions, from)?;
    let stdout = std::io::stdout();
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let poll = Duration::from_millis(args.timeout_ms.unwrap_or(500).min(500));
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        if args.timeout_ms.is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t)) {
            return Ok(());
        }
        let records = consumer.poll(poll)?;
        let mut out = stdout.lock();
        for r in records {
            if args.count.is_some_and(|n| seen >= n) {
                break;
            }
            seen += 1;
            last_record = Instant::now();
            let line = match output {
                Output::Json => json!({
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp_ms": r.timestamp_ms,
                    "key": r.key.as_deref().map(printable),
                    "value": printable(&r.value),
                    "headers": r.headers.iter().map(|(k, v)| (k.clone(), json!(printable(v)))).collect::<serde_json::Map<_, _>>(),
                })
                .to_string(),
                Output::Text if args.print_key => {
                    format!("{}\t{}", r.key.as_deref().map(printable).unwrap_or_default(), printable(&r.value))
                }
                Output::Text => printable(&r.value),
            };
            emit(&mut out, &line)?;
        }
    }
}
