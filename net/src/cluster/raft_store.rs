//! The metadata quorum's Raft log, hard state and snapshot, durable in our
//! own storage, mirrored in memory for `raft::Storage`.
//!
//! Layout (everything checksummed):
//! - **Entries** are records of the internal topic `__cluster_metadata`
//!   (one partition, disk, fsync, no retention), like Kafka's KRaft: one
//!   batch of one record per entry, so every entry starts a batch and a
//!   conflicting suffix can be cut at any entry (`Engine::truncate_partition`
//!   cuts at batch boundaries). The record's value is our own encoding —
//!   `version u8, entry_type u8, term u64, index u64, context_len u32,
//!   context, data` (little endian) — rather than raft's protobuf bytes, so
//!   the on-disk format does not change with the raft crate's codec; the
//!   batch CRC covers it. Raft index `i` lives at engine offset
//!   `log_offset_first + (i - snapshot_index - 1)`, with both numbers
//!   recorded in the snapshot file (0 and 0 before any snapshot).
//! - **Hard state** (`cluster/raft_hard_state`): `magic "MRHS", version
//!   u32, term u64, vote u64, commit u64, crc32c u32` of what precedes it,
//!   written to a temporary file, synced, renamed, directory synced.
//! - **Snapshot** (`cluster/raft_snapshot`): `magic "MRSN", version u32,
//!   index u64, term u64, log_offset_first u64, conf state (auto_leave u8,
//!   then voters, learners, voters_outgoing, learners_next as count u32 +
//!   ids u64), data_len u64, data, crc32c u32`, written the same way. A
//!   bootstrap writes one at index 0 holding the initial voters, so the
//!   configuration never depends on command-line flags after the first
//!   start.
//!
//! Lifecycle: `open` (load and cross-check), then the node driver calls
//! `append` / `set_hard_state` / `apply_snapshot` / `compact`, each durable
//! on return, in the order raft-rs requires. Owned by the task driving the
//! node (shard 0 of the broker); it holds an `Engine` handle, so it works
//! from any thread, but is used from one at a time (`&mut self`).
//!
//! **Invariant:** the mirror's entries are exactly the engine log from
//! `log_offset_first` on, contiguous in index, starting at
//! `snapshot_index + 1`; asserted after every change.
//!
//! The two small files use std I/O (rare control-path writes, like
//! `topic.json`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use mamba_engine::batch::iter_batches;
use mamba_engine::{
    BatchBuilder, Durability, Engine, EngineError, NewRecord, Offset, PartitionId, StorageMode,
    TopicConfig,
};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The internal topic holding the metadata log.
pub const METADATA_TOPIC: &str = "__cluster_metadata";
const METADATA_PARTITION: PartitionId = PartitionId(0);
const HARD_STATE_FILE: &str = "raft_hard_state";
const SNAPSHOT_FILE: &str = "raft_snapshot";
const HARD_STATE_MAGIC: &[u8; 4] = b"MRHS";
const SNAPSHOT_MAGIC: &[u8; 4] = b"MRSN";
const FILE_VERSION: u32 = 1;
const ENTRY_VERSION: u8 = 1;
const HARD_STATE_BYTES: usize = 4 + 4 + 8 * 3 + 4;
/// Bytes read from the log per request while loading it.
const LOAD_READ_BYTES_MAX: usize = 1 << 20;
/// Bound on one snapshot file: the metadata state is small, and a length
/// field past this is damage, not an allocation to attempt.
pub const SNAPSHOT_BYTES_MAX: u64 = 256 << 20;
const CONF_IDS_MAX: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("metadata log: {op}: {source}")]
    Engine {
        op: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: checksum mismatch (stored {expected:#010x}, computed {got:#010x})")]
    ChecksumMismatch { path: PathBuf, expected: u32, got: u32 },
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("metadata log at offset {offset}: {reason}")]
    BadEntry { offset: u64, reason: String },
}

pub type RaftStoreResult<T> = Result<T, RaftStoreError>;

fn engine_err(op: &'static str) -> impl FnOnce(EngineError) -> RaftStoreError {
    move |source| RaftStoreError::Engine { op, source }
}

/// Where the snapshot sits and where the log after it starts.
#[derive(Debug, Clone, Default, PartialEq)]
struct SnapshotPoint {
    index: u64,
    term: u64,
    conf_state: ConfState,
    /// Engine offset of entry `index + 1`.
    log_offset_first: u64,
}

/// The durable Raft state of this node and its in-memory mirror.
pub struct RaftStore {
    engine: Engine,
    dir: PathBuf,
    hard_state: HardState,
    snapshot: SnapshotPoint,
    snapshot_data: Vec<u8>,
    /// Configuration after the last applied conf change (starts at the
    /// snapshot's); durable through the snapshot plus the log replay.
    conf_state: ConfState,
    /// Entries `snapshot.index + 1 ..`, at offsets `log_offset_first ..`.
    entries: Vec<Entry>,
}

impl RaftStore {
    /// Opens the store in the engine's data directory, creating the log
    /// topic and, on the very first start, the bootstrap snapshot holding
    /// `voters_initial`. Later starts ignore `voters_initial`.
    pub async fn open(engine: Engine, voters_initial: &[u64]) -> RaftStoreResult<RaftStore> {
        let dir = engine.data_dir().join("cluster");
        fs::create_dir_all(&dir).map_err(|source| RaftStoreError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let config = TopicConfig {
            partitions: 1,
            storage: StorageMode::Disk,
            durability: Durability::Fsync,
            retention_ms: None,
            retention_bytes: None,
            ..TopicConfig::default()
        };
        engine
            .create_topic_if_not_exists(METADATA_TOPIC, config)
            .await
            .map_err(engine_err("create topic"))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (snapshot, snapshot_data) = match read_file(&snapshot_path)? {
            Some(bytes) => decode_snapshot(&snapshot_path, &bytes)?,
            None => {
                // No voters: a broker joining an existing cluster, which
                // learns the configuration from the leader's snapshot.
                let point = SnapshotPoint {
                    conf_state: ConfState { voters: voters_initial.to_vec(), ..Default::default() },
                    ..SnapshotPoint::default()
                };
                write_atomically(&snapshot_path, &encode_snapshot(&point, &[]))?;
                (point, Vec::new())
            }
        };
        let hard_state_path = dir.join(HARD_STATE_FILE);
        let hard_state = match read_file(&hard_state_path)? {
            Some(bytes) => decode_hard_state(&hard_state_path, &bytes)?,
            None => HardState::default(),
        };
        let mut store = RaftStore {
            engine,
            dir,
            hard_state,
            conf_state: snapshot.conf_state.clone(),
            snapshot,
            snapshot_data,
            entries: Vec::new(),
        };
        store.load_entries().await?;
        // A commit index is only ever written after the entries it covers
        // were durable, and the snapshot covers what was compacted.
        let last = store.last_index_now();
        if store.hard_state.commit > last {
            return Err(RaftStoreError::Corrupt {
                path: hard_state_path,
                reason: format!(
                    "commit index {} is past the last entry {last} of the log",
                    store.hard_state.commit
                ),
            });
        }
        store.hard_state.commit = store.hard_state.commit.max(store.snapshot.index);
        store.check();
        Ok(store)
    }

    async fn load_entries(&mut self) -> RaftStoreResult<()> {
        let offsets = self
            .engine
            .list_offsets(METADATA_TOPIC, METADATA_PARTITION)
            .await
            .map_err(engine_err("list offsets"))?;
        let first = self.snapshot.log_offset_first;
        if offsets.log_start_offset.0 > first {
            return Err(RaftStoreError::BadEntry {
                offset: first,
                reason: format!(
                    "the log starts at {} but the snapshot at index {} needs it from {first}",
                    offsets.log_start_offset.0, self.snapshot.index
                ),
            });
        }
        let mut next = first;
        while next < offsets.high_watermark.0 {
            let read = self
                .engine
                .read(METADATA_TOPIC, METADATA_PARTITION, Offset(next), LOAD_READ_BYTES_MAX)
                .await
                .map_err(engine_err("read"))?;
            if read.chunks.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                for batch in iter_batches(chunk) {
                    let batch = batch.map_err(|e| RaftStoreError::BadEntry {
                        offset: next,
                        reason: e.to_string(),
                    })?;
                    for record in batch.iter() {
                        if record.offset.0 < next {
                            continue;
                        }
                        let expected_index = self.snapshot.index + 1 + (record.offset.0 - first);
                        let entry = decode_entry(record.value()).map_err(|reason| {
                            RaftStoreError::BadEntry { offset: record.offset.0, reason }
                        })?;
                        if entry.index != expected_index {
                            return Err(RaftStoreError::BadEntry {
                                offset: record.offset.0,
                                reason: format!(
                                    "holds index {}, expected {expected_index}",
                                    entry.index
                                ),
                            });
                        }
                        self.entries.push(entry);
                        next = record.offset.0 + 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends `entries` (contiguous, starting at most one past the last
    /// index), first cutting any suffix they overwrite. Durable on return.
    pub async fn append(&mut self, entries: &[Entry]) -> RaftStoreResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(first.index > self.snapshot.index, "entries at or below the snapshot");
        assert!(first.index <= self.last_index_now() + 1, "a gap before the new entries");
        if first.index <= self.last_index_now() {
            let keep = (first.index - self.snapshot.index - 1) as usize;
            let cut = self.snapshot.log_offset_first + keep as u64;
            self.engine
                .truncate_partition(METADATA_TOPIC, METADATA_PARTITION, Offset(cut))
                .await
                .map_err(engine_err("truncate"))?;
            self.entries.truncate(keep);
        }
        // Submitted one after another, written and synced together.
        let mut pending = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.index, first.index + i as u64, "entries are contiguous");
            let mut builder = BatchBuilder::new();
            builder.push(NewRecord {
                key: None,
                value: encode_entry(entry),
                headers: Vec::new(),
                timestamp_ms: 0,
            });
            let batch = builder.build().map_err(|e| RaftStoreError::BadEntry {
                offset: 0,
                reason: format!("entry {} does not fit a batch: {e}", entry.index),
            })?;
            let submitted = self
                .engine
                .submit_append(METADATA_TOPIC, METADATA_PARTITION, batch, Default::default())
                .await
                .map_err(engine_err("append"))?;
            pending.push((entry.index, submitted));
        }
        for (index, submitted) in pending {
            let info = submitted.await.map_err(engine_err("append"))?;
            let expected = self.snapshot.log_offset_first + (index - self.snapshot.index - 1);
            assert_eq!(info.base_offset.0, expected, "entry {index} landed at the wrong offset");
        }
        self.entries.extend_from_slice(entries);
        self.check();
        Ok(())
    }

    /// Makes `hard_state` durable (before a vote or append is acknowledged).
    pub fn set_hard_state(&mut self, hard_state: HardState) -> RaftStoreResult<()> {
        assert!(hard_state.term >= self.hard_state.term, "the term never goes back");
        if hard_state == self.hard_state {
            return Ok(());
        }
        write_atomically(&self.dir.join(HARD_STATE_FILE), &encode_hard_state(&hard_state))?;
        self.hard_state = hard_state;
        Ok(())
    }

    /// Makes a new commit index durable (a LightReady's).
    pub fn set_commit(&mut self, commit: u64) -> RaftStoreResult<()> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(hard_state)
    }

    /// Records the configuration a conf change produced, for the next
    /// snapshot.
    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// Installs a snapshot received from the leader: it replaces the whole
    /// log. Durable on return.
    pub async fn apply_snapshot(&mut self, snapshot: &Snapshot) -> RaftStoreResult<()> {
        let meta = snapshot.get_metadata();
        assert!(meta.index >= self.snapshot.index, "an older snapshot than ours");
        // The new log starts at the engine's current end: whatever lies
        // before it is below the snapshot and ignored from now on.
        let offsets = self
            .engine
            .list_offsets(METADATA_TOPIC, METADATA_PARTITION)
            .await
            .map_err(engine_err("list offsets"))?;
        let point = SnapshotPoint {
            index: meta.index,
            term: meta.term,
            conf_state: meta.get_conf_state().clone(),
            log_offset_first: offsets.next_offset.0,
        };
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &encode_snapshot(&point, &snapshot.data))?;
        self.entries.clear();
        self.conf_state = point.conf_state.clone();
        self.snapshot = point;
        self.snapshot_data = snapshot.data.to_vec();
        if self.hard_state.commit < meta.index {
            self.set_commit(meta.index)?;
        }
        self.delete_log_prefix().await?;
        self.check();
        Ok(())
    }

    /// Takes a snapshot at `index` (applied here) holding the application's
    /// `data`, then drops the log before it. Durable on return.
    pub async fn compact(&mut self, index: u64, data: Vec<u8>) -> RaftStoreResult<()> {
        assert!(index > self.snapshot.index, "compacting to an older index");
        assert!(index <= self.hard_state.commit, "only committed entries are compacted");
        let term =
            self.entry_term(index).expect("a committed index past the snapshot is in the log");
        let dropped = (index - self.snapshot.index) as usize;
        let point = SnapshotPoint {
            index,
            term,
            conf_state: self.conf_state.clone(),
            log_offset_first: self.snapshot.log_offset_first + dropped as u64,
        };
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &encode_snapshot(&point, &data))?;
        self.entries.drain(..dropped);
        self.snapshot = point;
        self.snapshot_data = data;
        self.delete_log_prefix().await?;
        self.check();
        Ok(())
    }

    async fn delete_log_prefix(&mut self) -> RaftStoreResult<()> {
        self.engine
            .delete_segments_before(
                METADATA_TOPIC,
                METADATA_PARTITION,
                Offset(self.snapshot.log_offset_first),
            )
            .await
            .map_err(engine_err("delete segments"))?;
        Ok(())
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.index
    }

    /// The application state at the snapshot index.
    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot_data
    }

    pub fn last_index_now(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    fn entry_term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        let position = index.checked_sub(self.snapshot.index + 1)?;
        self.entries.get(position as usize).map(|e| e.term)
    }

    fn check(&self) {
        if let Some(first) = self.entries.first() {
            assert_eq!(first.index, self.snapshot.index + 1, "the log starts after the snapshot");
        }
        if let Some(last) = self.entries.last() {
            assert_eq!(last.index, self.last_index_now(), "the log is contiguous");
        }
    }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last_index_now() + 1, "entries asked past the last index");
        let from = (low - self.snapshot.index - 1) as usize;
        let to = (high - self.snapshot.index - 1) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry_term(index).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut snapshot =
            Snapshot { data: self.snapshot_data.clone().into(), ..Default::default() };
        let meta: &mut SnapshotMetadata = snapshot.mut_metadata();
        meta.index = self.snapshot.index;
        meta.term = self.snapshot.term;
        meta.set_conf_state(self.snapshot.conf_state.clone());
        Ok(snapshot)
    }
}

