//! Topic administration: create, delete, describe and alter topics, grow
//! them (`create_partitions`), and what each partition stores
//! (`describe_partitions`).

use super::cluster::{admin_error, admin_route, forward, AdminRoute};
use crate::cluster::metadata::ConfigEntry as MetadataConfig;
use crate::cluster::AdminCommand;
use crate::protocol::*;
use crate::server::errors::code_of;
use crate::server::{Port, ServerContext};
use crate::topic_config;
use mamba_engine::{EngineError, PartitionId, TopicConfig};

/// Every name failed with the same error (a forward that did not arrive).
fn all_failed(
    names: impl IntoIterator<Item = String>,
    (code, message): (u16, String),
) -> TopicResults {
    let results = names
        .into_iter()
        .map(|name| TopicResult { name, error_code: code, message: message.clone() })
        .collect();
    TopicResults { results }
}

/// A request done at the controller when this broker is not it.
macro_rules! forward_unless_here {
    ($ctx:expr, $request:expr, $names:expr) => {
        if let AdminRoute::Forward { node_id, address } = admin_route($ctx) {
            let names: Vec<String> = $names;
            return match forward::<_, TopicResults>($ctx, node_id, &address, $request).await {
                Ok(results) => results,
                Err(e) => all_failed(names, e),
            };
        }
    };
}

fn metadata_entries(entries: &[ConfigEntry]) -> Vec<MetadataConfig> {
    entries
        .iter()
        .map(|c| MetadataConfig { name: c.name.clone(), value: c.value.clone() })
        .collect()
}

/// The broker's own topics: the metadata log and the groups' committed
/// offsets. Their records are the broker's state, written only by the
/// broker: clients may read and describe them, never create, delete or
/// produce to them.
const INTERNAL_TOPICS: [&str; 2] =
    [crate::cluster::raft_store::METADATA_TOPIC, crate::server::coordinator::OFFSETS_TOPIC];

/// Refuses a client's `action` on one of the broker's own topics. On the
/// cluster port the request comes from a broker (creating
/// `__consumer_offsets` through the controller, say) and is let through.
pub(crate) fn refuse_internal(
    ctx: &ServerContext,
    name: &str,
    action: &str,
) -> Result<(), (u16, String)> {
    if ctx.port == Port::Client && INTERNAL_TOPICS.contains(&name) {
        return Err((
            ErrorCode::InvalidRequest.as_u16(),
            format!("topic {name} is the broker's own: clients cannot {action} it"),
        ));
    }
    Ok(())
}

/// Takes out of `items` those a client may not `action` (see
/// `refuse_internal`), answered as refused; before any forwarding, so the
/// controller never sees them as a broker's.
fn take_refused<T>(
    ctx: &ServerContext,
    items: &mut Vec<T>,
    name: impl Fn(&T) -> &str,
    action: &str,
) -> Vec<TopicResult> {
    let mut refused = Vec::new();
    items.retain(|item| match refuse_internal(ctx, name(item), action) {
        Ok(()) => true,
        Err(why) => {
            refused.push(result(name(item).to_string(), Err(why)));
            false
        }
    });
    refused
}

fn result(name: String, outcome: Result<(), (u16, String)>) -> TopicResult {
    let (error_code, message) = outcome.err().unwrap_or_default();
    TopicResult { name, error_code, message }
}

pub(crate) async fn create_topics(
    ctx: &ServerContext,
    mut request: CreateTopicsRequest,
) -> TopicResults {
    let refused = take_refused(ctx, &mut request.topics, |t| t.name.as_str(), "create");
    let mut answer = create_allowed_topics(ctx, request).await;
    answer.results.extend(refused);
    answer
}

