//! Idempotent producer ids in a cluster: each broker hands them out of a
//! block the controller reserved for it in the metadata log
//! (`AllocateProducerIds`). Blocks are reserved in log order, each after
//! the last, so no two producers in the cluster ever share an id — not
//! across brokers, and not across restarts of one broker: a broker keeps
//! its block in memory only, and a restart asks for a fresh one (the rest
//! of the old block is never handed out again).

use super::handle::{AdminError, ClusterHandle};
use super::metadata::{BrokerId, ProducerIdBlock};
use crate::protocol::{AllocateProducerIdsRequest, AllocateProducerIdsResponse, ErrorCode};
use std::time::{Duration, Instant};

/// Ids per block: one metadata record per this many producers.
pub(crate) const BLOCK_SIZE: u64 = 1000;

/// How long a producer waits for a block (an election, a controller
/// starting) before it hears the error.
const BLOCK_WAIT: Duration = Duration::from_secs(5);

/// Pause between attempts while no controller is known.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The block this broker hands ids out of.
#[derive(Default)]
pub(crate) struct ProducerIdSource {
    /// Next id to hand out and the end of the block. Async: producers that
    /// find the block empty wait for the one request that refills it.
    range: futures::lock::Mutex<(u64, u64)>,
}

impl ProducerIdSource {
    /// A producer id no other producer in the cluster has.
    pub(crate) async fn next(&self, handle: &ClusterHandle) -> Result<u64, AdminError> {
        let mut range = self.range.lock().await;
        if range.0 == range.1 {
            let block = fetch_block(handle).await?;
            *range = (block.start, block.start + block.size);
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

/// Asks the controller for a new block, following `not controller`
/// answers and waiting out elections (bounded by `BLOCK_WAIT`).
async fn fetch_block(handle: &ClusterHandle) -> Result<ProducerIdBlock, AdminError> {
    let me = handle.node_id();
    let deadline = Instant::now() + BLOCK_WAIT;
    loop {
        let outcome = match handle.view().leader_id {
            Some(leader) if leader == u64::from(me) => handle.allocate_producer_ids_here(me).await,
            Some(leader) => ask_controller(handle, leader).await,
            None => Err(AdminError::NotController { leader: None }),
        };
        let retry = match &outcome {
            Ok(_) => false,
            Err(AdminError::NotController { .. } | AdminError::NotReady) => true,
            // Another broker's block took the place this one was proposed
            // for (the controller reserves at the end of the applied log).
            Err(AdminError::Refused { code, .. }) => *code == ErrorCode::Busy,
            Err(AdminError::NoQuorum(_)) => false,
        };
        if !retry || Instant::now() >= deadline {
            return outcome;
        }
        crate::runtime::sleep(RETRY_PAUSE).await;
    }
}

async fn ask_controller(
    handle: &ClusterHandle,
    leader: u64,
) -> Result<ProducerIdBlock, AdminError> {
    let Some(address) = handle.address_of(leader) else {
        return Err(AdminError::NotController { leader: None });
    };
    let request = AllocateProducerIdsRequest {
        cluster_id: handle.view().metadata.cluster_id().unwrap_or_default().to_string(),
        broker_id: handle.node_id(),
    };
    // An unreachable controller is as good as none: the view will name
    // the next one.
    let answer: AllocateProducerIdsResponse = handle
        .call_peer(leader, &address, request)
        .await
        .map_err(|_| AdminError::NotController { leader: None })?;
    match ErrorCode::from_u16(answer.error_code) {
        ErrorCode::None => Ok(ProducerIdBlock {
            broker_id: BrokerId(handle.node_id()),
            start: answer.start,
            size: answer.size,
        }),
        ErrorCode::NotController => {
            if let Some(id) = answer.leader_id {
                handle.learn_address(id, &answer.leader_cluster_address);
            }
            Err(AdminError::NotController { leader: None })
        }
        ErrorCode::NoQuorum => Err(AdminError::NoQuorum(answer.message)),
        code => Err(AdminError::Refused { code, message: answer.message }),
    }
}
