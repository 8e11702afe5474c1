//! Behaviour of one partition log on the in-memory storage: appends, reads
//! from memory and disk, rolls, recovery, retention, truncation.

use futures::executor::block_on;
use mamba_engine::batch::{iter_batches, Batch, BatchBuilder, NewRecord};
use mamba_engine::config::Durability;
use mamba_engine::error::EngineError;
use mamba_engine::ids::{LeaderEpoch, Offset};
use mamba_engine::memfs::MemFs;
use mamba_engine::partition::{AppendMode, LogOptions, PartitionLog};
use mamba_engine::segment::SegmentPaths;
use mamba_engine::storage::StorageRef;
use std::path::Path;
use std::rc::Rc;

const DIR: &str = "/data/topics/t/0";
const LEADER: AppendMode = AppendMode::Leader { epoch: LeaderEpoch(1) };

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 * 1024,
        segment_ms: 1_000_000,
        retention_ms: None,
        retention_bytes: None,
        durability: Durability::Fsync,
        tail_cache_bytes: 0,
    }
}

fn batch(tag: u64, records: usize, timestamp_ms: i64) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..records {
        b.push(NewRecord {
            key: Some(format!("key-{tag}-{i}").into_bytes()),
            value: format!("value-{tag}-{i}-{}", "x".repeat((tag as usize * 37) % 700))
                .into_bytes(),
            headers: vec![],
            timestamp_ms: timestamp_ms + i as i64,
        });
    }
    b.build().expect("batch")
}

fn open(fs: &MemFs, options: LogOptions) -> PartitionLog {
    let storage: StorageRef = Rc::new(fs.clone());
    block_on(PartitionLog::open(storage, Path::new(DIR), options, None, 0)).expect("open").0
}

/// Reads every visible record value from `from`, following the log.
fn read_all(log: &PartitionLog, from: Offset) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let read = block_on(log.read(next, 10_000)).expect("read");
        if read.chunks.is_empty() {
            assert_eq!(next, read.high_watermark, "an empty read happens only at the end");
            return out;
        }
        for chunk in &read.chunks {
            for b in iter_batches(chunk) {
                let b = b.expect("served batches are valid");
                for r in b.iter() {
                    if r.offset >= next {
                        out.push((r.offset, r.value().to_vec()));
                    }
                }
                next = b.header().last_offset().plus(1);
            }
        }
    }
}

#[test]
fn appends_are_read_back_across_segments_from_disk_and_memory() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    let mut expected = Vec::new();
    for tag in 0..200u64 {
        let b = batch(tag, 3, 1000);
        let info = block_on(log.append(b.clone(), LEADER, 0)).expect("append");
        assert_eq!(info.base_offset, Offset(tag * 3));
        for r in b.view().iter() {
            expected.push((info.base_offset.plus(r.offset.0), r.value().to_vec()));
        }
        if tag % 7 == 0 {
            block_on(log.flush()).expect("flush");
        }
    }
    // Nothing unflushed is visible.
    assert!(log.offsets().high_watermark < Offset(600));
    block_on(log.flush()).expect("flush");
    assert_eq!(log.offsets().high_watermark, Offset(600));
    assert!(log.segment_count() > 3, "64 KiB segments must have rolled");
    assert_eq!(read_all(&log, Offset(0)), expected);
    assert_eq!(read_all(&log, Offset(301)), expected[301..].to_vec());

    // The same bytes come back after a clean close and reopen.
    block_on(log.close()).expect("close");
    drop(log);
    let log = open(&fs, LogOptions { tail_cache_bytes: 1 << 20, ..options() });
    assert_eq!(log.offsets().next_offset, Offset(600));
    assert_eq!(read_all(&log, Offset(0)), expected);
}