async fn create_allowed_topics(ctx: &ServerContext, request: CreateTopicsRequest) -> TopicResults {
    if let AdminRoute::Forward { node_id, address } = admin_route(ctx) {
        let names = request.topics.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let mut results = match forward::<_, TopicResults>(ctx, node_id, &address, request).await {
            Ok(results) => results,
            Err(e) => return all_failed(names, e),
        };
        // The controller answered once it applied the topic; this broker
        // may not have yet. A client that created a topic here uses it
        // here next (describe, produce), so the answer waits for it too.
        for created in results.results.iter_mut().filter(|r| r.error_code == 0) {
            if let Err((code, message)) = super::cluster::wait_hosted_here(ctx, &created.name).await
            {
                (created.error_code, created.message) = (code, message);
            }
        }
        return results;
    }
    let mut results = Vec::new();
    for topic in request.topics {
        let mut config = TopicConfig { partitions: topic.partitions, ..TopicConfig::default() };
        let checked = topic_config::apply(&mut config, &topic.configs)
            .and_then(|()| topic_config::check_replication(&topic.configs));
        let outcome = match checked {
            Err(message) => Err((ErrorCode::InvalidConfig.as_u16(), message)),
            Ok(()) => match admin_route(ctx) {
                AdminRoute::Cluster(cluster) => match config.validate() {
                    Err(e) => Err((code_of(&e), e.to_string())),
                    Ok(()) => {
                        // The replication factor shapes the partitions (it is
                        // their replica count); the other replication
                        // settings stay with the topic.
                        let replication_factor = topic
                            .configs
                            .iter()
                            .find(|c| c.name == "replication.factor")
                            .and_then(|c| c.value.trim().parse().ok())
                            .unwrap_or(0);
                        let mut entries = topic_config::entries(&config);
                        entries.extend(
                            topic
                                .configs
                                .iter()
                                .filter(|c| {
                                    topic_config::REPLICATION_NAMES.contains(&c.name.as_str())
                                        && c.name != "replication.factor"
                                })
                                .cloned(),
                        );
                        cluster
                            .admin(AdminCommand::CreateTopic {
                                name: topic.name.clone(),
                                partitions: config.partitions,
                                replication_factor,
                                configs: metadata_entries(&entries),
                            })
                            .await
                            .map_err(admin_error)
                    }
                },
                _ => ctx
                    .engine
                    .create_topic(&topic.name, config)
                    .await
                    .map(drop)
                    .map_err(|e| (code_of(&e), e.to_string())),
            },
        };
        let outcome = match outcome {
            Ok(()) => super::cluster::wait_hosted_here(ctx, &topic.name).await,
            failed => failed,
        };
        results.push(result(topic.name, outcome));
    }
    TopicResults { results }
}

pub(crate) async fn delete_topics(
    ctx: &ServerContext,
    mut request: DeleteTopicsRequest,
) -> TopicResults {
    let refused = take_refused(ctx, &mut request.names, |n| n.as_str(), "delete");
    let mut answer = delete_allowed_topics(ctx, request).await;
    answer.results.extend(refused);
    answer
}

async fn delete_allowed_topics(ctx: &ServerContext, request: DeleteTopicsRequest) -> TopicResults {
    forward_unless_here!(ctx, request.clone(), request.names.clone());
    let mut results = Vec::new();
    for name in request.names {
        let outcome = match admin_route(ctx) {
            AdminRoute::Cluster(cluster) => cluster
                .admin(AdminCommand::DeleteTopic { name: name.clone() })
                .await
                .map_err(admin_error),
            _ => ctx.engine.delete_topic(&name).await.map_err(|e| (code_of(&e), e.to_string())),
        };
        results.push(result(name, outcome));
    }
    TopicResults { results }
}

/// A topic's settings: from the metadata in a cluster, else the engine.
fn topic_config_of(ctx: &ServerContext, name: &str) -> Result<TopicConfig, EngineError> {
    match &ctx.cluster {
        Some(cluster) => cluster
            .view()
            .topic_config(name)
            .ok_or_else(|| EngineError::UnknownTopic(name.to_string())),
        None => ctx.engine.describe_topic(name).map(|meta| meta.config),
    }
}

/// A topic's replication settings in a cluster, defaults filled in: its
/// replication factor, `min.insync.replicas`, `unclean.leader.election`,
/// and `leader.placement` when set.
fn replication_entries(ctx: &ServerContext, name: &str) -> Vec<ConfigEntry> {
    let Some(cluster) = &ctx.cluster else { return Vec::new() };
    let view = cluster.view();
    let Some(topic) = view.metadata.topic(name) else { return Vec::new() };
    let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let e = |name: &str, value: String| ConfigEntry { name: name.to_string(), value };
    let mut entries = vec![
        e("replication.factor", factor.to_string()),
        e(
            "min.insync.replicas",
            topic_config::min_insync_replicas(&topic.configs, factor).to_string(),
        ),
        e(
            "unclean.leader.election",
            topic.configs.get("unclean.leader.election").cloned().unwrap_or_else(|| "false".into()),
        ),
    ];
    if let Some(placement) = topic.configs.get("leader.placement") {
        entries.push(e("leader.placement", placement.clone()));
    }
    entries
}

