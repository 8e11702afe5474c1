//! `/metrics`: what the broker counts, in the OpenMetrics text format
//! Prometheus scrapes, named by its conventions (`mamba_` prefix, base
//! units in the name, `_total` on counters).
//!
//! A scrape reads the counters the shards keep (engine and network side;
//! Relaxed atomics, so the data path never waits for it and is never
//! asked anything), the cluster metadata this broker has applied, and the
//! lag of the consumer groups this broker coordinates (asked of the broker
//! over its client port, as `mamba group describe` does; each group has one
//! coordinator, so a cluster reports each group once).
//!
//! Series per partition are the many (ten per hosted partition); they are
//! written straight from the partitions' counters with no per-scrape
//! registry, so a scrape costs one pass over the partitions.

use crate::server::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use mamba_engine::metrics::{EngineMetrics, HistogramSnapshot, PartitionMetrics};
use mamba_net::client::{Admin, ClientError, PartitionLag};
use mamba_net::cluster::ClusterHandle;
use mamba_net::protocol::{ApiKey, ErrorCode};
use mamba_net::server::metrics::ServerMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelValue, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a scrape reads the broker's counters.
#[derive(Clone)]
pub struct Telemetry {
    pub engine: Arc<EngineMetrics>,
    pub server: Arc<ServerMetrics>,
    /// `None` for a broker on its own.
    pub cluster: Option<Arc<ClusterHandle>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("shards", &self.engine.shards().len())
            .field("clustered", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus scrapes this.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "The broker's metrics, OpenMetrics text format",
        content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let groups = match group_lags(&state.admin).await {
        Ok(groups) => Some(groups),
        Err(e) => {
            tracing::debug!(error = %e, "/metrics without group lag");
            None
        }
    };
    let scrape = Scrape { telemetry: state.telemetry.clone(), groups };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], scrape.encode())
}

/// The lag of every partition of every group this broker coordinates.
type GroupLags = Vec<(String, BTreeMap<(String, u32), PartitionLag>, usize)>;

async fn group_lags(admin: &Admin) -> Result<GroupLags, ClientError> {
    let ids: Vec<String> =
        admin.list_groups_coordinated_here().await?.into_iter().map(|g| g.group_id).collect();
    let mut lags = Vec::with_capacity(ids.len());
    for group in admin.describe_groups(&ids).await? {
        if group.error_code != ErrorCode::None.as_u16() {
            continue; // Gone since it was listed, or moved.
        }
        let members = group.members.len();
        lags.push((group.group_id.clone(), admin.group_lags(&group).await?, members));
    }
    Ok(lags)
}

/// One scrape's sources, read as they are encoded.
#[derive(Debug)]
struct Scrape {
    telemetry: Telemetry,
    /// `None` when they could not be asked (logged).
    groups: Option<GroupLags>,
}

impl Scrape {
    fn encode(self) -> String {
        let partitions = self.telemetry.engine.partitions().len();
        // About a kilobyte per partition, and the rest.
        let mut text = String::with_capacity(64 * 1024 + partitions * 1024);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            // Writing into a String fails only if an encoder does.
            tracing::error!(error = %e, "encoding /metrics");
        }
        text
    }
}

type Labels<'a> = Vec<(&'static str, LabelValue<'a>)>;

/// A label's value: text or a number, written without a copy.
#[derive(Debug, Clone, Copy)]
enum LabelValue<'a> {
    Text(&'a str),
    Number(u64),
}

impl EncodeLabelValue for LabelValue<'_> {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        match self {
            LabelValue::Text(text) => EncodeLabelValue::encode(text, encoder),
            LabelValue::Number(n) => EncodeLabelValue::encode(n, encoder),
        }
    }
}

/// Writes one metric family: its description, then a series per label
/// set.
struct Family<'e, 'w> {
    encoder: &'e mut DescriptorEncoder<'w>,
}

