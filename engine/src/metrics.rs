//! What the engine counts for monitoring: per shard (busy time, queues, I/O
//! and its latency, the tail cache) and per partition (traffic, offsets,
//! size). The broker's `/metrics` reads it; the engine knows no exposition
//! format.
//!
//! Every value has one writer, the thread of its shard, and any number of
//! readers (a scrape), so they are Relaxed atomics: the data path pays an
//! uncontended store and never waits for a scrape, and a scrape never asks
//! a shard for anything. Code running on a shard reaches its shard's block
//! through a thread-local ([`on_shard`]), so storage code counts without
//! plumbing; off a shard (the offline log tools) counting does nothing.

use crate::ids::ShardId;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A counter or gauge with a single writer.
#[derive(Debug, Default)]
pub struct Value(AtomicU64);

impl Value {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds: 25 µs to 10 s, about
/// three per decade, enough to tell a page-cache write from a device flush
/// and a stall.
pub const LATENCY_BUCKETS_S: [f64; 18] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram on fixed buckets ([`LATENCY_BUCKETS_S`] and one past
/// the last), as Prometheus histograms are.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [Value; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: Value,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations in this bucket alone); the
    /// last bound is infinite.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_s: f64,
}

impl HistogramSnapshot {
    /// Adds `other`'s observations (taken on the same buckets).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.buckets.len(), other.buckets.len(), "the same buckets");
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.count += other.count;
        self.sum_s += other.sum_s;
    }
}

impl Default for HistogramSnapshot {
    /// No observations, on [`LATENCY_BUCKETS_S`].
    fn default() -> HistogramSnapshot {
        LatencyHistogram::default().snapshot()
    }
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let s = latency.as_secs_f64();
        let i = LATENCY_BUCKETS_S.partition_point(|&bound| bound < s);
        self.counts[i].add(1);
        self.sum_ns.add(latency.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = LATENCY_BUCKETS_S.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.counts.iter().map(Value::get)).collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_s: self.sum_ns.get() as f64 / 1e9,
        }
    }
}

/// One shard's counters and gauges.
#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: ShardId,
    /// Time the executor ran tasks or polled for I/O (not idle sleep).
    pub busy_ns_total: Value,
    /// Busy share of the last sampling period, in millionths.
    pub busy_ppm: Value,
    /// Requests waiting in the shard's inbox when it last took one.
    pub inbox_depth: Value,
    pub partitions_online: Value,
    pub partitions_offline: Value,
    /// Bytes handed to the device by O_DIRECT writes (whole blocks, so a
    /// partial last block rewritten counts again).
    pub bytes_written_total: Value,
    pub io_errors_total: Value,
    /// Reads served from the tail cache, and the bytes they returned.
    pub tail_cache_hits_total: Value,
    pub tail_cache_hit_bytes_total: Value,
    /// Reads that went to the disk.
    pub tail_cache_misses_total: Value,
    /// One positional write each.
    pub write_latency: LatencyHistogram,
    pub fdatasync_latency: LatencyHistogram,
}

impl ShardMetrics {
    pub fn new(shard: ShardId) -> ShardMetrics {
        ShardMetrics {
            shard,
            busy_ns_total: Value::default(),
            busy_ppm: Value::default(),
            inbox_depth: Value::default(),
            partitions_online: Value::default(),
            partitions_offline: Value::default(),
            bytes_written_total: Value::default(),
            io_errors_total: Value::default(),
            tail_cache_hits_total: Value::default(),
            tail_cache_hit_bytes_total: Value::default(),
            tail_cache_misses_total: Value::default(),
            write_latency: LatencyHistogram::default(),
            fdatasync_latency: LatencyHistogram::default(),
        }
    }
}

/// One hosted partition's counters and gauges.
#[derive(Debug)]
pub struct PartitionMetrics {
    pub topic: Arc<str>,
    pub partition: u32,
    pub shard: ShardId,
    /// Appended by producers and by replication.
    pub records_in_total: Value,
    pub bytes_in_total: Value,
    /// Read by consumers and by followers.
    pub records_out_total: Value,
    pub bytes_out_total: Value,
    pub log_start_offset: Value,
    pub log_end_offset: Value,
    pub high_watermark: Value,
    pub size_bytes: Value,
    pub segments: Value,
    /// Appends queued for the partition's writer or waiting for their
    /// write and sync, as of its last round.
    pub appends_in_flight: Value,
}

