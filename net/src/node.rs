//! A node: one broker's parts, assembled and stopped in order — the engine
//! (storage) and the client listener on its shards; the HTTP API and the
//! cluster join here later. `mamba serve` and `mamba-bench --embedded`
//! only configure it.
//!
//! Lifecycle: `start` opens the data directory, then listens; `stop` stops
//! listening and closes every connection, then closes the engine (flushing
//! and checkpointing every partition). A node dropped without `stop` stops
//! the same way.

use crate::server::{Broker, BrokerConfig, BrokerError};
use mamba_engine::{Engine, EngineConfig, EngineError};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything a node is told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub broker: BrokerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open data directory {}: {source}", data_dir.display())]
    DataDir { data_dir: PathBuf, source: EngineError },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("closing the engine: {0}")]
    Close(EngineError),
}

/// A running node.
pub struct Node {
    engine: Engine,
    /// `None` once stopped.
    broker: Option<Broker>,
}

impl Node {
    pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let engine = Engine::open(&config.data_dir, config.engine)
            .map_err(|source| NodeError::DataDir { data_dir: config.data_dir.clone(), source })?;
        match Broker::start(engine.clone(), config.broker) {
            Ok(broker) => Ok(Node { engine, broker: Some(broker) }),
            Err(e) => {
                if let Err(close) = engine.close() {
                    tracing::error!(error = %close, "closing the engine of a node that did not start");
                }
                Err(e.into())
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where clients connect (the bound port when the config said 0).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().map(Broker::local_addr)
    }

    /// Stops listening, closes every connection, then closes the engine.
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop_in_order()
    }

    fn stop_in_order(&mut self) -> Result<(), NodeError> {
        let Some(mut broker) = self.broker.take() else { return Ok(()) };
        broker.stop();
        self.engine.close().map_err(NodeError::Close)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop_in_order() {
            tracing::error!(error = %e, "stopping a dropped node");
        }
    }
}
