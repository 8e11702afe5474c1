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

mod answer;
mod connection;
mod connection_table;
mod coordinator;
mod dispatch;
pub(crate) mod errors;
mod handlers;
pub mod metrics;
mod request_memory;

use crate::cluster::ClusterHandle;
pub use crate::group::coordinator::GroupConfig;
use mamba_engine::{Engine, EngineError, ShardId};
use std::net::SocketAddr;
use std::sync::Arc;

/// Limits of the broker's network side, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Largest frame accepted (a produce request carries its batches).
    pub frame_bytes_max: usize,
    /// Connections each shard serves at once. At the bound a new
    /// connection takes the place of the least recently active one with no
    /// request in flight (closed); only when every connection has one in
    /// flight is the new one refused.
    pub connections_per_shard_max: usize,
    /// Requests read from one connection before its answers are written;
    /// beyond it the broker stops reading that socket.
    pub in_flight_per_connection_max: usize,
    /// Bytes of request frames one shard holds at once, over all its
    /// connections, counted as they are received; at the bound connections
    /// wait before reading more.
    pub request_bytes_per_shard_max: usize,
    /// Time from the first byte of a frame to its last; a connection whose
    /// frame takes longer is answered `timeout` and closed.
    pub frame_receive_timeout_ms: u64,
    /// A connection with no request in flight and no frame coming in for
    /// this long is closed (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
}

impl Default for BrokerLimits {
    fn default() -> BrokerLimits {
        BrokerLimits {
            frame_bytes_max: 64 << 20,
            connections_per_shard_max: 4096,
            in_flight_per_connection_max: 64,
            request_bytes_per_shard_max: 256 << 20,
            frame_receive_timeout_ms: 30_000,
            connections_max_idle_ms: 600_000,
        }
    }
}

/// The smallest `frame_bytes_max`: room for any request that carries no
/// record batch.
pub const FRAME_BYTES_MAX_MIN: usize = 1024;

