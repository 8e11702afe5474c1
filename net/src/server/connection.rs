//! One shard's listener and the connections it accepted.
//!
//! Per connection: a reader that decodes frames into aligned memory and
//! starts a task per request, and a writer that sends the answers in the
//! order they finish (clients match them by correlation id). A semaphore
//! bounds the requests in flight: at the bound the reader stops reading the
//! socket, so a fast client cannot make the broker buffer without limit.

use super::handlers;
use super::ServerContext;
use crate::protocol::{
    encode_frame, ErrorCode, ErrorResponse, Frame, FrameHeader, Message, FLAG_RESPONSE,
    FRAME_HEADER_BYTES,
};
use crate::receive::{header_of, ShardReceiver};
use futures::io::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use rkyv::util::AlignedVec;
use std::cell::Cell;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;

pub(crate) async fn accept_loop(listener: std::net::TcpListener, context: Arc<ServerContext>) {
    // SAFETY: the descriptor comes from a listening socket we own and give
    // up here; nothing else closes it.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    let connections = Rc::new(Cell::new(0usize));
    let memory = Rc::new(glommio::sync::Semaphore::new(
        context.config.limits.request_bytes_per_shard_max as u64,
    ));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if connections.get() >= context.config.limits.connections_per_shard_max {
            tracing::warn!(
                limit = context.config.limits.connections_per_shard_max,
                "connection refused: shard at its limit"
            );
            continue;
        }
        connections.set(connections.get() + 1);
        let (context, connections, memory) = (context.clone(), connections.clone(), memory.clone());
        glommio::spawn_local(async move {
            let peer = stream.peer_addr().ok();
            serve(stream, context, memory).await;
            tracing::debug!(?peer, "connection closed");
            connections.set(connections.get() - 1);
        })
        .detach();
    }
}

/// An answer frame: the head (header and body), then payload pieces sent
/// from where they are (stored batches, not copied into the frame).
pub(crate) struct Answer {
    pub head: AlignedVec<16>,
    pub payload: Vec<bytes::Bytes>,
}

impl From<AlignedVec<16>> for Answer {
    fn from(head: AlignedVec<16>) -> Answer {
        Answer { head, payload: Vec::new() }
    }
}

/// Answers up to this size go out in one write (copied together); larger
/// pieces are written as they are.
const COALESCE_BYTES: usize = 64 * 1024;

impl Answer {
    async fn write_to(
        self,
        out: &mut (impl futures::io::AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        let total: usize = self.head.len() + self.payload.iter().map(|p| p.len()).sum::<usize>();
        if total <= COALESCE_BYTES {
            let mut whole = Vec::with_capacity(total);
            whole.extend_from_slice(&self.head);
            for piece in &self.payload {
                whole.extend_from_slice(piece);
            }
            return out.write_all(&whole).await;
        }
        out.write_all(&self.head).await?;
        for piece in &self.payload {
            out.write_all(piece).await?;
        }
        Ok(())
    }
}

/// A frame-level error answer: the header carries the code, the body a
/// message for people.
pub(crate) fn error_frame(
    api_key: u16,
    api_version: u16,
    correlation_id: u32,
    code: ErrorCode,
    message: String,
) -> AlignedVec<16> {
    let body = ErrorResponse { message }.encode().map(|b| b.to_vec()).unwrap_or_default();
    let header = FrameHeader {
        api_key,
        api_version,
        correlation_id,
        flags: FLAG_RESPONSE,
        error_code: code.as_u16(),
        body_bytes: 0,
        payload_bytes: 0,
    };
    encode_frame(header, &body, &[])
}

async fn serve(
    stream: TcpStream,
    context: Arc<ServerContext>,
    memory: Rc<glommio::sync::Semaphore>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let mut receiver = match ShardReceiver::new(&stream) {
        Ok(receiver) => receiver,
        Err(e) => {
            tracing::warn!(error = %e, "connection dropped: its socket could not be duplicated");
            return;
        }
    };
    let mut writer = stream;
    let limits = &context.config.limits;
    let (answers, outbox) = async_channel::bounded::<Answer>(limits.in_flight_per_connection_max);
    let writer_task = glommio::spawn_local(async move {
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
        Rc::new(glommio::sync::Semaphore::new(limits.in_flight_per_connection_max as u64));
    loop {
        let Ok(permit) = in_flight.acquire_static_permit(1).await else { break };
        let mut head = AlignedVec::<16>::with_capacity(FRAME_HEADER_BYTES);
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
                if answers
                    .send(Answer::from(error_frame(
                        api_key,
                        version,
                        correlation_id,
                        code,
                        e.to_string(),
                    )))
                    .await
                    .is_err()
                {
                    break;
                }
                break;
            }
        };
        // The shard's request memory is bounded: wait for room before
        // reading the frame (the socket is not read meanwhile).
        let Ok(held) = memory.acquire_static_permit(header.frame_bytes() as u64).await else {
            break;
        };
        let payload_bytes = header.payload_bytes as usize;
        let mut payload = AlignedVec::<16>::with_capacity(payload_bytes);
        if receiver.fill(&mut head, header.head_bytes()).await.is_err()
            || receiver.fill(&mut payload, payload_bytes).await.is_err()
        {
            break;
        }
        let frame = Frame::from_parts(header, head, payload);
        // Produce batches enter their partitions here, in the order they
        // arrived; the answer is awaited on its own task.
        let answer = handlers::start(frame, context.clone()).await;
        let answers = answers.clone();
        glommio::spawn_local(async move {
            if let Some(answer) = answer.await {
                if answers.send(answer).await.is_err() {
                    tracing::trace!("connection closed before its answer");
                }
            }
            drop(held);
            drop(permit);
        })
        .detach();
    }
    // The writer ends once every request task has sent its answer.
    drop(answers);
    writer_task.await;
}
