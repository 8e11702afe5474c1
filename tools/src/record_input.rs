//! Where `mamba produce` gets its records: delimited standard input (one
//! record per line by default), a `--format` template, JSON lines, or
//! whole files (`--value-file`). Each source reads one record at a time,
//! so memory stays bounded whatever the input's length.
//!
//! A record the source cannot read (a JSON line that does not parse, text
//! that does not follow the template) is a `bad input` error naming the
//! record or line number and what is wrong; it stops the run, as Kafka's
//! console producer does: skipping would lose data silently, and the
//! records before it are sent and acknowledged, so the input can be fixed
//! and resumed from the named record.

use crate::cli::CliError;
use crate::template::{InputTemplate, ReadError};
use base64::Engine as _;
use serde::Deserialize;
use std::io::BufRead;
use std::path::PathBuf;

/// The longest record input may hold: more could never fit a batch.
pub const INPUT_RECORD_BYTES_MAX: usize = mamba_engine::limits::BATCH_BYTES_MAX;

/// A record as read; what the source leaves out, the command's flags fill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: Option<u32>,
    pub timestamp_ms: Option<i64>,
}

/// One of the input forms.
pub enum RecordSource<R> {
    /// Records end at `delimiter`; with `key_separator`, the key is what
    /// comes before its first occurrence.
    Delimited {
        input: R,
        delimiter: u8,
        key_separator: Option<Vec<u8>>,
    },
    Template {
        input: R,
        template: InputTemplate,
    },
    /// One JSON object per line (see [`JsonRecord`]); blank lines are
    /// skipped.
    JsonLines {
        input: R,
        line_number: u64,
    },
    /// Each file is one record's value.
    ValueFiles {
        paths: std::vec::IntoIter<PathBuf>,
    },
}

/// A line of `--format json`. Text fields are UTF-8; `key_b64`/`value_b64`
/// carry bytes that are not (standard base64).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    key: Option<String>,
    key_b64: Option<String>,
    value: Option<String>,
    value_b64: Option<String>,
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
    partition: Option<u32>,
    timestamp_ms: Option<i64>,
}

/// The shape of a JSON line, for messages.
pub const JSON_RECORD_FORM: &str =
    "{\"key\": \"k\", \"value\": \"v\", \"headers\": {\"h\": \"x\"}, \
     \"partition\": 0, \"timestamp_ms\": 1764504000000} (only value needed; key_b64/value_b64 \
     for bytes in base64)";

impl<R: BufRead> RecordSource<R> {
    /// The next record, numbered `number` (from 1) for messages; `None`
    /// at the end of the input.
    pub fn next_record(&mut self, number: u64) -> Result<Option<InputRecord>, CliError> {
        let bad = |why: String| CliError::input(format!("record {number}: {why}"));
        let io = |e: std::io::Error| CliError::io(format!("reading standard input: {e}"));
        match self {
            RecordSource::Delimited { input, delimiter, key_separator } => {
                let mut bytes = Vec::new();
                let ended = crate::template::read_until_text(
                    input,
                    &[*delimiter],
                    &mut bytes,
                    INPUT_RECORD_BYTES_MAX,
                )
                .map_err(io)?;
                if !ended && bytes.len() >= INPUT_RECORD_BYTES_MAX {
                    return Err(bad(format!(
                        "longer than {INPUT_RECORD_BYTES_MAX} bytes without a delimiter"
                    )));
                }
                if !ended && bytes.is_empty() {
                    return Ok(None);
                }
                let split = key_separator.as_deref().and_then(|sep| {
                    let at = find(&bytes, sep)?;
                    Some((bytes[..at].to_vec(), bytes[at + sep.len()..].to_vec()))
                });
                Ok(Some(match split {
                    Some((key, value)) => {
                        InputRecord { key: Some(key), value, ..InputRecord::default() }
                    }
                    None => InputRecord { value: bytes, ..InputRecord::default() },
                }))
            }
            RecordSource::Template { input, template } => {
                match template.read(input, INPUT_RECORD_BYTES_MAX) {
                    Ok(None) => Ok(None),
                    Ok(Some(f)) => Ok(Some(InputRecord {
                        key: f.key,
                        value: f.value,
                        headers: Vec::new(),
                        partition: f.partition,
                        timestamp_ms: f.timestamp_ms,
                    })),
                    Err(ReadError::Io(e)) => Err(io(e)),
                    Err(ReadError::Bad(why)) => Err(bad(why)),
                }
            }
            RecordSource::JsonLines { input, line_number } => loop {
                let mut line = Vec::new();
                let ended = crate::template::read_until_text(
                    input,
                    b"\n",
                    &mut line,
                    INPUT_RECORD_BYTES_MAX,
                )
                .map_err(io)?;
                *line_number += 1;
                let line_bad = |why: String| {
                    CliError::input(format!("line {line_number} (record {number}): {why}"))
                };
                if !ended && line.len() >= INPUT_RECORD_BYTES_MAX {
                    return Err(line_bad(format!("longer than {INPUT_RECORD_BYTES_MAX} bytes")));
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    if ended {
                        continue;
                    }
                    return Ok(None);
                }
                return parse_json_record(&line).map(Some).map_err(line_bad);
            },
            RecordSource::ValueFiles { paths } => {
                let Some(path) = paths.next() else { return Ok(None) };
                let value = read_value_file(&path)?;
                Ok(Some(InputRecord { value, ..InputRecord::default() }))
            }
        }
    }
}

