//! `mamba produce`: records from standard input, streamed.

use crate::cli::{emit, CliError, ClientArgs, Output};
use clap::Args;
use mamba_net::client::{block_on, Acks, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;
use std::io::BufRead;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key of every record.
    #[arg(short, long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each record at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key, or sticky).
    #[arg(short, long)]
    partition: Option<u32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// A header on every record (repeatable).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
    /// The byte that ends each record on standard input: one character,
    /// or an escape (\n, \0, \t, \xHH). Records are raw bytes; they need
    /// not be UTF-8.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter)]
    delimiter: u8,
}

/// A record delimiter: one ASCII character or an escape.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    let byte = match s {
        "\\n" => Some(b'\n'),
        "\\0" => Some(0),
        "\\t" => Some(b'\t'),
        "\\r" => Some(b'\r'),
        _ if s.len() == 1 && s.is_ascii() => Some(s.as_bytes()[0]),
        _ => s.strip_prefix("\\x").and_then(|hex| u8::from_str_radix(hex, 16).ok()),
    };
    byte.ok_or_else(|| {
        format!("--delimiter wants one character or \\n, \\0, \\t, \\r, \\xHH, not {s:?}")
    })
}

/// Records sent but not yet acknowledged before reading standard input
/// waits: bounds the memory of `mamba produce` whatever the input length.
const PRODUCE_UNACKED_MAX: usize = 16 * 1024;

pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    let output = args.client.output();
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => return Err(CliError::usage(format!("--acks must be 0, 1 or all, not {other:?}"))),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--header wants K=V, got {h:?}")))?;
        headers.push((k.to_string(), v.as_bytes().to_vec()));
    }
    let producer = Producer::connect(
        &args.client.brokers,
        ProducerConfig { acks, ..ProducerConfig::default() },
    )?;
    // Acknowledgements are awaited, in send order, by a thread that prints
    // each as it arrives; the bounded queue between makes reading wait
    // when too many records are in flight.
    let (acks_tx, acks_rx) = std::sync::mpsc::sync_channel(PRODUCE_UNACKED_MAX);
    let printer = std::thread::spawn(move || -> Result<usize, CliError> {
        let mut failed = 0usize;
        let stdout = std::io::stdout();
        for (number, ack) in acks_rx {
            match block_on(ack) {
                Ok(meta) => {
                    let meta: mamba_net::client::RecordMetadata = meta;
                    if output == Output::Json {
                        let line = json!({"record": number, "partition": meta.partition, "offset": meta.offset});
                        emit(&mut stdout.lock(), &line.to_string())?;
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("record {number} failed: {e}");
                }
            }
        }
        Ok(failed)
    });
    let mut input = std::io::BufReader::new(std::io::stdin().lock());
    let mut record_bytes = Vec::new();
    let mut number = 0u64;
    let mut read_error = None;
    loop {
        record_bytes.clear();
        match input.read_until(args.delimiter, &mut record_bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(CliError::io(format!("reading standard input: {e}")));
                break;
            }
        }
        if record_bytes.last() == Some(&args.delimiter) {
            record_bytes.pop();
        }
        number += 1;
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(k), _) => (Some(k.as_bytes().to_vec()), record_bytes.clone()),
            (None, Some(sep)) => match find(&record_bytes, sep.as_bytes()) {
                Some(at) => {
                    (Some(record_bytes[..at].to_vec()), record_bytes[at + sep.len()..].to_vec())
                }
                None => (None, record_bytes.clone()),
            },
            (None, None) => (None, record_bytes.clone()),
        };
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value,
            headers: headers.clone(),
            timestamp_ms: None,
        };
        match producer.send(record) {
            Ok(ack) => {
                if acks_tx.send((number, ack)).is_err() {
                    break; // the printer stopped: its error is reported below
                }
            }
            Err(e) => {
                read_error = Some(CliError::from(e).context(format_args!("record {number}")));
                break;
            }
        }
    }
    producer.flush();
    drop(acks_tx);
    let failed =
        printer.join().map_err(|_| CliError::io("the acknowledgement printer panicked"))??;
    producer.close();
    if let Some(e) = read_error {
        return Err(e);
    }
    if failed > 0 {
        return Err(CliError {
            code: crate::cli::local_code::FAILED,
            name: "not acknowledged",
            message: format!("{failed} of {number} records were not acknowledged"),
        });
    }
    Ok(())
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
