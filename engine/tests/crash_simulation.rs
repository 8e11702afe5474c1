//! Randomized crash simulation: appends, flushes, injected write and sync
//! failures, and power losses that tear unsynced writes, on the simulated
//! disk. Checks, for every seed, that every batch acknowledged as durable
//! survives each crash byte for byte, that nothing invalid or
//! discontinuous is ever served, and that the leader epoch history (the
//! leader changing now and then) is what the surviving batches say.
//!
//! `MAMBA_SIM_SEED=<n>` replays one seed; `MAMBA_SIM_SEEDS=<n>` sets how many
//! seeds to run (default 300).

use futures::executor::block_on;
use mamba_engine::batch::{iter_batches, Batch, BatchBuilder, BatchHeader, NewRecord};
use mamba_engine::config::Durability;
use mamba_engine::error::EngineError;
use mamba_engine::ids::{LeaderEpoch, Offset};
use mamba_engine::leader_epochs::EpochEntry;
use mamba_engine::memfs::{FaultPlan, MemFs};
use mamba_engine::partition::{AppendMode, LogOptions, PartitionLog};
use mamba_engine::recovery_point::RecoveryPoint;
use mamba_engine::storage::StorageRef;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

const DIR: &str = "/sim/topics/t/0";

fn options(rng: &mut fastrand::Rng) -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024 * rng.u64(1..4),
        segment_ms: 1_000_000_000,
        retention_ms: None,
        retention_bytes: None,
        durability: Durability::Fsync,
        tail_cache_bytes: if rng.bool() { 0 } else { 256 * 1024 },
    }
}

fn random_batch(rng: &mut fastrand::Rng, tag: u64) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..rng.usize(1..6) {
        let len = if rng.u8(..) < 20 { rng.usize(2000..9000) } else { rng.usize(0..400) };
        let mut value = format!("{tag}/{i}/").into_bytes();
        value.extend((0..len).map(|_| rng.u8(..)));
        b.push(NewRecord { key: None, value, headers: vec![], timestamp_ms: tag as i64 });
    }
    b.build().expect("batch")
}

/// Opens the log from its last checkpointed recovery point, retrying while
/// injected faults make recovery fail.
fn open(fs: &MemFs, options: &LogOptions, point: Option<RecoveryPoint>, seed: u64) -> PartitionLog {
    for _ in 0..100 {
        let storage: StorageRef = Rc::new(fs.clone());
        match block_on(PartitionLog::open(storage, Path::new(DIR), options.clone(), point, 0)) {
            Ok((log, _)) => return log,
            Err(EngineError::Corrupt { .. }) => {
                panic!("seed {seed}: a crash was taken for corruption (point {point:?})")
            }
            Err(_) => continue,
        }
    }
    fs.heal();
    let storage: StorageRef = Rc::new(fs.clone());
    match block_on(PartitionLog::open(storage, Path::new(DIR), options.clone(), point, 0)) {
        Ok((log, _)) => log,
        Err(e) => panic!("seed {seed}: log does not open on a healed disk: {e}"),
    }
}

/// Every visible batch, by base offset; checks validity and contiguity.
fn read_everything(log: &PartitionLog, seed: u64) -> BTreeMap<Offset, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut next = log.offsets().log_start_offset;
    for _ in 0..1_000_000 {
        let read = block_on(log.read(next, 64 * 1024))
            .unwrap_or_else(|e| panic!("seed {seed}: read at {next} failed: {e}"));
        if read.chunks.is_empty() {
            assert_eq!(next, read.high_watermark, "seed {seed}: gap before the high watermark");
            return out;
        }
        for chunk in &read.chunks {
            for b in iter_batches(chunk) {
                let b = b.unwrap_or_else(|e| panic!("seed {seed}: served an invalid batch: {e}"));
                let base = b.header().base_offset;
                assert!(base <= next, "seed {seed}: served offset {base} after a gap at {next}");
                if base == next {
                    out.insert(base, b.as_bytes().to_vec());
                    next = b.header().last_offset().plus(1);
                }
            }
        }
    }
    panic!("seed {seed}: read loop did not end");
}

/// The leader epoch history the batches of `batches` (by base offset)
/// imply: each epoch from its first batch.
fn epochs_of(batches: &BTreeMap<Offset, Vec<u8>>) -> Vec<EpochEntry> {
    let mut epochs: Vec<EpochEntry> = Vec::new();
    for (&base, bytes) in batches {
        let epoch = BatchHeader::decode(bytes).expect("a served batch has a header").leader_epoch;
        if epochs.last().is_none_or(|latest| epoch > latest.epoch) {
            epochs.push(EpochEntry { epoch, start_offset: base });
        }
    }
    epochs
}

