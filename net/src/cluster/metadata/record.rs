//! `MetadataRecord`: one change to the cluster's metadata, as it travels in
//! the Raft log and between brokers.
//!
//! Encoding: one version byte ([`RECORD_FORMAT_VERSION`]), then the record
//! as an rkyv archive. Decoding checks the version, the size, the archive
//! (bytecheck) and every count and length against `limits.rs`, so a record
//! that decodes is safe to look at; whether it makes sense against the
//! current state is `MetadataState::apply`'s question.

use super::ids::{BrokerId, IncarnationId, TopicId};
use super::limits::*;

/// The newest format of encoded records this broker reads. A broker
/// refuses versions it does not know rather than guess: a new record kind
/// needs a new version, and each record is written in the oldest version
/// that has its kind ([`MetadataRecord::format_version`]), so records of
/// the older kinds stay readable by brokers that predate the new ones.
///
/// - 1: every kind up to `SetClusterSetting`.
/// - 2: `ChangeReplicas`. Its payload is boxed, so the archived enum keeps
///   its size and layout: version-1 bytes decode unchanged.
pub const RECORD_FORMAT_VERSION: u8 = 2;

/// The oldest version this broker reads.
pub const RECORD_FORMAT_VERSION_MIN: u8 = 1;

/// One change to the metadata, applied in log order by every broker.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// The first record of every log: names the cluster, so a broker
    /// started with another cluster's data directory is caught.
    InitCluster {
        cluster_id: String,
    },
    /// A broker (re)joins: a new broker or a new incarnation of a known
    /// one. It starts fenced and is unfenced once it caught up.
    RegisterBroker(BrokerRegistration),
    /// The broker's incarnation stopped heartbeating: it leads nothing
    /// until unfenced.
    FenceBroker {
        broker_id: BrokerId,
        incarnation_id: IncarnationId,
    },
    /// The broker's incarnation heartbeats and has caught up with the log.
    UnfenceBroker {
        broker_id: BrokerId,
        incarnation_id: IncarnationId,
    },
    /// The broker is leaving: it gets no new replicas, its replicas move.
    DecommissionBroker {
        broker_id: BrokerId,
    },
    /// A decommissioned broker that hosts no replica leaves the cluster.
    UnregisterBroker {
        broker_id: BrokerId,
    },
    CreateTopic(TopicCreation),
    DeleteTopic {
        topic_id: TopicId,
    },
    /// Sets `set` (replacing values) and removes `remove`.
    AlterTopicConfigs {
        topic_id: TopicId,
        set: Vec<ConfigEntry>,
        remove: Vec<String>,
    },
    /// Appends partitions to a topic (partitions are never removed: keys
    /// would move).
    CreatePartitions {
        topic_id: TopicId,
        partitions: Vec<Partition>,
    },
    /// A new leader or in-sync replica set for one partition.
    ChangePartition(PartitionChange),
    /// Reserves producer ids `start .. start + size` for one broker's
    /// idempotent producers. Blocks are handed out in order, so ids are
    /// unique across the cluster.
    AllocateProducerIds {
        broker_id: BrokerId,
        start: u64,
        size: u64,
    },
    /// Sets a cluster-wide setting, or removes it (`value: None`).
    SetClusterSetting {
        name: String,
        value: Option<String>,
    },
    /// A new replica set for one partition, with the leader and in-sync
    /// set that go with it: a step of a move, or a leadership transfer
    /// that makes its broker the preferred leader. (Format version 2.)
    ChangeReplicas(Box<ReplicaChange>),
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub client_address: String,
    pub cluster_address: String,
    pub http_address: String,
    pub rack: Option<String>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicCreation {
    pub name: String,
    pub topic_id: TopicId,
    pub configs: Vec<ConfigEntry>,
    pub partitions: Vec<Partition>,
}

/// A setting as named strings; what the names mean is `topic_config.rs`'s
/// business, checked by the controller before it proposes.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: String,
}

