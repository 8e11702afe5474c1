//! A node: one broker's parts, assembled and stopped in order — the engine
//! (storage) and the client listener on its shards; the HTTP API and the
//! cluster join here later. `mamba serve` and `mamba-bench --embedded`
//! only configure it.
//!
//! Lifecycle: `start` opens the data directory, then listens; `stop` stops
//! listening and closes every connection, then closes the engine (flushing
//! and checkpointing every partition). A node dropped without `stop` stops
//! the same way.

use crate::cluster::{Cluster, ClusterConfig, ClusterError, ClusterHandle};
use crate::server::metrics::ServerMetrics;
use crate::server::{Broker, BrokerConfig, BrokerError};
use mamba_engine::{Engine, EngineConfig, EngineError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a node is told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub broker: BrokerConfig,
    /// The cluster this node joins; `None`: a broker on its own, without
    /// a metadata quorum (embedded uses, tests of the broker alone).
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open data directory {}: {source}", data_dir.display())]
    DataDir { data_dir: PathBuf, source: EngineError },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("closing the engine: {0}")]
    Close(EngineError),
}

/// A running node.
pub struct Node {
    engine: Engine,
    /// `None` once stopped.
    broker: Option<Broker>,
    cluster: Option<Cluster>,
}

impl Node {
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let engine = Engine::open(&config.data_dir, config.engine)
            .map_err(|source| NodeError::DataDir { data_dir: config.data_dir.clone(), source })?;
        match Node::start_parts(&engine, config.broker, config.cluster) {
            Ok((broker, cluster)) => Ok(Node { engine, broker: Some(broker), cluster }),
            Err(e) => {
                if let Err(close) = engine.close() {
                    tracing::error!(error = %close, "closing the engine of a node that did not start");
                }
                Err(e)
            }
        }
    }

    fn start_parts(
        engine: &Engine,
        broker: BrokerConfig,
        cluster: Option<ClusterConfig>,
    ) -> Result<(Broker, Option<Cluster>), NodeError> {
        let Some(cluster) = cluster else {
            return Ok((Broker::start(engine.clone(), broker)?, None));
        };
        let cluster_listen = cluster.cluster_listen;
        let (handle, inbox) = Cluster::prepare(cluster)?;
        let mut broker =
            Broker::start_clustered(engine.clone(), broker, handle.clone(), cluster_listen)?;
        let cluster_addr =
            broker.cluster_addr().expect("a clustered broker listens for the cluster");
        let addresses = handle.config().addresses_to_register(broker.local_addr(), cluster_addr);
        let cluster = Cluster::start(engine, handle, inbox, addresses)?;
        broker.serve_clients()?;
        Ok((broker, Some(cluster)))
    }

    /// The cluster side, when the node is in one.
    pub fn cluster(&self) -> Option<&Arc<ClusterHandle>> {
        self.cluster.as_ref().map(Cluster::handle)
    }

    /// Where other brokers reach this one, when in a cluster.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(Broker::cluster_addr)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where clients connect (the bound port when the config said 0).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().map(Broker::local_addr)
    }

    /// What the broker's shards count of connections and requests (the
    /// engine's own counters: `engine().metrics()`); `None` once stopped.
    pub fn server_metrics(&self) -> Option<Arc<ServerMetrics>> {
        self.broker.as_ref().map(|b| b.metrics().clone())
    }

    /// Stops listening, closes every connection, then closes the engine.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop_in_order()
    }

    fn stop_in_order(&mut self) -> Result<(), NodeError> {
        let Some(mut broker) = self.broker.take() else { return Ok(()) };
        // Leaderships move to other brokers while this one still serves:
        // clients follow them without a failed request.
        if let Some(cluster) = &self.cluster {
            cluster.controlled_shutdown(CONTROLLED_SHUTDOWN_WAIT);
        }
        // The Raft task and the reconciler use the engine: they stop first.
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop();
        }
        broker.stop();
        self.engine.close().map_err(NodeError::Close)
    }
}

/// How long a stopping broker waits for its leaderships to move.
const CONTROLLED_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop_in_order() {
            tracing::error!(error = %e, "stopping a dropped node");
        }
    }
}
