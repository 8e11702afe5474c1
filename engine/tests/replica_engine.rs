//! The engine API replication is built on, on real data directories
//! (O_DIRECT through io_uring): leader epochs, follower appends, the
//! replicated high watermark, and idempotence across a failover. Two
//! engines stand for two brokers.

use futures::FutureExt;
use mamba_engine::batch::iter_batches;
use mamba_engine::leader_epochs::LEADER_EPOCH_FILE;
use mamba_engine::{
    block_on, Batch, BatchBuilder, Engine, EngineConfig, EngineError, EpochEnd, EpochEntry,
    LeaderEpoch, NewRecord, Offset, PartitionId, ReadLimit, TopicConfig,
};
use std::path::Path;

const P0: PartitionId = PartitionId(0);

fn open(dir: &Path) -> Engine {
    let config = EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() };
    let engine = Engine::open(dir, config).expect("open");
    block_on(engine.create_topic_if_not_exists("t", TopicConfig::default())).expect("topic");
    engine
}

fn record(value: &str) -> NewRecord {
    NewRecord { key: None, value: value.as_bytes().to_vec(), headers: vec![], timestamp_ms: 0 }
}

fn batch(value: &str) -> Batch {
    let mut b = BatchBuilder::new();
    b.push(record(value));
    b.build().expect("batch")
}

fn epoch_entry(epoch: u32, start: u64) -> EpochEntry {
    EpochEntry { epoch: LeaderEpoch(epoch), start_offset: Offset(start) }
}

fn known(epoch: u32, end: u64) -> EpochEnd {
    EpochEnd::Known { epoch: LeaderEpoch(epoch), end_offset: Offset(end) }
}

fn append(engine: &Engine, values: &[&str]) {
    for v in values {
        block_on(engine.append("t", P0, batch(v))).expect("append");
    }
}

/// The stored batches from `from` a read with `limit` sees.
fn fetch(engine: &Engine, from: Offset, limit: ReadLimit) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let read = block_on(engine.read_with("t", P0, next, 1 << 20, limit)).expect("read");
        if read.chunks.is_empty() {
            return out;
        }
        for chunk in &read.chunks {
            for view in iter_batches(chunk) {
                let view = view.expect("valid");
                next = view.header().last_offset().plus(1);
                out.push(Batch::from_bytes(view.as_bytes()).expect("a stored batch is a batch"));
            }
        }
    }
}

/// What a follower does with a fetch answer: appends each batch as is.
fn replicate(from: &Engine, to: &Engine, start: Offset) {
    for b in fetch(from, start, ReadLimit::LocalHighWatermark) {
        block_on(to.append_replica("t", P0, b)).expect("replicate");
    }
}

/// (offset, leader epoch, value) of every record readers see.
fn records(engine: &Engine) -> Vec<(u64, u32, String)> {
    let mut out = Vec::new();
    for b in fetch(engine, Offset(0), ReadLimit::HighWatermark) {
        for r in b.view().iter() {
            let value = String::from_utf8_lossy(r.value()).into_owned();
            out.push((r.offset.0, b.header().leader_epoch.0, value));
        }
    }
    out
}