#[test]
fn recovers_after_torn_tail() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..5 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.flush()).expect("flush");
    drop(log);
    // Tear the last batch: keep its first 40 bytes, zero nothing after.
    let path = SegmentPaths::new(Path::new(DIR), Offset(0)).log;
    let mut bytes = fs.file_bytes(&path).expect("segment");
    let last_start = {
        let mut position = 0usize;
        let mut starts = Vec::new();
        for b in iter_batches(&bytes[..]) {
            match b {
                Ok(b) => {
                    starts.push(position);
                    position += b.as_bytes().len();
                }
                Err(_) => break,
            }
        }
        starts[4]
    };
    for byte in &mut bytes[last_start + 40..last_start + 200] {
        *byte ^= 0x5a;
    }
    fs.set_file_bytes(&path, bytes);

    let storage: StorageRef = Rc::new(fs.clone());
    let (log, reports) =
        block_on(PartitionLog::open(storage, Path::new(DIR), options(), None, 0)).expect("open");
    assert_eq!(reports.len(), 1);
    assert!(reports[0].torn.is_some(), "the torn batch is reported");
    assert_eq!(reports[0].valid_end_bytes, last_start as u64);
    assert_eq!(log.offsets().next_offset, Offset(8));
    assert_eq!(read_all(&log, Offset(0)).len(), 8);
    // Appends continue right after the cut.
    let info = block_on(log.append(batch(9, 1, 0), LEADER, 0)).expect("append");
    assert_eq!(info.base_offset, Offset(8));
    block_on(log.flush()).expect("flush");
    assert_eq!(read_all(&log, Offset(0)).len(), 9);
}

#[test]
fn rebuilds_missing_index_files() {
    let fs = MemFs::new();
    let log = open(&fs, LogOptions { segment_bytes: 1 << 20, ..options() });
    for tag in 0..100 {
        block_on(log.append(batch(tag, 4, 0), LEADER, 0)).expect("append");
    }
    block_on(log.close()).expect("close");
    drop(log);
    let paths = SegmentPaths::new(Path::new(DIR), Offset(0));
    assert!(fs.file_bytes(&paths.index).is_some_and(|b| !b.is_empty()));
    fs.set_file_bytes(&paths.index, Vec::new());
    let storage: StorageRef = Rc::new(fs.clone());
    let (log, reports) =
        block_on(PartitionLog::open(storage, Path::new(DIR), options(), None, 0)).expect("open");
    assert!(reports[0].index_rebuilt);
    assert!(fs.file_bytes(&paths.index).is_some_and(|b| !b.is_empty()), "index rewritten");
    assert_eq!(read_all(&log, Offset(250)).len(), 150);
}

#[test]
fn retention_deletes_whole_closed_segments() {
    let fs = MemFs::new();
    let log = open(&fs, LogOptions { retention_bytes: Some(200 * 1024), ..options() });
    for tag in 0..600 {
        block_on(log.append(batch(tag, 2, 1_000 + tag as i64), LEADER, 0)).expect("append");
        block_on(log.flush()).expect("flush");
    }
    let before = log.size_bytes();
    let removed = block_on(log.apply_retention(10_000)).expect("retention");
    assert!(removed > 0);
    assert!(log.size_bytes() < before);
    assert!(log.size_bytes() >= 200 * 1024 - 64 * 1024);
    let start = log.offsets().log_start_offset;
    assert!(start > Offset(0));
    assert!(matches!(
        block_on(log.read(Offset(0), 100)),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start).first().map(|r| r.0), Some(start));

    // Time retention: everything but the active segment is older than 1 s.
    log.set_options(LogOptions { retention_ms: Some(1_000), ..options() });
    block_on(log.apply_retention(1_000_000)).expect("retention");
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn deleting_segments_before_an_offset_keeps_the_segment_that_holds_it() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..600 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
        block_on(log.flush()).expect("flush");
    }
    assert!(log.segment_count() > 3, "the appends roll several segments");
    let cut = Offset(700);
    let removed = block_on(log.delete_segments_before(cut)).expect("delete");
    assert!(removed > 0);
    let start = log.offsets().log_start_offset;
    assert!(
        start > Offset(0) && start <= cut,
        "log start {start:?} is a segment base at or before the cut"
    );
    // Everything from the cut on is still there, and a reopened log agrees.
    assert_eq!(read_all(&log, start).last().map(|r| r.0), Some(Offset(1199)));
    drop(log);
    let log = open(&fs, options());
    assert_eq!(log.offsets().log_start_offset, start);
    // Nothing at or after the active segment's base goes.
    let segments = log.segment_count();
    block_on(log.delete_segments_before(Offset(u64::MAX))).expect("delete");
    assert_eq!(log.segment_count(), 1);
    assert!(segments >= 1);
    assert_eq!(
        read_all(&log, log.offsets().log_start_offset).last().map(|r| r.0),
        Some(Offset(1199))
    );
}

