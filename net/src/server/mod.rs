//! The broker: a listener on every shard of an [`Engine`], speaking the
//! wire protocol.
//!
//! Every shard accepts on the client port (SO_REUSEPORT, so the kernel
//! spreads connections over shards) and serves its connections itself. A
//! request for a partition owned by another shard travels to the owner over
//! the engine's bounded inbox and the answer comes back the same way.
//!
//! Architecture Invariant: the server knows frames and engine calls, never
//! files; all storage goes through `Engine`.

mod connection;
mod handlers;

use mamba_engine::{Engine, EngineError, ShardId};
use std::net::SocketAddr;
use std::sync::Arc;

/// Limits of the broker's network side, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Largest frame accepted (a produce request carries its batches).
    pub frame_bytes_max: usize,
    /// Connections each shard serves at once; more are refused.
    pub connections_per_shard_max: usize,
    /// Requests read from one connection before its answers are written;
    /// beyond it the broker stops reading that socket.
    pub in_flight_per_connection_max: usize,
    /// Bytes of request frames one shard holds at once, over all its
    /// connections; at the bound every connection of the shard waits before
    /// reading its next frame.
    pub request_bytes_per_shard_max: usize,
}

impl Default for BrokerLimits {
    fn default() -> BrokerLimits {
        BrokerLimits {
            frame_bytes_max: 64 << 20,
            connections_per_shard_max: 4096,
            in_flight_per_connection_max: 64,
            request_bytes_per_shard_max: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub node_id: u32,
    pub listen: SocketAddr,
    pub limits: BrokerLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What every connection handler of a shard shares.
pub(crate) struct ServerContext {
    pub engine: Engine,
    pub config: BrokerConfig,
    /// The address clients reach this broker at (the bound port).
    pub advertised: SocketAddr,
}

/// A running broker. The listeners live on the engine's shards and stop
/// with it.
pub struct Broker {
    engine: Engine,
    local_addr: SocketAddr,
}

fn listen_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Broker {
    /// Binds the client port on every shard and starts serving.
    pub fn start(engine: Engine, config: BrokerConfig) -> Result<Broker, BrokerError> {
        let listen_error = |source| BrokerError::Listen { addr: config.listen, source };
        // The first socket fixes the port (the configured one, or the one
        // the kernel picked for port 0); the others share it.
        let first = listen_socket(config.listen).map_err(listen_error)?;
        let local_addr = first.local_addr().map_err(listen_error)?;
        let mut listeners = vec![first];
        for _ in 1..engine.shard_count() {
            listeners.push(listen_socket(local_addr).map_err(listen_error)?);
        }
        let context =
            Arc::new(ServerContext { engine: engine.clone(), config, advertised: local_addr });
        for (i, listener) in listeners.into_iter().enumerate() {
            let context = context.clone();
            let task: mamba_engine::shard::ShardTask =
                Box::new(move || Box::pin(connection::accept_loop(listener, context)));
            mamba_engine::block_on(engine.spawn_on_shard(ShardId(i as u32), task))?;
        }
        tracing::info!(addr = %local_addr, shards = engine.shard_count(), "listening");
        Ok(Broker { engine, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}
