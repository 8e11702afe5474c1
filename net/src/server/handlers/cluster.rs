//! The cluster's APIs: Raft messages and broker heartbeats (cluster port
//! only), the cluster's status and voter changes (either port); and what
//! the other handlers ask of the cluster: whether this broker leads a
//! partition, and where an admin request goes.

use crate::client::ClientError;
use crate::cluster::metadata::BrokerId;
use crate::cluster::operator::OperatorAction;
use crate::cluster::{AdminCommand, AdminError, ClusterHandle};
use crate::protocol::*;
use crate::server::{Port, ServerContext};
use protobuf::Message as _;
use std::sync::Arc;

/// The largest Raft message taken (an install-snapshot carries the whole
/// metadata state).
const RAFT_MESSAGE_BYTES_MAX: usize = 64 << 20;

pub(crate) fn cluster_port_only(ctx: &ServerContext) -> Option<(u16, String)> {
    match (&ctx.cluster, ctx.port) {
        (None, _) => {
            Some((ErrorCode::InvalidRequest.as_u16(), "this broker is not in a cluster".into()))
        }
        (Some(_), Port::Client) => Some((
            ErrorCode::InvalidRequest.as_u16(),
            "brokers talk to each other on the cluster port, not the client port".into(),
        )),
        (Some(_), Port::Cluster) => None,
    }
}

/// Validates untrusted Raft messages and hands them to the Raft task.
pub(crate) fn raft_messages(
    ctx: &ServerContext,
    request: RaftMessagesRequest,
) -> RaftMessagesResponse {
    let answer = |code: ErrorCode, message: String| RaftMessagesResponse {
        error_code: code.as_u16(),
        message,
    };
    if let Some((error_code, message)) = cluster_port_only(ctx) {
        return RaftMessagesResponse { error_code, message };
    }
    let cluster = ctx.cluster.as_ref().expect("checked");
    let view = cluster.view();
    let ours = view.metadata.cluster_id().unwrap_or_default();
    if !request.cluster_id.is_empty() && !ours.is_empty() && request.cluster_id != ours {
        tracing::warn!(from = request.from, theirs = %request.cluster_id, ours, "raft messages from another cluster refused");
        return answer(
            ErrorCode::ClusterIdMismatch,
            format!("this is cluster {ours}, the sender's is {}", request.cluster_id),
        );
    }
    let me = u64::from(cluster.node_id());
    let mut messages = Vec::with_capacity(request.messages.len());
    for bytes in &request.messages {
        if bytes.len() > RAFT_MESSAGE_BYTES_MAX {
            return answer(
                ErrorCode::InvalidRequest,
                format!("a raft message of {} bytes", bytes.len()),
            );
        }
        let message = match raft::eraftpb::Message::parse_from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => {
                return answer(
                    ErrorCode::InvalidRequest,
                    format!("a raft message does not decode: {e}"),
                )
            }
        };
        if message.from != request.from || message.to != me {
            return answer(
                ErrorCode::InvalidRequest,
                format!(
                    "a raft message from {} to {} arrived at node {me} from {}",
                    message.from, message.to, request.from
                ),
            );
        }
        messages.push(message);
    }
    if !cluster.deliver(messages) {
        return answer(ErrorCode::Busy, "the raft task is not taking messages".into());
    }
    answer(ErrorCode::None, String::new())
}

pub(crate) async fn broker_heartbeat(
    ctx: &ServerContext,
    request: BrokerHeartbeatRequest,
) -> BrokerHeartbeatResponse {
    let refuse = |error_code: u16, message: String| BrokerHeartbeatResponse {
        error_code,
        message,
        cluster_id: String::new(),
        leader_id: None,
        leader_cluster_address: String::new(),
        fenced: true,
    };
    if let Some((code, message)) = cluster_port_only(ctx) {
        return refuse(code, message);
    }
    let cluster = ctx.cluster.as_ref().expect("checked");
    match cluster.heartbeat(request).await {
        Some(answer) => answer,
        None => refuse(ErrorCode::ShuttingDown.as_u16(), "the broker is stopping".into()),
    }
}

