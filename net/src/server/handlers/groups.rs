//! Consumer groups: where a group's coordinator is, heartbeats (long polls
//! that answer at once when the member's assignment changes), committed
//! offsets, and administration. Each but the first runs on the shard of its
//! group's coordinator (coordinator.rs).

use crate::group::coordinator::{Group, GroupError, Heartbeat, HeartbeatAnswer, LEAVE_EPOCH};
use crate::group::MemberId;
use crate::protocol::*;
use crate::runtime;
use crate::server::coordinator::{
    self, engine_error, ensure_offsets_topic, group_error, validate_group_id, with_group_partition,
    with_partition, Locked,
};
use crate::server::ServerContext;
use futures::channel::oneshot;
use mamba_engine::runtime::now_ms;
use mamba_engine::EngineError;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// A failure of a whole request: its code and message.
type Failure = (u16, String);

/// Why this broker cannot take a request for `group` now: a bad id, or
/// (in a cluster) another broker coordinates it.
async fn group_problem(ctx: &ServerContext, group: &str) -> Option<Failure> {
    if let Err(m) = validate_group_id(group) {
        return Some((ErrorCode::InvalidGroupId.as_u16(), m));
    }
    super::cluster::coordinate_here(ctx, group).await.err()
}

/// Partition counts, for the assignors.
fn counter(locked: &Locked) -> impl Fn(&str) -> Option<u32> + 'static {
    locked.partition_counts()
}

/// What the first half of a heartbeat decided.
enum Heard {
    Answer(HeartbeatAnswer),
    Left,
    /// Nothing new for the member: wait for a change (or this long), then
    /// answer.
    Wait(oneshot::Receiver<()>, Duration),
}

/// The broker that coordinates `request.group_id`. One broker coordinates
/// every group for now: this one. (In a cluster it will be the leader of
/// the group's partition of `__consumer_offsets`.)
pub(crate) async fn find_coordinator(
    ctx: &ServerContext,
    request: &FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let failed = |(error_code, message): Failure| FindCoordinatorResponse {
        error_code,
        message,
        node_id: 0,
        host: String::new(),
        port: 0,
    };
    if let Err(m) = validate_group_id(&request.group_id) {
        return failed((ErrorCode::InvalidGroupId.as_u16(), m));
    }
    if ctx.cluster.is_none() {
        return FindCoordinatorResponse {
            error_code: 0,
            message: String::new(),
            node_id: ctx.config.node_id,
            host: ctx.advertised.ip().to_string(),
            port: ctx.advertised.port(),
        };
    }
    match super::cluster::coordinator_of(ctx, &request.group_id).await {
        Ok((node_id, host, port)) => {
            FindCoordinatorResponse { error_code: 0, message: String::new(), node_id, host, port }
        }
        Err(failure) => failed(failure),
    }
}

pub(crate) async fn heartbeat(
    ctx: &ServerContext,
    request: GroupHeartbeatRequest,
    peer: Option<SocketAddr>,
) -> GroupHeartbeatResponse {
    match heartbeat_inner(ctx, request, peer).await {
        Ok(Some(answer)) => GroupHeartbeatResponse {
            error_code: 0,
            message: String::new(),
            member_id: answer.member_id.0,
            member_epoch: answer.member_epoch,
            heartbeat_interval_ms: u32::try_from(answer.heartbeat_interval_ms).unwrap_or(u32::MAX),
            assignment: TopicAssignment::list(&answer.assignment),
        },
        Ok(None) => GroupHeartbeatResponse {
            error_code: 0,
            message: String::new(),
            member_id: String::new(),
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: vec![],
        },
        Err((error_code, message)) => GroupHeartbeatResponse {
            error_code,
            message,
            member_id: String::new(),
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: vec![],
        },
    }
}

