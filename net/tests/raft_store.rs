//! The metadata quorum's durable Raft storage on a real engine.

use mamba_engine::{block_on, Engine, EngineConfig};
use mamba_net::cluster::raft_store::{RaftStore, RaftStoreError};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage};

fn open_engine(dir: &std::path::Path) -> Engine {
    Engine::open(
        dir,
        EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
    )
    .expect("engine opens")
}

fn open_store(engine: &Engine) -> RaftStore {
    block_on(RaftStore::open(engine.clone(), &[1, 2, 3])).expect("store opens")
}

fn entry(index: u64, term: u64, data: &str) -> Entry {
    Entry { index, term, data: data.as_bytes().to_vec().into(), ..Default::default() }
}

fn all_entries(store: &RaftStore) -> Vec<(u64, u64, String)> {
    let first = store.first_index().expect("first");
    let last = store.last_index().expect("last");
    store
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .expect("entries")
        .into_iter()
        .map(|e| (e.index, e.term, String::from_utf8_lossy(&e.data).into_owned()))
        .collect()
}

fn triples(list: &[(u64, u64, &str)]) -> Vec<(u64, u64, String)> {
    list.iter().map(|&(i, t, d)| (i, t, d.to_string())).collect()
}

#[test]
fn appended_entries_and_hard_state_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = open_engine(dir.path());
        let mut store = open_store(&engine);
        let initial = store.initial_state().expect("state");
        assert_eq!(initial.conf_state.voters, [1, 2, 3], "bootstrap voters");
        block_on(store.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 2, "c")]))
            .expect("append");
        store
            .set_hard_state(HardState { term: 2, vote: 3, commit: 2, ..Default::default() })
            .expect("hard state");
        engine.close().expect("close");
    }
    let engine = open_engine(dir.path());
    // The voters given at a later start do not replace the recorded ones.
    let store = block_on(RaftStore::open(engine.clone(), &[9])).expect("reopen");
    assert_eq!(all_entries(&store), triples(&[(1, 1, "a"), (2, 1, "b"), (3, 2, "c")]));
    let state = store.initial_state().expect("state");
    assert_eq!((state.hard_state.term, state.hard_state.vote, state.hard_state.commit), (2, 3, 2));
    assert_eq!(state.conf_state.voters, [1, 2, 3]);
    assert_eq!(store.term(3).expect("term"), 2);
    engine.close().expect("close");
}

#[test]
fn a_conflicting_suffix_is_replaced_and_stays_replaced_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = open_engine(dir.path());
        let mut store = open_store(&engine);
        block_on(store.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]))
            .expect("append");
        // A new leader of term 2 overwrites from index 2.
        block_on(store.append(&[entry(2, 2, "B"), entry(3, 2, "C"), entry(4, 2, "D")]))
            .expect("overwrite");
        let expected = triples(&[(1, 1, "a"), (2, 2, "B"), (3, 2, "C"), (4, 2, "D")]);
        assert_eq!(all_entries(&store), expected);
        engine.close().expect("close");
    }
    let engine = open_engine(dir.path());
    let store = open_store(&engine);
    assert_eq!(all_entries(&store), triples(&[(1, 1, "a"), (2, 2, "B"), (3, 2, "C"), (4, 2, "D")]));
    engine.close().expect("close");
}

#[test]
fn snapshot_then_restart_loads_snapshot_and_later_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = open_engine(dir.path());
        let mut store = open_store(&engine);
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1, &format!("e{i}"))).collect();
        block_on(store.append(&entries)).expect("append");
        store.set_commit(4).expect("commit");
        block_on(store.compact(3, b"state@3".to_vec())).expect("compact");
        block_on(store.append(&[entry(6, 1, "e6")])).expect("append after");
        engine.close().expect("close");
    }
    let engine = open_engine(dir.path());
    let store = open_store(&engine);
    assert_eq!(store.first_index().expect("first"), 4);
    assert_eq!(all_entries(&store), triples(&[(4, 1, "e4"), (5, 1, "e5"), (6, 1, "e6")]));
    let snapshot = store.snapshot(0, 2).expect("snapshot");
    assert_eq!((snapshot.get_metadata().index, snapshot.get_metadata().term), (3, 1));
    assert_eq!(&snapshot.data[..], b"state@3");
    assert_eq!(snapshot.get_metadata().get_conf_state().voters, [1, 2, 3]);
    assert!(store.entries(3, 4, None, GetEntriesContext::empty(false)).is_err(), "compacted");
    engine.close().expect("close");
}

#[test]
fn an_installed_snapshot_replaces_the_log_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = open_engine(dir.path());
        let mut store = open_store(&engine);
        block_on(store.append(&[entry(1, 1, "old"), entry(2, 1, "old")])).expect("append");
        let mut snapshot = Snapshot { data: b"leader state".to_vec().into(), ..Default::default() };
        let meta = snapshot.mut_metadata();
        meta.index = 50;
        meta.term = 4;
        meta.set_conf_state(ConfState { voters: vec![1, 2, 3], ..Default::default() });
        block_on(store.apply_snapshot(&snapshot)).expect("install");
        block_on(store.append(&[entry(51, 4, "next")])).expect("append after");
        engine.close().expect("close");
    }
    let engine = open_engine(dir.path());
    let store = open_store(&engine);
    assert_eq!(all_entries(&store), triples(&[(51, 4, "next")]));
    assert_eq!(store.snapshot_data(), b"leader state");
    assert_eq!(store.hard_state().commit, 50, "a snapshot is committed");
    engine.close().expect("close");
}

fn damage(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn damaged_hard_state_or_snapshot_file_is_an_error_not_a_panic() {
    for file in ["raft_hard_state", "raft_snapshot"] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let engine = open_engine(dir.path());
            let mut store = open_store(&engine);
            store
                .set_hard_state(HardState { term: 1, vote: 1, commit: 0, ..Default::default() })
                .expect("hard state");
            engine.close().expect("close");
        }
        damage(&dir.path().join("cluster").join(file));
        let engine = open_engine(dir.path());
        match block_on(RaftStore::open(engine.clone(), &[1])) {
            Err(RaftStoreError::ChecksumMismatch { path, .. }) => {
                assert!(path.ends_with(file), "the error names {file}: {}", path.display());
            }
            Err(other) => panic!("{file}: expected a checksum mismatch, got {other}"),
            Ok(_) => panic!("{file}: damage went unnoticed"),
        }
        engine.close().expect("close");
    }
}
