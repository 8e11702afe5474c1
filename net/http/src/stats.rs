//! `/v1/stats`: the broker's traffic totals, per topic and overall, and
//! its produce and fetch latency histograms, as JSON: what the console's
//! live charts sample (rates and percentiles from two samples' growth).
//! Prometheus reads the same counters, in more detail, at `/metrics`.

use crate::server::AppState;
use axum::extract::State;
use axum::Json;
use mamba_engine::metrics::HistogramSnapshot;
use mamba_net::protocol::ApiKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One topic's replicas on this broker.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct TopicStats {
    pub name: String,
    /// Its partitions hosted here.
    pub partitions: u32,
    pub size_bytes: u64,
    pub records_in_total: u64,
    pub bytes_in_total: u64,
    pub records_out_total: u64,
    pub bytes_out_total: u64,
}

/// A latency histogram.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Latency {
    pub count: u64,
    pub sum_s: f64,
    /// `[upper bound in seconds, requests in this bucket alone]`, in
    /// order; the last bound is `null` (no bound).
    pub buckets: Vec<(Option<f64>, u64)>,
}

impl From<HistogramSnapshot> for Latency {
    fn from(s: HistogramSnapshot) -> Latency {
        let buckets = s.buckets.iter().map(|&(bound, n)| (bound.is_finite().then_some(bound), n));
        Latency { count: s.count, sum_s: s.sum_s, buckets: buckets.collect() }
    }
}

/// Request latency of the data path, over every shard.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DataPathLatency {
    pub produce: Latency,
    pub fetch: Latency,
}

/// The broker's totals at one moment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// When they were read, ms since the epoch.
    pub time_ms: i64,
    pub records_in_total: u64,
    pub bytes_in_total: u64,
    pub records_out_total: u64,
    pub bytes_out_total: u64,
    pub connections_open: u64,
    /// By name.
    pub topics: Vec<TopicStats>,
    pub latency: DataPathLatency,
}

/// This broker's traffic totals and data-path latency.
#[utoipa::path(get, path = "/v1/stats", tag = "health",
    responses((status = 200, description = "Totals since the broker started", body = Stats)))]
pub async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let telemetry = &state.telemetry;
    let mut topics: BTreeMap<&str, TopicStats> = BTreeMap::new();
    let partitions = telemetry.engine.partitions();
    for p in &partitions {
        let t = topics.entry(&p.topic).or_default();
        t.partitions += 1;
        t.size_bytes += p.size_bytes.get();
        t.records_in_total += p.records_in_total.get();
        t.bytes_in_total += p.bytes_in_total.get();
        t.records_out_total += p.records_out_total.get();
        t.bytes_out_total += p.bytes_out_total.get();
    }
    let topics: Vec<TopicStats> =
        topics.into_iter().map(|(name, t)| TopicStats { name: name.to_string(), ..t }).collect();
    let sum = |read: fn(&TopicStats) -> u64| topics.iter().map(read).sum::<u64>();
    let latency = |api: ApiKey| {
        let mut merged = HistogramSnapshot::default();
        for shard in telemetry.server.shards() {
            merged.merge(&shard.api(api).latency.snapshot());
        }
        Latency::from(merged)
    };
    Json(Stats {
        time_ms: mamba_engine::runtime::now_ms(),
        records_in_total: sum(|t| t.records_in_total),
        bytes_in_total: sum(|t| t.bytes_in_total),
        records_out_total: sum(|t| t.records_out_total),
        bytes_out_total: sum(|t| t.bytes_out_total),
        connections_open: telemetry.server.shards().iter().map(|s| s.connections_open.get()).sum(),
        latency: DataPathLatency {
            produce: latency(ApiKey::Produce),
            fetch: latency(ApiKey::Fetch),
        },
        topics,
    })
}