fn read_file(path: &Path) -> RaftStoreResult<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RaftStoreError::Io { op: "read", path: path.to_path_buf(), source }),
    }
}

/// Temporary file, sync, rename, directory sync: after a crash the file
/// is the old one or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> RaftStoreResult<()> {
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| RaftStoreError::Io { op, path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync directory", dir))
}

/// Splits off and checks the trailing CRC32C of a file.
fn checked_body<'a>(path: &Path, bytes: &'a [u8], magic: &[u8; 4]) -> RaftStoreResult<Reader<'a>> {
    let corrupt = |reason: &str| RaftStoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 12 {
        return Err(corrupt("shorter than its header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if got != expected {
        return Err(RaftStoreError::ChecksumMismatch { path: path.to_path_buf(), expected, got });
    }
    if &body[..4] != magic {
        return Err(corrupt("wrong magic"));
    }
    let mut reader = Reader { bytes: &body[4..] };
    let version = reader.u32().ok_or_else(|| corrupt("no version"))?;
    if version != FILE_VERSION {
        return Err(corrupt(&format!("unknown version {version}")));
    }
    Ok(reader)
}

fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HARD_STATE_BYTES);
    out.extend_from_slice(HARD_STATE_MAGIC);
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    for v in [hs.term, hs.vote, hs.commit] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    assert_eq!(out.len(), HARD_STATE_BYTES);
    out
}

