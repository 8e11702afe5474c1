//! Mamba's storage engine.
pub mod appender;
pub mod batch;
pub mod config;
pub mod disk;
pub mod error;
pub mod ids;
pub mod limits;
pub mod memfs;
pub mod partition;
pub mod scan;
pub mod segment;
pub mod segment_index;
pub mod storage;
pub mod tail_cache;
