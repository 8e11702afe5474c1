//! `/v1/groups`: list, describe with lag per partition, reset committed
//! offsets, delete — the calls `mamba group` makes.

use crate::problem::{ApiError, ApiResult};
use crate::server::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use mamba_net::client::ClientError;
use mamba_net::protocol::{CommitOffset, ErrorCode, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A group in the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupSummary {
    pub group_id: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    pub members: u32,
    pub assignor: String,
}

/// Partitions of one topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// A member of a group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub member_epoch: i32,
    /// What it holds now.
    pub assignment: Vec<TopicPartitions>,
}

/// A partition of a group: committed offset, end and lag.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: u32,
    pub committed_offset: Option<u64>,
    /// The partition's high watermark.
    pub high_watermark: Option<u64>,
    /// Records between the two; absent when either is unknown.
    pub lag: Option<u64>,
    /// The member that holds it.
    pub owner: Option<String>,
    /// Why the high watermark is unknown.
    pub error: Option<String>,
}

/// A described group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupDetail {
    pub group_id: String,
    pub state: String,
    pub group_epoch: i32,
    pub assignor: String,
    pub members: Vec<Member>,
    pub partitions: Vec<GroupPartition>,
    pub total_lag: u64,
}

/// Where a reset moves a group's committed offsets of one topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetReset {
    pub topic: String,
    /// The partitions to reset [default: all of the topic's].
    #[serde(default)]
    pub partitions: Option<Vec<u32>>,
    /// `earliest`, `latest`, or an offset (clamped to each log).
    pub to: ResetTo,
}

/// A place to reset to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResetTo {
    Offset(u64),
    Named(String),
}

fn group_id(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(group) = path?;
    checked_group_id(group)
}

/// A group id from a URL: what the coordinator accepts.
pub(crate) fn checked_group_id(group: String) -> ApiResult<String> {
    if group.is_empty() || group.len() > 255 || group.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidGroupId,
            format!("bad group id {group:?}: use 1 to 255 bytes without control characters"),
        ));
    }
    Ok(group)
}

/// Every consumer group of the cluster.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses(
        (status = 200, description = "Every group", body = [GroupSummary]),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn list_groups(State(state): State<AppState>) -> ApiResult<Json<Vec<GroupSummary>>> {
    let groups = state.admin.list_groups().await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|g| GroupSummary {
                group_id: g.group_id,
                state: g.state,
                members: g.member_count,
                assignor: g.assignor,
            })
            .collect(),
    ))
}

/// A group's members, and per partition its committed offset and lag.
#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "The group's id")),
    responses(
        (status = 200, description = "The group", body = GroupDetail),
        (status = 400, description = "Not a group id", body = crate::Problem),
        (status = 404, description = "No such group", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn describe_group(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<GroupDetail>> {
    let group = group_id(path)?;
    let d = state.admin.describe_groups(std::slice::from_ref(&group)).await?.into_iter().next();
    let d = d.ok_or_else(|| ApiError::not_found(format!("group {group:?} was not described")))?;
    if let Some(e) = ClientError::from_code(d.error_code, d.message.clone()) {
        return Err(e.into());
    }
    let lags = state.admin.group_lags(&d).await?;
    let total_lag = lags.values().filter_map(|l| l.lag()).sum();
    let partitions = lags
        .into_iter()
        .map(|((topic, partition), l)| GroupPartition {
            topic,
            partition,
            committed_offset: l.committed,
            high_watermark: l.end,
            lag: l.lag(),
            owner: l.owner,
            error: l.error,
        })
        .collect();
    let members = d
        .members
        .into_iter()
        .map(|m| Member {
            member_id: m.member_id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            host: m.host,
            member_epoch: m.member_epoch,
            assignment: m
                .assignment
                .into_iter()
                .map(|t| TopicPartitions { topic: t.topic, partitions: t.partitions })
                .collect(),
        })
        .collect();
    Ok(Json(GroupDetail {
        group_id: d.group_id,
        state: d.state,
        group_epoch: d.group_epoch,
        assignor: d.assignor,
        members,
        partitions,
        total_lag,
    }))
}

/// Moves a group's committed offsets of a topic (the group must have no
/// members); answers the group.
#[utoipa::path(post, path = "/v1/groups/{group}/offsets", tag = "groups",
    params(("group" = String, Path, description = "The group's id")),
    request_body = OffsetReset,
    responses(
        (status = 200, description = "Reset; the group after it", body = GroupDetail),
        (status = 400, description = "A bad id, topic, partition or place", body = crate::Problem),
        (status = 404, description = "No such topic", body = crate::Problem),
        (status = 409, description = "The group has members", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn reset_offsets(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<OffsetReset>, JsonRejection>,
) -> ApiResult<Json<GroupDetail>> {
    let group = group_id(path)?;
    let Json(reset) = body?;
    let topic = crate::records::checked_topic(reset.topic)?;
    let all: Vec<u32> =
        state.admin.topic_metadata(&topic).await?.partitions.iter().map(|p| p.partition).collect();
    let partitions = reset.partitions.unwrap_or_else(|| all.clone());
    if let Some(p) = partitions.iter().find(|p| !all.contains(p)) {
        return Err(ApiError::bad_request(format!("topic {topic:?} has no partition {p}")));
    }
    let ends = |at: i64| state.admin.list_offsets(&topic, &partitions, at);
    let (starts, lasts) = (ends(EARLIEST_TIMESTAMP).await?, ends(LATEST_TIMESTAMP).await?);
    let mut offsets = Vec::with_capacity(partitions.len());
    for (start, last) in starts.iter().zip(&lasts) {
        if let Some(e) = ClientError::from_code(start.error_code, start.message.clone())
            .or_else(|| ClientError::from_code(last.error_code, last.message.clone()))
        {
            return Err(e.into());
        }
        let offset = match &reset.to {
            ResetTo::Offset(o) => (*o).clamp(start.offset, last.offset),
            ResetTo::Named(n) if n == "earliest" => start.offset,
            ResetTo::Named(n) if n == "latest" => last.offset,
            ResetTo::Named(n) => {
                return Err(ApiError::bad_request(format!(
                    "`to` is \"earliest\", \"latest\" or an offset, not {n:?}"
                )))
            }
        };
        offsets.push(CommitOffset {
            topic: topic.clone(),
            partition: start.partition,
            offset,
            metadata: String::new(),
        });
    }
    for r in state.admin.reset_offsets(&group, offsets).await? {
        if let Some(e) = ClientError::from_code(r.error_code, r.message) {
            return Err(e.into());
        }
    }
    describe_group(State(state), Ok(Path(group))).await
}

/// Deletes a group and its committed offsets (it must have no members).
#[utoipa::path(delete, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "The group's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a group id", body = crate::Problem),
        (status = 404, description = "No such group", body = crate::Problem),
        (status = 409, description = "The group has members", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn delete_group(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let group = group_id(path)?;
    for r in state.admin.delete_groups(std::slice::from_ref(&group)).await? {
        if let Some(e) = ClientError::from_code(r.error_code, r.message) {
            return Err(e.into());
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
