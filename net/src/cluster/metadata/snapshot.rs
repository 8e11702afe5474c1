//! Snapshots of `MetadataState`, and its digest.
//!
//! A snapshot is what a broker far behind installs instead of replaying
//! the log, so its bytes come from peers and from disk and are checked
//! like any other untrusted input. Layout (little-endian):
//!
//! | bytes  | field                                              |
//! | ------ | -------------------------------------------------- |
//! | 0..4   | magic `MMDS`                                       |
//! | 4..8   | CRC32C of every byte from 8 to the end             |
//! | 8      | format version ([`SNAPSHOT_FORMAT_VERSION`])       |
//! | 9..12  | zero                                               |
//! | 12..16 | body length in bytes                               |
//! | 16..24 | applied index                                      |
//! | 24..   | body: rkyv archive of the state, every map as a    |
//! |        | list sorted by key                                 |
//!
//! `restore` checks magic, length, CRC, version, the archive and then
//! every invariant of the state, so a snapshot with a right checksum but a
//! wrong content (a peer's bug) is refused too.
//!
//! The digest is a hash of the body: it depends only on the content (the
//! maps are ordered, rkyv's output is a function of the value), so brokers
//! that applied the same log report the same digest. It finds divergence;
//! it is no defense against a forger.

use super::ids::TopicId;
use super::limits::SNAPSHOT_BYTES_MAX;
use super::record::{ConfigEntry, Partition};
use super::state::{Broker, MetadataState, ProducerIdBlock, Topic};
use std::collections::BTreeMap;

pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
const MAGIC: [u8; 4] = *b"MMDS";
const HEADER_BYTES: usize = 24;
const CRC_FROM_BYTE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("metadata snapshot: {size_bytes} bytes, shorter than its {HEADER_BYTES}-byte header")]
    Truncated { size_bytes: usize },
    #[error("metadata snapshot: {size_bytes} bytes, more than {size_bytes_max}")]
    TooLarge { size_bytes: usize, size_bytes_max: usize },
    #[error("metadata snapshot: bad magic {got:?}")]
    BadMagic { got: [u8; 4] },
    #[error("metadata snapshot: body of {body_bytes} bytes declared, {present_bytes} present")]
    LengthMismatch { body_bytes: usize, present_bytes: usize },
    #[error("metadata snapshot: checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch { expected: u32, got: u32 },
    #[error(
        "metadata snapshot: format version {version}, this broker reads {SNAPSHOT_FORMAT_VERSION}"
    )]
    UnknownVersion { version: u8 },
    #[error("metadata snapshot: malformed body: {reason}")]
    Malformed { reason: String },
    #[error("metadata snapshot: inconsistent state: {reason}")]
    Inconsistent { reason: String },
}

/// The state as stored: maps become lists sorted by key.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Image {
    cluster_id: Option<String>,
    brokers: Vec<Broker>,
    topics: Vec<TopicImage>,
    next_producer_id: u64,
    producer_id_blocks: Vec<ProducerIdBlock>,
    settings: Vec<ConfigEntry>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct TopicImage {
    id: TopicId,
    name: String,
    configs: Vec<ConfigEntry>,
    partitions: Vec<Partition>,
}

fn entries(map: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    map.iter()
        .map(|(name, value)| ConfigEntry { name: name.clone(), value: value.clone() })
        .collect()
}

impl MetadataState {
    fn body(&self) -> rkyv::util::AlignedVec {
        let image = Image {
            cluster_id: self.cluster_id.clone(),
            brokers: self.brokers.values().cloned().collect(),
            topics: self
                .topics
                .values()
                .map(|t| TopicImage {
                    id: t.id,
                    name: t.name.clone(),
                    configs: entries(&t.configs),
                    partitions: t.partitions.clone(),
                })
                .collect(),
            next_producer_id: self.next_producer_id,
            producer_id_blocks: self.producer_id_blocks.values().copied().collect(),
            settings: entries(&self.settings),
        };
        match rkyv::to_bytes::<rkyv::rancor::Error>(&image) {
            Ok(body) => body,
            // Serializing owned values into memory fails only when memory
            // does, which aborts anyway.
            Err(e) => panic!("encoding the metadata state into memory failed: {e}"),
        }
    }

    /// A hash of the applied state (not of the applied index): equal on
    /// every broker that applied the same records.
    pub fn digest(&self) -> u64 {
        fnv1a_64(&self.body())
    }