impl Family<'_, '_> {
    /// The description, then each series' value written by `value`.
    fn write<'a, V>(
        &mut self,
        (name, help, unit, kind): (&str, &str, Option<Unit>, MetricType),
        series: impl IntoIterator<Item = (Labels<'a>, V)>,
        value: impl Fn(&mut MetricEncoder<'_>, &V) -> std::fmt::Result,
    ) -> std::fmt::Result {
        let unit = unit.as_ref();
        let mut family = self.encoder.encode_descriptor(name, help, unit, kind)?;
        for (labels, v) in series {
            if labels.is_empty() {
                value(&mut family, &v)?; // `name 1`, not `name{} 1`
            } else {
                value(&mut family.encode_family(&labels)?, &v)?;
            }
        }
        Ok(())
    }

    fn counter<'a, V: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels<'a>, V)>,
    ) -> std::fmt::Result {
        self.write((name, help, unit, MetricType::Counter), series, |metric, v| {
            metric.encode_counter::<Labels<'_>, V, f64>(v, None)
        })
    }

    fn gauge<'a, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (Labels<'a>, V)>,
    ) -> std::fmt::Result {
        self.write((name, help, unit, MetricType::Gauge), series, |metric, v| {
            metric.encode_gauge(v)
        })
    }

    fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'a>, HistogramSnapshot)>,
    ) -> std::fmt::Result {
        let kind = (name, help, Some(Unit::Seconds), MetricType::Histogram);
        self.write(kind, series, |metric, snapshot| {
            // The encoder writes the bucket bounded by f64::MAX as `+Inf`.
            let buckets: Vec<(f64, u64)> = snapshot
                .buckets
                .iter()
                .map(|&(bound, n)| (if bound.is_finite() { bound } else { f64::MAX }, n))
                .collect();
            metric.encode_histogram::<Labels<'_>>(snapshot.sum_s, snapshot.count, &buckets, None)
        })
    }
}

fn text<'a>(name: &'static str, value: &'a str) -> (&'static str, LabelValue<'a>) {
    (name, LabelValue::Text(value))
}

fn number(name: &'static str, value: u64) -> (&'static str, LabelValue<'static>) {
    (name, LabelValue::Number(value))
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut family = Family { encoder: &mut encoder };
        self.partitions(&mut family)?;
        self.shards(&mut family)?;
        self.requests(&mut family)?;
        if let Some(groups) = &self.groups {
            encode_groups(&mut family, groups)?;
        }
        if let Some(cluster) = &self.telemetry.cluster {
            encode_cluster(&mut family, cluster)?;
        }
        Ok(())
    }
}