impl PartitionMetrics {
    pub fn new(topic: Arc<str>, partition: u32, shard: ShardId) -> PartitionMetrics {
        PartitionMetrics {
            topic,
            partition,
            shard,
            records_in_total: Value::default(),
            bytes_in_total: Value::default(),
            records_out_total: Value::default(),
            bytes_out_total: Value::default(),
            log_start_offset: Value::default(),
            log_end_offset: Value::default(),
            high_watermark: Value::default(),
            size_bytes: Value::default(),
            segments: Value::default(),
            appends_in_flight: Value::default(),
        }
    }
}

/// Hosted partitions' blocks by (topic, partition).
type PartitionsByName = BTreeMap<(Arc<str>, u32), Arc<PartitionMetrics>>;

/// Everything an engine counts: its shards' blocks, and a block per hosted
/// partition (registered when it opens, removed when it closes or goes).
#[derive(Debug)]
pub struct EngineMetrics {
    shards: Vec<Arc<ShardMetrics>>,
    /// By topic and partition. Locked only when a partition opens or goes
    /// and to copy the list out at a scrape, never per append or read.
    partitions: Mutex<PartitionsByName>,
}

impl EngineMetrics {
    pub fn new(shard_count: usize) -> EngineMetrics {
        EngineMetrics {
            shards: (0..shard_count)
                .map(|i| Arc::new(ShardMetrics::new(ShardId(i as u32))))
                .collect(),
            partitions: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn shards(&self) -> &[Arc<ShardMetrics>] {
        &self.shards
    }

    /// The hosted partitions' blocks, by topic and partition.
    pub fn partitions(&self) -> Vec<Arc<PartitionMetrics>> {
        self.lock_partitions().values().cloned().collect()
    }

    pub(crate) fn register(&self, metrics: Arc<PartitionMetrics>) {
        let key = (metrics.topic.clone(), metrics.partition);
        self.lock_partitions().insert(key, metrics);
    }

    pub(crate) fn unregister(&self, topic: &Arc<str>, partition: u32) {
        self.lock_partitions().remove(&(topic.clone(), partition));
    }

    fn lock_partitions(&self) -> std::sync::MutexGuard<'_, PartitionsByName> {
        // A panic while holding it cannot leave the map half-changed.
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

thread_local! {
    static SHARD: RefCell<Option<Arc<ShardMetrics>>> = const { RefCell::new(None) };
}

/// Makes `metrics` the block [`on_shard`] counts into on this thread (a
/// shard's, at its start).
pub(crate) fn install(metrics: Arc<ShardMetrics>) {
    SHARD.with(|shard| *shard.borrow_mut() = Some(metrics));
}

/// Runs `count` on this shard's block; does nothing off a shard.
pub(crate) fn on_shard(count: impl FnOnce(&ShardMetrics)) {
    SHARD.with(|shard| {
        if let Some(metrics) = shard.borrow().as_deref() {
            count(metrics);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_falls_in_the_first_bucket_whose_bound_is_not_below_it() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(25));
        h.record(Duration::from_micros(26));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (25e-6, 1));
        assert_eq!(s.buckets[1], (50e-6, 1));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(s.count, 3);
        assert!((s.sum_s - 60.000051).abs() < 1e-9, "{}", s.sum_s);
    }

    #[test]
    fn merged_snapshots_add_up_bucket_by_bucket() {
        let (a, b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(10));
        b.record(Duration::from_secs(1));
        let mut merged = HistogramSnapshot::default();
        merged.merge(&a.snapshot());
        merged.merge(&b.snapshot());
        assert_eq!(merged.count, 3);
        assert_eq!(merged.buckets[0], (25e-6, 2));
        assert_eq!(merged.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn partitions_are_listed_in_order_and_forgotten_when_unregistered() {
        let metrics = EngineMetrics::new(1);
        let topic: Arc<str> = Arc::from("t");
        for p in [2, 0, 1] {
            metrics.register(Arc::new(PartitionMetrics::new(topic.clone(), p, ShardId(0))));
        }
        let listed: Vec<u32> = metrics.partitions().iter().map(|m| m.partition).collect();
        assert_eq!(listed, [0, 1, 2]);
        metrics.unregister(&topic, 1);
        assert_eq!(metrics.partitions().len(), 2);
    }

    #[test]
    fn counting_off_a_shard_does_nothing() {
        let mut called = false;
        on_shard(|_| called = true);
        assert!(!called);
    }
}
