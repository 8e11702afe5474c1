//! The history `mamba-bench verify` records and checks: every produce with
//! its outcome, every read, every commit, every fault window, one JSON
//! object per line, so a run's history can be checked again later
//! (`mamba-bench verify --check FILE`) and read by other tools.
//!
//! Values describe themselves: `v1:<producer>:<seq>:<crc32c>:<payload>`,
//! the checksum over the payload, so a read names the produce it came
//! from and a damaged value is told from a misplaced one.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// Which produce a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId {
    pub producer: u32,
    pub seq: u64,
}

impl std::fmt::Display for ValueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.producer, self.seq)
    }
}

/// How a produce ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged at (partition, offset).
    Ok,
    /// Refused by the broker with an error that says it was not written.
    Failed,
    /// Timed out or lost with its connection: written or not.
    Unknown,
}

/// One line of the history. Times are milliseconds since the run began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Produce {
        /// When the outcome was known.
        t_ms: u64,
        latency_us: u64,
        id: ValueId,
        outcome: Outcome,
        partition: Option<u32>,
        offset: Option<u64>,
        error: Option<String>,
    },
    /// A record read: by a reader of assigned partitions, a group member
    /// (`group`), or the final scan (reader `final-scan`), each through
    /// the partition's leader.
    Read {
        t_ms: u64,
        reader: String,
        group: bool,
        partition: u32,
        offset: u64,
        /// The value's produce; absent when the value did not parse or its
        /// checksum failed (then `garbled` holds its first bytes).
        id: Option<ValueId>,
        garbled: Option<String>,
    },
    /// A group commit the coordinator accepted: the group's next read of
    /// `partition` starts at `offset`.
    Commit { t_ms: u64, reader: String, partition: u32, offset: u64 },
    /// A fault, from its start to its heal.
    Fault { start_ms: u64, end_ms: u64, kind: String, target: String },
}

impl Event {
    /// When it happened (a fault: when it began).
    pub fn t_ms(&self) -> u64 {
        match self {
            Event::Produce { t_ms, .. } | Event::Read { t_ms, .. } | Event::Commit { t_ms, .. } => {
                *t_ms
            }
            Event::Fault { start_ms, .. } => *start_ms,
        }
    }
}

const VALUE_VERSION: &str = "v1";

/// The value of produce `id`: self-describing, `payload_bytes` of payload.
pub fn encode_value(id: ValueId, payload_bytes: usize) -> Vec<u8> {
    // A payload that differs per record, so a value read at the wrong
    // place cannot pass for the right one.
    let payload: Vec<u8> = (0..payload_bytes)
        .map(|i| b'a' + ((id.seq as usize + i * 7 + id.producer as usize) % 26) as u8)
        .collect();
    let crc = crc32c::crc32c(&payload);
    let mut value = format!("{VALUE_VERSION}:{}:{}:{crc:08x}:", id.producer, id.seq).into_bytes();
    value.extend_from_slice(&payload);
    value
}

/// The produce a value read came from, or why it is not one of ours.
pub fn decode_value(value: &[u8]) -> Result<ValueId, String> {
    let garbled = || {
        let head = &value[..value.len().min(48)];
        format!("{:?}", String::from_utf8_lossy(head))
    };
    let mut fields = value.splitn(5, |b| *b == b':');
    let mut text = || fields.next().and_then(|f| std::str::from_utf8(f).ok());
    let (Some(VALUE_VERSION), Some(producer), Some(seq), Some(crc)) =
        (text(), text(), text(), text())
    else {
        return Err(garbled());
    };
    let payload = fields.next().ok_or_else(garbled)?;
    let (Ok(producer), Ok(seq), Ok(crc)) =
        (producer.parse(), seq.parse(), u32::from_str_radix(crc, 16))
    else {
        return Err(garbled());
    };
    if crc32c::crc32c(payload) != crc {
        return Err(garbled());
    }
    Ok(ValueId { producer, seq })
}

/// Writes events as JSON lines.
pub struct HistoryWriter {
    out: BufWriter<std::fs::File>,
}

impl HistoryWriter {
    pub fn create(path: &Path) -> Result<HistoryWriter, String> {
        let file = std::fs::File::create(path)
            .map_err(|e| format!("cannot write the history {}: {e}", path.display()))?;
        Ok(HistoryWriter { out: BufWriter::new(file) })
    }

    pub fn write(&mut self, event: &Event) -> Result<(), String> {
        serde_json::to_writer(&mut self.out, event).map_err(|e| e.to_string())?;
        self.out.write_all(b"\n").map_err(|e| e.to_string())
    }

    pub fn finish(mut self) -> Result<(), String> {
        self.out.flush().map_err(|e| e.to_string())?;
        self.out.get_ref().sync_all().map_err(|e| e.to_string())
    }
}

/// Reads a history written by `HistoryWriter`.
pub fn read_history(path: &Path) -> Result<Vec<Event>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the history {}: {e}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line)
            .map_err(|e| format!("{}:{}: not a history event: {e}", path.display(), n + 1))?;
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_its_produce_and_damage_is_caught() {
        let id = ValueId { producer: 3, seq: 41 };
        let value = encode_value(id, 100);
        assert_eq!(decode_value(&value), Ok(id));
        let mut flipped = value.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode_value(&flipped).is_err());
        assert!(decode_value(b"hello").is_err());
        assert!(decode_value(b"v1:1:2:zz:abc").is_err());
        assert_ne!(encode_value(ValueId { producer: 3, seq: 42 }, 100)[20..], value[20..]);
    }

    #[test]
    fn a_history_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.jsonl");
        let events = vec![
            Event::Produce {
                t_ms: 5,
                latency_us: 900,
                id: ValueId { producer: 0, seq: 0 },
                outcome: Outcome::Ok,
                partition: Some(1),
                offset: Some(0),
                error: None,
            },
            Event::Read {
                t_ms: 6,
                reader: "r0".into(),
                group: false,
                partition: 1,
                offset: 0,
                id: Some(ValueId { producer: 0, seq: 0 }),
                garbled: None,
            },
            Event::Commit { t_ms: 7, reader: "g0".into(), partition: 1, offset: 1 },
            Event::Fault { start_ms: 1, end_ms: 9, kind: "kill".into(), target: "broker 2".into() },
        ];
        let mut writer = HistoryWriter::create(&path).expect("create");
        for e in &events {
            writer.write(e).expect("write");
        }
        writer.finish().expect("finish");
        assert_eq!(read_history(&path).expect("read"), events);
        std::fs::write(&path, "{\"type\":\"nonsense\"}\n").expect("write");
        let error = read_history(&path).expect_err("refused");
        assert!(error.contains(":1: not a history event"), "{error}");
    }
}
