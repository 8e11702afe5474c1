//! `mamba produce`: records from standard input (or files), streamed.

use crate::cli::{emit, CliError, ClientArgs, Output};
use crate::record_input::RecordSource;
use crate::template::{Field, Template};
use clap::Args;
use mamba_net::client::{block_on, Acks, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic to write to.
    topic: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The key of every record (a JSON line's own key wins).
    #[arg(short, long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each record at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key, or sticky;
    /// a JSON line's own partition wins).
    #[arg(short, long)]
    partition: Option<u32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// A header on every record (repeatable; JSON lines add their own).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
    /// The byte that ends each record on standard input: one character,
    /// or an escape (\n, \0, \t, \xHH). Records are raw bytes; they need
    /// not be UTF-8.
    #[arg(long, value_name = "BYTE", default_value = "\\n", value_parser = parse_delimiter)]
    delimiter: u8,
    /// How standard input holds records instead of one per delimiter:
    /// `json`, one object per line: {"key": "k", "value": "v", "headers":
    /// {"h": "x"}, "partition": 0, "timestamp_ms": MS} (only value needed;
    /// key_b64/value_b64 for bytes in base64); or a template such as
    /// '%k:%v\n': fields %k key, %v value, %p partition, %T timestamp ms,
    /// each ended by the text after it (the key here ends at the first
    /// ':'), the last text ending the record; escapes \n \t \r \0 \\ %%.
    /// A record that does not parse stops the run with a `bad input` error
    /// naming it; the records before it are sent.
    #[arg(short, long, value_name = "FORMAT", conflicts_with_all = ["delimiter", "key_separator"])]
    format: Option<String>,
    /// Send this file's bytes as the value of one record (repeatable: one
    /// record per file, in order); standard input is not read.
    #[arg(
        long = "value-file",
        value_name = "PATH",
        conflicts_with_all = ["format", "delimiter", "key_separator"]
    )]
    value_files: Vec<PathBuf>,
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
    let mut source = record_source(&args)?;
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
    let mut number = 0u64;
    let mut read_error = None;
    loop {
        let record = match source.next_record(number + 1) {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        number += 1;
        let mut record_headers = headers.clone();
        record_headers.extend(record.headers);
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: record.partition.or(args.partition),
            key: record.key.or_else(|| args.key.as_ref().map(|k| k.as_bytes().to_vec())),
            value: record.value,
            headers: record_headers,
            timestamp_ms: record.timestamp_ms,
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

/// The input form the flags ask for, checked against the flags it
/// conflicts with.
fn record_source(
    args: &ProduceArgs,
) -> Result<RecordSource<std::io::BufReader<std::io::StdinLock<'static>>>, CliError> {
    let stdin = || std::io::BufReader::new(std::io::stdin().lock());
    if !args.value_files.is_empty() {
        return Ok(RecordSource::ValueFiles { paths: args.value_files.clone().into_iter() });
    }
    match args.format.as_deref() {
        None => Ok(RecordSource::Delimited {
            input: stdin(),
            delimiter: args.delimiter,
            key_separator: args.key_separator.as_ref().map(|s| s.as_bytes().to_vec()),
        }),
        Some("json") => Ok(RecordSource::JsonLines { input: stdin(), line_number: 0 }),
        Some(text) => {
            let template = Template::parse(text).and_then(|t| t.for_input())?;
            if template.has(Field::Key) && args.key.is_some() {
                return Err(CliError::usage(format!(
                    "--key gives every record a key, and --format {text:?} reads one (%k): \
                     use one of them"
                )));
            }
            if template.has(Field::Partition) && args.partition.is_some() {
                return Err(CliError::usage(format!(
                    "--partition names every record's partition, and --format {text:?} reads \
                     one (%p): use one of them"
                )));
            }
            Ok(RecordSource::Template { input: stdin(), template })
        }
    }
}