#[test]
fn a_replica_leads_then_follows_a_new_leader_and_its_epoch_history_survives_a_restart() {
    let (mine_dir, theirs_dir) =
        (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mine = open(mine_dir.path());
    let theirs = open(theirs_dir.path());

    // This broker leads at epoch 0 (as a single broker always did), and
    // the other one follows it.
    append(&mine, &["a", "b", "c"]);
    let epoch_file = mine_dir.path().join("topics/t/0").join(LEADER_EPOCH_FILE);
    assert!(!epoch_file.exists(), "leading at epoch 0 writes no epoch file");
    replicate(&mine, &theirs, Offset(0));

    // Leading at epoch 3, it appends what the other never gets.
    block_on(mine.set_leader_epoch("t", P0, LeaderEpoch(3))).expect("lead at 3");
    append(&mine, &["d", "e"]);
    assert_eq!(
        block_on(mine.leader_epochs("t", P0)).expect("epochs"),
        [epoch_entry(0, 0), epoch_entry(3, 3)]
    );
    assert!(epoch_file.exists());
    let summary = block_on(mine.describe_partition("t", P0)).expect("describe");
    assert_eq!(summary.leader_epoch, LeaderEpoch(3));

    // The other broker becomes the leader, at epoch 5.
    block_on(theirs.set_leader_epoch("t", P0, LeaderEpoch(5))).expect("lead at 5");
    append(&theirs, &["F", "G", "H"]);

    // This broker follows: it truncates where its last epoch ends at the
    // leader (and in its own log), then fetches.
    let last_epoch = LeaderEpoch(3);
    let at_leader = block_on(theirs.end_offset_for_epoch("t", P0, last_epoch)).expect("ask");
    assert_eq!(at_leader, known(0, 3), "epoch 3 is unknown there: epoch 0 ends at 3");
    let EpochEnd::Known { epoch, end_offset } = at_leader else { panic!("{at_leader:?}") };
    let own = block_on(mine.end_offset_for_epoch("t", P0, epoch)).expect("ask");
    let EpochEnd::Known { end_offset: own_end, .. } = own else { panic!("{own:?}") };
    block_on(mine.truncate_partition("t", P0, end_offset.min(own_end))).expect("truncate");
    assert_eq!(block_on(mine.leader_epochs("t", P0)).expect("epochs"), [epoch_entry(0, 0)]);
    replicate(&theirs, &mine, Offset(3));

    let expected_records = vec![
        (0, 0, "a".to_string()),
        (1, 0, "b".to_string()),
        (2, 0, "c".to_string()),
        (3, 5, "F".to_string()),
        (4, 5, "G".to_string()),
        (5, 5, "H".to_string()),
    ];
    assert_eq!(records(&mine), expected_records);
    assert_eq!(records(&theirs), expected_records, "the logs agree");
    let expected_epochs = [epoch_entry(0, 0), epoch_entry(5, 3)];
    let answers = |engine: &Engine| {
        [0, 3, 5, 8]
            .map(|e| block_on(engine.end_offset_for_epoch("t", P0, LeaderEpoch(e))).expect("ask"))
    };
    let expected_answers = [known(0, 3), known(0, 3), known(5, 6), known(5, 6)];
    assert_eq!(answers(&mine), expected_answers);

    mine.close().expect("close");
    let mine = open(mine_dir.path());
    assert_eq!(block_on(mine.leader_epochs("t", P0)).expect("epochs"), expected_epochs);
    assert_eq!(answers(&mine), expected_answers);
    assert_eq!(records(&mine), expected_records);
    // Leading again after the restart: appends continue epoch 5 until told
    // otherwise.
    let summary = block_on(mine.describe_partition("t", P0)).expect("describe");
    assert_eq!(summary.leader_epoch, LeaderEpoch(5));

    // An epoch older than every one the log holds is undefined.
    block_on(mine.increase_partitions_to("t", 2)).expect("grow");
    block_on(mine.set_leader_epoch("t", PartitionId(1), LeaderEpoch(2))).expect("lead at 2");
    block_on(mine.append("t", PartitionId(1), batch("x"))).expect("append");
    let below = block_on(mine.end_offset_for_epoch("t", PartitionId(1), LeaderEpoch(1)));
    assert_eq!(below.expect("ask"), EpochEnd::Undefined);
    mine.close().expect("close");
    theirs.close().expect("close");
}

#[test]
fn leader_appends_are_stamped_with_the_current_epoch_which_never_goes_back() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["at 0"]);
    block_on(engine.set_leader_epoch("t", P0, LeaderEpoch(4))).expect("lead at 4");
    append(&engine, &["at 4"]);
    let refused = block_on(engine.set_leader_epoch("t", P0, LeaderEpoch(2)));
    assert!(
        matches!(
            refused,
            Err(EngineError::StaleLeaderEpoch { epoch: LeaderEpoch(2), latest: LeaderEpoch(4) })
        ),
        "{refused:?}"
    );
    block_on(engine.set_leader_epoch("t", P0, LeaderEpoch(4))).expect("the same epoch again");

    // A newer leader's batch replicated in: leading at 4 is over.
    let mut theirs = batch("at 6");
    theirs.set_base_offset_and_epoch(Offset(2), LeaderEpoch(6));
    block_on(engine.append_replica("t", P0, theirs)).expect("replicate");
    let stale = block_on(engine.append("t", P0, batch("stale")));
    assert!(matches!(stale, Err(EngineError::StaleLeaderEpoch { .. })), "{stale:?}");
    block_on(engine.set_leader_epoch("t", P0, LeaderEpoch(7))).expect("lead at 7");
    append(&engine, &["at 7"]);
    let stamped: Vec<(u64, u32)> = records(&engine).iter().map(|(o, e, _)| (*o, *e)).collect();
    assert_eq!(stamped, [(0, 0), (1, 4), (2, 6), (3, 7)]);
    engine.close().expect("close");
}

