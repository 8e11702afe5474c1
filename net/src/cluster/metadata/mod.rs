//! The cluster's metadata: brokers, topics and their partitions' replicas,
//! leaders and epochs, producer id blocks and cluster settings. Every
//! broker applies the same records of the Raft log in the same order to a
//! `MetadataState` and so holds the same metadata (compare `digest`s).
//!
//! Flow: the controller checks a change against its state
//! (`MetadataState::check`), proposes `MetadataRecord::encode`d bytes; once
//! committed, every broker `decode`s and `apply`s them. A broker far behind
//! installs a `snapshot` instead (`restore`).
//!
//! ```
//! use mamba_net::cluster::metadata::*;
//! let mut state = MetadataState::default();
//! let record = MetadataRecord::InitCluster { cluster_id: "blue".into() };
//! let bytes = record.encode(); // what the Raft log holds
//! state.apply(1, &MetadataRecord::decode(&bytes).unwrap()).unwrap();
//! let copy = MetadataState::restore(&state.snapshot()).unwrap();
//! assert_eq!(copy.digest(), state.digest());
//! assert_eq!(copy.cluster_id(), Some("blue"));
//! ```

mod ids;
pub mod limits;
mod record;
mod snapshot;
mod state;

pub use ids::{BrokerId, IncarnationId, TopicId};
pub use record::{
    BrokerRegistration, ConfigEntry, MetadataRecord, Partition, PartitionChange, RecordError,
    ReplicaChange, TopicCreation, RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSION_MIN,
};
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT_VERSION};
pub use state::{
    broker_status_name, Broker, BrokerStatus, MetadataError, MetadataState, ProducerIdBlock, Topic,
    TopicPartition,
};

#[cfg(test)]
mod tests;
