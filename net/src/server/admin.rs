//! The operator's APIs: grow a topic (`create_partitions`), what each
//! partition stores (`describe_partitions`), and the broker itself
//! (`describe_broker`). One function per API, called by `handlers.rs`.

use super::handlers::code_of;
use super::ServerContext;
use crate::protocol::*;
use mamba_engine::{EngineError, PartitionId};

pub(super) async fn create_partitions(
    ctx: &ServerContext,
    request: CreatePartitionsRequest,
) -> TopicResults {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let (error_code, message) =
            match ctx.engine.increase_partitions_to(&topic.name, topic.partition_count).await {
                Ok(_) => (0, String::new()),
                Err(e) => (code_of(&e), e.to_string()),
            };
        results.push(TopicResult { name: topic.name, error_code, message });
    }
    TopicResults { results }
}

pub(super) async fn describe_partitions(
    ctx: &ServerContext,
    request: DescribePartitionsRequest,
) -> DescribePartitionsResponse {
    let names = match request.topics {
        Some(names) => names,
        None => ctx.engine.list_topics().into_iter().map(|meta| meta.name).collect(),
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        let meta = match ctx.engine.describe_topic(&name) {
            Ok(meta) => meta,
            Err(e) => {
                let (error_code, message) = (code_of(&e), e.to_string());
                topics.push(TopicPartitions { name, error_code, message, partitions: vec![] });
                continue;
            }
        };
        // Every partition at once: they live on several shards.
        let summaries = (0..meta.config.partitions).map(|p| {
            let name = &name;
            async move { (p, ctx.engine.describe_partition(name, PartitionId(p)).await) }
        });
        let partitions = futures::future::join_all(summaries)
            .await
            .into_iter()
            .map(|(partition, summary)| partition_summary(partition, summary))
            .collect();
        topics.push(TopicPartitions { name, error_code: 0, message: String::new(), partitions });
    }
    DescribePartitionsResponse { topics }
}

fn partition_summary(
    partition: u32,
    summary: Result<mamba_engine::LogSummary, EngineError>,
) -> PartitionSummary {
    match summary {
        Ok(s) => PartitionSummary {
            partition,
            error_code: 0,
            message: String::new(),
            log_start_offset: s.offsets.log_start_offset.0,
            log_end_offset: s.offsets.next_offset.0,
            high_watermark: s.offsets.high_watermark.0,
            size_bytes: s.size_bytes,
            segment_count: u32::try_from(s.segment_count).unwrap_or(u32::MAX),
        },
        Err(e) => PartitionSummary {
            partition,
            error_code: code_of(&e),
            message: e.to_string(),
            log_start_offset: 0,
            log_end_offset: 0,
            high_watermark: 0,
            size_bytes: 0,
            segment_count: 0,
        },
    }
}

pub(super) async fn describe_broker(ctx: &ServerContext) -> DescribeBrokerResponse {
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