fn parse_json_record(line: &[u8]) -> Result<InputRecord, String> {
    let r: JsonRecord = serde_json::from_slice(line)
        .map_err(|e| format!("not a record ({e}); each line is {JSON_RECORD_FORM}"))?;
    let b64 = |field: &str, text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("{field} is not base64: {e}"))
    };
    let key = match (r.key, r.key_b64) {
        (Some(_), Some(_)) => return Err("give key or key_b64, not both".into()),
        (Some(k), None) => Some(k.into_bytes()),
        (None, Some(k)) => Some(b64("key_b64", &k)?),
        (None, None) => None,
    };
    let value = match (r.value, r.value_b64) {
        (Some(_), Some(_)) => return Err("give value or value_b64, not both".into()),
        (Some(v), None) => v.into_bytes(),
        (None, Some(v)) => b64("value_b64", &v)?,
        (None, None) => return Err(format!("no value; each line is {JSON_RECORD_FORM}")),
    };
    let headers = r
        .headers
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(v) => Ok((name, v.into_bytes())),
            other => Err(format!("header {name:?} is {other}, not a string")),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(InputRecord { key, value, headers, partition: r.partition, timestamp_ms: r.timestamp_ms })
}

fn read_value_file(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    let too_big = |size_bytes: u64| {
        CliError::input(format!(
            "--value-file {}: {size_bytes} bytes is more than a record may hold \
             ({INPUT_RECORD_BYTES_MAX} bytes)",
            path.display()
        ))
    };
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| CliError::io(format!("--value-file {}: {e}", path.display())))?
        .len();
    if size_bytes > INPUT_RECORD_BYTES_MAX as u64 {
        return Err(too_big(size_bytes));
    }
    let value = std::fs::read(path)
        .map_err(|e| CliError::io(format!("--value-file {}: {e}", path.display())))?;
    if value.len() > INPUT_RECORD_BYTES_MAX {
        return Err(too_big(value.len() as u64));
    }
    Ok(value)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut source: RecordSource<&[u8]>) -> Result<Vec<InputRecord>, CliError> {
        let mut out = Vec::new();
        while let Some(r) = source.next_record(out.len() as u64 + 1)? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn json_lines_take_text_bytes_headers_and_a_partition() {
        let input = br#"{"value": "v1"}

{"key": "k", "value": "v2", "headers": {"h": "x"}, "partition": 1, "timestamp_ms": 5}
{"key_b64": "/wA=", "value_b64": "AAEC"}"#;
        let got = all(RecordSource::JsonLines { input: &input[..], line_number: 0 }).expect("ok");
        assert_eq!(
            got,
            [
                InputRecord { value: b"v1".to_vec(), ..InputRecord::default() },
                InputRecord {
                    key: Some(b"k".to_vec()),
                    value: b"v2".to_vec(),
                    headers: vec![("h".into(), b"x".to_vec())],
                    partition: Some(1),
                    timestamp_ms: Some(5),
                },
                InputRecord {
                    key: Some(vec![0xff, 0]),
                    value: vec![0, 1, 2],
                    ..InputRecord::default()
                },
            ]
        );
    }

    #[test]
    fn a_bad_json_line_names_its_line_and_what_is_wrong() {
        for (input, named) in [
            (&b"{\"value\": \"ok\"}\n\n{\"value\": 3}\n"[..], "line 3 (record 2)"),
            (b"{\"key\": \"k\"}", "no value"),
            (b"{\"value\": \"v\", \"colour\": 1}", "colour"),
            (b"{\"value_b64\": \"**\"}", "value_b64 is not base64"),
            (b"{\"value\": \"v\", \"headers\": {\"h\": 1}}", "header \"h\""),
            (b"not json", "each line is"),
        ] {
            let e = all(RecordSource::JsonLines { input, line_number: 0 }).expect_err("bad");
            assert_eq!(e.code, crate::cli::local_code::INPUT);
            assert!(e.message.contains(named), "{}", e.message);
        }
    }

    #[test]
    fn delimited_input_splits_keys_at_the_first_separator() {
        let source = RecordSource::Delimited {
            input: &b"a::b\0c\0"[..],
            delimiter: 0,
            key_separator: Some(b"::".to_vec()),
        };
        let got = all(source).expect("ok");
        assert_eq!(
            got,
            [
                InputRecord {
                    key: Some(b"a".to_vec()),
                    value: b"b".to_vec(),
                    ..InputRecord::default()
                },
                InputRecord { value: b"c".to_vec(), ..InputRecord::default() },
            ]
        );
    }
}
