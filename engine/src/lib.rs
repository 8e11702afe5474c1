//! Mamba's storage engine: partitioned, append-only logs on a
//! thread-per-core runtime.
//!
//! [`Engine::open`] starts one shard (a glommio executor pinned to a core)
//! per core and recovers every partition in the data directory. Each
//! partition is owned by one shard for life; the cloneable, `Send + Sync`
//! [`Engine`] handle routes each call to the owner over a bounded channel.
//!
//! The data flow, open → append → sync → read:
//!
//! ```
//! use mamba_engine::batch::iter_batches;
//! use mamba_engine::{block_on, BatchBuilder, Engine, EngineConfig, NewRecord, Offset, PartitionId, TopicConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path(), EngineConfig { shards: Some(1), ..EngineConfig::default() })?;
//! block_on(engine.create_topic("clicks", TopicConfig::default()))?;
//!
//! // A producer builds a batch; the engine assigns offsets, writes it with
//! // O_DIRECT and, under the default `fsync` policy, answers after fdatasync.
//! let mut batch = BatchBuilder::new();
//! batch.push(NewRecord { key: Some(b"user-7".to_vec()), value: b"clicked".to_vec(), ..NewRecord::default() });
//! let appended = block_on(engine.append("clicks", PartitionId(0), batch.build()?))?;
//! assert_eq!(appended.base_offset, Offset(0));
//!
//! // Reads return the stored batches byte for byte; consumers validate them.
//! let read = block_on(engine.read("clicks", PartitionId(0), Offset(0), 1 << 20))?;
//! let batch = iter_batches(&read.chunks[0]).next().expect("one batch")?;
//! let record = batch.iter().next().expect("one record");
//! assert_eq!(record.value(), b"clicked");
//! engine.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! Underneath: [`batch`] (the format), [`storage`] (the disk seam),
//! [`appender`], [`segment`], [`segment_index`], [`scan`] (recovery),
//! [`partition`] (one log), [`leader_epochs`] (its leader epoch history,
//! for replication), [`shard`] (group commit), [`engine`].
pub mod appender;
pub mod batch;
pub mod batch_writer;
pub mod catalog;
pub mod config;
pub mod disk;
pub mod disk_space;
pub mod engine;
pub mod error;
pub mod ids;
pub mod inspect;
pub mod leader_epochs;
pub mod limits;
pub mod memfs;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod producer_state;
pub mod recovery_point;
pub mod runtime;
pub mod scan;
pub mod segment;
pub mod segment_index;
pub mod shard;
pub mod storage;
pub mod tail_cache;

/// The README's embedding example, run by `cargo test --doc` so it cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;

pub use batch::{Batch, BatchBuilder, BatchView, NewRecord};
pub use config::{Durability, EngineConfig, StorageMode, TopicConfig};
pub use disk_space::DiskSpace;
pub use engine::{block_on, Engine, OpenReport};
pub use error::{EngineError, EngineResult};
pub use ids::{LeaderEpoch, Offset, PartitionId, ShardId};
pub use leader_epochs::{EpochEnd, EpochEntry};
pub use partition::{AppendInfo, AppendWait, LogOffsets, LogSummary, ReadLimit, ReadOutcome};
pub use shard::PartitionCounts;
