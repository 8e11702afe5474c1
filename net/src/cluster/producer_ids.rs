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
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ids per block: one metadata record per this many producers.
pub(crate) const BLOCK_SIZE: u64 = 1000;

/// How long a producer waits for a block (an election, a controller
/// starting) before it hears the error.
const BLOCK_WAIT: Duration = Duration::from_secs(5);

/// Pause between attempts while no controller is known.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The blocks this broker hands ids out of: the current one and a spare,
/// fetched in the background once the current one is in use, so producers
/// rarely wait for the controller — and a broker cut off from the quorum
/// still has ids to give while it serves the partitions it leads.
#[derive(Default)]
pub(crate) struct ProducerIdSource {
    blocks: std::sync::Mutex<Blocks>,
    /// Notified when a fetch ends.
    fetched: event_listener::Event,
}

#[derive(Default)]
struct Blocks {
    /// Next id to hand out and the end of its block.
    current: (u64, u64),
    spare: Option<(u64, u64)>,
    /// A fetch is under way (one at a time).
    fetching: bool,
}

impl Blocks {
    fn in_hand(&self) -> bool {
        self.current.0 < self.current.1 || self.spare.is_some()
    }
}

/// What `next` does after looking at the blocks.
enum Step {
    Id { id: u64, fetch_spare: bool },
    Wait(event_listener::EventListener),
    Fetch,
}

impl ProducerIdSource {
    /// A producer id no other producer in the cluster has.
    pub(crate) async fn next(&self, handle: &Arc<ClusterHandle>) -> Result<u64, AdminError> {
        let deadline = Instant::now() + BLOCK_WAIT;
        loop {
            match self.step() {
                Step::Id { id, fetch_spare } => {
                    if fetch_spare {
                        self.spawn_fetch(handle.clone());
                    }
                    return Ok(id);
                }
                Step::Wait(listener) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    futures::select! {
                        () = futures::FutureExt::fuse(listener) => {}
                        () = futures::FutureExt::fuse(crate::runtime::sleep(left)) => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(AdminError::NoQuorum(
                            "no block of producer ids from the controller in time".into(),
                        ));
                    }
                }
                Step::Fetch => {
                    let fetched = fetch_block(handle).await;
                    let failed = fetched.as_ref().err().cloned();
                    self.store(fetched);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Starts fetching a block unless ids are in hand or coming: for a
    /// broker that just joined, before its first producer asks. (The spare
    /// is fetched once ids are handed out.)
    pub(crate) fn prefetch(&self, handle: &Arc<ClusterHandle>) {
        let start = {
            let mut blocks = self.lock();
            let wanted = !blocks.in_hand() && !blocks.fetching;
            blocks.fetching |= wanted;
            wanted
        };
        if start {
            self.spawn_fetch(handle.clone());
        }
    }

    /// Whether ids can be handed out without asking the controller.
    pub(crate) fn in_hand(&self) -> bool {
        self.lock().in_hand()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn step(&self) -> Step {
        let mut blocks = self.lock();
        if blocks.current.0 == blocks.current.1 {
            if let Some(spare) = blocks.spare.take() {
                blocks.current = spare;
            }
        }
        if blocks.current.0 < blocks.current.1 {
            let id = blocks.current.0;
            blocks.current.0 += 1;
            let fetch_spare = blocks.spare.is_none() && !blocks.fetching;
            blocks.fetching |= fetch_spare;
            return Step::Id { id, fetch_spare };
        }
        if blocks.fetching {
            return Step::Wait(self.fetched.listen());
        }
        blocks.fetching = true;
        Step::Fetch
    }

    /// Ends a fetch: the block becomes the spare (or the current one, when
    /// that ran out).
    fn store(&self, fetched: Result<ProducerIdBlock, AdminError>) {
        let mut blocks = self.lock();
        blocks.fetching = false;
        if let Ok(block) = fetched {
            let range = (block.start, block.start + block.size);
            if blocks.current.0 == blocks.current.1 {
                blocks.current = range;
            } else {
                blocks.spare = Some(range);
            }
        }
        drop(blocks);
        self.fetched.notify(usize::MAX);
    }

    /// Fetches a block in the background (`fetching` is set by the caller).
    fn spawn_fetch(&self, handle: Arc<ClusterHandle>) {
        crate::runtime::spawn(async move {
            let fetched = fetch_block(&handle).await;
            if let Err(e) = &fetched {
                tracing::debug!(error = %e, "no spare block of producer ids yet");
            }
            handle.producer_ids().store(fetched);
        })
        .detach();
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