    /// The whole state and its applied index, checksummed.
    pub fn snapshot(&self) -> Vec<u8> {
        let body = self.body();
        assert!(
            HEADER_BYTES + body.len() <= SNAPSHOT_BYTES_MAX,
            "metadata state of {} bytes outgrew SNAPSHOT_BYTES_MAX",
            body.len()
        );
        let body_bytes = u32::try_from(body.len()).expect("bounded by SNAPSHOT_BYTES_MAX");
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.push(SNAPSHOT_FORMAT_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&body_bytes.to_le_bytes());
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[CRC_FROM_BYTE..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The state a snapshot holds, once every check passed; an error
    /// otherwise, never a panic.
    pub fn restore(bytes: &[u8]) -> Result<MetadataState, SnapshotError> {
        if bytes.len() < HEADER_BYTES {
            return Err(SnapshotError::Truncated { size_bytes: bytes.len() });
        }
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge {
                size_bytes: bytes.len(),
                size_bytes_max: SNAPSHOT_BYTES_MAX,
            });
        }
        let (header, body) = bytes.split_at(HEADER_BYTES);
        let field =
            |at: usize| -> [u8; 4] { [header[at], header[at + 1], header[at + 2], header[at + 3]] };
        let magic = field(0);
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic { got: magic });
        }
        let body_bytes = u32::from_le_bytes(field(12)) as usize;
        if body_bytes != body.len() {
            return Err(SnapshotError::LengthMismatch { body_bytes, present_bytes: body.len() });
        }
        let expected = u32::from_le_bytes(field(4));
        let got = crc32c::crc32c(&bytes[CRC_FROM_BYTE..]);
        if expected != got {
            return Err(SnapshotError::ChecksumMismatch { expected, got });
        }
        let version = header[8];
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnknownVersion { version });
        }
        let mut index_bytes = [0u8; 8];
        index_bytes.copy_from_slice(&header[16..24]);
        let applied_index = u64::from_le_bytes(index_bytes);

        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let image = rkyv::from_bytes::<Image, rkyv::rancor::BoxedError>(&aligned)
            .map_err(|e| SnapshotError::Malformed { reason: e.to_string() })?;
        let state = from_image(applied_index, image)?;
        state.check_invariants().map_err(|reason| SnapshotError::Inconsistent { reason })?;
        Ok(state)
    }
}

fn from_image(applied_index: u64, image: Image) -> Result<MetadataState, SnapshotError> {
    let inconsistent = |reason: String| SnapshotError::Inconsistent { reason };
    let mut state = MetadataState {
        applied_index,
        cluster_id: image.cluster_id,
        next_producer_id: image.next_producer_id,
        ..MetadataState::default()
    };
    for b in image.brokers {
        if let Some(previous) = state.brokers.insert(b.id, b) {
            return Err(inconsistent(format!("broker {} listed twice", previous.id)));
        }
    }
    for t in image.topics {
        if state.topic_ids_by_name.insert(t.name.clone(), t.id).is_some() {
            return Err(inconsistent(format!("two topics named {:?}", t.name)));
        }
        let topic = Topic {
            id: t.id,
            name: t.name,
            configs: unique_entries(t.configs).map_err(inconsistent)?,
            partitions: t.partitions,
        };
        if state.topics.insert(topic.id, topic).is_some() {
            return Err(inconsistent(format!("topic id {} listed twice", t.id)));
        }
    }
    for block in image.producer_id_blocks {
        if state.producer_id_blocks.insert(block.broker_id, block).is_some() {
            return Err(inconsistent(format!(
                "two producer id blocks of broker {}",
                block.broker_id
            )));
        }
    }
    state.settings = unique_entries(image.settings).map_err(inconsistent)?;
    Ok(state)
}

fn unique_entries(entries: Vec<ConfigEntry>) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for e in entries {
        if e.name.is_empty() {
            return Err("an empty setting name".into());
        }
        if map.insert(e.name.clone(), e.value).is_some() {
            return Err(format!("setting {:?} listed twice", e.name));
        }
    }
    Ok(map)
}

/// FNV-1a, 64 bits: tiny and fixed forever, which a digest compared
/// across brokers of different versions needs; collisions between two
/// diverged states are unlikely enough for a divergence check.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}