#[test]
fn truncate_to_cuts_at_a_batch_boundary_durably() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..300 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.flush()).expect("flush");
    block_on(log.truncate_to(Offset(100), 0)).expect("truncate");
    assert_eq!(log.offsets().next_offset, Offset(100));
    assert_eq!(read_all(&log, Offset(0)).len(), 100);
    let info = block_on(log.append(batch(1, 2, 0), AppendMode::Follower, 0));
    assert!(
        matches!(info, Err(EngineError::OffsetMismatch { .. })),
        "follower batches must start at the end"
    );
    drop(log);
    let log = open(&fs, options());
    assert_eq!(log.offsets().next_offset, Offset(100), "the truncation survives a restart");
}

#[test]
fn finds_offsets_by_timestamp() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..300 {
        block_on(log.append(batch(tag, 2, 10_000 + 10 * tag as i64), LEADER, 0)).expect("append");
    }
    block_on(log.flush()).expect("flush");
    assert_eq!(block_on(log.offset_for_timestamp(0)).expect("lookup"), Some((Offset(0), 10_000)));
    assert_eq!(
        block_on(log.offset_for_timestamp(10_105)).expect("lookup"),
        Some((Offset(22), 10_110))
    );
    assert_eq!(
        block_on(log.offset_for_timestamp(10_001)).expect("lookup"),
        Some((Offset(1), 10_001))
    );
    assert_eq!(block_on(log.offset_for_timestamp(99_999)).expect("lookup"), None);
}

#[test]
fn damage_in_a_closed_segment_refuses_to_open() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..300 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.close()).expect("close");
    drop(log);
    let path = SegmentPaths::new(Path::new(DIR), Offset(0)).log;
    let mut bytes = fs.file_bytes(&path).expect("first segment");
    let n = bytes.len();
    // Damage after the last index entry, where open verifies.
    let last_batch_start = n - 8192;
    bytes[last_batch_start..].iter_mut().for_each(|b| *b = 0xff);
    fs.set_file_bytes(&path, bytes.clone());
    let files_before = all_files(&fs);
    for _attempt in 0..2 {
        let storage: StorageRef = Rc::new(fs.clone());
        match block_on(PartitionLog::open(storage, Path::new(DIR), options(), None, 0)) {
            Err(EngineError::Corrupt { path, offset, .. }) => {
                assert!(path.ends_with("00000000000000000000.log"));
                assert!(offset > Offset(0) && offset < Offset(600), "offset {offset}");
            }
            Err(e) => panic!("expected a corruption error, got {e}"),
            Ok(_) => panic!("expected a corruption error, got an open log"),
        }
        // A refused open changes no file, so the next one says the same.
        assert_eq!(all_files(&fs), files_before, "a refused open changed files");
    }
}

/// Every file of the log directory with its bytes.
fn all_files(fs: &MemFs) -> Vec<(String, Vec<u8>)> {
    use mamba_engine::storage::Storage;
    let names = fs.list_files(Path::new(DIR)).expect("list");
    names
        .into_iter()
        .map(|name| {
            let bytes = fs.file_bytes(&Path::new(DIR).join(&name)).expect("bytes");
            (name, bytes)
        })
        .collect()
}