/// Where one partition lives: in a record, and in the state.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The replicas; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// `None` while no in-sync replica can lead.
    pub leader: Option<BrokerId>,
    /// Rises with every leader change; batches carry it.
    pub leader_epoch: u32,
    /// Rises with every change of the partition (leader, ISR).
    pub partition_epoch: u32,
    /// The in-sync replicas: a subset of `replicas` holding the leader.
    pub isr: Vec<BrokerId>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: TopicId,
    pub partition: u32,
    pub leader: Option<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader_epoch: u32,
    pub partition_epoch: u32,
}

/// `change`, and the partition's replicas become `replicas`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaChange {
    pub replicas: Vec<BrokerId>,
    pub change: PartitionChange,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("metadata record: empty")]
    Empty,
    #[error("metadata record: {size_bytes} bytes, more than {size_bytes_max}")]
    TooLarge { size_bytes: usize, size_bytes_max: usize },
    #[error(
        "metadata record: format version {version}, this broker reads {RECORD_FORMAT_VERSION_MIN} to {RECORD_FORMAT_VERSION}"
    )]
    UnknownVersion { version: u8 },
    #[error("metadata record: malformed archive: {reason}")]
    Malformed { reason: String },
    #[error("metadata record: {what} is {got}, more than {max}")]
    OutOfBounds { what: &'static str, got: usize, max: usize },
}

impl MetadataRecord {
    /// The version byte and the archive. Callers check
    /// [`MetadataRecord::check_bounds`] first: a record out of bounds
    /// encodes, but every broker would refuse to decode it.
    pub fn encode(&self) -> Vec<u8> {
        let archive = match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(archive) => archive,
            // Serializing owned strings and vectors into memory fails only
            // when memory does, which aborts anyway.
            Err(e) => panic!("encoding a metadata record into memory failed: {e}"),
        };
        let mut out = Vec::with_capacity(1 + archive.len());
        out.push(self.format_version());
        out.extend_from_slice(&archive);
        out
    }

    /// Decodes untrusted bytes: an error or a record within every bound,
    /// never a panic.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        let (&version, archive) = bytes.split_first().ok_or(RecordError::Empty)?;
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge {
                size_bytes: bytes.len(),
                size_bytes_max: RECORD_BYTES_MAX,
            });
        }
        if !(RECORD_FORMAT_VERSION_MIN..=RECORD_FORMAT_VERSION).contains(&version) {
            return Err(RecordError::UnknownVersion { version });
        }
        // Log entries carry no alignment promise; the archive needs one.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(archive.len());
        aligned.extend_from_slice(archive);
        let record = rkyv::from_bytes::<MetadataRecord, rkyv::rancor::BoxedError>(&aligned)
            .map_err(|e| RecordError::Malformed { reason: e.to_string() })?;
        if record.format_version() > version {
            return Err(RecordError::Malformed {
                reason: format!(
                    "a kind of format version {} in a version-{version} record",
                    record.format_version()
                ),
            });
        }
        record.check_bounds()?;
        Ok(record)
    }

    /// The oldest format version that has this record's kind: the one it
    /// is written in.
    pub fn format_version(&self) -> u8 {
        match self {
            MetadataRecord::ChangeReplicas(_) => 2,
            _ => 1,
        }
    }

    /// Every count and length within `limits.rs`.
    pub fn check_bounds(&self) -> Result<(), RecordError> {
        match self {
            MetadataRecord::InitCluster { cluster_id } => {
                bound("cluster id bytes", cluster_id.len(), CLUSTER_ID_BYTES_MAX)
            }
            MetadataRecord::RegisterBroker(r) => {
                bound("client address bytes", r.client_address.len(), ADDRESS_BYTES_MAX)?;
                bound("cluster address bytes", r.cluster_address.len(), ADDRESS_BYTES_MAX)?;
                bound("HTTP address bytes", r.http_address.len(), ADDRESS_BYTES_MAX)?;
                let rack_bytes = r.rack.as_ref().map_or(0, String::len);
                bound("rack bytes", rack_bytes, ADDRESS_BYTES_MAX)
            }
            MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::DecommissionBroker { .. }
            | MetadataRecord::UnregisterBroker { .. }
            | MetadataRecord::DeleteTopic { .. } => Ok(()),
            MetadataRecord::CreateTopic(t) => {
                bound("topic name bytes", t.name.len(), TOPIC_NAME_BYTES_MAX)?;
                check_configs(&t.configs)?;
                check_partitions(&t.partitions)
            }
            MetadataRecord::AlterTopicConfigs { set, remove, .. } => {
                check_configs(set)?;
                bound("configs removed", remove.len(), CONFIGS_PER_RECORD_MAX)?;
                remove
                    .iter()
                    .try_for_each(|n| bound("config name bytes", n.len(), CONFIG_NAME_BYTES_MAX))
            }
            MetadataRecord::CreatePartitions { partitions, .. } => check_partitions(partitions),
            MetadataRecord::ChangePartition(c) => {
                bound("in-sync replicas", c.isr.len(), REPLICAS_PER_PARTITION_MAX)
            }
            MetadataRecord::ChangeReplicas(r) => {
                bound("replicas", r.replicas.len(), REPLICAS_PER_PARTITION_MAX)?;
                bound("in-sync replicas", r.change.isr.len(), REPLICAS_PER_PARTITION_MAX)
            }
            MetadataRecord::AllocateProducerIds { size, .. } => bound(
                "producer id block size",
                usize::try_from(*size).unwrap_or(usize::MAX),
                PRODUCER_ID_BLOCK_SIZE_MAX as usize,
            ),
            MetadataRecord::SetClusterSetting { name, value } => {
                bound("setting name bytes", name.len(), CONFIG_NAME_BYTES_MAX)?;
                bound(
                    "setting value bytes",
                    value.as_ref().map_or(0, String::len),
                    CONFIG_VALUE_BYTES_MAX,
                )
            }
        }
    }
}