/// A broker's request for a block of producer ids, answered by the
/// controller (`not controller`, naming it, elsewhere).
pub(crate) async fn allocate_producer_ids(
    ctx: &ServerContext,
    request: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    let refuse = |code: ErrorCode, message: String, leader: Option<(u64, String)>| {
        let (leader_id, leader_cluster_address) =
            leader.map_or((None, String::new()), |(id, address)| (Some(id), address));
        AllocateProducerIdsResponse {
            error_code: code.as_u16(),
            message,
            leader_id,
            leader_cluster_address,
            start: 0,
            size: 0,
        }
    };
    if let Some((code, message)) = cluster_port_only(ctx) {
        return refuse(ErrorCode::from_u16(code), message, None);
    }
    let cluster = ctx.cluster.as_ref().expect("checked");
    let ours = cluster.view().metadata.cluster_id().unwrap_or_default().to_string();
    if !request.cluster_id.is_empty() && !ours.is_empty() && request.cluster_id != ours {
        let message = format!("this is cluster {ours}, the broker's is {}", request.cluster_id);
        return refuse(ErrorCode::ClusterIdMismatch, message, None);
    }
    match cluster.allocate_producer_ids_here(request.broker_id).await {
        Ok(block) => AllocateProducerIdsResponse {
            error_code: ErrorCode::None.as_u16(),
            message: String::new(),
            leader_id: None,
            leader_cluster_address: String::new(),
            start: block.start,
            size: block.size,
        },
        Err(e) => {
            let leader = match &e {
                AdminError::NotController { leader } => leader.clone(),
                _ => None,
            };
            refuse(e.code(), e.to_string(), leader)
        }
    }
}

pub(crate) async fn cluster_status(ctx: &ServerContext) -> ClusterStatusResponse {
    let empty = |error_code: ErrorCode, message: String| ClusterStatusResponse {
        error_code: error_code.as_u16(),
        message,
        cluster_id: String::new(),
        node_id: u64::from(ctx.config.node_id),
        leader_id: None,
        term: 0,
        applied_index: 0,
        voters: vec![],
        brokers: vec![],
        offline_partitions: vec![],
        metadata_digest: 0,
        settings: vec![],
        moves: vec![],
    };
    let Some(cluster) = &ctx.cluster else {
        return empty(ErrorCode::InvalidRequest, "this broker is not in a cluster".into());
    };
    match cluster.status().await {
        Some(status) => status,
        None => empty(ErrorCode::ShuttingDown, "the broker is stopping".into()),
    }
}

pub(crate) async fn alter_voters(
    ctx: &ServerContext,
    request: AlterVotersRequest,
) -> AlterVotersResponse {
    let answer = |code: ErrorCode, message: String| AlterVotersResponse {
        error_code: code.as_u16(),
        message,
    };
    let Some(cluster) = &ctx.cluster else {
        return answer(ErrorCode::InvalidRequest, "this broker is not in a cluster".into());
    };
    let commands: Vec<AdminCommand> = request
        .add
        .iter()
        .map(|id| AdminCommand::AddVoter { node_id: *id })
        .chain(request.remove.iter().map(|id| AdminCommand::RemoveVoter { node_id: *id }))
        .collect();
    if commands.len() != 1 {
        return answer(ErrorCode::InvalidRequest, "change one voter at a time".into());
    }
    let command = commands.into_iter().next().expect("one");
    match cluster.admin(command).await {
        Ok(()) => answer(ErrorCode::None, String::new()),
        Err(AdminError::NotController { leader: Some((id, address)) })
            if ctx.port == Port::Client =>
        {
            match cluster.call_peer::<_, AlterVotersResponse>(id, &address, request).await {
                Ok(forwarded) => forwarded,
                Err(e) => answer(ErrorCode::NotController, forward_failed(id, &e)),
            }
        }
        Err(e) => answer(e.code(), e.to_string()),
    }
}