pub(crate) fn describe_configs(
    ctx: &ServerContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let topics = request
        .names
        .into_iter()
        .map(|name| match topic_config_of(ctx, &name) {
            Ok(config) => TopicConfigs {
                configs: topic_config::entries(&config)
                    .into_iter()
                    .chain(replication_entries(ctx, &name))
                    .collect(),
                name,
                error_code: 0,
                message: String::new(),
                partitions: config.partitions,
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
    forward_unless_here!(
        ctx,
        request.clone(),
        request.topics.iter().map(|t| t.name.clone()).collect()
    );
    let mut results = Vec::new();
    for topic in request.topics {
        let outcome = match topic_config_of(ctx, &topic.name) {
            Err(e) => Err((code_of(&e), e.to_string())),
            Ok(mut config) => match topic_config::apply(&mut config, &topic.configs)
                .and_then(|()| topic_config::check_replication(&topic.configs))
                .and_then(|()| match topic.configs.iter().any(|c| c.name == "replication.factor") {
                    true => Err("replication.factor is set at creation; `mamba cluster move` changes a partition's replicas".to_string()),
                    false => Ok(()),
                }) {
                Err(message) => Err((ErrorCode::InvalidConfig.as_u16(), message)),
                Ok(()) => match (admin_route(ctx), config.validate()) {
                    (_, Err(e)) => Err((code_of(&e), e.to_string())),
                    (AdminRoute::Cluster(cluster), Ok(())) => cluster
                        .admin(AdminCommand::AlterTopicConfigs {
                            name: topic.name.clone(),
                            set: metadata_entries(&topic.configs),
                            remove: Vec::new(),
                        })
                        .await
                        .map_err(admin_error),
                    (_, Ok(())) => ctx
                        .engine
                        .alter_topic(&topic.name, config)
                        .await
                        .map(drop)
                        .map_err(|e| (code_of(&e), e.to_string())),
                },
            },
        };
        results.push(result(topic.name, outcome));
    }
    TopicResults { results }
}

pub(crate) async fn create_partitions(
    ctx: &ServerContext,
    request: CreatePartitionsRequest,
) -> TopicResults {
    forward_unless_here!(
        ctx,
        request.clone(),
        request.topics.iter().map(|t| t.name.clone()).collect()
    );
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let outcome = match admin_route(ctx) {
            AdminRoute::Cluster(cluster) => cluster
                .admin(AdminCommand::CreatePartitions {
                    name: topic.name.clone(),
                    partition_count: topic.partition_count,
                })
                .await
                .map_err(admin_error),
            _ => ctx
                .engine
                .increase_partitions_to(&topic.name, topic.partition_count)
                .await
                .map(drop)
                .map_err(|e| (code_of(&e), e.to_string())),
        };
        let outcome = match outcome {
            Ok(()) => super::cluster::wait_hosted_here(ctx, &topic.name).await,
            failed => failed,
        };
        results.push(result(topic.name, outcome));
    }
    TopicResults { results }
}

pub(crate) async fn describe_partitions(
    ctx: &ServerContext,
    request: DescribePartitionsRequest,
) -> DescribePartitionsResponse {
    let names = match request.topics {
        Some(names) => names,
        None => super::metadata::topic_names(ctx),
    };
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        // In a cluster: what the metadata says; this broker describes the
        // partitions it leads, and names the leader of the others.
        let partition_count = match topic_config_of(ctx, &name) {
            Ok(config) => config.partitions,
            Err(e) => {
                let (error_code, message) = (code_of(&e), e.to_string());
                topics.push(TopicPartitions { name, error_code, message, partitions: vec![] });
                continue;
            }
        };
        // Every partition at once: they live on several shards.
        let summaries = (0..partition_count).map(|p| {
            let name = &name;
            async move {
                match super::cluster::check_leader(ctx, name, p) {
                    Ok(()) => PartitionSummary {
                        followers: followers_of(ctx, name, p),
                        ..partition_summary(
                            p,
                            ctx.engine.describe_partition(name, PartitionId(p)).await,
                        )
                    },
                    Err((error_code, message)) => PartitionSummary {
                        error_code,
                        message,
                        ..partition_summary(p, Err(EngineError::ShuttingDown))
                    },
                }
            }
        });
        let partitions = futures::future::join_all(summaries).await;
        topics.push(TopicPartitions { name, error_code: 0, message: String::new(), partitions });
    }
    DescribePartitionsResponse { topics }
}

/// The followers' progress on a partition this broker leads.
fn followers_of(ctx: &ServerContext, topic: &str, partition: u32) -> Vec<FollowerProgress> {
    let Some(cluster) = &ctx.cluster else { return Vec::new() };
    cluster
        .replication()
        .follower_progress(&(topic.to_string(), partition))
        .into_iter()
        .map(|(id, log_end_offset, durable_offset)| FollowerProgress {
            broker_id: id.0,
            log_end_offset,
            durable_offset,
        })
        .collect()
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
            followers: Vec::new(),
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
            followers: Vec::new(),
        },
    }
}