impl BrokerLimits {
    /// Checks that the limits can work together.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let invalid = |reason: String| Err(BrokerError::InvalidLimits { reason });
        if self.frame_bytes_max < FRAME_BYTES_MAX_MIN {
            return invalid(format!(
                "frame_bytes_max is {}, at least {FRAME_BYTES_MAX_MIN} is needed",
                self.frame_bytes_max
            ));
        }
        if self.request_bytes_per_shard_max < self.frame_bytes_max {
            return invalid(format!(
                "request_bytes_per_shard_max ({}) must be at least frame_bytes_max ({})",
                self.request_bytes_per_shard_max, self.frame_bytes_max
            ));
        }
        let positive = [
            ("connections_per_shard_max", self.connections_per_shard_max as u64),
            ("in_flight_per_connection_max", self.in_flight_per_connection_max as u64),
            ("frame_receive_timeout_ms", self.frame_receive_timeout_ms),
            ("connections_max_idle_ms", self.connections_max_idle_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return invalid(format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub node_id: u32,
    pub listen: SocketAddr,
    pub limits: BrokerLimits,
    /// Consumer groups: session bounds, offsets retention, the offsets
    /// topic.
    pub groups: GroupConfig,
}

/// The port `mamba serve` listens on unless told otherwise.
pub const LISTEN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9400);

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            node_id: 0,
            listen: LISTEN_DEFAULT,
            limits: BrokerLimits::default(),
            groups: GroupConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("invalid broker limits: {reason}")]
    InvalidLimits { reason: String },
    #[error("invalid group settings: {0}")]
    InvalidGroupConfig(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// Clients: every client API.
    Client,
    /// Other brokers: the cluster APIs too. Admin requests that arrive
    /// here were forwarded once already and are never forwarded again.
    Cluster,
}

/// What every connection handler of a shard shares.
pub(crate) struct ServerContext {
    pub engine: Engine,
    /// The cluster this broker is part of; `None` for a broker on its own
    /// (no metadata quorum: the engine's topics are the truth).
    pub cluster: Option<Arc<ClusterHandle>>,
    pub port: Port,
    pub config: BrokerConfig,
    /// The address clients reach this broker at (the bound port).
    pub advertised: SocketAddr,
    /// When the broker started serving: wall clock (ms since the epoch),
    /// for people, and monotonic, for its uptime.
    pub started_ms: i64,
    pub started: std::time::Instant,
    /// Connections and requests, per shard (both ports count into it).
    pub metrics: Arc<metrics::ServerMetrics>,
}

/// A running broker: a listener and its connections on every shard of the
/// engine. `stop` closes them and waits; dropping the broker closes them
/// without waiting. The engine stays open either way (a `Node` closes it
/// after its broker).
pub struct Broker {
    engine: Engine,
    local_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
    /// One per shard's accept loop.
    stops: Vec<connection::StopSender>,
    /// A clustered broker's client port, bound but not yet served.
    clients_waiting: Option<(Arc<ServerContext>, Vec<std::net::TcpListener>)>,
    metrics: Arc<metrics::ServerMetrics>,
}

/// How long `Broker::stop` waits for the shards to close their listeners.
const BROKER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections the kernel queues per shard before they are accepted.
const LISTEN_BACKLOG: i32 = 1024;

/// Attempts at binding a port the kernel picks (port 0): another process
/// may take the picked port between the probe and the shards' sockets.
const PICKED_PORT_ATTEMPTS: usize = 3;

fn tcp_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding a port whose old connections linger in TIME_WAIT (a
    // restart) is allowed; a port another socket listens on never is.
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Claims `addr` for this process: binds it without SO_REUSEPORT, so the
/// bind fails with "address already in use" if anyone listens there, even a
/// broker whose sockets share the port among themselves. Returns the bound
/// address (the picked port for port 0); the probe closes on return, and
/// the shards' SO_REUSEPORT sockets bind right after. (Two brokers started
/// within the microseconds between one's probe and its first `listen`
/// could still share the port; any later one is refused.)
fn claim_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let probe = tcp_socket(addr)?;
    probe.bind(&addr.into())?;
    probe.local_addr()?.as_socket().ok_or_else(|| std::io::ErrorKind::AddrNotAvailable.into())
}

fn listen_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One listening socket per shard, all on the same port (SO_REUSEPORT),
/// on a port no other process serves.
fn listen_sockets(
    addr: SocketAddr,
    shards: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let attempts = if addr.port() == 0 { PICKED_PORT_ATTEMPTS } else { 1 };
    let mut attempt = 1;
    loop {
        let bound = claim_port(addr)?;
        let listeners: std::io::Result<Vec<_>> =
            (0..shards).map(|_| listen_socket(bound)).collect();
        match listeners {
            Ok(listeners) => return Ok((bound, listeners)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < attempts => {
                tracing::debug!(port = bound.port(), "picked port taken meanwhile; picking again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Broker {
    /// Binds the client port on every shard and starts serving: a broker
    /// on its own, its engine's topics the whole truth.
    pub fn start(engine: Engine, config: BrokerConfig) -> Result<Broker, BrokerError> {
        Broker::start_in(engine, config, None)
    }

    /// Binds the client port and the cluster port (`cluster_listen`) on
    /// every shard and serves as a member of `cluster`.
    pub fn start_clustered(
        engine: Engine,
        config: BrokerConfig,
        cluster: Arc<ClusterHandle>,
        cluster_listen: SocketAddr,
    ) -> Result<Broker, BrokerError> {
        Broker::start_in(engine, config, Some((cluster, cluster_listen)))
    }

    fn start_in(
        engine: Engine,
        config: BrokerConfig,
        cluster: Option<(Arc<ClusterHandle>, SocketAddr)>,
    ) -> Result<Broker, BrokerError> {
        config.limits.validate()?;
        config.groups.validate().map_err(BrokerError::InvalidGroupConfig)?;
        let shards = engine.shard_count();
        let (local_addr, listeners) = listen_sockets(config.listen, shards)
            .map_err(|source| BrokerError::Listen { addr: config.listen, source })?;
        let mut ports = vec![(Port::Client, local_addr, listeners)];
        let mut cluster_addr = None;
        if let Some((_, listen)) = &cluster {
            let (bound, listeners) = listen_sockets(*listen, shards)
                .map_err(|source| BrokerError::Listen { addr: *listen, source })?;
            cluster_addr = Some(bound);
            ports.push((Port::Cluster, bound, listeners));
        }
        let started_ms = mamba_engine::runtime::now_ms();
        let started = std::time::Instant::now();
        let metrics = Arc::new(metrics::ServerMetrics::new(shards));
        let mut broker = Broker {
            engine,
            local_addr,
            cluster_addr,
            stops: Vec::new(),
            clients_waiting: None,
            metrics: metrics.clone(),
        };
        for (port, _, listeners) in ports {
            let context = Arc::new(ServerContext {
                engine: broker.engine.clone(),
                cluster: cluster.as_ref().map(|(handle, _)| handle.clone()),
                port,
                config: config.clone(),
                advertised: local_addr,
                started_ms,
                started,
                metrics: metrics.clone(),
            });
            match (port, &cluster) {
                // Peers are served at once (the quorum forms through this
                // port); clients once the node has its metadata applied
                // (`serve_clients`): till then the kernel queues them.
                (Port::Client, Some(_)) => broker.clients_waiting = Some((context, listeners)),
                _ => broker.accept_on(context, listeners)?,
            }
        }
        tracing::info!(addr = %local_addr, cluster = ?cluster_addr, shards, "listening");
        Ok(broker)
    }

    /// Starts serving clients on a clustered broker: once this node's
    /// metadata is applied and its partitions hosted, so that no client is
    /// told "unknown topic" about a topic this node just has not loaded.
    /// Does nothing the second time, or on a broker of its own.
    pub fn serve_clients(&mut self) -> Result<(), BrokerError> {
        match self.clients_waiting.take() {
            Some((context, listeners)) => self.accept_on(context, listeners),
            None => Ok(()),
        }
    }

    /// Starts one accept loop per shard, each on its own listener.
    fn accept_on(
        &mut self,
        context: Arc<ServerContext>,
        listeners: Vec<std::net::TcpListener>,
    ) -> Result<(), BrokerError> {
        for (i, listener) in listeners.into_iter().enumerate() {
            let context = context.clone();
            let (stop, stopped) = async_channel::bounded(1);
            self.stops.push(stop);
            let task: mamba_engine::shard::ShardTask =
                Box::new(move || Box::pin(connection::accept_loop(listener, context, i, stopped)));
            mamba_engine::block_on(self.engine.spawn_on_shard(ShardId(i as u32), task))?;
        }
        Ok(())
    }

    /// Where other brokers reach this one (the bound port), when clustered.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster_addr
    }

    /// Stops accepting and closes every connection (requests in flight end
    /// with them; clients retry elsewhere), waiting until every shard has.
    /// The port is free when this returns. Stopping twice does nothing.
    pub fn stop(&mut self) {
        let (done, stopped) = std::sync::mpsc::channel();
        let asked = self.stops.drain(..).filter(|stop| stop.try_send(done.clone()).is_ok()).count();
        drop(done);
        // Bounded: a shard whose engine was closed first runs no task to
        // answer (its listener then stays open until the process ends).
        let deadline = std::time::Instant::now() + BROKER_STOP_WAIT;
        for _ in 0..asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if stopped.recv_timeout(left).is_err() {
                tracing::warn!(addr = %self.local_addr, "a shard did not close its listener; was the engine closed before the broker?");
                break;
            }
        }
        tracing::info!(addr = %self.local_addr, "stopped listening");
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What its shards count of connections and requests.
    pub fn metrics(&self) -> &Arc<metrics::ServerMetrics> {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_cannot_work_together_are_refused_with_the_reason() {
        assert!(BrokerLimits::default().validate().is_ok());
        let cases = [
            (
                BrokerLimits { frame_receive_timeout_ms: 0, ..BrokerLimits::default() },
                "frame_receive_timeout_ms",
            ),
            (
                BrokerLimits { connections_max_idle_ms: 0, ..BrokerLimits::default() },
                "connections_max_idle_ms",
            ),
            (
                BrokerLimits { connections_per_shard_max: 0, ..BrokerLimits::default() },
                "connections_per_shard_max",
            ),
            (BrokerLimits { frame_bytes_max: 100, ..BrokerLimits::default() }, "frame_bytes_max"),
            (
                BrokerLimits { request_bytes_per_shard_max: 1 << 20, ..BrokerLimits::default() },
                "request_bytes_per_shard_max",
            ),
        ];
        for (limits, named) in cases {
            let error = limits.validate().expect_err(named).to_string();
            assert!(error.contains(named), "{error}");
        }
    }
}