/// An operator's action, done by the controller (forwarded to it from
/// the client port).
pub(crate) async fn cluster_action(
    ctx: &ServerContext,
    request: ClusterActionRequest,
) -> ClusterActionResponse {
    let answer = |code: ErrorCode, message: String| ClusterActionResponse {
        error_code: code.as_u16(),
        message,
    };
    let Some(cluster) = &ctx.cluster else {
        return answer(ErrorCode::InvalidRequest, "this broker is not in a cluster".into());
    };
    let action = match operator_action(request.action.clone()) {
        Ok(action) => action,
        Err(why) => return answer(ErrorCode::InvalidRequest, why),
    };
    match cluster.admin(AdminCommand::Operator(action)).await {
        Ok(()) => answer(ErrorCode::None, String::new()),
        Err(AdminError::NotController { leader: Some((id, address)) })
            if ctx.port == Port::Client =>
        {
            match cluster.call_peer::<_, ClusterActionResponse>(id, &address, request).await {
                Ok(forwarded) => forwarded,
                Err(e) => answer(ErrorCode::NotController, forward_failed(id, &e)),
            }
        }
        Err(e) => answer(e.code(), e.to_string()),
    }
}

/// The wire's action as the controller's, bounded.
fn operator_action(action: ClusterAction) -> Result<OperatorAction, String> {
    use crate::cluster::metadata::limits::REPLICAS_PER_PARTITION_MAX;
    Ok(match action {
        ClusterAction::Failover { from } => OperatorAction::Failover { from: from.map(BrokerId) },
        ClusterAction::Failback { to } => OperatorAction::Failback { to: to.map(BrokerId) },
        ClusterAction::TransferLeader { topic, partition, to } => {
            OperatorAction::TransferLeader { topic, partition, to: BrokerId(to) }
        }
        ClusterAction::MoveReplicas { topic, partition, replicas } => {
            if replicas.len() > REPLICAS_PER_PARTITION_MAX {
                return Err(format!(
                    "{} replicas; a partition has at most {REPLICAS_PER_PARTITION_MAX}",
                    replicas.len()
                ));
            }
            let replicas = replicas.into_iter().map(BrokerId).collect();
            OperatorAction::Move { topic, partition, replicas }
        }
        ClusterAction::Decommission { broker_id } => {
            OperatorAction::Decommission { broker_id: BrokerId(broker_id) }
        }
        ClusterAction::SetSetting { name, value } => OperatorAction::SetSetting { name, value },
    })
}

fn forward_failed(id: u64, e: &ClientError) -> String {
    format!("the controller (node {id}) did not answer a forwarded request: {e}")
}

/// Whether this broker may serve `partition` of `topic` now; the error
/// names the leader when another broker leads it.
pub(crate) fn check_leader(
    ctx: &ServerContext,
    topic: &str,
    partition: u32,
) -> Result<(), (u16, String)> {
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    let view = cluster.view();
    let me = crate::cluster::metadata::BrokerId(cluster.node_id());
    match view.serving_leader(topic, partition) {
        Ok(Some(leader)) if leader == me => Ok(()),
        Ok(Some(leader)) => {
            let at =
                view.metadata.broker(leader).map(|b| b.client_address.clone()).unwrap_or_default();
            Err((
                ErrorCode::NotLeader.as_u16(),
                format!(
                    "broker {me} does not lead {topic}/{partition}: broker {leader} at {at} does"
                ),
            ))
        }
        Ok(None) => Err((
            ErrorCode::NotLeader.as_u16(),
            format!("{topic}/{partition} is offline: no alive broker leads it"),
        )),
        Err(crate::cluster::handle::UnknownPartition) => Err((
            ErrorCode::UnknownTopicOrPartition.as_u16(),
            format!("unknown topic or partition {topic}/{partition}"),
        )),
    }
}

/// Where an admin request is done.
pub(crate) enum AdminRoute<'a> {
    /// No cluster: the engine.
    Engine,
    /// Through the quorum, from this broker.
    Cluster(&'a Arc<ClusterHandle>),
    /// At the controller, this request forwarded as it is.
    Forward { node_id: u64, address: String },
}

