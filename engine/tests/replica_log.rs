//! One partition log as a replica, on the in-memory storage: its leader
//! epoch history through leading, following, truncation, retention,
//! restarts and crashes, and the refusals that keep it consistent.

use futures::executor::block_on;
use mamba_engine::batch::{iter_batches, Batch, BatchBuilder, NewRecord};
use mamba_engine::config::Durability;
use mamba_engine::error::EngineError;
use mamba_engine::ids::{LeaderEpoch, Offset};
use mamba_engine::leader_epochs::{
    file_path, EpochEnd, EpochEntry, LeaderEpochHistory, LEADER_EPOCH_FILE,
};
use mamba_engine::memfs::MemFs;
use mamba_engine::partition::{AppendMode, LogOptions, PartitionLog, ReadLimit};
use mamba_engine::storage::{Storage, StorageRef};
use std::path::Path;
use std::rc::Rc;

const DIR: &str = "/data/topics/t/0";

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

fn leader(epoch: u32) -> AppendMode {
    AppendMode::Leader { epoch: LeaderEpoch(epoch) }
}

fn entry(epoch: u32, start: u64) -> EpochEntry {
    EpochEntry { epoch: LeaderEpoch(epoch), start_offset: Offset(start) }
}

fn known(epoch: u32, end: u64) -> EpochEnd {
    EpochEnd::Known { epoch: LeaderEpoch(epoch), end_offset: Offset(end) }
}

/// A batch of two records whose values name `tag`, padded by `pad_bytes`.
fn batch(tag: &str, pad_bytes: usize) -> Batch {
    let mut b = BatchBuilder::new();
    for i in 0..2 {
        b.push(NewRecord {
            key: None,
            value: format!("{tag}/{i}/{}", "x".repeat(pad_bytes)).into_bytes(),
            headers: vec![],
            timestamp_ms: 0,
        });
    }
    b.build().expect("batch")
}

fn open_at(fs: &MemFs, dir: &str) -> PartitionLog {
    let storage: StorageRef = Rc::new(fs.clone());
    block_on(PartitionLog::open(storage, Path::new(dir), options(), None, 0)).expect("open").0
}

fn append_all(log: &PartitionLog, mode: AppendMode, tags: &[&str]) {
    for tag in tags {
        block_on(log.append(batch(tag, 0), mode, 0)).expect("append");
    }
    block_on(log.flush()).expect("flush");
}

/// Every stored batch from `from` up to `limit`, as the bytes a fetch
/// carries.
fn fetch(log: &PartitionLog, from: Offset, limit: ReadLimit) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let read = block_on(log.read_with(next, 1 << 20, limit)).expect("read");
        if read.chunks.is_empty() {
            return out;
        }
        for chunk in &read.chunks {
            for view in iter_batches(chunk) {
                let view = view.expect("served batches are valid");
                next = view.header().last_offset().plus(1);
                out.push(Batch::from_bytes(view.as_bytes()).expect("a stored batch is a batch"));
            }
        }
    }
}

/// (first offset, epoch, first value) of every visible batch.
fn batches(log: &PartitionLog) -> Vec<(u64, u32, String)> {
    fetch(log, log.offsets().log_start_offset, ReadLimit::HighWatermark)
        .iter()
        .map(|b| {
            let first = b.view().iter().next().map(|r| r.value().to_vec()).unwrap_or_default();
            let tag = String::from_utf8_lossy(&first).split('/').next().unwrap_or("").to_string();
            (b.header().base_offset.0, b.header().leader_epoch.0, tag)
        })
        .collect()
}

fn stored_history(fs: &MemFs, dir: &str) -> Option<LeaderEpochHistory> {
    let bytes = fs.file_bytes(&file_path(Path::new(dir)))?;
    Some(LeaderEpochHistory::decode(&bytes).expect("the file is intact"))
}

