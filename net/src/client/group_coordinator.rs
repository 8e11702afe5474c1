//! Where a consumer group's requests go: the broker that coordinates the
//! group, as `find_coordinator` (asked of the bootstrap link) names it,
//! over that broker's connection of the [`BrokerPool`].
//!
//! The coordinator found is kept until it fails: a `not coordinator`
//! answer (the group moved) or a connection that died makes the next
//! request find it again. [`GroupCoordinator::call`] does that itself for
//! requests that are safe to repeat (commits, offset fetches, admin), a
//! bounded number of times with a backoff; the membership thread, which
//! has its own retry loop, uses [`GroupCoordinator::connection`] and
//! [`GroupCoordinator::forget`].

use super::backoff::Backoff;
use super::broker_pool::BrokerPool;
use super::cluster_view::broker_address;
use super::{ClientError, Connection};
use crate::protocol::{
    ErrorCode, FindCoordinatorRequest, FindCoordinatorResponse, Message, Request,
};
use futures_timer::Delay;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sends of one request, at most, when the coordinator moves or its
/// connection fails.
pub const COORDINATOR_ATTEMPTS_MAX: u32 = 3;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A coordinator: its node id and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: u32,
    pub addr: String,
}

/// Lifecycle: made when a consumer joins a group (or for one admin
/// call); finds the coordinator on first use. Thread-safe.
pub struct GroupCoordinator {
    pool: Arc<BrokerPool>,
    group_id: String,
    found: Mutex<Option<Coordinator>>,
}

impl GroupCoordinator {
    pub fn new(pool: Arc<BrokerPool>, group_id: &str) -> GroupCoordinator {
        GroupCoordinator { pool, group_id: group_id.to_string(), found: Mutex::new(None) }
    }

    fn found(&self) -> std::sync::MutexGuard<'_, Option<Coordinator>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The coordinator, found now if not known.
    pub async fn coordinator(&self) -> Result<Coordinator, ClientError> {
        if let Some(known) = self.found().clone() {
            return Ok(known);
        }
        let found = find_coordinator(&self.pool, &self.group_id).await?;
        *self.found() = Some(found.clone());
        Ok(found)
    }

    /// The live connection to the coordinator (found first if need be).
    pub async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let coordinator = self.coordinator().await?;
        self.pool.connection(coordinator.node_id, &coordinator.addr).inspect_err(|_| self.forget())
    }

    /// The coordinator failed (moved, or cannot be reached): the next
    /// request finds it again.
    pub fn forget(&self) {
        if let Some(old) = self.found().take() {
            tracing::debug!(group = %self.group_id, node_id = old.node_id, "finding the group's coordinator again");
        }
    }

    /// Sends `request` to the coordinator and decodes the answer, whose
    /// error code `error_code` reads. A `not coordinator` or `coordinator
    /// loading` answer, or a connection that failed before the answer,
    /// sends it again (to the coordinator found again), up to
    /// [`COORDINATOR_ATTEMPTS_MAX`] times: only for requests that may be
    /// repeated.
    pub async fn call<R: Request, A: Message>(
        &self,
        request: &R,
        error_code: impl Fn(&A) -> u16,
    ) -> Result<A, ClientError> {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut attempt = 1;
        loop {
            let result = match self.connection().await {
                Ok(conn) => conn.call::<R, A>(request, &[]).await.map(|(answer, _)| answer),
                Err(e) => Err(e),
            };
            let again = match &result {
                Ok(answer) => match ErrorCode::from_u16(error_code(answer)) {
                    ErrorCode::NotCoordinator => {
                        self.forget();
                        true
                    }
                    ErrorCode::CoordinatorLoading => true,
                    _ => false,
                },
                Err(e) => {
                    let lost = connection_lost(e);
                    if lost || matches!(e, ClientError::Timeout { .. }) {
                        self.forget();
                    }
                    lost
                }
            };
            if !again || attempt >= COORDINATOR_ATTEMPTS_MAX {
                return result;
            }
            attempt += 1;
            Delay::new(backoff.next_wait()).await;
        }
    }
}

/// Whether `error` says the connection failed (the request may not have
/// arrived; the broker may be gone), rather than a slow or refusing broker.
pub fn connection_lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect { .. } | ClientError::Disconnected { .. } | ClientError::Io { .. }
    )
}

/// Asks any broker (the bootstrap link) which broker coordinates
/// `group_id`.
pub async fn find_coordinator(
    pool: &BrokerPool,
    group_id: &str,
) -> Result<Coordinator, ClientError> {
    let conn = pool.bootstrap().connection()?;
    let request = FindCoordinatorRequest { group_id: group_id.to_string() };
    let (answer, _) = conn.call::<_, FindCoordinatorResponse>(&request, &[]).await?;
    let message = || format!("finding the coordinator of group {group_id:?}: {}", answer.message);
    if let Some(e) = ClientError::from_code(answer.error_code, message()) {
        return Err(e);
    }
    let addr = broker_address(&answer.host, answer.port, conn.addr().ip());
    Ok(Coordinator { node_id: answer.node_id, addr })
}
