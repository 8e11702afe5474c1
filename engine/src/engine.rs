//! The embeddable engine: a cloneable, `Send + Sync` handle to the shards.
//!
//! Every call finds the shard that owns the partition (from the topic
//! catalog) and sends it a request over that shard's bounded inbox; the
//! reply comes back on a one-shot channel. The futures returned are plain
//! futures: await them on any runtime, or call [`block_on`] from a thread.

use crate::batch::Batch;
use crate::catalog::{self, Catalog, TopicMeta};
use crate::config::{validate_topic_name, EngineConfig, TopicConfig};
use crate::disk_space::DiskSpace;
use crate::error::{EngineError, EngineResult};
use crate::ids::{LeaderEpoch, Offset, PartitionId, ShardId};
use crate::leader_epochs::{EpochEnd, EpochEntry};
use crate::limits::SHARD_INBOX_CAPACITY;
use crate::metrics::EngineMetrics;
use crate::partition::{
    AppendInfo, AppendWait, LogOffsets, LogOptions, LogSummary, ReadLimit, ReadOutcome,
};
use crate::recovery_point::{PointKey, RecoveryPoint};
use crate::runtime::{self, ExecutorOptions};
use crate::segment::SegmentReport;
use crate::shard::{
    self, AppendOrigin, OpenSpec, PartitionCounts, PartitionKey, Reply, ShardRequest,
};
use futures::channel::oneshot;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use futures::executor::block_on;

/// What `Engine::open` found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub shards: usize,
    pub io_memory_per_shard_bytes: usize,
    pub partitions_opened: usize,
    /// Segments whose tail recovery cut or whose index it rebuilt.
    pub repaired_segments: Vec<SegmentReport>,
    /// Partitions that could not be opened and serve nothing until an
    /// operator repairs them (the rest of the engine serves on).
    pub offline_partitions: Vec<OfflinePartition>,
}

/// A partition `Engine::open` could not open, and why.
#[derive(Debug, Clone)]
pub struct OfflinePartition {
    pub topic: String,
    pub partition: PartitionId,
    pub error: EngineError,
}

/// A partition's name and what opening it gave.
type PartitionOpened = ((Arc<str>, PartitionId), EngineResult<Vec<SegmentReport>>);

/// Partitions opened at once at start: bounds the memory (read buffers,
/// registered I/O memory) recovery holds, however many partitions there are.
const OPENS_IN_FLIGHT_MAX: usize = 32;

/// How many hosted partitions each shard owns, over every topic of
/// `catalog` but `except`.
fn shard_load(catalog: &Catalog, shard_count: usize, except: Option<&str>) -> Vec<usize> {
    assert!(shard_count > 0, "an engine has at least one shard");
    let mut load = vec![0usize; shard_count];
    for meta in catalog.topics.values().filter(|meta| Some(meta.name.as_str()) != except) {
        for (_, s) in meta.hosted_partitions() {
            load[s.0 as usize] += 1;
        }
    }
    load
}

/// Shards for `count` new partitions: each goes to the shard owning the
/// fewest partitions so far (`load`, and the new ones placed before it),
/// the lowest shard id on a tie.
fn place_partitions(load: &mut [usize], count: usize) -> Vec<ShardId> {
    (0..count)
        .map(|_| {
            let (i, _) = load.iter().enumerate().min_by_key(|(i, n)| (**n, *i)).unwrap_or((0, &0));
            load[i] += 1;
            ShardId(i as u32)
        })
        .collect()
}

/// A handle to a running engine. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    config: EngineConfig,
    shards: Vec<async_channel::Sender<ShardRequest>>,
    metrics: Arc<EngineMetrics>,
    threads: Mutex<Vec<std::thread::JoinHandle<Result<(), String>>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// Serializes topic creation, alteration and deletion.
    admin: futures::lock::Mutex<()>,
    closed: AtomicBool,
    open_report: std::sync::OnceLock<OpenReport>,
    producer_ids: crate::producer_ids::ProducerIds,
    /// The data directory lock; released by `close`.
    lock: Mutex<Option<std::fs::File>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the inboxes makes every shard flush, sync and stop.
        for shard in &self.shards {
            shard.close();
        }
    }
}

fn data_dir_error(path: &Path, reason: impl std::fmt::Display) -> EngineError {
    EngineError::DataDir { path: path.display().to_string(), reason: reason.to_string() }
}

/// Takes an exclusive lock on the data directory so two engines (or an
/// engine and `mamba log recover`) never write the same files. Held until
/// the returned file is dropped.
pub fn lock_data_dir(dir: &Path) -> EngineResult<std::fs::File> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| data_dir_error(&path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(data_dir_error(dir, "in use by another Mamba process (its .lock is held)"));
    }
    Ok(file)
}

fn log_options(config: &TopicConfig, engine: &EngineConfig) -> LogOptions {
    LogOptions {
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        durability: config.durability,
        tail_cache_bytes: engine.tail_cache_bytes_per_shard,
    }
}