#[test]
fn a_follower_append_at_the_wrong_offset_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["a", "b"]);
    let before = (
        block_on(engine.list_offsets("t", P0)).expect("offsets"),
        block_on(engine.leader_epochs("t", P0)).expect("epochs"),
    );
    for at in [0, 1, 3] {
        let mut misplaced = batch("misplaced");
        misplaced.set_base_offset_and_epoch(Offset(at), LeaderEpoch(9));
        let refused = block_on(engine.append_replica("t", P0, misplaced));
        assert!(
            matches!(refused, Err(EngineError::OffsetMismatch { expected: Offset(2), got })
                if got == Offset(at)),
            "{refused:?}"
        );
    }
    let after = (
        block_on(engine.list_offsets("t", P0)).expect("offsets"),
        block_on(engine.leader_epochs("t", P0)).expect("epochs"),
    );
    assert_eq!(after, before);
    let epoch_file = dir.path().join("topics/t/0").join(LEADER_EPOCH_FILE);
    assert!(!epoch_file.exists(), "epoch 9 was never recorded");
    // Bytes damaged on the way never become a batch at all.
    let mut bytes = batch("damaged").as_bytes().to_vec();
    bytes[70] ^= 0x01;
    assert!(matches!(
        Batch::from_bytes(&bytes),
        Err(mamba_engine::batch::BatchError::ChecksumMismatch { .. })
    ));
    engine.close().expect("close");
}