#[test]
fn a_log_led_at_epochs_0_and_3_then_following_epoch_5_keeps_its_epoch_history() {
    let fs = MemFs::new();
    let mine = open_at(&fs, DIR);

    // Leading at epoch 0, as every broker's own partitions do: no file.
    append_all(&mine, leader(0), &["a", "b", "c"]);
    assert_eq!(mine.leader_epochs(), [entry(0, 0)]);
    assert_eq!(stored_history(&fs, DIR), None, "epoch 0 alone writes no file");

    // Leading at epoch 3: its entry is in the file with its first batch.
    append_all(&mine, leader(3), &["d", "e"]);
    assert_eq!(mine.leader_epochs(), [entry(0, 0), entry(3, 6)]);
    assert_eq!(stored_history(&fs, DIR).map(|h| h.entries().to_vec()), Some(mine.leader_epochs()));
    assert_eq!(mine.end_offset_for_epoch(LeaderEpoch(0)), known(0, 6));
    assert_eq!(mine.end_offset_for_epoch(LeaderEpoch(2)), known(0, 6), "a gap: the epoch below");
    assert_eq!(mine.end_offset_for_epoch(LeaderEpoch(3)), known(3, 10), "the latest: the log end");
    assert_eq!(mine.end_offset_for_epoch(LeaderEpoch(4)), known(3, 10));

    // Meanwhile another replica had only epoch 0's batches and became the
    // leader at epoch 5.
    let theirs = open_at(&fs, "/other/topics/t/0");
    for b in fetch(&mine, Offset(0), ReadLimit::LocalHighWatermark).into_iter().take(3) {
        block_on(theirs.append(b, AppendMode::Follower, 0)).expect("replicate");
    }
    append_all(&theirs, leader(5), &["F", "G", "H"]);
    assert_eq!(theirs.leader_epochs(), [entry(0, 0), entry(5, 6)]);

    // This replica follows now: where does its last epoch end there?
    let EpochEnd::Known { epoch, end_offset } = theirs.end_offset_for_epoch(LeaderEpoch(3)) else {
        panic!("the leader knows epoch 0");
    };
    assert_eq!((epoch, end_offset), (LeaderEpoch(0), Offset(6)));
    let EpochEnd::Known { end_offset: own_end, .. } = mine.end_offset_for_epoch(epoch) else {
        panic!("this replica knows epoch 0");
    };
    block_on(mine.truncate_to(end_offset.min(own_end), 0)).expect("truncate");
    assert_eq!(mine.leader_epochs(), [entry(0, 0)], "epoch 3 started at the cut");
    for b in fetch(&theirs, Offset(6), ReadLimit::LocalHighWatermark) {
        block_on(mine.append(b, AppendMode::Follower, 0)).expect("replicate");
    }
    block_on(mine.flush()).expect("flush");
    let expected_batches = vec![
        (0, 0, "a".to_string()),
        (2, 0, "b".to_string()),
        (4, 0, "c".to_string()),
        (6, 5, "F".to_string()),
        (8, 5, "G".to_string()),
        (10, 5, "H".to_string()),
    ];
    assert_eq!(batches(&mine), expected_batches, "the logs agree");
    let expected = [entry(0, 0), entry(5, 6)];
    assert_eq!(mine.leader_epochs(), expected);
    let answers =
        |log: &PartitionLog| [0, 3, 5, 9].map(|epoch| log.end_offset_for_epoch(LeaderEpoch(epoch)));
    let expected_answers = [known(0, 6), known(0, 6), known(5, 12), known(5, 12)];
    assert_eq!(answers(&mine), expected_answers);

    // A clean close and reopen.
    block_on(mine.close()).expect("close");
    drop(mine);
    let mine = open_at(&fs, DIR);
    assert_eq!(mine.leader_epochs(), expected);
    assert_eq!(answers(&mine), expected_answers);
    assert_eq!(mine.leader_epoch(), LeaderEpoch(5), "leader appends resume at the latest epoch");

    // A crash after epoch 7's entry was written but before its batch was:
    // the entry is past the log end at open, and cut.
    mine.set_leader_epoch(LeaderEpoch(7)).expect("lead at 7");
    block_on(mine.append(batch("lost", 0), leader(7), 0)).expect("append");
    assert_eq!(stored_history(&fs, DIR).and_then(|h| h.latest()), Some(entry(7, 12)));
    drop(mine);
    fs.crash();
    let mine = open_at(&fs, DIR);
    assert_eq!(mine.offsets().next_offset, Offset(12), "the unwritten batch is gone");
    assert_eq!(mine.leader_epochs(), expected);
    assert_eq!(answers(&mine), expected_answers);
    assert_eq!(mine.end_offset_for_epoch(LeaderEpoch(7)), known(5, 12));
    assert_eq!(
        stored_history(&fs, DIR).map(|h| h.entries().to_vec()),
        Some(expected.to_vec()),
        "open rewrote the file without the entry it cut"
    );

    // The log grows past where epoch 7 would have started, at epoch 5; a
    // second crash must not bring epoch 7 back.
    append_all(&mine, leader(5), &["i"]);
    drop(mine);
    fs.crash();
    let mine = open_at(&fs, DIR);
    assert_eq!(mine.leader_epochs(), expected);
    assert_eq!(batches(&mine).last(), Some(&(12, 5, "i".to_string())));
}