async fn heartbeat_inner(
    ctx: &ServerContext,
    request: GroupHeartbeatRequest,
    peer: Option<SocketAddr>,
) -> Result<Option<HeartbeatAnswer>, Failure> {
    if let Some(failure) = group_problem(ctx, &request.group_id).await {
        return Err(failure);
    }
    let assignor = coordinator::assignor(request.assignor.as_deref())
        .map_err(|m| (ErrorCode::InvalidRequest.as_u16(), m))?;
    let config = ctx.config.groups.clone();
    let wait_asked_ms = u64::from(request.max_wait_ms);
    let owned = request.owned.as_deref().map(TopicAssignment::map);
    let reported = owned.clone().map(|owned| (request.member_epoch, owned));
    let group_id = request.group_id.clone();
    let heartbeat = Heartbeat {
        member_id: (!request.member_id.is_empty()).then(|| MemberId(request.member_id.clone())),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.clone(),
        client_id: request.client_id.clone(),
        host: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        subscribed_topics: request
            .subscribed_topics
            .map(|t| t.into_iter().collect::<BTreeSet<_>>()),
        assignor,
        owned,
        session_timeout_ms: (request.session_timeout_ms > 0)
            .then_some(u64::from(request.session_timeout_ms)),
    };
    let group = group_id.clone();
    let heard = with_group_partition(
        &ctx.engine,
        ctx.cluster.as_ref(),
        &config,
        &group_id,
        move |locked| {
            Box::pin(async move {
                let count = counter(locked);
                let config = locked.config().clone();
                let g = locked
                    .groups()
                    .entry(group.clone())
                    .or_insert_with(|| coordinator::new_group(&group, &config));
                let outcome = g.heartbeat(&config, heartbeat, &count, now_ms());
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        forget_if_unused(locked, &group);
                        return Err(group_error(&e));
                    }
                };
                locked.persist(&group).await?;
                Ok(match outcome {
                    None => Heard::Left,
                    Some(answer) => {
                        let unchanged = reported.as_ref().is_some_and(|(epoch, owned)| {
                            *epoch == answer.member_epoch && *owned == answer.assignment
                        });
                        // At most the member's heartbeat interval: its
                        // session runs while it waits.
                        let wait_ms = wait_asked_ms.min(answer.heartbeat_interval_ms);
                        if unchanged && wait_ms > 0 {
                            let woken = locked.waiter(&group, &answer.member_id);
                            Heard::Wait(woken, Duration::from_millis(wait_ms))
                        } else {
                            Heard::Answer(answer)
                        }
                    }
                })
            })
        },
    )
    .await??;
    let (woken, wait) = match heard {
        Heard::Answer(answer) => return Ok(Some(answer)),
        Heard::Left => return Ok(None),
        Heard::Wait(woken, wait) => (woken, wait),
    };
    // The long poll: at the member's next change, or after `wait`.
    let timer = std::pin::pin!(runtime::sleep(wait));
    futures::future::select(woken, timer).await;
    let member = MemberId(request.member_id.clone());
    let group = group_id.clone();
    with_group_partition(&ctx.engine, ctx.cluster.as_ref(), &config, &group_id, move |locked| {
        Box::pin(async move {
            let config = locked.config().clone();
            let unknown =
                || GroupError::UnknownMember { group: group.clone(), member: member.clone() };
            let g = locked.groups().get_mut(&group).ok_or_else(|| group_error(&unknown()))?;
            if !g.members.contains_key(&member) {
                return Err(group_error(&unknown()));
            }
            let answer = g.poll(&config, &member);
            locked.persist(&group).await?;
            Ok(Some(answer))
        })
    })
    .await?
}

/// Drops a group a failed request made and nothing keeps (no members, no
/// offsets, never written).
fn forget_if_unused(locked: &mut Locked, group: &str) {
    let unused = locked
        .groups()
        .get(group)
        .is_some_and(|g| g.members.is_empty() && g.offsets.is_empty() && !g.is_persisted());
    if unused {
        locked.groups().remove(group);
    }
}

fn commit_entries(offsets: &[CommitOffset]) -> Vec<((String, u32), u64, String)> {
    offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset, o.metadata.clone())).collect()
}

fn commit_response(
    offsets: &[CommitOffset],
    outcome: Result<Vec<Result<(), Failure>>, Failure>,
) -> OffsetCommitResponse {
    match outcome {
        Err((error_code, message)) => OffsetCommitResponse {
            error_code,
            message: message.clone(),
            partitions: offsets
                .iter()
                .map(|o| PartitionResult {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    error_code,
                    message: message.clone(),
                })
                .collect(),
        },
        Ok(results) => OffsetCommitResponse {
            error_code: 0,
            message: String::new(),
            partitions: offsets
                .iter()
                .zip(results)
                .map(|(o, r)| {
                    let (error_code, message) = r.err().unwrap_or_default();
                    PartitionResult {
                        topic: o.topic.clone(),
                        partition: o.partition,
                        error_code,
                        message,
                    }
                })
                .collect(),
        },
    }
}

