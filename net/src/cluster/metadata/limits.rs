//! Bounds on what a metadata record or snapshot may hold. Records come
//! from the Raft log and from peers, so every count and length is checked
//! against these when decoded, before any of it is believed.

pub use mamba_engine::limits::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_BYTES_MAX};

/// Replicas of one partition (and so in-sync replicas, too).
pub const REPLICAS_PER_PARTITION_MAX: usize = 16;

/// Brokers in a cluster.
pub const BROKERS_MAX: usize = 1024;

/// A broker address (`host:port`) or rack name.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// The cluster id, chosen at bootstrap.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Settings of a topic or of the cluster: how many, and their sizes.
pub const CONFIGS_PER_RECORD_MAX: usize = 256;
pub const CONFIG_NAME_BYTES_MAX: usize = 255;
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;

/// Producer ids one allocation may reserve.
pub const PRODUCER_ID_BLOCK_SIZE_MAX: u64 = 1 << 20;

/// One encoded record: a topic of the largest partition count and
/// replication factor, with room for its configs, fits.
pub const RECORD_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One snapshot: the whole state of a large cluster.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

const _: () = assert!(RECORD_BYTES_MAX < SNAPSHOT_BYTES_MAX);
// The largest partition list of a record: per partition two broker lists
// of 4-byte ids plus a fixed part well under 64 bytes.
const _: () = assert!(
    (PARTITIONS_PER_TOPIC_MAX as usize) * (2 * 4 * REPLICAS_PER_PARTITION_MAX + 64)
        + CONFIGS_PER_RECORD_MAX * (CONFIG_NAME_BYTES_MAX + CONFIG_VALUE_BYTES_MAX + 16)
        < RECORD_BYTES_MAX
);
const _: () = assert!(SNAPSHOT_BYTES_MAX <= u32::MAX as usize);
