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

pub(crate) fn metadata(ctx: &ServerContext, request: MetadataRequest) -> MetadataResponse {
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
    let (error_code, message, counts) = match engine.partition_counts().await {
        Ok(counts) => (0, String::new(), counts),
        Err(e) => (code_of(&e), e.to_string(), Default::default()),
    };
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
        topic_count: saturate(engine.list_topics().len()),
        partitions_online: saturate(counts.online),
        partitions_offline: saturate(counts.offline),
        disk,
    }
}
