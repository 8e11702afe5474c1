//! The executor's services `net` uses, in one place: the rest of the crate
//! names these and never glommio, so the runtime (or a simulation of it)
//! changes here alone. Everything here runs on a shard's own thread.

use std::future::Future;

pub(crate) use glommio::net::{TcpListener, TcpStream};
pub(crate) use glommio::sync::Semaphore;
pub(crate) use mamba_engine::runtime::sleep;

/// Runs `future` on this shard; the returned task cancels it when dropped
/// (`detach` lets it run on its own).
pub(crate) fn spawn<F>(future: F) -> glommio::Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(future)
}