#[test]
fn refused_follower_appends_change_neither_the_log_nor_its_epoch_history() {
    let fs = MemFs::new();
    let log = open_at(&fs, DIR);
    append_all(&log, leader(0), &["a", "b"]);
    let before = (log.offsets(), log.leader_epochs());

    // A batch of a new epoch where the log does not end.
    let mut early = batch("early", 0);
    early.set_base_offset_and_epoch(Offset(2), LeaderEpoch(9));
    let refused = block_on(log.append(early, AppendMode::Follower, 0));
    assert!(
        matches!(refused, Err(EngineError::OffsetMismatch { expected: Offset(4), got: Offset(2) })),
        "{refused:?}"
    );
    assert_eq!((log.offsets(), log.leader_epochs()), before);
    assert_eq!(stored_history(&fs, DIR), None, "no entry was written for it");

    // Epochs only grow: a replicated batch older than the latest is stale,
    // and so is a leader append at an epoch older than a replicated one.
    let mut newer = batch("newer", 0);
    newer.set_base_offset_and_epoch(Offset(4), LeaderEpoch(4));
    block_on(log.append(newer, AppendMode::Follower, 0)).expect("a newer epoch");
    block_on(log.flush()).expect("flush");
    let before = (log.offsets(), log.leader_epochs(), stored_history(&fs, DIR));
    let mut older = batch("older", 0);
    older.set_base_offset_and_epoch(Offset(6), LeaderEpoch(3));
    let refused = block_on(log.append(older, AppendMode::Follower, 0));
    assert!(
        matches!(
            refused,
            Err(EngineError::StaleLeaderEpoch { epoch: LeaderEpoch(3), latest: LeaderEpoch(4) })
        ),
        "{refused:?}"
    );
    let refused = block_on(log.append(batch("stale leader", 0), leader(2), 0));
    assert!(matches!(refused, Err(EngineError::StaleLeaderEpoch { .. })), "{refused:?}");
    assert!(matches!(
        log.set_leader_epoch(LeaderEpoch(3)),
        Err(EngineError::StaleLeaderEpoch { epoch: LeaderEpoch(3), latest: LeaderEpoch(4) })
    ));
    assert_eq!((log.offsets(), log.leader_epochs(), stored_history(&fs, DIR)), before);
}

#[test]
fn a_damaged_or_missing_epoch_file_is_rebuilt_from_the_batch_headers() {
    let fs = MemFs::new();
    let log = open_at(&fs, DIR);
    append_all(&log, leader(0), &["a"]);
    append_all(&log, leader(2), &["b", "c"]);
    append_all(&log, leader(6), &["d"]);
    let expected = vec![entry(0, 0), entry(2, 2), entry(6, 6)];
    assert_eq!(log.leader_epochs(), expected);
    block_on(log.close()).expect("close");
    drop(log);
    let path = file_path(Path::new(DIR));

    // A flipped byte: the checksum fails, the headers tell the history.
    let mut bytes = fs.file_bytes(&path).expect("the file");
    bytes[25] ^= 0x04;
    fs.set_file_bytes(&path, bytes);
    let log = open_at(&fs, DIR);
    assert_eq!(log.leader_epochs(), expected);
    assert_eq!(stored_history(&fs, DIR).map(|h| h.entries().to_vec()), Some(expected.clone()));
    drop(log);

    // A deleted file would stand for epoch 0 alone: the last batches say
    // otherwise.
    block_on(fs.remove_file(&path)).expect("remove");
    let log = open_at(&fs, DIR);
    assert_eq!(log.leader_epochs(), expected);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(5)), known(2, 6));
    assert!(fs.list_files(Path::new(DIR)).expect("list").iter().any(|f| f == LEADER_EPOCH_FILE));
}

#[test]
fn retention_forgets_epochs_wholly_before_the_log_start() {
    let fs = MemFs::new();
    let log = open_at(&fs, DIR);
    // About 40 KiB a batch (two records): one batch per 64 KiB segment.
    let big = 20 * 1024;
    for (tag, epoch) in [("a", 1), ("b", 1), ("c", 3), ("d", 3), ("e", 4)] {
        block_on(log.append(batch(tag, big), leader(epoch), 0)).expect("append");
        block_on(log.flush()).expect("flush");
    }
    assert_eq!(log.leader_epochs(), [entry(1, 0), entry(3, 4), entry(4, 8)]);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), EpochEnd::Undefined);

    block_on(log.delete_segments_before(Offset(6))).expect("retention");
    assert_eq!(log.offsets().log_start_offset, Offset(6));
    assert_eq!(
        log.leader_epochs(),
        [entry(3, 4), entry(4, 8)],
        "epoch 3 holds the first batch left, so it stays"
    );
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), EpochEnd::Undefined);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(3)), known(3, 8));
    drop(log);
    let log = open_at(&fs, DIR);
    assert_eq!(log.leader_epochs(), [entry(3, 4), entry(4, 8)], "and so after a restart");
}

#[test]
fn a_follower_that_cuts_its_whole_log_takes_the_epochs_its_leader_sends() {
    let fs = MemFs::new();
    let log = open_at(&fs, DIR);
    append_all(&log, leader(6), &["mine", "also mine"]);
    block_on(log.truncate_to(Offset(0), 0)).expect("truncate");
    assert_eq!(log.leader_epochs(), [], "an empty log holds no epoch");
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(6)), EpochEnd::Undefined);
    let mut theirs = batch("theirs", 0);
    theirs.set_base_offset_and_epoch(Offset(0), LeaderEpoch(4));
    block_on(log.append(theirs, AppendMode::Follower, 0)).expect("an older epoch, from the start");
    block_on(log.flush()).expect("flush");
    assert_eq!(log.leader_epochs(), [entry(4, 0)]);
    drop(log);
    fs.crash();
    assert_eq!(open_at(&fs, DIR).leader_epochs(), [entry(4, 0)]);
}