fn decode_hard_state(path: &Path, bytes: &[u8]) -> RaftStoreResult<HardState> {
    let mut r = checked_body(path, bytes, HARD_STATE_MAGIC)?;
    let short =
        || RaftStoreError::Corrupt { path: path.to_path_buf(), reason: "truncated".to_string() };
    let term = r.u64().ok_or_else(short)?;
    let vote = r.u64().ok_or_else(short)?;
    let commit = r.u64().ok_or_else(short)?;
    Ok(HardState { term, vote, commit, ..Default::default() })
}

fn encode_snapshot(point: &SnapshotPoint, data: &[u8]) -> Vec<u8> {
    let cs = &point.conf_state;
    let mut out = Vec::with_capacity(64 + data.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FILE_VERSION.to_le_bytes());
    for v in [point.index, point.term, point.log_offset_first] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(cs.auto_leave));
    for ids in [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    out
}

fn decode_snapshot(path: &Path, bytes: &[u8]) -> RaftStoreResult<(SnapshotPoint, Vec<u8>)> {
    let corrupt =
        |reason: &str| RaftStoreError::Corrupt { path: path.to_path_buf(), reason: reason.into() };
    if bytes.len() as u64 > SNAPSHOT_BYTES_MAX + 4096 {
        return Err(corrupt("larger than a snapshot may be"));
    }
    let mut r = checked_body(path, bytes, SNAPSHOT_MAGIC)?;
    let short = || corrupt("truncated");
    let index = r.u64().ok_or_else(short)?;
    let term = r.u64().ok_or_else(short)?;
    let log_offset_first = r.u64().ok_or_else(short)?;
    let auto_leave = r.take(1).ok_or_else(short)?[0] != 0;
    let mut lists: [Vec<u64>; 4] = Default::default();
    for list in &mut lists {
        let count = r.u32().ok_or_else(short)?;
        if count > CONF_IDS_MAX {
            return Err(corrupt("too many ids in the configuration"));
        }
        for _ in 0..count {
            list.push(r.u64().ok_or_else(short)?);
        }
    }
    let data_len = r.u64().ok_or_else(short)?;
    if data_len != r.bytes.len() as u64 {
        return Err(corrupt("data length does not match the file"));
    }
    let [voters, learners, voters_outgoing, learners_next] = lists;
    let conf_state = ConfState {
        voters,
        learners,
        voters_outgoing,
        learners_next,
        auto_leave,
        ..Default::default()
    };
    Ok((SnapshotPoint { index, term, conf_state, log_offset_first }, r.bytes.to_vec()))
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + entry.context.len() + entry.data.len());
    out.push(ENTRY_VERSION);
    out.push(entry.get_entry_type() as u8);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&(entry.context.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry.context);
    out.extend_from_slice(&entry.data);
    out
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    let mut r = Reader { bytes };
    let short = || "truncated entry".to_string();
    let version = r.take(1).ok_or_else(short)?[0];
    if version != ENTRY_VERSION {
        return Err(format!("unknown entry version {version}"));
    }
    let entry_type = match r.take(1).ok_or_else(short)?[0] {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => return Err(format!("unknown entry type {other}")),
    };
    let term = r.u64().ok_or_else(short)?;
    let index = r.u64().ok_or_else(short)?;
    let context_len = r.u32().ok_or_else(short)?;
    let context = r.take(context_len as usize).ok_or_else(short)?.to_vec();
    let mut entry = Entry { term, index, ..Default::default() };
    entry.set_entry_type(entry_type);
    entry.context = context.into();
    entry.data = r.bytes.to_vec().into();
    Ok(entry)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_encoding_round_trips_every_field() {
        let mut entry = Entry { term: 7, index: 42, ..Default::default() };
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        entry.context = b"ctx".to_vec().into();
        entry.data = b"payload".to_vec().into();
        assert_eq!(decode_entry(&encode_entry(&entry)), Ok(entry));
    }

    #[test]
    fn truncated_or_unknown_entries_are_errors() {
        let entry =
            Entry { term: 1, index: 1, context: b"abc".to_vec().into(), ..Default::default() };
        let bytes = encode_entry(&entry);
        for len in 0..(2 + 8 + 8 + 4 + 3) {
            assert!(decode_entry(&bytes[..len]).is_err(), "a cut at {len} bytes");
        }
        let mut bad = bytes.clone();
        bad[1] = 9;
        assert!(decode_entry(&bad).is_err());
    }

    #[test]
    fn snapshot_file_round_trips_and_any_flipped_byte_is_caught() {
        let point = SnapshotPoint {
            index: 10,
            term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                ..Default::default()
            },
            log_offset_first: 17,
        };
        let bytes = encode_snapshot(&point, b"state");
        let path = Path::new("snap");
        let (decoded, data) = decode_snapshot(path, &bytes).expect("decodes");
        assert_eq!((decoded, data.as_slice()), (point, &b"state"[..]));
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            assert!(decode_snapshot(path, &flipped).is_err(), "flip at byte {i}");
        }
    }
}