impl Engine {
    /// Opens (or creates) the data directory, starts the shards and
    /// recovers every partition.
    pub fn open(data_dir: impl AsRef<Path>, config: EngineConfig) -> EngineResult<Engine> {
        let given = data_dir.as_ref();
        std::fs::create_dir_all(catalog::topics_dir(given))
            .map_err(|e| data_dir_error(given, e))?;
        // Absolute from here on: glommio opens directories by absolute path
        // (a relative one fails with EBADF), and logs read better with it.
        let data_dir = std::fs::canonicalize(given).map_err(|e| data_dir_error(given, e))?;
        let lock = lock_data_dir(&data_dir)?;
        let shard_count = match config.shards {
            Some(0) => return Err(EngineError::InvalidConfig("shards must be at least 1".into())),
            Some(n) => n as usize,
            None => runtime::available_cores(),
        };
        let cores = runtime::available_cores();
        // Computed here, not on the shards: a pinned thread sees one core.
        let mut config = config;
        config.open_files_per_shard_max.get_or_insert_with(|| {
            let limit = runtime::open_file_limit().unwrap_or(1 << 20) as usize;
            (limit / 4 / shard_count).max(64)
        });
        let mut io_memory = runtime::io_memory_per_shard_bytes(shard_count);
        let metrics = Arc::new(EngineMetrics::new(shard_count));
        let mut shards = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count);
        for i in 0..shard_count {
            let (tx, rx) = async_channel::bounded(SHARD_INBOX_CAPACITY);
            // Degrade rather than fail: if the executor cannot start with
            // its share of locked memory, retry with the minimum.
            let mut attempt = 0;
            let thread = loop {
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                let options = ExecutorOptions {
                    name: format!("mamba-shard-{i}"),
                    core: config.pin_shards.then_some(i % cores),
                    io_memory_bytes: io_memory,
                };
                let (dir, cfg, rx) = (data_dir.clone(), config.clone(), rx.clone());
                let (id, metrics) = (ShardId(i as u32), metrics.clone());
                let thread = runtime::spawn_executor(options, move || {
                    shard::run(id, rx, dir, cfg, metrics, ready_tx)
                })
                .map_err(|e| data_dir_error(&data_dir, format!("cannot start shard {i}: {e}")))?;
                match ready_rx.recv() {
                    Ok(Ok(())) => break thread,
                    Ok(Err(e)) => return Err(data_dir_error(&data_dir, e)),
                    Err(_) => {
                        let why = match thread.join() {
                            Ok(Err(e)) => e,
                            Ok(Ok(())) => "stopped during startup".to_string(),
                            Err(_) => "panicked during startup".to_string(),
                        };
                        attempt += 1;
                        if attempt > 1 {
                            return Err(EngineError::InvalidConfig(format!(
                                "shard {i} failed to start: {why}"
                            )));
                        }
                        tracing::warn!(shard = i, io_memory, error = %why, "shard failed to start; retrying with less io memory");
                        io_memory = 64 << 10;
                    }
                }
            };
            shards.push(tx);
            threads.push(thread);
        }
        let mut report = OpenReport {
            shards: shard_count,
            io_memory_per_shard_bytes: io_memory,
            ..OpenReport::default()
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                data_dir: data_dir.clone(),
                config: config.clone(),
                shards,
                metrics,
                threads: Mutex::new(threads),
                catalog: RwLock::new(Arc::new(Catalog::default())),
                admin: futures::lock::Mutex::new(()),
                closed: AtomicBool::new(false),
                open_report: std::sync::OnceLock::new(),
                lock: Mutex::new(Some(lock)),
                producer_ids: crate::producer_ids::ProducerIds::new(&data_dir),
            }),
        };
        let mut loaded = catalog::load(&data_dir)?;
        for meta in loaded.topics.values_mut() {
            if meta.hosted_partitions().any(|(_, s)| s.0 as usize >= shard_count) {
                tracing::warn!(topic = %meta.name, shards = shard_count, "shard count changed; moving partitions of vanished shards");
                for s in meta.placement.iter_mut().flatten() {
                    *s = ShardId(s.0 % shard_count as u32);
                }
                catalog::store(&data_dir, meta)?;
            }
        }
        *engine.write_catalog() = Arc::new(loaded.clone());
        let points = crate::recovery_point::load_all(&data_dir)?;
        let opens = loaded.topics.values().flat_map(|meta| {
            let hosted: Vec<_> = meta.hosted_partitions().map(|(p, _)| p).collect();
            engine.open_partitions(meta, &hosted, &points)
        });
        let opened: Vec<_> = block_on(
            futures::stream::iter(opens).buffer_unordered(OPENS_IN_FLIGHT_MAX).collect::<Vec<_>>(),
        );
        for ((topic, partition), result) in opened {
            match result {
                Ok(segments) => {
                    report.partitions_opened += 1;
                    report.repaired_segments.extend(
                        segments.into_iter().filter(|s| s.torn.is_some() || s.index_rebuilt),
                    );
                }
                Err(error) => report.offline_partitions.push(OfflinePartition {
                    topic: topic.to_string(),
                    partition,
                    error,
                }),
            }
        }
        // Record where every partition starts before anything is appended,
        // then drop the files of shards that no longer exist.
        block_on(engine.checkpoint_all())?;
        crate::recovery_point::remove_beyond(&data_dir, shard_count)?;
        engine.inner.open_report.get_or_init(|| report);
        Ok(engine)
    }

    /// What happened at open: shards, memory, recovery.
    pub fn open_report(&self) -> &OpenReport {
        self.inner.open_report.get_or_init(OpenReport::default)
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// What the shards and partitions count, for monitoring; read it any
    /// time from any thread.
    pub fn metrics(&self) -> Arc<EngineMetrics> {
        self.inner.metrics.clone()
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    fn write_catalog(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Catalog>> {
        self.inner.catalog.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// One future per partition of `meta` in `partitions` (hosted ones,
    /// all) that opens it on its shard and resolves to its name and the
    /// outcome.
    fn open_partitions(
        &self,
        meta: &TopicMeta,
        partitions: &[PartitionId],
        points: &HashMap<PointKey, (RecoveryPoint, bool)>,
    ) -> Vec<impl Future<Output = PartitionOpened> + use<>> {
        let topic: Arc<str> = Arc::from(meta.name.as_str());
        partitions
            .iter()
            .map(|&partition| {
                let shard = meta.shard_of(partition).expect("only hosted partitions are opened");
                let point_key = PointKey {
                    topic: meta.name.clone(),
                    topic_created_ms: meta.created_ms,
                    partition,
                };
                let spec = OpenSpec {
                    key: PartitionKey { topic: topic.clone(), partition },
                    topic_created_ms: meta.created_ms,
                    dir: catalog::partition_dir(&self.inner.data_dir, &meta.name, partition),
                    options: log_options(&meta.config, &self.inner.config),
                    storage: meta.config.storage,
                    recovery_point: points.get(&point_key).copied(),
                };
                let engine = self.clone();
                let name = (topic.clone(), partition);
                async move {
                    (name, engine.call(shard, |reply| ShardRequest::Open { spec, reply }).await)
                }
            })
            .collect()
    }

    /// Makes every shard checkpoint its recovery points now.
    async fn checkpoint_all(&self) -> EngineResult<()> {
        for i in 0..self.shard_count() {
            self.call(ShardId(i as u32), |reply| ShardRequest::Checkpoint { reply }).await?;
        }
        Ok(())
    }

    /// Sends a request to `shard` and waits for its reply. A full inbox
    /// makes the caller wait (backpressure); see `try_append` for the
    /// variant that refuses instead.
    async fn call<T>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> EngineResult<T> {
        let response = self.submit(shard, make).await?;
        response.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Puts a request in the shard's inbox (waiting for room) and returns
    /// the future of its reply.
    async fn submit<T>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T>) -> ShardRequest,
    ) -> EngineResult<oneshot::Receiver<EngineResult<T>>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let (reply, response) = oneshot::channel();
        let inbox = &self.inner.shards[shard.0 as usize];
        inbox.send(make(reply)).await.map_err(|_| EngineError::ShuttingDown)?;
        Ok(response)
    }

    /// The shard owning a partition and its key: `UnknownTopic`,
    /// `UnknownPartition` (beyond the count) or `NotHosted` (another broker
    /// holds it) otherwise.
    fn route(&self, topic: &str, partition: PartitionId) -> EngineResult<(ShardId, PartitionKey)> {
        let catalog = self.catalog();
        let meta = catalog
            .topics
            .get(topic)
            .ok_or_else(|| EngineError::UnknownTopic(topic.to_string()))?;
        if partition.0 >= meta.config.partitions {
            return Err(EngineError::UnknownPartition { topic: topic.to_string(), partition });
        }
        let shard = meta
            .shard_of(partition)
            .ok_or_else(|| EngineError::NotHosted { topic: topic.to_string(), partition })?;
        Ok((shard, PartitionKey { topic: Arc::from(topic), partition }))
    }

    /// The error for a request whose partition left its shard while the
    /// request was on its way (un-hosted, or its topic deleted): what a
    /// request sent now would get (`NotHosted`, `UnknownTopic`), rather than
    /// the shard's `UnknownPartition` or a dropped reply's `ShuttingDown`.
    fn left_shard(&self, key: &PartitionKey, error: EngineError) -> EngineError {
        let gone =
            matches!(error, EngineError::UnknownPartition { .. } | EngineError::ShuttingDown);
        if !gone || self.inner.closed.load(Ordering::Acquire) {
            return error;
        }
        self.route(&key.topic, key.partition).err().unwrap_or(error)
    }

    /// Routes a request to the shard owning a partition and waits for its
    /// reply.
    async fn call_partition<T>(
        &self,
        topic: &str,
        partition: PartitionId,
        make: impl FnOnce(PartitionKey, Reply<T>) -> ShardRequest,
    ) -> EngineResult<T> {
        let (shard, key) = self.route(topic, partition)?;
        let routed = key.clone();
        self.call(shard, |reply| make(key, reply)).await.map_err(|e| self.left_shard(&routed, e))
    }

    /// Creates a topic; its partitions go to the least-loaded shards.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> EngineResult<TopicMeta> {
        validate_topic_name(name)?;
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let catalog = self.catalog();
        if catalog.topics.contains_key(name) {
            return Err(EngineError::TopicExists(name.to_string()));
        }
        let all = (0..config.partitions).map(PartitionId).collect();
        self.create_locked(&catalog, name, config, &all, None).await
    }

    /// Creates topic `name`, absent from `catalog`, hosting the partitions
    /// in `hosted` (all below the count) on the least-loaded shards. The
    /// caller holds the admin lock and validated `name` and `config`.
    async fn create_locked(
        &self,
        catalog: &Catalog,
        name: &str,
        config: TopicConfig,
        hosted: &BTreeSet<PartitionId>,
        topic_id: Option<&str>,
    ) -> EngineResult<TopicMeta> {
        let mut load = shard_load(catalog, self.shard_count(), None);
        let mut shards = place_partitions(&mut load, hosted.len()).into_iter();
        let placement = (0..config.partitions)
            .map(|p| if hosted.contains(&PartitionId(p)) { shards.next() } else { None })
            .collect();
        let meta = TopicMeta {
            name: name.to_string(),
            config,
            placement,
            created_ms: runtime::now_ms(),
            topic_id: topic_id.map(str::to_string),
        };
        // The partitions first, `topic.json` last: the topic exists once
        // that file does. A crash before it leaves a directory without it,
        // which the next open removes; a failure here removes it at once.
        let opened: Vec<_> = hosted.iter().copied().collect();
        let created = match self.open_new_partitions(&meta, &opened).await {
            Err(e) => Err(e),
            Ok(()) => catalog::store(&self.inner.data_dir, &meta),
        };
        if let Err(e) = created {
            self.remove_partitions(&meta, &opened).await;
            let dir = catalog::topic_dir(&self.inner.data_dir, &meta.name);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cleaning up a failed topic creation; the next start removes it");
                }
            }
            return Err(e);
        }
        // A checkpoint now records where the new partitions start (memory
        // logs take appends only once it is written).
        self.checkpoint_all().await?;
        let mut next = catalog.clone();
        next.topics.insert(name.to_string(), meta.clone());
        *self.write_catalog() = Arc::new(next);
        Ok(meta)
    }

    /// Creates a topic unless one of that name exists, for programs that
    /// run more than once. Returns the topic as it is and whether this call
    /// created it; an existing topic keeps its own settings, whatever
    /// `config` says (compare them where that matters).
    pub async fn create_topic_if_not_exists(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> EngineResult<(TopicMeta, bool)> {
        match self.create_topic(name, config).await {
            Ok(meta) => Ok((meta, true)),
            Err(EngineError::TopicExists(_)) => match self.catalog().topics.get(name) {
                Some(meta) => Ok((meta.clone(), false)),
                // Deleted again in between.
                None => Err(EngineError::UnknownTopic(name.to_string())),
            },
            Err(e) => Err(e),
        }
    }

    /// Opens `partitions` of a topic being created or grown, all at once;
    /// the first failure, if any.
    async fn open_new_partitions(
        &self,
        meta: &TopicMeta,
        partitions: &[PartitionId],
    ) -> EngineResult<()> {
        let opens = self.open_partitions(meta, partitions, &HashMap::new());
        let opened: Vec<_> =
            futures::stream::iter(opens).buffer_unordered(OPENS_IN_FLIGHT_MAX).collect().await;
        opened.into_iter().find_map(|(_, result)| result.err()).map_or(Ok(()), Err)
    }

    /// Undoes a creation or growth that failed: closes whichever of
    /// `partitions` opened and removes their directories. Best effort:
    /// `topic.json` does not list them, so the next open removes what
    /// remains.
    async fn remove_partitions(&self, meta: &TopicMeta, partitions: &[PartitionId]) {
        let topic: Arc<str> = Arc::from(meta.name.as_str());
        for &partition in partitions {
            let Some(shard) = meta.shard_of(partition) else { continue };
            let key = PartitionKey { topic: topic.clone(), partition };
            if let Err(e) = self.call(shard, |reply| ShardRequest::Delete { key, reply }).await {
                tracing::warn!(topic = %meta.name, %partition, error = %e, "cleaning up partitions that failed to open");
            }
            let dir = catalog::partition_dir(&self.inner.data_dir, &meta.name, partition);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cleaning up a partition that failed to open; the next start removes it");
                }
            }
        }
    }

    /// Grows a topic to `partition_count` partitions, placed on the least
    /// loaded shards as at creation, all hosted here (`sync_topic` grows a
    /// topic this broker hosts only some partitions of). Existing
    /// partitions and their records stay as they are; the key → partition
    /// mapping of producers changes
    /// for new records (as in Kafka), so a key's later records may land in
    /// another partition than its earlier ones. Partitions are never
    /// removed: a count not above the current one is
    /// `PartitionsNotIncreased`, and nothing changes.
    pub async fn increase_partitions_to(
        &self,
        name: &str,
        partition_count: u32,
    ) -> EngineResult<TopicMeta> {
        let _admin = self.inner.admin.lock().await;
        let catalog = self.catalog();
        let old =
            catalog.topics.get(name).ok_or_else(|| EngineError::UnknownTopic(name.to_string()))?;
        let current = old.config.partitions;
        if partition_count <= current {
            return Err(EngineError::PartitionsNotIncreased {
                topic: name.to_string(),
                partition_count: current,
                requested: partition_count,
            });
        }
        let mut meta = old.clone();
        meta.config.partitions = partition_count;
        meta.config.validate()?;
        let mut load = shard_load(&catalog, self.shard_count(), None);
        let new = place_partitions(&mut load, (partition_count - current) as usize);
        meta.placement.extend(new.into_iter().map(Some));
        // As at creation: the new partitions first, `topic.json` last. Until
        // it lists them nothing routes to them; a crash before leaves
        // directories the next open removes, a failure here removes them
        // at once.
        let added: Vec<_> = (current..partition_count).map(PartitionId).collect();
        let grown = match self.open_new_partitions(&meta, &added).await {
            Err(e) => Err(e),
            Ok(()) => catalog::store(&self.inner.data_dir, &meta),
        };
        if let Err(e) = grown {
            self.remove_partitions(&meta, &added).await;
            return Err(e);
        }
        // Grown on disk: route to the new partitions now, so what this
        // engine serves matches `topic.json` even if the checkpoint fails.
        let mut next = (*catalog).clone();
        next.topics.insert(name.to_string(), meta.clone());
        *self.write_catalog() = Arc::new(next);
        tracing::info!(
            topic = name,
            partitions_before = current,
            partitions = partition_count,
            "topic grown"
        );
        // Where the new partitions start (memory logs take appends only
        // once it is written; the periodic checkpoint retries a failure).
        self.checkpoint_all().await?;
        Ok(meta)
    }

    /// Changes a topic's retention, segment and durability settings (of
    /// the partitions hosted here; the others get them when hosted). The
    /// storage mode cannot change; the partition count grows only through
    /// `increase_partitions_to` (or `sync_topic`).
    pub async fn alter_topic(&self, name: &str, config: TopicConfig) -> EngineResult<TopicMeta> {
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        let catalog = self.catalog();
        let mut meta = catalog
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))?;
        if config.partitions != meta.config.partitions || config.storage != meta.config.storage {
            return Err(EngineError::InvalidConfig(
                "storage cannot be altered, and partitions only grow (increase_partitions_to)"
                    .into(),
            ));
        }
        meta.config = config;
        catalog::store(&self.inner.data_dir, &meta)?;
        let options = log_options(&meta.config, &self.inner.config);
        let topic: Arc<str> = Arc::from(name);
        for (partition, shard) in meta.hosted_partitions() {
            let key = PartitionKey { topic: topic.clone(), partition };
            let options = options.clone();
            self.call(shard, |reply| ShardRequest::Alter { key, options, reply }).await?;
        }
        let mut next = (*catalog).clone();
        next.topics.insert(name.to_string(), meta.clone());
        *self.write_catalog() = Arc::new(next);
        Ok(meta)
    }

    /// Makes the local topic `name` what the cluster says it is: `config`,
    /// with this broker hosting exactly the partitions in `hosted`. One
    /// idempotent call, for a broker applying metadata:
    ///
    /// - an absent topic is created, with only `hosted` opened, placed on
    ///   the least-loaded shards as by `create_topic`. With `hosted` empty
    ///   it is still created: `topic.json` then keeps the config, so the
    ///   topic is listed and later hostings use it;
    /// - the partition count grows to `config.partitions` (the partitions
    ///   added are hosted only if in `hosted`); it never shrinks
    ///   (`PartitionsNotIncreased`);
    /// - changed retention, segment and durability settings apply to the
    ///   hosted partitions as by `alter_topic`; the storage mode cannot
    ///   change (`InvalidConfig`);
    /// - partitions newly in `hosted` open empty (from offset 0), whatever
    ///   this broker held of them before;
    /// - partitions no longer in `hosted` are closed and their files
    ///   removed: requests to them get `NotHosted`.
    ///
    /// `topic_id` is the cluster's id of the topic. A local topic of that
    /// name with another id is a deleted topic's leftover: it is removed
    /// and the topic created anew. A local topic without an id (made
    /// before the cluster) takes this one.
    ///
    /// A partition in `hosted` at or beyond the count is `UnknownPartition`,
    /// and nothing changes. When the topic already matches, nothing is
    /// written or synced. Crash-safe as creation and growth: new partitions
    /// open (and their recovery points are written) before `topic.json`
    /// lists them; removed ones leave `topic.json` before their files go,
    /// and the next open removes the directory of any partition it does not
    /// list as hosted. An error once `topic.json` is written (a shard
    /// stopping, a file that cannot be removed) leaves the topic as asked,
    /// with the leftovers removed at the next open.
    pub async fn sync_topic(
        &self,
        name: &str,
        config: TopicConfig,
        hosted: &BTreeSet<PartitionId>,
        topic_id: Option<&str>,
    ) -> EngineResult<TopicMeta> {
        validate_topic_name(name)?;
        config.validate()?;
        if let Some(&partition) = hosted.iter().find(|p| p.0 >= config.partitions) {
            return Err(EngineError::UnknownPartition { topic: name.to_string(), partition });
        }
        let _admin = self.inner.admin.lock().await;
        let mut catalog = self.catalog();
        let stale = catalog.topics.get(name).and_then(|old| match (&old.topic_id, topic_id) {
            (Some(had), Some(given)) if had != given => Some(had.clone()),
            _ => None,
        });
        if let Some(had) = stale {
            tracing::info!(topic = name, old_id = %had, "this broker holds a deleted topic of the same name: removing it");
            self.delete_locked(&catalog, name).await?;
            catalog = self.catalog();
        }
        let Some(old) = catalog.topics.get(name) else {
            let meta = self.create_locked(&catalog, name, config, hosted, topic_id).await?;
            tracing::info!(
                topic = name,
                partitions = meta.config.partitions,
                hosted = hosted.len(),
                "topic created by sync"
            );
            return Ok(meta);
        };
        if config.storage != old.config.storage {
            return Err(EngineError::InvalidConfig(format!(
                "topic {name:?} has storage {}: storage cannot be altered",
                old.config.storage
            )));
        }
        if config.partitions < old.config.partitions {
            return Err(EngineError::PartitionsNotIncreased {
                topic: name.to_string(),
                partition_count: old.config.partitions,
                requested: config.partitions,
            });
        }
        let mut meta = old.clone();
        meta.config = config;
        meta.placement.resize(meta.config.partitions as usize, None);
        if let Some(id) = topic_id {
            meta.topic_id = Some(id.to_string());
        }
        let removed: Vec<PartitionId> =
            old.hosted_partitions().map(|(p, _)| p).filter(|p| !hosted.contains(p)).collect();
        for p in &removed {
            meta.placement[p.0 as usize] = None;
        }
        let added: Vec<PartitionId> =
            hosted.iter().copied().filter(|&p| !old.is_hosted(p)).collect();
        // Placed against the load as it will be: without the partitions
        // this call removes.
        let mut load = shard_load(&catalog, self.shard_count(), Some(name));
        for (_, s) in meta.hosted_partitions() {
            load[s.0 as usize] += 1;
        }
        for (p, shard) in added.iter().zip(place_partitions(&mut load, added.len())) {
            meta.placement[p.0 as usize] = Some(shard);
        }
        if meta == *old {
            return Ok(meta);
        }

        // New partitions open first, their recovery points written (over
        // any an earlier hosting of them left) and `topic.json` last.
        if !added.is_empty() {
            let opened = match self.clear_partition_dirs(name, &added) {
                Err(e) => Err(e),
                Ok(()) => self.open_new_partitions(&meta, &added).await,
            };
            let opened = match opened {
                Err(e) => Err(e),
                Ok(()) => self.checkpoint_all().await,
            };
            if let Err(e) = opened.and_then(|()| catalog::store(&self.inner.data_dir, &meta)) {
                self.remove_partitions(&meta, &added).await;
                return Err(e);
            }
        } else {
            catalog::store(&self.inner.data_dir, &meta)?;
        }
        let mut next = (*catalog).clone();
        next.topics.insert(name.to_string(), meta.clone());
        *self.write_catalog() = Arc::new(next);

        // From here on the topic is as asked; what fails is reported after
        // the rest is done.
        let mut first_error = None;
        let topic: Arc<str> = Arc::from(name);
        let resized = TopicConfig { partitions: old.config.partitions, ..meta.config.clone() };
        if resized != old.config {
            let options = log_options(&meta.config, &self.inner.config);
            for (partition, shard) in meta.hosted_partitions().filter(|(p, _)| old.is_hosted(*p)) {
                let key = PartitionKey { topic: topic.clone(), partition };
                let options = options.clone();
                match self.call(shard, |reply| ShardRequest::Alter { key, options, reply }).await {
                    // It takes the settings from `topic.json` once repaired.
                    Ok(()) | Err(EngineError::Offline(_)) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        for &partition in &removed {
            let shard = old.shard_of(partition).expect("removed partitions were hosted");
            let key = PartitionKey { topic: topic.clone(), partition };
            if let Err(e) = self.call(shard, |reply| ShardRequest::Delete { key, reply }).await {
                first_error.get_or_insert(e);
            }
            // The shard removes an open log's files; this also removes an
            // offline one's.
            if let Err(e) = self.clear_partition_dirs(name, &[partition]) {
                first_error.get_or_insert(e);
            }
        }
        if !removed.is_empty() {
            // Drops the removed partitions' recovery points.
            if let Err(e) = self.checkpoint_all().await {
                first_error.get_or_insert(e);
            }
        }
        tracing::info!(
            topic = name,
            partitions = meta.config.partitions,
            hosted = hosted.len(),
            opened = added.len(),
            removed = removed.len(),
            "topic synced"
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(meta),
        }
    }

    /// Removes the directories of `partitions` of topic `name`, if there.
    fn clear_partition_dirs(&self, name: &str, partitions: &[PartitionId]) -> EngineResult<()> {
        for &partition in partitions {
            let dir = catalog::partition_dir(&self.inner.data_dir, name, partition);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(data_dir_error(&dir, e)),
            }
        }
        Ok(())
    }

    /// Deletes a topic and all its data (its hosted partitions').
    pub async fn delete_topic(&self, name: &str) -> EngineResult<()> {
        let _admin = self.inner.admin.lock().await;
        let catalog = self.catalog();
        self.delete_locked(&catalog, name).await
    }

    /// `delete_topic`, with the admin lock held.
    async fn delete_locked(&self, catalog: &Catalog, name: &str) -> EngineResult<()> {
        let meta = catalog
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))?;
        // Metadata first: a crash part-way leaves data without metadata,
        // which the next open removes.
        catalog::remove(&self.inner.data_dir, name)?;
        let mut next = (*catalog).clone();
        next.topics.remove(name);
        *self.write_catalog() = Arc::new(next);
        let topic: Arc<str> = Arc::from(name);
        for (partition, shard) in meta.hosted_partitions() {
            let key = PartitionKey { topic: topic.clone(), partition };
            self.call(shard, |reply| ShardRequest::Delete { key, reply }).await?;
        }
        let dir = catalog::topic_dir(&self.inner.data_dir, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(data_dir_error(&dir, e)),
        }
    }

    pub fn list_topics(&self) -> Vec<TopicMeta> {
        self.catalog().topics.values().cloned().collect()
    }

    pub fn describe_topic(&self, name: &str) -> EngineResult<TopicMeta> {
        self.catalog()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string()))
    }

    /// Appends a batch; resolves once it is durable under the topic's
    /// policy, with the offsets it got.
    pub async fn append(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
    ) -> EngineResult<AppendInfo> {
        self.append_with(topic, partition, batch, AppendWait::Visible).await
    }

    /// Appends a batch and answers at the point `wait` names.
    pub async fn append_with(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
        wait: AppendWait,
    ) -> EngineResult<AppendInfo> {
        self.submit_append(topic, partition, batch, wait).await?.await
    }

    /// Hands a batch to its partition now and returns the future of its
    /// outcome. Batches submitted one after another (each submission
    /// awaited before the next) reach their partition in that order, even
    /// while earlier ones are still being written: how a connection keeps
    /// several produce requests in flight without reordering them.
    pub async fn submit_append(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
        wait: AppendWait,
    ) -> EngineResult<impl Future<Output = EngineResult<AppendInfo>> + use<>> {
        self.submit_append_from(topic, partition, batch, wait, AppendOrigin::Client).await
    }

    /// Appends a batch a follower fetched from its partition's leader, as
    /// stored there: it keeps its offsets and leader epoch. Resolves once
    /// it is durable here under the topic's policy (local durability; the
    /// leader learns of it from the follower's next fetch).
    ///
    /// The batch's bytes were verified when it was built from them
    /// (`Batch::from_bytes`/`from_aligned`: bounds, CRC, records archive);
    /// the partition checks what the CRC does not cover. It must start
    /// exactly at the log end (else `OffsetMismatch`) and its epoch may not
    /// be older than the log's latest (else `StaleLeaderEpoch`); a refused
    /// batch changes nothing. A new epoch is recorded in the leader epoch
    /// history before the batch enters the log, and an idempotent
    /// producer's batch is remembered as a leader append's is, so after a
    /// failover this replica, leading, still answers that producer's
    /// retries as duplicates.
    pub async fn append_replica(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
    ) -> EngineResult<AppendInfo> {
        self.submit_append_replica(topic, partition, batch, AppendWait::Visible).await?.await
    }

    /// `append_replica`, handed to the partition now: the batches of one
    /// fetch, submitted in order (each submission awaited before the next),
    /// are appended in that order while earlier ones are still written.
    pub async fn submit_append_replica(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
        wait: AppendWait,
    ) -> EngineResult<impl Future<Output = EngineResult<AppendInfo>> + use<>> {
        self.submit_append_from(topic, partition, batch, wait, AppendOrigin::Replication).await
    }

    async fn submit_append_from(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
        wait: AppendWait,
        origin: AppendOrigin,
    ) -> EngineResult<impl Future<Output = EngineResult<AppendInfo>> + use<>> {
        let (shard, key) = self.route(topic, partition)?;
        let routed = key.clone();
        let response = self
            .submit(shard, |reply| ShardRequest::Append { key, batch, wait, origin, reply })
            .await?;
        // Weak: a pending append does not keep the engine open.
        let inner = Arc::downgrade(&self.inner);
        Ok(async move {
            let answer = response.await.map_err(|_| EngineError::ShuttingDown);
            answer.and_then(|r| r).map_err(|e| match inner.upgrade() {
                Some(inner) => Engine { inner }.left_shard(&routed, e),
                None => e,
            })
        })
    }

    /// Like `append`, but fails with `Busy` at once when the owning shard's
    /// inbox is full instead of waiting for room.
    pub async fn try_append(
        &self,
        topic: &str,
        partition: PartitionId,
        batch: Batch,
    ) -> EngineResult<AppendInfo> {
        let (shard, key) = self.route(topic, partition)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let routed = key.clone();
        let (reply, response) = oneshot::channel();
        match self.inner.shards[shard.0 as usize].try_send(ShardRequest::Append {
            key,
            batch,
            wait: AppendWait::Visible,
            origin: AppendOrigin::Client,
            reply,
        }) {
            Ok(()) => {
                let answer = response.await.map_err(|_| EngineError::ShuttingDown);
                answer.and_then(|r| r).map_err(|e| self.left_shard(&routed, e))
            }
            Err(async_channel::TrySendError::Full(_)) => Err(EngineError::Busy),
            Err(async_channel::TrySendError::Closed(_)) => Err(EngineError::ShuttingDown),
        }
    }

    /// Reads stored batches from `offset` (at least one whole batch, up to
    /// about `max_bytes`), never past the high watermark.
    pub async fn read(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
    ) -> EngineResult<ReadOutcome> {
        self.read_with(topic, partition, offset, max_bytes, ReadLimit::HighWatermark).await
    }

    /// `read`, never past what `limit` names: `LocalHighWatermark` is how
    /// a leader serves its followers' fetches, past the replicated high
    /// watermark (see `partition.rs` on replicated partitions).
    pub async fn read_with(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        max_bytes: usize,
        limit: ReadLimit,
    ) -> EngineResult<ReadOutcome> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::Read {
            key,
            offset,
            max_bytes,
            limit,
            reply,
        })
        .await
    }

    /// The log start, high watermarks and end of a partition. Cheap (no
    /// I/O): what a follower reads to report its local high watermark.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> EngineResult<LogOffsets> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::Offsets { key, reply })
            .await
    }

    /// Deletes the closed segments of a partition that hold only records
    /// before `offset` (whole segments; the log start moves to the first
    /// segment kept). Returns how many segments went.
    pub async fn delete_segments_before(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
    ) -> EngineResult<usize> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::DeleteSegmentsBefore {
            key,
            offset,
            reply,
        })
        .await
    }

    /// Removes every batch of a partition at or after `offset` (a batch
    /// boundary), durably: for a log whose suffix was overwritten by a
    /// leader (a Raft follower's, a replica's). Queued behind the appends
    /// submitted before it.
    pub async fn truncate_partition(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
    ) -> EngineResult<()> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::TruncateTo {
            key,
            offset,
            start_over: false,
            reply,
        })
        .await
    }

    /// Empties a partition's log and starts it over at `start`, past its
    /// end, durably: for a replica whose log ends before its leader's log
    /// start (a new replica of a partition whose early records retention
    /// deleted). Queued behind the appends submitted before it.
    pub async fn reset_partition(
        &self,
        topic: &str,
        partition: PartitionId,
        start: Offset,
    ) -> EngineResult<()> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::TruncateTo {
            key,
            offset: start,
            start_over: true,
            reply,
        })
        .await
    }

    /// A partition's offsets, size in bytes and segment count; an offline
    /// partition answers why it is offline (`EngineError::Offline`).
    pub async fn describe_partition(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> EngineResult<LogSummary> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::Summary { key, reply })
            .await
    }

    /// How many partitions the shards serve and how many are offline.
    pub async fn partition_counts(&self) -> EngineResult<PartitionCounts> {
        let mut counts = PartitionCounts::default();
        for i in 0..self.shard_count() {
            let shard = ShardId(i as u32);
            counts =
                counts + self.call(shard, |reply| ShardRequest::CountPartitions { reply }).await?;
        }
        Ok(counts)
    }

    /// The size of the data directory's filesystem and the room left in it.
    pub fn disk_space(&self) -> EngineResult<DiskSpace> {
        crate::disk_space::of(&self.inner.data_dir)
            .map_err(|e| data_dir_error(&self.inner.data_dir, format!("statvfs: {e}")))
    }

    /// Resolves once readers can see data at `offset` (the high watermark
    /// passed it: local writes and syncs move it, and on a replicated
    /// partition `set_high_watermark`). Pair it with a timer for a long
    /// poll; dropping the future cancels the wait.
    pub async fn wait_for_data(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
    ) -> EngineResult<()> {
        self.wait_for_data_with(topic, partition, offset, ReadLimit::HighWatermark).await
    }

    /// `wait_for_data` for a read with `limit` (a leader's long poll for a
    /// follower's fetch waits with `LocalHighWatermark`).
    pub async fn wait_for_data_with(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
        limit: ReadLimit,
    ) -> EngineResult<()> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::WaitForData {
            key,
            offset,
            limit,
            reply,
        })
        .await
    }

    /// Makes this broker lead the partition at `epoch`: later producer
    /// appends are stamped with it, and the first of them records the
    /// epoch in the partition's leader epoch history. An epoch older than
    /// the partition's latest (set here or replicated in) is refused with
    /// `StaleLeaderEpoch`; the same one again changes nothing. The epoch
    /// is 0 until this is called, and after a restart the latest in the
    /// history.
    pub async fn set_leader_epoch(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
    ) -> EngineResult<()> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::SetLeaderEpoch {
            key,
            epoch,
            reply,
        })
        .await
    }

    /// Where `epoch` ends in the partition's log, as Kafka's
    /// OffsetForLeaderEpoch answers: the largest epoch at or below it that
    /// the log holds, ending at the start of the next larger epoch or, for
    /// the latest, at the log end offset; `Undefined` when the log holds no
    /// epoch at or below it.
    pub async fn end_offset_for_epoch(
        &self,
        topic: &str,
        partition: PartitionId,
        epoch: LeaderEpoch,
    ) -> EngineResult<EpochEnd> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::EndOffsetForEpoch {
            key,
            epoch,
            reply,
        })
        .await
    }

    /// The partition's leader epoch history: every epoch with batches in
    /// the log and the offset of its first batch, oldest first.
    pub async fn leader_epochs(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> EngineResult<Vec<EpochEntry>> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::LeaderEpochs {
            key,
            reply,
        })
        .await
    }

    /// Makes the partition replicated, with readers capped at `offset`:
    /// from now on reads, `wait_for_data`, `list_offsets` and
    /// `describe_partition` show `min(local high watermark, offset)` as the
    /// high watermark, and waiting readers wake. The replicated high
    /// watermark only grows (a lower `offset` changes nothing) but for a
    /// truncation below it; a leader change keeps it. Not persisted: set it
    /// again after a restart before serving readers. Returns the high
    /// watermark readers see now. See `partition.rs` on replicated
    /// partitions.
    pub async fn set_high_watermark(
        &self,
        topic: &str,
        partition: PartitionId,
        offset: Offset,
    ) -> EngineResult<Offset> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::SetHighWatermark {
            key,
            offset,
            reply,
        })
        .await
    }

    /// Readers see the local high watermark again, as on a partition never
    /// given a replicated one: for a leader whose in-sync set is itself
    /// alone. What readers see never goes back (the replicated high
    /// watermark is at most the local one); waiting readers wake.
    pub async fn clear_high_watermark(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> EngineResult<Offset> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::ClearHighWatermark {
            key,
            reply,
        })
        .await
    }

    /// The first offset with a timestamp at or after `timestamp_ms`.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> EngineResult<Option<(Offset, i64)>> {
        self.call_partition(topic, partition, |key, reply| ShardRequest::OffsetForTimestamp {
            key,
            timestamp_ms,
            reply,
        })
        .await
    }

    /// Runs `task` on `shard`, next to the partitions it owns (how the broker
    /// puts a listener on every core).
    pub async fn spawn_on_shard(&self, shard: ShardId, task: shard::ShardTask) -> EngineResult<()> {
        let inbox = self.inner.shards.get(shard.0 as usize).ok_or_else(|| {
            EngineError::InvalidConfig(format!(
                "no shard {shard}: the engine has {}",
                self.shard_count()
            ))
        })?;
        inbox.send(ShardRequest::Spawn { task }).await.map_err(|_| EngineError::ShuttingDown)
    }

    /// A producer id no other producer of this data directory ever had.
    pub fn allocate_producer_id(&self) -> EngineResult<u64> {
        self.inner.producer_ids.allocate()
    }

    /// Every producer id `allocate_producer_id` ever handed out in this
    /// data directory is below this.
    pub fn producer_ids_reserved_end(&self) -> EngineResult<u64> {
        self.inner.producer_ids.reserved_end()
    }

    /// The shard that owns a partition.
    pub fn shard_of(&self, topic: &str, partition: PartitionId) -> EngineResult<ShardId> {
        self.route(topic, partition).map(|(shard, _)| shard)
    }

    /// Flushes and syncs every partition and stops the shards. Later calls
    /// on any handle fail with `ShuttingDown`.
    pub async fn shutdown(&self) -> EngineResult<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut result = Ok(());
        for shard in &self.inner.shards {
            let (reply, response) = oneshot::channel();
            if shard.send(ShardRequest::Shutdown { reply }).await.is_ok() {
                if let Ok(Err(e)) = response.await {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// `shutdown`, then waits for the shard threads to end. Blocks: call it
    /// from a thread, not from inside an async task.
    pub fn close(&self) -> EngineResult<()> {
        let result = block_on(self.shutdown());
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "shard ended with an error"),
                Err(_) => tracing::error!("shard thread panicked"),
            }
        }
        // The files are closed: another engine may open the directory now.
        drop(self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        result
    }
}