#[test]
fn damage_below_the_recovery_point_is_corruption_and_a_torn_tail_past_it_is_cut() {
    let fs = MemFs::new();
    let log = open(&fs, options());
    for tag in 0..40 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.flush()).expect("flush");
    let point = log.recovery_point();
    assert_eq!(point.offset, Offset(80), "everything flushed under fsync is durable");
    for tag in 40..50 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.close()).expect("close");
    drop(log);
    let path = SegmentPaths::new(Path::new(DIR), Offset(0)).log;
    let clean = fs.file_bytes(&path).expect("segment");

    // Past the point: a torn tail, cut; offsets below the point all stay.
    let mut torn = clean.clone();
    let tail = point.position_bytes as usize + 100;
    torn[tail] ^= 0xff;
    fs.set_file_bytes(&path, torn);
    let storage: StorageRef = Rc::new(fs.clone());
    let (log, reports) =
        block_on(PartitionLog::open(storage, Path::new(DIR), options(), Some(point), 0))
            .expect("a torn tail past the recovery point is repaired");
    assert!(reports.last().is_some_and(|r| r.torn.is_some()));
    assert_eq!(log.offsets().next_offset, Offset(80));
    drop(log);

    // Below the point: corruption, and the file is left as it was.
    let mut damaged = clean.clone();
    damaged[point.position_bytes as usize - 100] ^= 0xff;
    fs.set_file_bytes(&path, damaged.clone());
    let index = SegmentPaths::new(Path::new(DIR), Offset(0)).index;
    fs.set_file_bytes(&index, Vec::new());
    let before = all_files(&fs);
    let storage: StorageRef = Rc::new(fs.clone());
    match block_on(PartitionLog::open(storage, Path::new(DIR), options(), Some(point), 0)) {
        Err(EngineError::Corrupt { reason, .. }) => {
            assert!(reason.contains("below the recovery point"), "{reason}")
        }
        Err(e) => panic!("expected a corruption error, got {e}"),
        Ok(_) => panic!("expected a corruption error, got an open log"),
    }
    assert_eq!(all_files(&fs), before, "a refused open changed files");
}

#[test]
fn reads_return_the_batches_before_damage_and_then_name_its_offset() {
    let fs = MemFs::new();
    let mut opts = options();
    opts.tail_cache_bytes = 0;
    let log = open(&fs, opts.clone());
    for tag in 0..30 {
        block_on(log.append(batch(tag, 2, 0), LEADER, 0)).expect("append");
    }
    block_on(log.close()).expect("close");
    let point = log.recovery_point();
    drop(log);
    let path = SegmentPaths::new(Path::new(DIR), Offset(0)).log;
    let mut bytes = fs.file_bytes(&path).expect("segment");
    // Find batch 10 (offsets 20..=21) and flip a byte in its records.
    let mut position = 0usize;
    for _ in 0..10 {
        position += mamba_engine::batch::peek_stored_bytes(&bytes[position..]).expect("batch");
    }
    bytes[position + 80] ^= 0x01;
    fs.set_file_bytes(&path, bytes);
    let storage: StorageRef = Rc::new(fs.clone());
    let (log, _) = block_on(PartitionLog::open(storage, Path::new(DIR), opts, Some(point), 0))
        .expect("damage below the last index entry is not seen at open");
    let read = block_on(log.read(Offset(0), 1 << 20)).expect("the good batches");
    let served: usize =
        read.chunks.iter().map(|c| mamba_engine::batch::iter_batches(c).count()).sum();
    assert_eq!(served, 10, "the ten batches before the damage");
    match block_on(log.read(Offset(20), 1 << 20)) {
        Err(EngineError::Corrupt { offset, position_bytes, .. }) => {
            assert_eq!((offset, position_bytes), (Offset(20), position as u64));
        }
        other => panic!("expected corrupt data at offset 20, got {other:?}"),
    }
    assert_eq!(log.corrupt_reads(), 1);
}