#[test]
fn readers_never_pass_the_replicated_high_watermark_and_wake_when_it_moves() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["0", "1", "2", "3", "4", "5"]);
    let hw = block_on(engine.set_high_watermark("t", P0, Offset(4))).expect("set");
    assert_eq!(hw, Offset(4));

    let offsets = block_on(engine.list_offsets("t", P0)).expect("offsets");
    assert_eq!(
        (offsets.high_watermark, offsets.local_high_watermark, offsets.next_offset),
        (Offset(4), Offset(6), Offset(6))
    );
    assert_eq!(offsets.replicated_high_watermark, Some(Offset(4)));
    let summary = block_on(engine.describe_partition("t", P0)).expect("describe");
    assert_eq!(summary.offsets, offsets);
    let seen: Vec<u64> = records(&engine).iter().map(|r| r.0).collect();
    assert_eq!(seen, [0, 1, 2, 3]);
    for at in [4, 5, 6] {
        let read = block_on(engine.read("t", P0, Offset(at), 1 << 20)).expect("no data yet");
        assert!(read.chunks.is_empty(), "offset {at} is past the high watermark");
        assert_eq!(read.high_watermark, Offset(4));
    }
    assert!(matches!(
        block_on(engine.read("t", P0, Offset(7), 1 << 20)),
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    // A follower's fetch reads past it, up to what this replica holds.
    let fetched: Vec<u64> = fetch(&engine, Offset(4), ReadLimit::LocalHighWatermark)
        .iter()
        .map(|b| b.header().base_offset.0)
        .collect();
    assert_eq!(fetched, [4, 5]);

    // It never goes back.
    assert_eq!(block_on(engine.set_high_watermark("t", P0, Offset(2))).expect("set"), Offset(4));

    // A waiting reader wakes when it moves. The wait is in the shard's
    // inbox before the list_offsets answered after it, so it is registered.
    let mut wait = Box::pin(engine.wait_for_data("t", P0, Offset(4)));
    assert!(wait.as_mut().now_or_never().is_none());
    block_on(engine.list_offsets("t", P0)).expect("offsets");
    assert!(wait.as_mut().now_or_never().is_none(), "nothing new is visible yet");
    assert_eq!(block_on(engine.set_high_watermark("t", P0, Offset(5))).expect("set"), Offset(5));
    // The shard woke the reader before it answered the call that moved the
    // high watermark: its answer is already here.
    let woken = wait.as_mut().now_or_never();
    assert!(matches!(woken, Some(Ok(()))), "woken by the high watermark: {woken:?}");

    // Appends complete on local durability; readers see them once the
    // replicated high watermark passes them.
    block_on(engine.set_high_watermark("t", P0, Offset(100))).expect("set");
    let offsets = block_on(engine.list_offsets("t", P0)).expect("offsets");
    assert_eq!(offsets.high_watermark, Offset(6), "capped by what this replica holds");
    let mut local_wait =
        Box::pin(engine.wait_for_data_with("t", P0, Offset(6), ReadLimit::LocalHighWatermark));
    assert!(local_wait.as_mut().now_or_never().is_none());
    append(&engine, &["6"]);
    block_on(local_wait).expect("woken by the append");
    assert_eq!(records(&engine).last().map(|r| r.0), Some(6));

    // A truncation takes the high watermark down with the log.
    block_on(engine.truncate_partition("t", P0, Offset(3))).expect("truncate");
    let offsets = block_on(engine.list_offsets("t", P0)).expect("offsets");
    assert_eq!(offsets.replicated_high_watermark, Some(Offset(3)));
    assert_eq!((offsets.high_watermark, offsets.next_offset), (Offset(3), Offset(3)));
    append(&engine, &["3 again"]);
    assert_eq!(
        block_on(engine.list_offsets("t", P0)).expect("offsets").high_watermark,
        Offset(3),
        "the new record is not committed until the replicas say so"
    );
    engine.close().expect("close");
}

fn idempotent_batch(value: &str, sequence: u32) -> Batch {
    let mut b = BatchBuilder::new().producer(7, 0, sequence);
    b.push(record(value));
    b.build().expect("batch")
}

#[test]
fn a_replicated_idempotent_batch_is_a_duplicate_when_retried_at_the_new_leader() {
    let (old_dir, new_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let old_leader = open(old_dir.path());
    let new_leader = open(new_dir.path());
    block_on(old_leader.set_leader_epoch("t", P0, LeaderEpoch(1))).expect("lead at 1");
    append(&old_leader, &["plain"]);
    let first = block_on(old_leader.append("t", P0, idempotent_batch("one", 0))).expect("append");
    let second = block_on(old_leader.append("t", P0, idempotent_batch("two", 1))).expect("append");
    replicate(&old_leader, &new_leader, Offset(0));

    // The old leader is gone before the producer heard of its second
    // batch; the producer retries it at the new leader, which must not
    // write it twice.
    old_leader.close().expect("close");
    block_on(new_leader.set_leader_epoch("t", P0, LeaderEpoch(2))).expect("lead at 2");
    let retried = block_on(new_leader.append("t", P0, idempotent_batch("two", 1))).expect("retry");
    assert_eq!(retried, second, "answered with the offsets the first write got");
    let retried_first =
        block_on(new_leader.append("t", P0, idempotent_batch("one", 0))).expect("retry");
    assert_eq!(retried_first, first);
    let gap = block_on(new_leader.append("t", P0, idempotent_batch("four", 3)));
    assert!(matches!(gap, Err(EngineError::OutOfOrderSequence { expected: 2, .. })), "{gap:?}");
    let third = block_on(new_leader.append("t", P0, idempotent_batch("three", 2))).expect("append");
    assert_eq!(third.base_offset, second.last_offset.plus(1));

    // And after a restart, from the batch headers.
    new_leader.close().expect("close");
    let new_leader = open(new_dir.path());
    let retried =
        block_on(new_leader.append("t", P0, idempotent_batch("three", 2))).expect("retry");
    assert_eq!(retried, third);
    let values: Vec<(u64, u32, String)> = records(&new_leader);
    assert_eq!(
        values,
        [
            (0, 1, "plain".to_string()),
            (1, 1, "one".to_string()),
            (2, 1, "two".to_string()),
            (3, 2, "three".to_string())
        ]
    );
    new_leader.close().expect("close");
}

/// Copies a data directory as it is on disk now: what a crash (of the
/// process, with every synced write in place) would leave.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_crash_after_a_truncation_below_the_recovery_point_keeps_what_was_written_after_it() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["a", "b", "c", "d", "e"]);
    engine.close().expect("close"); // the recovery point on disk: offset 5
    let engine = open(dir.path());
    // A follower cuts a diverging tail, then appends its leader's batches
    // (larger ones: they end where no old batch boundary was).
    block_on(engine.truncate_partition("t", P0, Offset(2))).expect("truncate");
    for (i, value) in ["the leader's first", "the leader's second, longer"].iter().enumerate() {
        let mut b = batch(value);
        b.set_base_offset_and_epoch(Offset(2 + i as u64), LeaderEpoch(1));
        block_on(engine.append_replica("t", P0, b)).expect("replicate");
    }
    let crashed = tempfile::tempdir().expect("dir");
    copy_dir(dir.path(), crashed.path());
    drop(engine);
    let engine = open(crashed.path());
    let summary = block_on(engine.describe_partition("t", P0)).expect("online, not damaged");
    assert_eq!(summary.offsets.next_offset, Offset(4));
    let values: Vec<String> = records(&engine).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values, ["a", "b", "the leader's first", "the leader's second, longer"]);
}