fn bound(what: &'static str, got: usize, max: usize) -> Result<(), RecordError> {
    if got > max {
        return Err(RecordError::OutOfBounds { what, got, max });
    }
    Ok(())
}

pub(super) fn check_configs(configs: &[ConfigEntry]) -> Result<(), RecordError> {
    bound("configs", configs.len(), CONFIGS_PER_RECORD_MAX)?;
    for c in configs {
        bound("config name bytes", c.name.len(), CONFIG_NAME_BYTES_MAX)?;
        bound("config value bytes", c.value.len(), CONFIG_VALUE_BYTES_MAX)?;
    }
    Ok(())
}

pub(super) fn check_partitions(partitions: &[Partition]) -> Result<(), RecordError> {
    bound("partitions", partitions.len(), PARTITIONS_PER_TOPIC_MAX as usize)?;
    for p in partitions {
        bound("replicas", p.replicas.len(), REPLICAS_PER_PARTITION_MAX)?;
        bound("in-sync replicas", p.isr.len(), REPLICAS_PER_PARTITION_MAX)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> MetadataRecord {
        MetadataRecord::CreateTopic(TopicCreation {
            name: "orders".into(),
            topic_id: TopicId(7),
            configs: vec![ConfigEntry { name: "retention_ms".into(), value: "60000".into() }],
            partitions: vec![Partition {
                replicas: vec![BrokerId(1), BrokerId(2)],
                leader: Some(BrokerId(1)),
                leader_epoch: 0,
                partition_epoch: 0,
                isr: vec![BrokerId(1), BrokerId(2)],
            }],
        })
    }

    #[test]
    fn records_survive_encoding() {
        for record in [
            topic(),
            MetadataRecord::InitCluster { cluster_id: "c1".into() },
            MetadataRecord::FenceBroker {
                broker_id: BrokerId(3),
                incarnation_id: IncarnationId(9),
            },
            MetadataRecord::SetClusterSetting { name: "a".into(), value: None },
        ] {
            assert_eq!(MetadataRecord::decode(&record.encode()), Ok(record));
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Records written by brokers of format version 1 (bytes captured from
    /// that build) still decode, and encode to the same bytes: the boxed
    /// version-2 kind left the archived enum's size and layout alone.
    #[test]
    fn version_1_records_decode_unchanged() {
        let change = MetadataRecord::ChangePartition(PartitionChange {
            topic_id: TopicId(7),
            partition: 2,
            leader: Some(BrokerId(3)),
            isr: vec![BrokerId(3), BrokerId(1)],
            leader_epoch: 5,
            partition_epoch: 11,
        });
        let ids =
            MetadataRecord::AllocateProducerIds { broker_id: BrokerId(2), start: 4096, size: 1024 };
        for (record, v1) in [
            (topic(), "01726574656e74696f6e5f6d738c000000f4ffffff3630303030ffffff01000000020000000100000002000000f0ffffff0200000001000000010000000000000000000000e0ffffff0200000000000000060000000000000000000000000000006f7264657273ffff0000000000000000070000000000000000000000000000008cffffff01000000a4ffffff01000000"),
            (change, "01030000000100000000000000000000000a00000000000000000000000000000007000000000000000000000000000000020000000100000003000000c4ffffff02000000050000000b00000000000000"),
            (ids, "010b000000020000000010000000000000000400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"),
        ] {
            assert_eq!(MetadataRecord::decode(&hex(v1)).as_ref(), Ok(&record));
            assert_eq!(record.encode(), hex(v1));
        }
        assert_eq!(std::mem::size_of::<ArchivedMetadataRecord>(), 64);
    }

    #[test]
    fn new_kinds_are_written_in_the_version_that_has_them() {
        let record = MetadataRecord::ChangeReplicas(Box::new(ReplicaChange {
            replicas: vec![BrokerId(4), BrokerId(1)],
            change: PartitionChange {
                topic_id: TopicId(7),
                partition: 0,
                leader: Some(BrokerId(1)),
                isr: vec![BrokerId(1)],
                leader_epoch: 1,
                partition_epoch: 2,
            },
        }));
        let mut bytes = record.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(MetadataRecord::decode(&bytes).as_ref(), Ok(&record));
        bytes[0] = 1;
        assert!(matches!(MetadataRecord::decode(&bytes), Err(RecordError::Malformed { .. })));
    }

    #[test]
    fn unknown_versions_and_empty_bytes_are_refused() {
        let mut bytes = topic().encode();
        bytes[0] = RECORD_FORMAT_VERSION + 1;
        assert_eq!(
            MetadataRecord::decode(&bytes),
            Err(RecordError::UnknownVersion { version: RECORD_FORMAT_VERSION + 1 })
        );
        assert_eq!(MetadataRecord::decode(&[]), Err(RecordError::Empty));
    }

    #[test]
    fn records_out_of_bounds_do_not_decode() {
        let record = MetadataRecord::CreateTopic(TopicCreation {
            name: "x".repeat(TOPIC_NAME_BYTES_MAX + 1),
            topic_id: TopicId(1),
            configs: vec![],
            partitions: vec![],
        });
        assert!(matches!(
            MetadataRecord::decode(&record.encode()),
            Err(RecordError::OutOfBounds { what: "topic name bytes", .. })
        ));
    }

    /// Random and mutated bytes give an error or a bounded record, never a
    /// panic. Replay with MAMBA_METADATA_SEED.
    #[test]
    fn decoding_random_bytes_never_panics() {
        let seed = std::env::var("MAMBA_METADATA_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("MAMBA_METADATA_SEED={seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let valid = topic().encode();
        for _ in 0..20_000 {
            let bytes: Vec<u8> = if rng.bool() {
                let len = rng.usize(..200);
                let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                if let Some(first) = b.first_mut() {
                    *first = RECORD_FORMAT_VERSION;
                }
                b
            } else {
                let mut b = valid.clone();
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(1..b.len());
                    b[i] = rng.u8(..);
                }
                b
            };
            if let Ok(record) = MetadataRecord::decode(&bytes) {
                assert_eq!(record.check_bounds(), Ok(()), "seed {seed}");
            }
        }
    }
}