fn run(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let fs = MemFs::with_faults(FaultPlan {
        seed,
        write_error_one_in: rng.u32(0..40),
        sync_error_one_in: rng.u32(0..40),
    });
    let options = options(&mut rng);
    let mut log = open(&fs, &options, None, seed);
    // The recovery point as last checkpointed (the engine does so at open
    // and now and then).
    let mut checkpoint = Some(log.recovery_point());
    // Batches the log acknowledged as durable: base offset -> stored bytes.
    let mut durable: BTreeMap<Offset, Vec<u8>> = BTreeMap::new();
    let mut tag = 0u64;
    // Leader changes come from their own stream, so the seeds replay the
    // same appends, faults and crashes as before epochs were simulated.
    let mut leadership = fastrand::Rng::with_seed(seed ^ 0x5EED_E90C);
    let mut epoch = 0u32;
    for _step in 0..rng.usize(20..80) {
        if rng.u8(0..3) == 0 {
            checkpoint = Some(log.recovery_point());
        }
        match rng.u8(0..10) {
            0 => {
                // Power loss, then restart.
                drop(log);
                fs.crash();
                log = open(&fs, &options, checkpoint, seed);
                checkpoint = Some(log.recovery_point());
                let present = read_everything(&log, seed);
                for (offset, bytes) in &durable {
                    match present.get(offset) {
                        Some(found) => assert_eq!(
                            found, bytes,
                            "seed {seed}: durable batch at {offset} changed"
                        ),
                        None => panic!("seed {seed}: durable batch at {offset} lost in a crash"),
                    }
                }
                assert_eq!(
                    log.leader_epochs(),
                    epochs_of(&present),
                    "seed {seed}: epoch history after a crash"
                );
                // Recovery syncs what it keeps: all of it is durable now.
                durable = present;
            }
            _ => {
                let mut pending = Vec::new();
                if leadership.u8(0..6) == 0 {
                    epoch += leadership.u32(1..3);
                }
                for _ in 0..rng.usize(1..8) {
                    tag += 1;
                    match block_on(log.append(
                        random_batch(&mut rng, tag),
                        AppendMode::Leader { epoch: LeaderEpoch(epoch) },
                        0,
                    )) {
                        Ok(info) => pending.push(info.base_offset),
                        Err(_) => break,
                    }
                }
                match block_on(log.flush()) {
                    Ok(()) => {
                        for base in pending {
                            let read = block_on(log.read(base, 1)).unwrap_or_else(|e| {
                                panic!("seed {seed}: acknowledged batch {base} not readable: {e}")
                            });
                            let chunk = read
                                .chunks
                                .first()
                                .unwrap_or_else(|| panic!("seed {seed}: batch {base} missing"));
                            let b = iter_batches(chunk)
                                .next()
                                .and_then(Result::ok)
                                .unwrap_or_else(|| panic!("seed {seed}: batch {base} invalid"));
                            assert_eq!(
                                b.header().base_offset,
                                base,
                                "seed {seed}: read returned another batch"
                            );
                            durable.insert(base, b.as_bytes().to_vec());
                        }
                    }
                    Err(_) => {
                        assert!(log.is_fenced(), "seed {seed}: a failed flush fences the log");
                        for _ in 0..100 {
                            if block_on(log.recover_after_error(0)).is_ok() {
                                break;
                            }
                        }
                        if log.is_fenced() {
                            fs.heal();
                            block_on(log.recover_after_error(0))
                                .expect("recovery on a healed disk");
                        }
                        let visible = read_everything(&log, seed);
                        for (offset, bytes) in &durable {
                            assert_eq!(
                                visible.get(offset),
                                Some(bytes),
                                "seed {seed}: durable batch {offset} lost after an I/O error"
                            );
                        }
                        assert_eq!(
                            log.leader_epochs(),
                            epochs_of(&visible),
                            "seed {seed}: epoch history after an I/O error"
                        );
                        durable = visible;
                    }
                }
            }
        }
    }
}

#[test]
fn acknowledged_batches_survive_crashes_and_io_errors() {
    if let Some(seed) = std::env::var("MAMBA_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        eprintln!("replaying seed {seed}");
        run(seed);
        return;
    }
    let seeds: u64 =
        std::env::var("MAMBA_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let base =
        std::env::var("MAMBA_SIM_BASE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xC0FFEE);
    for seed in base..base + seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        if result.is_err() {
            panic!("crash simulation failed; replay with MAMBA_SIM_SEED={seed}");
        }
    }
}
