//! The cluster (DESIGN.md §7): the Raft metadata quorum and what every
//! broker agrees on through it. `raft_store` keeps the quorum's log, hard
//! state and snapshots durable in our own storage; `raft_node` drives the
//! `raft` crate over it; `metadata` is the state machine the committed
//! records feed (pure, no I/O) and `placement` the controller's choice of
//! replicas before it proposes a topic.
//!
//! At run time (`Cluster::start`): `controller` is the Raft task on shard
//! 0 (every broker's node, and the controller's duties while it leads);
//! `handle` is what the server's handlers see (the applied metadata, a way
//! to the task); `peers` carries messages to other brokers' cluster ports;
//! `heartbeat` keeps this broker registered and alive at the controller;
//! `reconcile` opens and removes local partitions as the metadata says.

pub mod config;
mod controller;
pub mod election;
pub mod handle;
mod heartbeat;
pub mod metadata;
pub mod operator;
mod peers;
pub mod placement;
mod producer_ids;
pub mod raft_node;
pub mod raft_store;
pub mod reassign;
mod reconcile;
pub mod settings;

pub use config::{parse_voters, ClusterConfig, Voter, CLUSTER_LISTEN_DEFAULT};
pub use handle::{Addresses, AdminCommand, AdminError, ClusterHandle, ClusterView};

use mamba_engine::{Engine, ShardId};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster settings: {0}")]
    Config(String),
    #[error("cannot open the metadata log: {0}")]
    Open(String),
    #[error("cannot start the cluster: {0}")]
    Start(String),
}

/// The running cluster side of one broker.
pub struct Cluster {
    handle: Arc<ClusterHandle>,
    heartbeats: Option<heartbeat::Heartbeats>,
    stop_reconcile: Option<async_channel::Sender<()>>,
    controller_done: Option<std::sync::mpsc::Receiver<()>>,
}

/// How long `start` waits for this broker to be registered and unfenced
/// (and to hold producer ids).
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until the metadata shows this run of this broker alive and it
/// holds producer ids to hand out.
fn wait_alive(handle: &ClusterHandle, incarnation: u64, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let me = metadata::BrokerId(handle.node_id());
    loop {
        let view = handle.view();
        let alive = view
            .metadata
            .broker(me)
            .is_some_and(|b| b.incarnation_id.0 == incarnation && !b.fenced);
        // And with producer ids in hand (the reconciler fetches a block
        // once the broker is alive): none to ask the controller for while
        // it serves, and none taken just after it said it serves.
        let ready = alive && handle.producer_ids().in_hand();
        if ready || handle.fatal().is_some() {
            return ready;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// How long `stop` waits for the Raft task.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Cluster {
    /// A handle for the server to share before the cluster starts (its
    /// listeners must be bound first: their addresses are registered).
    pub fn prepare(
        config: ClusterConfig,
    ) -> Result<(Arc<ClusterHandle>, ClusterInbox), ClusterError> {
        config.validate().map_err(ClusterError::Config)?;
        let (handle, inbox) = ClusterHandle::new(config);
        Ok((handle, ClusterInbox(inbox)))
    }

    /// Opens the metadata log and starts the Raft task on shard 0, the
    /// reconciler beside it, and the heartbeats.
    pub fn start(
        engine: &Engine,
        handle: Arc<ClusterHandle>,
        inbox: ClusterInbox,
        addresses: Addresses,
    ) -> Result<Cluster, ClusterError> {
        handle.set_addresses(addresses);
        let (opened_tx, opened) = std::sync::mpsc::channel::<Result<(), String>>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let (engine_there, handle_there, commands) = (engine.clone(), handle.clone(), inbox.0);
        let task: mamba_engine::shard::ShardTask = Box::new(move || {
            Box::pin(async move {
                match controller::Controller::open(engine_there, handle_there).await {
                    Ok(controller) => {
                        let _ = opened_tx.send(Ok(()));
                        controller.run(commands).await;
                    }
                    Err(e) => drop(opened_tx.send(Err(e.to_string()))),
                }
                let _ = done_tx.send(());
            })
        });
        mamba_engine::block_on(engine.spawn_on_shard(ShardId(0), task))
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        match opened.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ClusterError::Open(e)),
            Err(_) => {
                return Err(ClusterError::Start("the raft task ended before it opened".into()))
            }
        }
        let (stop_reconcile, stopped) = async_channel::bounded(1);
        let (engine_there, handle_there) = (engine.clone(), handle.clone());
        let task: mamba_engine::shard::ShardTask =
            Box::new(move || Box::pin(reconcile::run(engine_there, handle_there, stopped)));
        mamba_engine::block_on(engine.spawn_on_shard(ShardId(0), task))
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        let incarnation = fastrand::u64(1..);
        let heartbeats = heartbeat::Heartbeats::start(handle.clone(), incarnation)
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        // Serve once registered as this run (clients find this broker at
        // its new addresses) and unfenced; a quorum that is not there yet
        // is waited for only so long, then the broker serves what it has.
        if !wait_alive(&handle, incarnation, READY_WAIT) {
            tracing::warn!(
                wait = ?READY_WAIT,
                "not registered with the controller yet (is a majority of --voters up?); serving meanwhile"
            );
        }
        tracing::info!(
            node_id = handle.node_id(),
            cluster = %handle.addresses().cluster,
            voters = ?handle.config().initial_voter_ids(),
            "cluster member started"
        );
        Ok(Cluster {
            handle,
            heartbeats: Some(heartbeats),
            stop_reconcile: Some(stop_reconcile),
            controller_done: Some(done),
        })
    }

    pub fn handle(&self) -> &Arc<ClusterHandle> {
        &self.handle
    }

    /// Moves this broker's leaderships to in-sync replicas elsewhere before
    /// it stops (Kafka's controlled shutdown): its heartbeats ask the
    /// controller to fence it, which elects new leaders; this waits until
    /// the metadata shows it fenced and leading nothing, up to `within`.
    /// Skipped when no other broker is alive to take over.
    pub fn controlled_shutdown(&self, within: std::time::Duration) {
        let me = metadata::BrokerId(self.handle.node_id());
        let others_alive = {
            let view = self.handle.view();
            view.metadata.brokers().any(|b| b.id != me && b.is_alive()) && view.leader_id.is_some()
        };
        let Some(heartbeats) = self.heartbeats.as_ref().filter(|_| others_alive) else { return };
        heartbeats.begin_shutdown();
        let started = std::time::Instant::now();
        let deadline = started + within;
        loop {
            let view = self.handle.view();
            let fenced = view.metadata.broker(me).is_none_or(|b| b.fenced);
            let leading = view.metadata.partitions_led_by(me).len();
            if fenced && leading == 0 {
                tracing::info!(took = ?started.elapsed(), "controlled shutdown: leaderships moved");
                return;
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(leading, fenced, waited = ?within, "controlled shutdown did not finish; stopping anyway");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Stops heartbeating, the reconciler and the Raft task (waiting for
    /// it: it uses the engine, which closes after).
    pub fn stop(&mut self) {
        if let Some(mut heartbeats) = self.heartbeats.take() {
            heartbeats.stop();
        }
        if let Some(stop) = self.stop_reconcile.take() {
            let _ = stop.try_send(());
        }
        self.handle.replication().stop();
        self.handle.commands.close();
        if let Some(done) = self.controller_done.take() {
            if done.recv_timeout(STOP_WAIT).is_err() {
                tracing::warn!("the raft task did not stop in time");
            }
        }
        self.handle.peers.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Raft task's end of the command channel, between `prepare` and
/// `start`.
pub struct ClusterInbox(async_channel::Receiver<handle::Command>);
