//! `/v1/topics`: list, create, describe (partitions with leader, replicas,
//! in-sync replicas, offsets and high watermark), alter configs, delete.
//! Names from URLs are checked with the engine's rules before anything is
//! asked of the broker.

use crate::problem::ApiResult;
use crate::server::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use mamba_net::protocol::{ConfigEntry, ErrorCode, PartitionSummary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;

/// A topic in the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    /// Copies of each partition (of its first partition).
    pub replication_factor: u32,
}

/// A topic to create.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTopic {
    /// Letters, digits, '.', '_' and '-'.
    #[schema(pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$")]
    pub name: String,
    /// How many partitions [default: 1].
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Copies of each partition [default: 3, or every alive broker when
    /// fewer].
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// Topic settings by name, as `mamba topic create --config K=V`
    /// (`retention.ms`, `min.insync.replicas`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// One partition of a described topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionDetail {
    pub partition: u32,
    /// The broker that leads it; absent while it is offline.
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    /// Every broker with a copy; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// The replicas that have everything the leader acknowledged.
    pub isr: Vec<u32>,
    /// `online`, `offline` (damaged or unavailable storage) or
    /// `unreachable` (its leader did not answer).
    pub status: String,
    pub log_start_offset: Option<u64>,
    pub log_end_offset: Option<u64>,
    /// Consumers read below it.
    pub high_watermark: Option<u64>,
    pub size_bytes: Option<u64>,
    /// Why the offsets are missing, when they are.
    pub error: Option<String>,
}

/// A described topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicDetail {
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionDetail>,
}

/// A change of a topic's settings: a value sets it, `null` returns it to
/// its default.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigChange {
    pub configs: BTreeMap<String, Option<String>>,
}

/// A topic name from a URL, checked like everywhere else.
fn topic_name(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(name) = path?;
    crate::records::checked_topic(name)
}

/// Every topic.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses(
        (status = 200, description = "Every topic", body = [TopicSummary]),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn list_topics(State(state): State<AppState>) -> ApiResult<Json<Vec<TopicSummary>>> {
    let topics = state.admin.list_topics().await?;
    let mut listed: Vec<TopicSummary> = topics
        .into_iter()
        .map(|t| TopicSummary {
            replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as u32),
            partitions: t.partitions.len() as u32,
            name: t.name,
        })
        .collect();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(listed))
}

/// Creates a topic; answers its description.
#[utoipa::path(post, path = "/v1/topics", tag = "topics", request_body = NewTopic,
    responses(
        (status = 201, description = "Created", body = TopicDetail),
        (status = 400, description = "A bad name, count or setting", body = crate::Problem),
        (status = 409, description = "The topic exists", body = crate::Problem),
        (status = 413, description = "The body is too large", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn create_topic(
    State(state): State<AppState>,
    body: Result<Json<NewTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<TopicDetail>)> {
    let Json(new) = body?;
    let name = crate::records::checked_topic(new.name)?;
    let mut configs: Vec<ConfigEntry> =
        new.configs.into_iter().map(|(name, value)| ConfigEntry { name, value }).collect();
    if let Some(rf) = new.replication_factor {
        configs.push(ConfigEntry { name: "replication.factor".into(), value: rf.to_string() });
    }
    state.admin.create_topic(&name, new.partitions.unwrap_or(1), configs).await?;
    Ok((StatusCode::CREATED, Json(describe(&state, &name).await?)))
}

/// A topic's settings and partitions.
#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "The topic's name", pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 200, description = "The topic", body = TopicDetail),
        (status = 400, description = "Not a topic name", body = crate::Problem),
        (status = 404, description = "No such topic", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn describe_topic(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TopicDetail>> {
    let name = topic_name(path)?;
    Ok(Json(describe(&state, &name).await?))
}

/// Changes a topic's settings; answers its description.
#[utoipa::path(patch, path = "/v1/topics/{topic}/configs", tag = "topics",
    params(("topic" = String, Path, description = "The topic's name", pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$")),
    request_body = ConfigChange,
    responses(
        (status = 200, description = "Changed", body = TopicDetail),
        (status = 400, description = "A bad name or setting", body = crate::Problem),
        (status = 404, description = "No such topic", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn alter_topic_configs(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ConfigChange>, JsonRejection>,
) -> ApiResult<Json<TopicDetail>> {
    let name = topic_name(path)?;
    let Json(change) = body?;
    // An empty value returns a setting to its default (as `topic alter`).
    let configs = change
        .configs
        .into_iter()
        .map(|(name, value)| ConfigEntry { name, value: value.unwrap_or_default() })
        .collect();
    state.admin.alter_topic(&name, configs).await?;
    Ok(Json(describe(&state, &name).await?))
}

/// Deletes a topic and its records.
#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "The topic's name", pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a topic name", body = crate::Problem),
        (status = 404, description = "No such topic", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn delete_topic(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let name = topic_name(path)?;
    state.admin.delete_topic(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A topic's placement (metadata) joined with what its leaders store.
async fn describe(state: &AppState, name: &str) -> ApiResult<TopicDetail> {
    let described = state.admin.describe_topic(name).await?;
    let stored = state.admin.describe_partitions(Some(vec![name.to_string()])).await?;
    let stored: HashMap<u32, PartitionSummary> =
        stored.into_iter().flat_map(|t| t.partitions).map(|p| (p.partition, p)).collect();
    let partitions = described
        .partitions
        .iter()
        .map(|p| {
            let s = stored.get(&p.partition);
            let online = s.filter(|s| s.error_code == 0);
            let status = match s {
                Some(s) if s.error_code == 0 => "online",
                Some(s) if s.error_code == ErrorCode::NotLeader.as_u16() => "unreachable",
                _ => "offline",
            };
            PartitionDetail {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                status: status.to_string(),
                log_start_offset: online.map(|s| s.log_start_offset),
                log_end_offset: online.map(|s| s.log_end_offset),
                high_watermark: online.map(|s| s.high_watermark),
                size_bytes: online.map(|s| s.size_bytes),
                error: match s {
                    Some(s) if s.error_code != 0 => Some(s.message.clone()),
                    Some(_) => None,
                    None => Some("the broker did not describe it".to_string()),
                },
            }
        })
        .collect();
    Ok(TopicDetail {
        name: described.name,
        configs: described.configs.into_iter().map(|c| (c.name, c.value)).collect(),
        partitions,
    })
}
