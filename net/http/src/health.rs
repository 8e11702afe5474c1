//! `/livez` (the process answers) and `/readyz` (it can serve: recovery
//! done, the client port answering, and in a cluster registered and not
//! fenced), for load balancers and orchestrators.

use crate::problem::{ApiError, ApiResult};
use crate::server::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mamba_net::cluster::metadata::BrokerId;
use mamba_net::cluster::ClusterHandle;
use mamba_net::protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

/// A health answer.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn livez() -> Json<Health> {
    Json(Health { status: "ok".to_string() })
}

/// The broker serves: its client port answers (so recovery is done and
/// the shards run) and, in a cluster, it is a member in good standing.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "Not ready, and why", body = crate::Problem),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    let not_ready = |why: String| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::None, format!("not ready: {why}"))
    };
    state.admin.describe_broker().await.map_err(|e| not_ready(e.to_string()))?;
    if let Some(cluster) = &state.telemetry.cluster {
        member_in_good_standing(cluster).map_err(not_ready)?;
    }
    Ok(Json(Health { status: "ok".to_string() }))
}

/// This broker is registered in its cluster and not fenced.
fn member_in_good_standing(cluster: &ClusterHandle) -> Result<(), String> {
    let me = BrokerId(cluster.node_id());
    match cluster.view().metadata.broker(me) {
        None => Err(format!("broker {me} is not registered in the cluster yet")),
        Some(b) if b.fenced => {
            Err(format!("broker {me} is fenced (its heartbeats did not reach the controller)"))
        }
        Some(_) => Ok(()),
    }
}