/// Commits `offsets` for `member` (`None`: outside the group protocol).
async fn commit(
    ctx: &ServerContext,
    group_id: &str,
    member: Option<(MemberId, i32)>,
    offsets: &[CommitOffset],
) -> Result<Vec<Result<(), Failure>>, Failure> {
    if let Some(failure) = group_problem(ctx, group_id).await {
        return Err(failure);
    }
    let entries = commit_entries(offsets);
    let group = group_id.to_string();
    with_group_partition(
        &ctx.engine,
        ctx.cluster.as_ref(),
        &ctx.config.groups,
        group_id,
        move |locked| {
            Box::pin(async move {
                let config = locked.config().clone();
                let g = locked
                    .groups()
                    .entry(group.clone())
                    .or_insert_with(|| coordinator::new_group(&group, &config));
                let outcomes =
                    g.commit(member.as_ref().map(|(id, epoch)| (id, *epoch)), entries, now_ms());
                forget_if_unused(locked, &group);
                locked.persist(&group).await?;
                Ok(outcomes.into_iter().map(|(_, r)| r.map_err(|e| group_error(&e))).collect())
            })
        },
    )
    .await?
}

pub(crate) async fn offset_commit(
    ctx: &ServerContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let member = (!request.member_id.is_empty())
        .then(|| (MemberId(request.member_id.clone()), request.member_epoch));
    let outcome = commit(ctx, &request.group_id, member, &request.offsets).await;
    commit_response(&request.offsets, outcome)
}

pub(crate) async fn reset_offsets(
    ctx: &ServerContext,
    request: ResetOffsetsRequest,
) -> OffsetCommitResponse {
    let outcome = commit(ctx, &request.group_id, None, &request.offsets).await;
    commit_response(&request.offsets, outcome)
}

fn fetched(group: Option<&Group>, wanted: Option<&[TopicAssignment]>) -> Vec<FetchedOffset> {
    let of = |topic: &str, partition: u32| {
        let committed = group.and_then(|g| g.offsets.get(&(topic.to_string(), partition)));
        FetchedOffset {
            topic: topic.to_string(),
            partition,
            offset: committed.map_or(-1, |c| i64::try_from(c.offset).unwrap_or(i64::MAX)),
            metadata: committed.map(|c| c.metadata.clone()).unwrap_or_default(),
            commit_ms: committed.map_or(-1, |c| c.commit_ms),
        }
    };
    match wanted {
        Some(wanted) => {
            wanted.iter().flat_map(|t| t.partitions.iter().map(|p| of(&t.topic, *p))).collect()
        }
        None => group
            .map(|g| g.offsets.iter().map(|((t, p), _)| of(t, *p)).collect())
            .unwrap_or_default(),
    }
}

pub(crate) async fn offset_fetch(
    ctx: &ServerContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if let Some((error_code, message)) = group_problem(ctx, &request.group_id).await {
        return OffsetFetchResponse { error_code, message, offsets: vec![] };
    }
    let group = request.group_id.clone();
    let wanted = request.partitions.clone();
    let outcome = with_group_partition(
        &ctx.engine,
        ctx.cluster.as_ref(),
        &ctx.config.groups,
        &request.group_id,
        move |locked| {
            Box::pin(async move { fetched(locked.groups().get(&group), wanted.as_deref()) })
        },
    )
    .await;
    match outcome {
        Ok(offsets) => OffsetFetchResponse { error_code: 0, message: String::new(), offsets },
        Err((error_code, message)) => OffsetFetchResponse { error_code, message, offsets: vec![] },
    }
}

fn listing(g: &Group) -> GroupListing {
    GroupListing {
        group_id: g.id.clone(),
        state: g.state().name().to_string(),
        member_count: u32::try_from(g.members.len()).unwrap_or(u32::MAX),
        assignor: g.assignor.name().to_string(),
    }
}

