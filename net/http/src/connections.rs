//! The HTTP server's connections: accepted up to a bound, each given a
//! time to send its request head, closed gracefully at stop.
//!
//! `axum::serve` has neither bound: a client that opens connections and
//! sends nothing (or a header a byte a minute) would hold them, and their
//! descriptors, for ever. Here a connection beyond `connections_max` is
//! closed at once, and one whose request head is not in after
//! `header_read_timeout` is closed; the body and the handler are bounded
//! by the request timeout (`server.rs`).

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The bounds of the server's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more are closed as they come.
    pub connections_max: usize,
    /// Time from a connection's (or the previous request's) end to its next
    /// request head received whole.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits { connections_max: 1024, header_read_timeout: Duration::from_secs(10) }
    }
}

/// How long a stop waits for requests in flight.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stopped` resolves, then lets the
/// requests in flight finish (for at most `STOP_WAIT`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stopped: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(limit = limits.connections_max, "HTTP connection closed: at the limit");
            continue; // dropped: closed
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_WAIT, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still running at stop were cut");
    }
}
