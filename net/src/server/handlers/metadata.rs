//! Who speaks what and where things are: api_versions, metadata,
//! describe_broker.

use crate::protocol::*;
use crate::server::errors::code_of;
use crate::server::ServerContext;

pub(crate) fn api_versions() -> ApiVersionsResponse {
    let apis = ApiKey::ALL
        .iter()
        .map(|api| ApiVersionRange {
            api_key: api.as_u16(),
            min_version: *api.versions().start(),
            max_version: *api.versions().end(),
        })
        .collect();
    ApiVersionsResponse { apis }
}

/// Every topic a client may name: the metadata's in a cluster (the Raft
/// log's own topic is not one), else the engine's.
pub(crate) fn topic_names(ctx: &ServerContext) -> Vec<String> {
    match &ctx.cluster {
        Some(cluster) => cluster.view().metadata.topics().map(|t| t.name.clone()).collect(),
        None => ctx.engine.list_topics().into_iter().map(|meta| meta.name).collect(),
    }
}

pub(crate) fn metadata(ctx: &ServerContext, request: MetadataRequest) -> MetadataResponse {
    match &ctx.cluster {
        Some(cluster) => cluster_metadata(ctx, cluster, request),
        None => engine_metadata(ctx, request),
    }
}

/// The metadata as this broker applied it: every broker, every partition's
/// leader (none while it is fenced), epoch and replicas.
fn cluster_metadata(
    ctx: &ServerContext,
    cluster: &crate::cluster::ClusterHandle,
    request: MetadataRequest,
) -> MetadataResponse {
    let view = cluster.view();
    let state = &view.metadata;
    let me = cluster.node_id();
    let brokers = state
        .brokers()
        .map(|b| {
            let (host, port) = split_host_port(&b.client_address);
            BrokerMeta {
                node_id: b.id.0,
                host,
                port,
                shards: if b.id.0 == me { ctx.engine.shard_count() as u32 } else { 0 },
                rack: b.rack.clone(),
                status: crate::cluster::metadata::broker_status_name(b).to_string(),
            }
        })
        .collect();
    let describe = |topic: &crate::cluster::metadata::Topic| {
        let local = ctx.engine.describe_topic(&topic.name).ok();
        TopicMeta {
            name: topic.name.clone(),
            error_code: 0,
            partitions: topic
                .partitions
                .iter()
                .enumerate()
                .map(|(p, part)| PartitionMeta {
                    partition: p as u32,
                    leader: part
                        .leader
                        .filter(|id| state.broker(*id).is_some_and(|b| !b.fenced))
                        .map(|id| id.0),
                    leader_epoch: part.leader_epoch,
                    replicas: part.replicas.iter().map(|id| id.0).collect(),
                    isr: part.isr.iter().map(|id| id.0).collect(),
                    target_replicas: crate::cluster::reassign::target(state, topic.id, p as u32)
                        .map_or_else(Vec::new, |t| t.iter().map(|id| id.0).collect()),
                    shard: local
                        .as_ref()
                        .and_then(|m| m.shard_of(mamba_engine::PartitionId(p as u32)))
                        .map(|s| s.0),
                })
                .collect(),
        }
    };
    let topics = match request.topics {
        None => state.topics().map(describe).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match state.topic(&name) {
                Some(topic) => describe(topic),
                None => TopicMeta {
                    name,
                    error_code: ErrorCode::UnknownTopicOrPartition.as_u16(),
                    partitions: vec![],
                },
            })
            .collect(),
    };
    MetadataResponse {
        cluster_id: state.cluster_id().unwrap_or_default().to_string(),
        controller_id: view.leader_id.and_then(|id| u32::try_from(id).ok()),
        brokers,
        topics,
    }
}

/// `HOST:PORT` as its parts (a bad one as itself and port 0).
fn split_host_port(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host.trim_start_matches('[').trim_end_matches(']').to_string(), port),
            Err(_) => (address.to_string(), 0),
        },
        None => (address.to_string(), 0),
    }
}

fn engine_metadata(ctx: &ServerContext, request: MetadataRequest) -> MetadataResponse {
    let node_id = ctx.config.node_id;
    let brokers = vec![BrokerMeta {
        node_id,
        host: ctx.advertised.ip().to_string(),
        port: ctx.advertised.port(),
        shards: ctx.engine.shard_count() as u32,
        rack: None,
        status: "alive".to_string(),
    }];
    let describe = |meta: mamba_engine::catalog::TopicMeta| TopicMeta {
        name: meta.name.clone(),
        error_code: 0,
        partitions: meta
            .placement
            .iter()
            .enumerate()
            .map(|(p, shard)| PartitionMeta {
                partition: p as u32,
                leader: Some(node_id),
                leader_epoch: 0,
                replicas: vec![node_id],
                isr: vec![node_id],
                target_replicas: vec![],
                shard: shard.map(|s| s.0),
            })
            .collect(),
    };
    let topics = match request.topics {
        None => ctx.engine.list_topics().into_iter().map(describe).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match ctx.engine.describe_topic(&name) {
                Ok(meta) => describe(meta),
                Err(e) => TopicMeta { name, error_code: code_of(&e), partitions: vec![] },
            })
            .collect(),
    };
    MetadataResponse { cluster_id: String::new(), controller_id: Some(node_id), brokers, topics }
}

pub(crate) async fn describe_broker(ctx: &ServerContext) -> DescribeBrokerResponse {
    let engine = &ctx.engine;
    let (error_code, message, mut counts) = match engine.partition_counts().await {
        Ok(counts) => (0, String::new(), counts),
        Err(e) => (code_of(&e), e.to_string(), Default::default()),
    };
    // The metadata log's partition is the cluster's, not a topic's: the
    // counts are of what clients can name, as `topic_count` is.
    // (A broker whose metadata log does not open does not start.)
    let metadata_log = engine.describe_topic(crate::cluster::raft_store::METADATA_TOPIC);
    if ctx.cluster.is_some() && metadata_log.is_ok() {
        counts.online = counts.online.saturating_sub(1);
    }
    let disk = match engine.disk_space() {
        Ok(space) => DiskUsage {
            error_code: 0,
            message: String::new(),
            total_bytes: space.total_bytes,
            free_bytes: space.free_bytes,
        },
        Err(e) => DiskUsage {
            error_code: code_of(&e),
            message: e.to_string(),
            total_bytes: 0,
            free_bytes: 0,
        },
    };
    let saturate = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    DescribeBrokerResponse {
        error_code,
        message,
        node_id: ctx.config.node_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: engine.data_dir().display().to_string(),
        shards: saturate(engine.shard_count()),
        listeners: vec![Listener { name: "client".into(), address: ctx.advertised.to_string() }],
        started_ms: ctx.started_ms,
        uptime_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        topic_count: saturate(topic_names(ctx).len()),
        partitions_online: saturate(counts.online),
        partitions_offline: saturate(counts.offline),
        disk,
    }
}