#[test]
fn appends_submitted_in_order_get_offsets_in_that_order_when_the_partition_queue_overflows() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    // Submitted from a task on the partition's own shard, as the metadata
    // log does: far more than the partition's queue holds, faster than its
    // writer syncs, so most wait for room while the next ones come.
    let (done, outcomes) = std::sync::mpsc::channel();
    let there = engine.clone();
    let task: mamba_engine::shard::ShardTask = Box::new(move || {
        Box::pin(async move {
            let mut submitted = Vec::new();
            for i in 0..3000 {
                let b = batch(&i.to_string());
                submitted.push(there.submit_append("t", P0, b, Default::default()).await);
            }
            let mut offsets = Vec::new();
            for s in submitted {
                offsets.push(s.expect("submit").await.expect("append").base_offset.0);
            }
            done.send(offsets).expect("the test waits");
        })
    });
    block_on(engine.spawn_on_shard(mamba_engine::ShardId(0), task)).expect("spawn");
    let offsets = outcomes.recv().expect("offsets");
    let expected: Vec<u64> = (0..3000).collect();
    assert!(offsets == expected, "appends overtook each other: {:?}", &offsets[..20]);
}

#[test]
fn a_replica_behind_its_leaders_log_start_starts_over_there_and_survives_a_crash() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["a", "b"]);
    engine.close().expect("close");
    let engine = open(dir.path());
    // Its leader's log starts at 100: it empties its own and goes on there.
    let refused = block_on(engine.reset_partition("t", P0, Offset(1)));
    assert!(
        matches!(refused, Err(EngineError::InvalidConfig(_))),
        "only past its end: {refused:?}"
    );
    block_on(engine.reset_partition("t", P0, Offset(100))).expect("start over");
    let offsets = block_on(engine.list_offsets("t", P0)).expect("offsets");
    assert_eq!((offsets.log_start_offset, offsets.next_offset), (Offset(100), Offset(100)));
    assert_eq!(block_on(engine.leader_epochs("t", P0)).expect("epochs"), vec![]);
    let mut b = batch("the leader's 100");
    b.set_base_offset_and_epoch(Offset(100), LeaderEpoch(3));
    block_on(engine.append_replica("t", P0, b)).expect("replicate at the new start");
    let crashed = tempfile::tempdir().expect("dir");
    copy_dir(dir.path(), crashed.path());
    drop(engine);
    let engine = open(crashed.path());
    let summary = block_on(engine.describe_partition("t", P0)).expect("online, not damaged");
    assert_eq!(summary.offsets.log_start_offset, Offset(100));
    assert_eq!(summary.offsets.next_offset, Offset(101));
    let read = fetch(&engine, Offset(100), ReadLimit::LocalHighWatermark);
    let values: Vec<(u64, u32)> =
        read.iter().map(|b| (b.header().base_offset.0, b.header().leader_epoch.0)).collect();
    assert_eq!(values, [(100, 3)]);
    assert_eq!(block_on(engine.leader_epochs("t", P0)).expect("epochs"), vec![epoch_entry(3, 100)]);
}