pub(crate) fn admin_route(ctx: &ServerContext) -> AdminRoute<'_> {
    let Some(cluster) = &ctx.cluster else { return AdminRoute::Engine };
    let me = u64::from(cluster.node_id());
    match cluster.view().leader_id {
        Some(leader) if leader != me && ctx.port == Port::Client => {
            match cluster.address_of(leader) {
                Some(address) => AdminRoute::Forward { node_id: leader, address },
                None => AdminRoute::Cluster(cluster),
            }
        }
        _ => AdminRoute::Cluster(cluster),
    }
}

/// Forwards `request` to the controller; a failure becomes `error` for
/// every item.
pub(crate) async fn forward<R, A>(
    ctx: &ServerContext,
    node_id: u64,
    address: &str,
    request: R,
) -> Result<A, (u16, String)>
where
    R: Request + Send + 'static,
    A: Message,
{
    let cluster = ctx.cluster.as_ref().expect("forwarding needs a cluster");
    cluster
        .call_peer::<R, A>(node_id, address, request)
        .await
        .map_err(|e| (ErrorCode::NotController.as_u16(), forward_failed(node_id, &e)))
}

pub(crate) fn admin_error(e: AdminError) -> (u16, String) {
    (e.code().as_u16(), e.to_string())
}

/// How long a creation's answer waits for this broker to open its share.
const LOCAL_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (bounded) until this broker applied a topic the cluster just
/// created and opened its partitions of it, so a client that asked here
/// can use them at once.
pub(crate) async fn wait_hosted_here(ctx: &ServerContext, name: &str) -> Result<(), (u16, String)> {
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    let me = crate::cluster::metadata::BrokerId(cluster.node_id());
    let deadline = std::time::Instant::now() + LOCAL_OPEN_WAIT;
    let mut closed = Vec::new();
    while std::time::Instant::now() < deadline {
        let view = cluster.view();
        if let Some(topic) = view.metadata.topic(name) {
            // Done once every partition this broker holds is open here.
            let local = ctx.engine.describe_topic(name).ok();
            closed = (0..topic.partitions.len() as u32)
                .filter(|p| topic.partitions[*p as usize].replicas.contains(&me))
                .filter(|p| {
                    local
                        .as_ref()
                        .is_none_or(|m| m.shard_of(mamba_engine::PartitionId(*p)).is_none())
                })
                .collect();
            if closed.is_empty() {
                return Ok(());
            }
        }
        crate::runtime::sleep(std::time::Duration::from_millis(2)).await;
    }
    Err((
        ErrorCode::StorageError.as_u16(),
        format!(
            "topic {name:?} is in the cluster, but broker {me} could not open its partitions {closed:?} within {LOCAL_OPEN_WAIT:?} (see its log); it retries at every metadata change and start"
        ),
    ))
}

