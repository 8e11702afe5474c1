//! `/v1/cluster`: the cluster's state (controller, voters, brokers with
//! their heartbeats, offline partitions, settings, moves) and the
//! operator's actions — failover, failback, transfer leadership, move,
//! decommission, settings — the very requests `mamba cluster` sends. An
//! action is answered once the controller recorded it (202); what it
//! starts shows in the state.

use crate::problem::{ApiError, ApiResult};
use crate::server::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mamba_net::client::ClientError;
use mamba_net::protocol::ClusterAction;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A voter (or learner) of the metadata quorum.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Voter {
    pub node_id: u64,
    pub cluster_address: String,
    /// `leader`, `follower` or `learner`.
    pub role: String,
    /// Metadata entries it has not acknowledged yet (known at the leader).
    pub log_lag: Option<u64>,
}

/// A broker of the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Broker {
    pub node_id: u32,
    pub client_address: String,
    pub cluster_address: String,
    pub rack: Option<String>,
    /// `alive`, `fenced` or `decommissioning`.
    pub status: String,
    /// Leads only where no other in-sync replica can (after a failover).
    pub drained: bool,
    /// Since the controller last heard from it.
    pub last_heartbeat_age_ms: Option<u64>,
    pub partitions_led: u32,
    pub partitions_hosted: u32,
}

/// A partition in the cluster's view.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: u32,
}

/// A partition moving to other replicas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Move {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u32>,
    pub target: Vec<u32>,
}

/// The cluster as the answering broker sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterState {
    pub cluster_id: String,
    /// The broker that answered.
    pub node_id: u64,
    /// The controller (the metadata quorum's leader), when known.
    pub controller_id: Option<u64>,
    pub voters: Vec<Voter>,
    pub brokers: Vec<Broker>,
    /// Partitions with no alive leader.
    pub offline_partitions: Vec<PartitionRef>,
    /// Operator settings that are set (`leader.placement`, ...).
    pub settings: std::collections::BTreeMap<String, String>,
    pub moves: Vec<Move>,
}

/// An operator's action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// Every leadership off broker `from` (default: the cluster's
    /// primary); it leads only where no other in-sync replica can, until
    /// failback.
    Failover { from: Option<u32> },
    /// Broker `to` may lead again (default: the drained primary).
    Failback { to: Option<u32> },
    /// Broker `to` leads the partition, and becomes its preferred leader.
    TransferLeader { topic: String, partition: u32, to: u32 },
    /// The partition's replicas become `replicas` (the new ones copy the
    /// log, then the old ones go).
    Move { topic: String, partition: u32, replicas: Vec<u32> },
    /// Every replica of `broker` moves away; once it is stopped and hosts
    /// nothing, the cluster forgets it.
    Decommission { broker: u32 },
    /// Sets an operator setting, or with `value: null` removes it.
    SetConfig { name: String, value: Option<String> },
}

/// The action as the protocol carries it.
impl From<Action> for ClusterAction {
    fn from(action: Action) -> ClusterAction {
        match action {
            Action::Failover { from } => ClusterAction::Failover { from },
            Action::Failback { to } => ClusterAction::Failback { to },
            Action::TransferLeader { topic, partition, to } => {
                ClusterAction::TransferLeader { topic, partition, to }
            }
            Action::Move { topic, partition, replicas } => {
                ClusterAction::MoveReplicas { topic, partition, replicas }
            }
            Action::Decommission { broker } => ClusterAction::Decommission { broker_id: broker },
            Action::SetConfig { name, value } => ClusterAction::SetSetting { name, value },
        }
    }
}

/// The cluster's state.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses(
        (status = 200, description = "The cluster", body = ClusterState),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn cluster_state(State(state): State<AppState>) -> ApiResult<Json<ClusterState>> {
    let s = state.admin.cluster_status().await?;
    if let Some(e) = ClientError::from_code(s.error_code, s.message.clone()) {
        return Err(e.into());
    }
    Ok(Json(ClusterState {
        cluster_id: s.cluster_id,
        node_id: s.node_id,
        controller_id: s.leader_id,
        voters: s
            .voters
            .into_iter()
            .map(|v| Voter {
                node_id: v.node_id,
                cluster_address: v.cluster_address,
                role: v.role,
                log_lag: v.log_lag,
            })
            .collect(),
        brokers: s
            .brokers
            .into_iter()
            .map(|b| Broker {
                node_id: b.node_id,
                client_address: b.client_address,
                cluster_address: b.cluster_address,
                rack: b.rack,
                status: b.status,
                drained: b.drained,
                last_heartbeat_age_ms: b.last_heartbeat_age_ms,
                partitions_led: b.partitions_led,
                partitions_hosted: b.partitions_hosted,
            })
            .collect(),
        offline_partitions: s
            .offline_partitions
            .into_iter()
            .map(|p| PartitionRef { topic: p.topic, partition: p.partition })
            .collect(),
        settings: s.settings.into_iter().map(|c| (c.name, c.value)).collect(),
        moves: s
            .moves
            .into_iter()
            .map(|m| Move {
                topic: m.topic,
                partition: m.partition,
                replicas: m.replicas,
                target: m.target,
            })
            .collect(),
    }))
}

/// Records an operator's action at the controller; what it starts
/// (leadership changes, moves) follows, visible in `GET /v1/cluster` and
/// the topics.
#[utoipa::path(post, path = "/v1/cluster/actions", tag = "cluster", request_body = Action,
    responses(
        (status = 202, description = "Recorded; its effects follow"),
        (status = 400, description = "A bad action (unknown broker or partition, a voter to decommission, ...)", body = crate::Problem),
        (status = 404, description = "No such topic or partition", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The cluster cannot take it now (no quorum)", body = crate::Problem),
    ))]
pub async fn cluster_action(
    State(state): State<AppState>,
    body: Result<Json<Action>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(action) = body.map_err(ApiError::from)?;
    state.admin.cluster_action(action.into()).await?;
    Ok(StatusCode::ACCEPTED)
}
