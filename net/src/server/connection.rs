//! One shard's listener and the connections it accepted.
//!
//! Per connection: a reader that decodes frames into aligned memory and
//! starts a task per request, and a writer that sends the answers in the
//! order they finish (clients match them by correlation id). A semaphore
//! bounds the requests in flight: at the bound the reader stops reading the
//! socket, so a fast client cannot make the broker buffer without limit.
//! Request memory is charged as a frame's bytes arrive (request_memory.rs);
//! the connection table closes stalled, idle and (at the connection limit)
//! least recently active connections (connection_table.rs).

use super::answer::{error_frame, Answer};
use super::connection_table::{Activity, Admission, CloseReason, ConnectionTable};
use super::dispatch;
use super::metrics;
use super::request_memory::{FrameMemory, RequestMemory};
use super::ServerContext;
use crate::protocol::{ErrorCode, Frame, FrameHeader, FRAME_HEADER_BYTES};
use crate::receive::{header_of, ShardReceiver};
use crate::runtime::{self, TcpListener, TcpStream};
use futures::future::Either;
use futures::io::AsyncWriteExt;
use rkyv::util::AlignedVec;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;

/// Accepts and serves connections until `stop` delivers a sender: then
/// closes the listener and every connection, and answers on that sender.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    context: Arc<ServerContext>,
    shard: usize,
    stop: StopReceiver,
) {
    // Both ports' loops on a shard install the same block.
    metrics::install(context.metrics.shards()[shard].clone());
    // SAFETY: the descriptor comes from a listening socket we own and give
    // up here; nothing else closes it.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let limits = &context.config.limits;
    let table = Rc::new(ConnectionTable::new(limits));
    runtime::spawn(table.clone().sweep_until_stopped()).detach();
    let memory =
        Rc::new(RequestMemory::new(limits.request_bytes_per_shard_max, limits.frame_bytes_max));
    let stopped = loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let stop = std::pin::pin!(stop.recv());
            match futures::future::select(accept, stop).await {
                Either::Left((accepted, _)) => accepted,
                // A sender to answer, or the broker dropped (no one waits).
                Either::Right((stopped, _)) => break stopped.ok(),
            }
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                runtime::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let receiver = match ShardReceiver::new(&stream) {
            Ok(receiver) => receiver,
            Err(e) => {
                tracing::warn!(error = %e, "connection dropped: its socket could not be duplicated");
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let activity = match table.admit(receiver.fd(), peer) {
            Admission::Admitted(activity) => activity,
            Admission::Refused => {
                tracing::debug!(
                    ?peer,
                    "connection refused: every connection has requests in flight"
                );
                continue;
            }
        };
        metrics::on_shard(|m| {
            m.connections_accepted_total.add(1);
            m.connections_open.add(1);
        });
        let connection = Connection {
            context: context.clone(),
            memory: memory.clone(),
            table: table.clone(),
            activity,
        };
        runtime::spawn(connection.serve(stream, receiver)).detach();
    };
    drop(listener);
    table.close_all();
    if let Some(done) = stopped {
        // The stopper may have given up waiting; nothing is lost then.
        let _no_one_waits = done.send(());
    }
}

/// How a shard's accept loop is told to stop: it answers on the sender it
/// receives once its listener and connections are closed.
pub(crate) type StopReceiver = async_channel::Receiver<std::sync::mpsc::Sender<()>>;
pub(crate) type StopSender = async_channel::Sender<std::sync::mpsc::Sender<()>>;

/// What one connection's tasks share.
struct Connection {
    context: Arc<ServerContext>,
    memory: Rc<RequestMemory>,
    table: Rc<ConnectionTable>,
    activity: Rc<Activity>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, mut receiver: ShardReceiver) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let mut writer = stream;
        let limits = &self.context.config.limits;
        let (answers, outbox) =
            async_channel::bounded::<Answer>(limits.in_flight_per_connection_max);
        let writer_task = runtime::spawn(async move {
            while let Ok(answer) = outbox.recv().await {
                if answer.write_to(&mut writer).await.is_err() {
                    break;
                }
            }
            if let Err(e) = writer.close().await {
                tracing::trace!(error = %e, "closing a connection");
            }
        });
        let in_flight =
            Rc::new(runtime::Semaphore::new(limits.in_flight_per_connection_max as u64));
        loop {
            let Ok(permit) = in_flight.acquire_static_permit(1).await else { break };
            let mut head = AlignedVec::<16>::with_capacity(FRAME_HEADER_BYTES);
            // Between frames the connection is idle (the table closes it
            // after `connections_max_idle_ms`); from a frame's first byte,
            // its receive deadline runs.
            if first_bytes(&mut receiver, &mut head).await.is_err() {
                break;
            }
            self.activity.frame_started();
            if receiver.fill(&mut head, FRAME_HEADER_BYTES).await.is_err() {
                break;
            }
            let header = match FrameHeader::decode(header_of(&head), limits.frame_bytes_max) {
                Ok(header) => header,
                Err(e) => {
                    // Answer what can be answered, then close only this
                    // connection: the stream can no longer be trusted.
                    let api_key = u16::from_le_bytes([head[4], head[5]]);
                    let version = u16::from_le_bytes([head[6], head[7]]);
                    let correlation_id = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
                    let code = match e {
                        crate::protocol::FrameError::TooLarge { .. } => ErrorCode::MessageTooLarge,
                        _ => ErrorCode::InvalidRequest,
                    };
                    tracing::debug!(error = %e, "bad frame; closing the connection");
                    let answer = error_frame(api_key, version, correlation_id, code, e.to_string());
                    if answers.send(Answer::from(answer)).await.is_err() {
                        tracing::trace!("connection closed before its error answer");
                    }
                    break;
                }
            };
            let mut held =
                FrameMemory::new(self.memory.clone(), header.frame_bytes() - FRAME_HEADER_BYTES);
            let payload_bytes = header.payload_bytes as usize;
            let mut payload = AlignedVec::<16>::new();
            let received = match self
                .receive(&mut receiver, &mut head, header.head_bytes(), &mut held)
                .await
            {
                Ok(()) => self.receive(&mut receiver, &mut payload, payload_bytes, &mut held).await,
                Err(e) => Err(e),
            };
            if received.is_err() {
                if self.activity.close_reason() == Some(CloseReason::FrameTimeout) {
                    let message = format!(
                        "the frame did not arrive whole within {} ms (frame_receive_timeout_ms); closing the connection",
                        limits.frame_receive_timeout_ms
                    );
                    let answer = error_frame(
                        header.api_key,
                        header.api_version,
                        header.correlation_id,
                        ErrorCode::Timeout,
                        message,
                    );
                    if answers.send(Answer::from(answer)).await.is_err() {
                        tracing::trace!("connection closed before its timeout answer");
                    }
                }
                break;
            }
            self.activity.frame_received();
            let frame = Frame::from_parts(header, head, payload);
            // Produce batches enter their partitions here, in the order they
            // arrived; the answer is awaited on its own task.
            let started = std::time::Instant::now();
            let api_key = frame.header.api_key;
            let answer = dispatch::start(frame, self.context.clone(), self.activity.peer).await;
            let (answers, activity) = (answers.clone(), self.activity.clone());
            runtime::spawn(async move {
                let answer = answer.await;
                let code = answer.as_ref().map_or(0, Answer::error_code);
                metrics::on_shard(|m| m.request(api_key, started.elapsed(), code));
                if let Some(answer) = answer {
                    if answers.send(answer).await.is_err() {
                        tracing::trace!("connection closed before its answer");
                    }
                }
                activity.request_done();
                drop(held);
                drop(permit);
            })
            .detach();
        }
        // The writer ends once every request task has sent its answer.
        drop(answers);
        writer_task.await;
        tracing::debug!(
            peer = ?self.activity.peer,
            closed_by_broker = ?self.activity.close_reason(),
            "connection closed"
        );
        metrics::on_shard(|m| {
            m.connections_open.sub(1);
            if self.activity.close_reason().is_some() {
                m.connections_closed_by_broker_total.add(1);
            }
        });
        // Out of the table before the receiver closes the last descriptor
        // (the table may shut the socket down until then).
        self.table.remove(&self.activity);
        drop(receiver);
    }

    /// Receives until `buf` holds `len` bytes, charging request memory for
    /// the bytes as they arrive.
    async fn receive(
        &self,
        receiver: &mut ShardReceiver,
        buf: &mut AlignedVec<16>,
        len: usize,
        held: &mut FrameMemory,
    ) -> std::io::Result<()> {
        while buf.len() < len {
            let Some(room) = held.room_bytes() else {
                // The shared pool is spent. Wait for bytes first (a sender
                // that stalls queues for nothing), then for the reserve to
                // hold the rest of the frame; the broker is the slow one
                // meanwhile, so the frame's deadline starts again after.
                receiver.readable().await?;
                tracing::trace!(peer = ?self.activity.peer, "request memory spent; waiting for the reserve");
                self.activity.memory_wait_started();
                let reserved = held.reserve_rest().await;
                self.activity.memory_wait_ended();
                reserved?;
                continue;
            };
            if buf.capacity() < len {
                // The whole buffer at once (no copy as it fills), when its
                // first bytes are there to receive.
                buf.reserve_exact(len - buf.len());
            }
            let received = receiver.receive_ready(buf, len.min(buf.len() + room))?;
            held.received(received);
            if received == 0 {
                receiver.readable().await?;
            }
        }
        Ok(())
    }
}

/// Waits for the first bytes of the next frame and receives them into
/// `head`.
async fn first_bytes(
    receiver: &mut ShardReceiver,
    head: &mut AlignedVec<16>,
) -> std::io::Result<()> {
    while head.is_empty() {
        if receiver.receive_ready(head, FRAME_HEADER_BYTES)? == 0 {
            receiver.readable().await?;
        }
    }
    Ok(())
}
