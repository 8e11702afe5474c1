//! Mamba's storage engine.
pub mod appender;
pub mod batch;
pub mod catalog;
pub mod config;
pub mod disk;
pub mod engine;
pub mod error;
pub mod ids;
pub mod inspect;
pub mod limits;
pub mod memfs;
pub mod partition;
pub mod runtime;
pub mod scan;
pub mod segment;
pub mod segment_index;
pub mod shard;
pub mod storage;
pub mod tail_cache;

pub use batch::{Batch, BatchBuilder, BatchView, NewRecord};
pub use config::{Durability, EngineConfig, StorageMode, TopicConfig};
pub use engine::{block_on, Engine, OpenReport};
pub use error::{EngineError, EngineResult};
pub use ids::{LeaderEpoch, Offset, PartitionId, ShardId};
pub use partition::{AppendInfo, LogOffsets, ReadOutcome};
