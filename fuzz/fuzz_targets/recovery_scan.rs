//! Recovery on an arbitrary segment file (and arbitrary index files): opening
//! the partition must either fail with an error or recover a log whose every
//! served batch is valid; never panic or read out of bounds.
#![no_main]

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use mamba_engine::batch::iter_batches;
use mamba_engine::config::Durability;
use mamba_engine::ids::Offset;
use mamba_engine::memfs::MemFs;
use mamba_engine::partition::{LogOptions, PartitionLog};
use mamba_engine::segment::SegmentPaths;
use mamba_engine::storage::StorageRef;
use std::path::Path;
use std::rc::Rc;

fuzz_target!(|data: &[u8]| {
    // First byte picks how the input is split between the log and its index.
    let (split, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s) * 8, rest),
        None => return,
    };
    let (index, log) = rest.split_at(split.min(rest.len()));
    let dir = Path::new("/fuzz/topics/t/0");
    let paths = SegmentPaths::new(dir, Offset(0));
    let fs = MemFs::new();
    fs.set_file_bytes(&paths.log, log.to_vec());
    fs.set_file_bytes(&paths.index, index.to_vec());
    let storage: StorageRef = Rc::new(fs);
    let options = LogOptions {
        segment_bytes: 1 << 30,
        segment_ms: u64::MAX / 2,
        retention_ms: None,
        retention_bytes: None,
        durability: Durability::Fsync,
        tail_cache_bytes: 0,
    };
    let Ok((log, _reports)) = block_on(PartitionLog::open(storage, dir, options, None, 0)) else {
        return;
    };
    let mut next = log.offsets().log_start_offset;
    for _ in 0..10_000 {
        let Ok(read) = block_on(log.read(next, 1 << 16)) else { return };
        if read.chunks.is_empty() {
            return;
        }
        for chunk in &read.chunks {
            for batch in iter_batches(chunk) {
                let batch = batch.expect("recovery serves only valid batches");
                next = batch.header().last_offset().plus(1);
            }
        }
    }
});