#[test]
fn an_append_a_truncation_cuts_off_is_answered_and_appends_after_the_cut_are_not_held_up() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = open(dir.path());
    append(&engine, &["a"]);
    // From the partition's own shard, back to back, as a leader that just
    // became a follower sees them: a client's batch of ten records (1..=10)
    // still waiting to be durable, then the cut of its diverging tail at 1,
    // then the new leader's batch at 1.
    let (answers, answered) = std::sync::mpsc::channel();
    let there = engine.clone();
    let task: mamba_engine::shard::ShardTask = Box::new(move || {
        Box::pin(async move {
            let mut ten = BatchBuilder::new();
            for i in 0..10 {
                ten.push(record(&format!("cut off {i}")));
            }
            let ten = ten.build().expect("batch");
            let submitted = there.submit_append("t", P0, ten, Default::default()).await;
            let cut = there.truncate_partition("t", P0, Offset(1)).await;
            let cut_off = match submitted {
                Ok(outcome) => outcome.await,
                Err(e) => Err(e),
            };
            drop(answers.send((cut.map(|()| Offset(1)), cut_off.map(|i| i.base_offset))));
            let mut leaders = batch("the leader's");
            leaders.set_base_offset_and_epoch(Offset(1), LeaderEpoch(1));
            let next = there.append_replica("t", P0, leaders).await;
            drop(answers.send((Ok(Offset(1)), next.map(|i| i.base_offset))));
        })
    });
    block_on(engine.spawn_on_shard(mamba_engine::ShardId(0), task)).expect("spawn");
    let wait = std::time::Duration::from_secs(10);
    let (cut, cut_off) = answered.recv_timeout(wait).expect("the cut-off append is answered");
    cut.expect("truncate");
    // Durable before the cut came (then cut), or still waiting (then
    // failed): either way it is answered, and its records are gone.
    match cut_off {
        Ok(offset) => assert_eq!(offset, Offset(1)),
        Err(e) => assert!(matches!(e, EngineError::Truncated { .. }), "{e}"),
    }
    let (_, next) = answered
        .recv_timeout(wait)
        .expect("the append after the cut is answered, not held up behind the cut-off one");
    assert_eq!(next.expect("replicate"), Offset(1));
    let values: Vec<String> = records(&engine).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values, ["a", "the leader's"]);
}