impl Scrape {
    fn partitions(&self, family: &mut Family<'_, '_>) -> std::fmt::Result {
        let partitions = self.telemetry.engine.partitions();
        fn labels(p: &PartitionMetrics) -> Labels<'_> {
            vec![text("topic", &p.topic), number("partition", u64::from(p.partition))]
        }
        type Read = fn(&PartitionMetrics) -> u64;
        let counters: [(&str, &str, Option<Unit>, Read); 4] = [
            (
                "mamba_partition_records_in",
                "Records appended (by producers or replication)",
                None,
                |p| p.records_in_total.get(),
            ),
            ("mamba_partition_in", "Record batch bytes appended", Some(Unit::Bytes), |p| {
                p.bytes_in_total.get()
            }),
            (
                "mamba_partition_records_out",
                "Records read (by consumers or followers)",
                None,
                |p| p.records_out_total.get(),
            ),
            ("mamba_partition_out", "Record batch bytes read", Some(Unit::Bytes), |p| {
                p.bytes_out_total.get()
            }),
        ];
        for (name, help, unit, read) in counters {
            family.counter(name, help, unit, partitions.iter().map(|p| (labels(p), read(p))))?;
        }
        let gauges: [(&str, &str, Option<Unit>, Read); 6] = [
            ("mamba_partition_log_start_offset", "First offset still in the log", None, |p| {
                p.log_start_offset.get()
            }),
            ("mamba_partition_log_end_offset", "Offset the next record gets", None, |p| {
                p.log_end_offset.get()
            }),
            (
                "mamba_partition_high_watermark",
                "Offset up to which records are committed and readable",
                None,
                |p| p.high_watermark.get(),
            ),
            ("mamba_partition_log_size", "Bytes of the log's segments", Some(Unit::Bytes), |p| {
                p.size_bytes.get()
            }),
            ("mamba_partition_segments", "Segments of the log", None, |p| p.segments.get()),
            (
                "mamba_partition_appends_in_flight",
                "Appends queued or being written and synced",
                None,
                |p| p.appends_in_flight.get(),
            ),
        ];
        for (name, help, unit, read) in gauges {
            family.gauge(name, help, unit, partitions.iter().map(|p| (labels(p), read(p))))?;
        }
        Ok(())
    }

    fn shards(&self, family: &mut Family<'_, '_>) -> std::fmt::Result {
        let shards = self.telemetry.engine.shards();
        let labels = |shard: u32| -> Labels<'static> { vec![number("shard", u64::from(shard))] };
        family.counter(
            "mamba_shard_busy",
            "Time the shard's executor ran tasks or polled for I/O",
            Some(Unit::Seconds),
            shards.iter().map(|s| (labels(s.shard.0), s.busy_ns_total.get() as f64 / 1e9)),
        )?;
        family.gauge(
            "mamba_shard_busy_ratio",
            "Busy share of the shard's last sampling period (0 to 1)",
            None,
            shards.iter().map(|s| (labels(s.shard.0), s.busy_ppm.get() as f64 / 1e6)),
        )?;
        family.gauge(
            "mamba_shard_inbox_depth",
            "Requests from other threads waiting in the shard's inbox",
            None,
            shards.iter().map(|s| (labels(s.shard.0), s.inbox_depth.get())),
        )?;
        let mut in_flight = vec![0u64; shards.len()];
        for p in self.telemetry.engine.partitions() {
            if let Some(n) = in_flight.get_mut(p.shard.0 as usize) {
                *n += p.appends_in_flight.get();
            }
        }
        family.gauge(
            "mamba_shard_appends_in_flight",
            "Appends queued or being written and synced, over the shard's partitions",
            None,
            shards.iter().map(|s| (labels(s.shard.0), in_flight[s.shard.0 as usize])),
        )?;
        family.gauge(
            "mamba_shard_partitions",
            "Partitions the shard hosts, by state (offline: its log could not be opened)",
            None,
            shards.iter().flat_map(|s| {
                let state =
                    |name, n| (vec![number("shard", u64::from(s.shard.0)), text("state", name)], n);
                [
                    state("online", s.partitions_online.get()),
                    state("offline", s.partitions_offline.get()),
                ]
            }),
        )?;
        family.counter(
            "mamba_shard_written",
            "Bytes written to the device (whole blocks, O_DIRECT)",
            Some(Unit::Bytes),
            shards.iter().map(|s| (labels(s.shard.0), s.bytes_written_total.get())),
        )?;
        family.counter(
            "mamba_shard_io_errors",
            "Reads, writes and syncs the device failed",
            None,
            shards.iter().map(|s| (labels(s.shard.0), s.io_errors_total.get())),
        )?;
        family.counter(
            "mamba_shard_tail_cache_hits",
            "Reads served from the tail cache",
            None,
            shards.iter().map(|s| (labels(s.shard.0), s.tail_cache_hits_total.get())),
        )?;
        family.counter(
            "mamba_shard_tail_cache_hit",
            "Bytes read from the tail cache",
            Some(Unit::Bytes),
            shards.iter().map(|s| (labels(s.shard.0), s.tail_cache_hit_bytes_total.get())),
        )?;
        family.counter(
            "mamba_shard_tail_cache_misses",
            "Reads that went to the disk",
            None,
            shards.iter().map(|s| (labels(s.shard.0), s.tail_cache_misses_total.get())),
        )?;
        family.histogram(
            "mamba_shard_write_duration",
            "Time of one positional O_DIRECT write",
            shards.iter().map(|s| (labels(s.shard.0), s.write_latency.snapshot())),
        )?;
        family.histogram(
            "mamba_shard_fdatasync_duration",
            "Time of one fdatasync of a segment",
            shards.iter().map(|s| (labels(s.shard.0), s.fdatasync_latency.snapshot())),
        )?;
        let network = self.telemetry.server.shards();
        let shard_of = |i: usize| labels(i as u32);
        family.gauge(
            "mamba_connections_open",
            "Binary-protocol connections open (clients and other brokers)",
            None,
            network.iter().enumerate().map(|(i, s)| (shard_of(i), s.connections_open.get())),
        )?;
        family.counter(
            "mamba_connections_accepted",
            "Binary-protocol connections accepted",
            None,
            network
                .iter()
                .enumerate()
                .map(|(i, s)| (shard_of(i), s.connections_accepted_total.get())),
        )?;
        family.counter(
            "mamba_connections_closed_by_broker",
            "Connections the broker closed: idle, stalled, or making room at the limit",
            None,
            network
                .iter()
                .enumerate()
                .map(|(i, s)| (shard_of(i), s.connections_closed_by_broker_total.get())),
        )
    }

    /// Per API, summed over the shards (a request's shard is the kernel's
    /// choice of connection, not something to tell apart).
    fn requests(&self, family: &mut Family<'_, '_>) -> std::fmt::Result {
        let network = self.telemetry.server.shards();
        let mut apis: Vec<(ApiKey, u64, HistogramSnapshot)> = Vec::new();
        for &api in ApiKey::ALL {
            let (mut total, mut latency) = (0, HistogramSnapshot::default());
            for shard in network {
                total += shard.api(api).requests_total.get();
                latency.merge(&shard.api(api).latency.snapshot());
            }
            if total > 0 {
                apis.push((api, total, latency));
            }
        }
        let api_label = |api: ApiKey| -> Labels<'static> { vec![text("api", api.name())] };
        family.counter(
            "mamba_requests",
            "Binary-protocol requests answered, by API",
            None,
            apis.iter().map(|(api, total, _)| (api_label(*api), *total)),
        )?;
        family.histogram(
            "mamba_request_duration",
            "Time from a request received whole to its answer ready, by API",
            apis.into_iter().map(|(api, _, latency)| (api_label(api), latency)),
        )?;
        let mut errors: BTreeMap<(u16, u16), u64> = BTreeMap::new();
        for shard in network {
            for (api, code, n) in shard.errors() {
                *errors.entry((api, code)).or_default() += n;
            }
        }
        family.counter(
            "mamba_request_errors",
            "Errors answered, by API and code: one per request, or per partition of a produce \
             or fetch",
            None,
            errors.into_iter().map(|((api, code), n)| {
                let api = ApiKey::from_u16(api).map_or("unknown", ApiKey::name);
                let error = ErrorCode::from_u16(code).name();
                (vec![text("api", api), number("code", u64::from(code)), text("error", error)], n)
            }),
        )
    }
}