/// The partitions of `__consumer_offsets` whose groups this broker
/// coordinates: in a cluster those it leads (none before the topic
/// exists: no group does either), else all (the topic made if missing).
async fn offsets_partitions_led_here(ctx: &ServerContext) -> Result<Vec<u32>, EngineError> {
    let Some(cluster) = &ctx.cluster else {
        let count = ensure_offsets_topic(&ctx.engine, &ctx.config.groups).await?;
        return Ok((0..count).collect());
    };
    let view = cluster.view();
    let me = crate::cluster::metadata::BrokerId(cluster.node_id());
    let count = view.metadata.topic(coordinator::OFFSETS_TOPIC).map_or(0, |t| t.partitions.len());
    Ok((0..count as u32)
        .filter(|p| view.serving_leader(coordinator::OFFSETS_TOPIC, *p) == Ok(Some(me)))
        .collect())
}

/// The groups this broker coordinates (`Admin::list_groups` asks every
/// broker of a cluster).
pub(crate) async fn list_groups(ctx: &ServerContext) -> ListGroupsResponse {
    let mut groups = Vec::new();
    let partitions = match offsets_partitions_led_here(ctx).await {
        Ok(partitions) => partitions,
        Err(e) => {
            let (error_code, message) = engine_error(&e);
            return ListGroupsResponse { error_code, message, groups };
        }
    };
    for partition in partitions {
        let listed = with_partition(
            &ctx.engine,
            ctx.cluster.as_ref(),
            &ctx.config.groups,
            partition,
            |locked| {
                Box::pin(async move { locked.groups().values().map(listing).collect::<Vec<_>>() })
            },
        )
        .await;
        match listed {
            Ok(listed) => groups.extend(listed),
            Err((error_code, message)) => {
                return ListGroupsResponse { error_code, message, groups };
            }
        }
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse { error_code: 0, message: String::new(), groups }
}

fn description(g: &Group) -> GroupDescription {
    GroupDescription {
        group_id: g.id.clone(),
        error_code: 0,
        message: String::new(),
        state: g.state().name().to_string(),
        group_epoch: g.epoch,
        assignor: g.assignor.name().to_string(),
        members: g
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.0.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                member_epoch: m.epoch,
                assignment: TopicAssignment::list(&m.assigned),
                target: TopicAssignment::list(&m.target),
            })
            .collect(),
        offsets: fetched(Some(g), None),
    }
}

fn group_failure(group_id: &str, (error_code, message): Failure) -> GroupDescription {
    GroupDescription {
        group_id: group_id.to_string(),
        error_code,
        message,
        state: String::new(),
        group_epoch: 0,
        assignor: String::new(),
        members: vec![],
        offsets: vec![],
    }
}

fn not_found(group_id: &str) -> Failure {
    (ErrorCode::GroupNotFound.as_u16(), format!("no group {group_id:?}"))
}

pub(crate) async fn describe_groups(
    ctx: &ServerContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        if let Some(failure) = group_problem(ctx, &group_id).await {
            groups.push(group_failure(&group_id, failure));
            continue;
        }
        let id = group_id.clone();
        let described = with_group_partition(
            &ctx.engine,
            ctx.cluster.as_ref(),
            &ctx.config.groups,
            &group_id,
            move |locked| Box::pin(async move { locked.groups().get(&id).map(description) }),
        )
        .await;
        groups.push(match described {
            Ok(Some(d)) => d,
            Ok(None) => group_failure(&group_id, not_found(&group_id)),
            Err(failure) => group_failure(&group_id, failure),
        });
    }
    DescribeGroupsResponse { groups }
}

pub(crate) async fn delete_groups(
    ctx: &ServerContext,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let outcome = match group_problem(ctx, &group_id).await {
            Some(failure) => Err(failure),
            None => {
                let id = group_id.clone();
                with_group_partition(
                    &ctx.engine,
                    ctx.cluster.as_ref(),
                    &ctx.config.groups,
                    &group_id,
                    move |locked| {
                        Box::pin(async move {
                            match locked.groups().get(&id) {
                                None => Err(not_found(&id)),
                                Some(g) if !g.members.is_empty() => {
                                    Err(group_error(&GroupError::GroupNotEmpty {
                                        group: id.clone(),
                                        what: "deleting it",
                                    }))
                                }
                                Some(_) => locked.delete(&id).await,
                            }
                        })
                    },
                )
                .await
                .and_then(|r| r)
            }
        };
        let (error_code, message) = outcome.err().unwrap_or_default();
        results.push(GroupResult { group_id, error_code, message });
    }
    DeleteGroupsResponse { results }
}
