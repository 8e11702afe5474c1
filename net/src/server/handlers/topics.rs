//! Topic administration: create, delete, describe and alter topics, grow
//! them (`create_partitions`), and what each partition stores
//! (`describe_partitions`).

use crate::protocol::*;
use crate::server::errors::code_of;
use crate::server::ServerContext;
use crate::topic_config;
use mamba_engine::{EngineError, PartitionId, TopicConfig};

pub(crate) async fn create_topics(
    ctx: &ServerContext,
    request: CreateTopicsRequest,
) -> TopicResults {
    let mut results = Vec::new();
    for topic in request.topics {
        let mut config = TopicConfig { partitions: topic.partitions, ..TopicConfig::default() };
        let result = match topic_config::apply(&mut config, &topic.configs) {
            Err(message) => (ErrorCode::InvalidConfig.as_u16(), message),
            Ok(()) => match ctx.engine.create_topic(&topic.name, config).await {
                Ok(_) => (0, String::new()),
                Err(e) => (code_of(&e), e.to_string()),
            },
        };
        results.push(TopicResult { name: topic.name, error_code: result.0, message: result.1 });
    }
    TopicResults { results }
}

pub(crate) async fn delete_topics(
    ctx: &ServerContext,
    request: DeleteTopicsRequest,
) -> TopicResults {
    let mut results = Vec::new();
    for name in request.names {
        let (error_code, message) = match ctx.engine.delete_topic(&name).await {
            Ok(()) => (0, String::new()),
            Err(e) => (code_of(&e), e.to_string()),
        };
        results.push(TopicResult { name, error_code, message });
    }
    TopicResults { results }
}

pub(crate) fn describe_configs(
    ctx: &ServerContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let topics = request
        .names
        .into_iter()
        .map(|name| match ctx.engine.describe_topic(&name) {
            Ok(meta) => TopicConfigs {
                name,
                error_code: 0,
                message: String::new(),
                partitions: meta.config.partitions,
                configs: topic_config::entries(&meta.config),
            },
            Err(e) => TopicConfigs {
                name,
                error_code: code_of(&e),
                message: e.to_string(),
                partitions: 0,
                configs: vec![],
            },
        })
        .collect();
    DescribeConfigsResponse { topics }
}

pub(crate) async fn alter_configs(
    ctx: &ServerContext,
    request: AlterConfigsRequest,
) -> TopicResults {
    let mut results = Vec::new();
    for topic in request.topics {
        let outcome = match ctx.engine.describe_topic(&topic.name) {
            Err(e) => Err((code_of(&e), e.to_string())),
            Ok(meta) => {
                let mut config = meta.config;
                match topic_config::apply(&mut config, &topic.configs) {
                    Err(message) => Err((ErrorCode::InvalidConfig.as_u16(), message)),
                    Ok(()) => ctx
                        .engine
                        .alter_topic(&topic.name, config)
                        .await
                        .map_err(|e| (code_of(&e), e.to_string())),
                }
            }
        };
        let (error_code, message) = match outcome {
            Ok(_) => (0, String::new()),
            Err(e) => e,
        };
        results.push(TopicResult { name: topic.name, error_code, message });
    }
    TopicResults { results }
}

pub(crate) async fn create_partitions(
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

pub(crate) async fn describe_partitions(
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