fn encode_groups(family: &mut Family<'_, '_>, groups: &GroupLags) -> std::fmt::Result {
    family.gauge(
        "mamba_group_members",
        "Members of each consumer group this broker coordinates",
        None,
        groups.iter().map(|(group, _, members)| (vec![text("group", group)], *members as u64)),
    )?;
    let partitions = || {
        groups.iter().flat_map(|(group, lags, _)| {
            lags.iter().map(move |((topic, partition), lag)| {
                let labels = vec![
                    text("group", group),
                    text("topic", topic),
                    number("partition", u64::from(*partition)),
                ];
                (labels, lag)
            })
        })
    };
    family.gauge(
        "mamba_group_committed_offset",
        "A group's committed offset, per partition",
        None,
        partitions().filter_map(|(labels, lag)| Some((labels, lag.committed?))),
    )?;
    family.gauge(
        "mamba_group_lag_records",
        "Records between a group's committed offset and the high watermark, per partition",
        None,
        partitions().filter_map(|(labels, lag)| Some((labels, lag.lag()?))),
    )
}

fn encode_cluster(family: &mut Family<'_, '_>, cluster: &ClusterHandle) -> std::fmt::Result {
    let view = cluster.view();
    let metadata = &view.metadata;
    let mut by_status: BTreeMap<&str, u64> =
        ["alive", "fenced", "decommissioning"].into_iter().map(|s| (s, 0)).collect();
    for broker in metadata.brokers() {
        *by_status.entry(mamba_net::cluster::metadata::broker_status_name(broker)).or_default() +=
            1;
    }
    family.gauge(
        "mamba_cluster_brokers",
        "Registered brokers, by status, as this broker's metadata says",
        None,
        by_status.into_iter().map(|(status, n)| (vec![text("status", status)], n)),
    )?;
    let (mut partitions, mut under_replicated) = (0u64, 0u64);
    for topic in metadata.topics() {
        for p in &topic.partitions {
            partitions += 1;
            under_replicated += u64::from(p.isr.len() < p.replicas.len());
        }
    }
    let offline = metadata.offline_partitions().len() as u64;
    let none = || -> Labels<'static> { Vec::new() };
    family.gauge(
        "mamba_cluster_partitions",
        "Partitions of every topic",
        None,
        [(none(), partitions)],
    )?;
    family.gauge(
        "mamba_cluster_partitions_under_replicated",
        "Partitions with fewer in-sync replicas than replicas",
        None,
        [(none(), under_replicated)],
    )?;
    family.gauge(
        "mamba_cluster_partitions_offline",
        "Partitions with no leader that can serve",
        None,
        [(none(), offline)],
    )?;
    let controller = view.leader_id.map_or(-1, |id| id as i64);
    family.gauge(
        "mamba_cluster_controller_id",
        "The metadata quorum's leader as this broker knows it (-1: none)",
        None,
        [(none(), controller)],
    )?;
    family.gauge(
        "mamba_cluster_metadata_applied_index",
        "Last metadata log entry this broker applied",
        None,
        [(none(), metadata.applied_index())],
    )?;
    let me = mamba_net::cluster::metadata::BrokerId(cluster.node_id());
    let member = metadata.broker(me).is_some_and(|b| !b.fenced);
    let healthy = view.leader_id.is_some() && member && offline == 0;
    family.gauge(
        "mamba_cluster_healthy",
        "1 when a controller is known, this broker is registered and not fenced, and no \
         partition is offline",
        None,
        [(none(), u64::from(healthy))],
    )
}
