//! What the broker's network side counts for monitoring, per shard:
//! connections, and per API its requests, their latency and their errors
//! by code. The engine counts storage (`mamba_engine::metrics`); the HTTP
//! side turns both into `/metrics`.
//!
//! As in the engine, a shard's block has one writer (the shard's thread,
//! which reaches it through a thread-local installed by its accept loop)
//! and is read by scrapes without asking the shard anything.

use crate::protocol::{ApiKey, ErrorCode};
use mamba_engine::metrics::{LatencyHistogram, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One API's requests on one shard.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    pub requests_total: Value,
    /// From the whole request received to its answer ready to send.
    pub latency: LatencyHistogram,
}

/// One shard's connections and requests.
#[derive(Debug)]
pub struct ShardServerMetrics {
    pub connections_open: Value,
    pub connections_accepted_total: Value,
    /// Connections the broker closed: idle, stalled, or making room.
    pub connections_closed_by_broker_total: Value,
    /// Indexed by API key.
    apis: Vec<ApiMetrics>,
    /// Errors answered, by (API key, error code): one per request for a
    /// request-level error, one per partition for a partition's error in
    /// a produce or fetch answer. Errors are the rare path; the lock has
    /// one writer and is taken by a scrape only to copy the map.
    errors: Mutex<BTreeMap<(u16, u16), u64>>,
}

impl ShardServerMetrics {
    fn new() -> ShardServerMetrics {
        let slots = ApiKey::ALL.iter().map(|&api| api as usize + 1).max().unwrap_or(0);
        ShardServerMetrics {
            connections_open: Value::default(),
            connections_accepted_total: Value::default(),
            connections_closed_by_broker_total: Value::default(),
            apis: (0..slots).map(|_| ApiMetrics::default()).collect(),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn api(&self, api: ApiKey) -> &ApiMetrics {
        &self.apis[api as usize]
    }

    /// A request of `api` answered after `latency`, with `code` at its
    /// frame level. Requests of an API this build does not speak count as
    /// errors only.
    pub(crate) fn request(&self, api_key: u16, latency: Duration, code: u16) {
        if let Some(api) = ApiKey::from_u16(api_key) {
            let metrics = self.api(api);
            metrics.requests_total.add(1);
            metrics.latency.record(latency);
        }
        if code != ErrorCode::None.as_u16() {
            self.error(api_key, code);
        }
    }

    /// One error answered to a request of `api_key`.
    pub(crate) fn error(&self, api_key: u16, code: u16) {
        *self.lock_errors().entry((api_key, code)).or_default() += 1;
    }

    /// Errors answered so far: (API key, error code, count).
    pub fn errors(&self) -> Vec<(u16, u16, u64)> {
        self.lock_errors().iter().map(|(&(api, code), &n)| (api, code, n)).collect()
    }

    fn lock_errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u16, u16), u64>> {
        // A panic while holding it cannot leave the map half-changed.
        self.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The network side's blocks, one per shard.
#[derive(Debug)]
pub struct ServerMetrics {
    shards: Vec<Arc<ShardServerMetrics>>,
}

impl ServerMetrics {
    pub fn new(shard_count: usize) -> ServerMetrics {
        ServerMetrics {
            shards: (0..shard_count).map(|_| Arc::new(ShardServerMetrics::new())).collect(),
        }
    }

    pub fn shards(&self) -> &[Arc<ShardServerMetrics>] {
        &self.shards
    }
}

thread_local! {
    static SHARD: RefCell<Option<Arc<ShardServerMetrics>>> = const { RefCell::new(None) };
}

/// Makes `metrics` the block [`on_shard`] counts into on this thread.
pub(crate) fn install(metrics: Arc<ShardServerMetrics>) {
    SHARD.with(|shard| *shard.borrow_mut() = Some(metrics));
}

/// Runs `count` on this shard's block; does nothing off a shard.
pub(crate) fn on_shard(count: impl FnOnce(&ShardServerMetrics)) {
    SHARD.with(|shard| {
        if let Some(metrics) = shard.borrow().as_deref() {
            count(metrics);
        }
    });
}

/// Counts the partitions' errors of one produce or fetch answer.
pub(crate) fn partition_errors(api: ApiKey, codes: impl Iterator<Item = u16>) {
    on_shard(|m| {
        for code in codes.filter(|&code| code != ErrorCode::None.as_u16()) {
            m.error(api as u16, code);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_per_api_and_errors_per_api_and_code() {
        let metrics = ShardServerMetrics::new();
        let produce = ApiKey::Produce as u16;
        metrics.request(produce, Duration::from_micros(300), 0);
        metrics.request(produce, Duration::from_millis(2), ErrorCode::NotLeader.as_u16());
        metrics.error(produce, ErrorCode::NotLeader.as_u16());
        metrics.request(999, Duration::from_micros(10), ErrorCode::UnsupportedApi.as_u16());
        assert_eq!(metrics.api(ApiKey::Produce).requests_total.get(), 2);
        assert_eq!(metrics.api(ApiKey::Produce).latency.snapshot().count, 2);
        assert_eq!(metrics.api(ApiKey::Fetch).requests_total.get(), 0);
        assert_eq!(
            metrics.errors(),
            [
                (produce, ErrorCode::NotLeader.as_u16(), 2),
                (999, ErrorCode::UnsupportedApi.as_u16(), 1)
            ]
        );
    }
}