/// Whether this broker coordinates `group` (in a cluster: it leads the
/// group's partition of `__consumer_offsets`, which the controller creates
/// on first use). `not coordinator` names the broker that does.
pub(crate) async fn coordinate_here(ctx: &ServerContext, group: &str) -> Result<(), (u16, String)> {
    use crate::server::coordinator::OFFSETS_TOPIC;
    let Some(cluster) = &ctx.cluster else { return Ok(()) };
    let (partition, view) = group_partition(ctx, cluster, group).await?;
    drop(view);
    let not_here = |(_, message): (u16, String)| {
        (ErrorCode::NotCoordinator.as_u16(), format!("group {group:?}: {message}"))
    };
    check_leader(ctx, OFFSETS_TOPIC, partition).map_err(not_here)?;
    wait_hosted_here(ctx, OFFSETS_TOPIC).await?;
    // The metadata names this broker before its replica has taken the
    // leadership over (`Replication::apply_roles`): a moment, waited here.
    let tp = (OFFSETS_TOPIC.to_string(), partition);
    let deadline = std::time::Instant::now() + LOCAL_OPEN_WAIT;
    while cluster.replication().leading_epoch(&tp).is_none() {
        check_leader(ctx, OFFSETS_TOPIC, partition).map_err(not_here)?;
        if std::time::Instant::now() >= deadline {
            return Err((
                ErrorCode::CoordinatorLoading.as_u16(),
                format!("group {group:?}: broker {} is taking the leadership of {OFFSETS_TOPIC}/{partition} over; retry", cluster.node_id()),
            ));
        }
        crate::runtime::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(())
}

/// The broker that coordinates `group`: node id, host and port of its
/// client address.
pub(crate) async fn coordinator_of(
    ctx: &ServerContext,
    group: &str,
) -> Result<(u32, String, u16), (u16, String)> {
    use crate::server::coordinator::OFFSETS_TOPIC;
    let cluster = ctx.cluster.as_ref().expect("asked in a cluster");
    let (partition, view) = group_partition(ctx, cluster, group).await?;
    let leader = view.serving_leader(OFFSETS_TOPIC, partition).ok().flatten().ok_or_else(|| {
        (
            ErrorCode::CoordinatorLoading.as_u16(),
            format!("group {group:?}: partition {partition} of {OFFSETS_TOPIC} has no alive leader; retry"),
        )
    })?;
    let address =
        view.metadata.broker(leader).map(|b| b.client_address.clone()).unwrap_or_default();
    let (host, port) = address
        .rsplit_once(':')
        .map_or((address.clone(), 0), |(h, p)| (h.to_string(), p.parse().unwrap_or(0)));
    Ok((leader.0, host, port))
}

/// The partition of `__consumer_offsets` that holds `group` (the topic
/// made first when missing), and the view it was found in.
async fn group_partition(
    ctx: &ServerContext,
    cluster: &Arc<ClusterHandle>,
    group: &str,
) -> Result<(u32, Arc<crate::cluster::ClusterView>), (u16, String)> {
    use crate::server::coordinator::{partition_of, OFFSETS_TOPIC};
    if cluster.view().metadata.topic(OFFSETS_TOPIC).is_none() {
        ensure_offsets_topic(ctx, cluster).await?;
    }
    let view = cluster.view();
    let partitions = view.metadata.topic(OFFSETS_TOPIC).map_or(1, |t| t.partitions.len() as u32);
    Ok((partition_of(group, partitions), view))
}

/// Has the controller create `__consumer_offsets` (through this broker's
/// quorum node, or forwarded), then waits until this broker's metadata
/// has it.
async fn ensure_offsets_topic(
    ctx: &ServerContext,
    cluster: &Arc<ClusterHandle>,
) -> Result<(), (u16, String)> {
    use crate::server::coordinator::{offsets_topic_config, OFFSETS_TOPIC};
    let config = offsets_topic_config(&ctx.config.groups);
    let entries = crate::topic_config::entries(&config);
    let command = AdminCommand::EnsureTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: config.partitions,
        configs: entries
            .iter()
            .map(|c| crate::cluster::metadata::ConfigEntry {
                name: c.name.clone(),
                value: c.value.clone(),
            })
            .collect(),
    };
    match cluster.admin(command).await {
        Ok(()) => {}
        Err(AdminError::NotController { leader: Some((id, address)) }) => {
            let request = CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions: config.partitions,
                    configs: entries,
                }],
            };
            let answer: TopicResults = forward(ctx, id, &address, request).await?;
            if let Some(r) = answer.results.first() {
                if r.error_code != 0 && r.error_code != ErrorCode::TopicAlreadyExists.as_u16() {
                    return Err((r.error_code, r.message.clone()));
                }
            }
        }
        Err(e) => return Err(admin_error(e)),
    }
    let deadline = std::time::Instant::now() + LOCAL_OPEN_WAIT;
    while cluster.view().metadata.topic(OFFSETS_TOPIC).is_none() {
        if std::time::Instant::now() >= deadline {
            return Err((
                ErrorCode::CoordinatorLoading.as_u16(),
                "the offsets topic is being created; retry".into(),
            ));
        }
        crate::runtime::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(())
}
