//! One TCP connection to a broker, usable from any thread.
//!
//! Requests are written by the calling thread (under a lock, whole frames);
//! a reader thread per connection decodes responses and completes each
//! request's one-shot channel by correlation id, so many requests are in
//! flight at once and the futures work on any runtime (or `block_on`).
//!
//! Every request with a waiter has a deadline (the connection's request
//! timeout, or the caller's for a long poll). The reader thread looks for
//! overdue requests between frames, at least every
//! [`DEADLINE_CHECK_INTERVAL`], and fails them with
//! [`ClientError::Timeout`]. Then it closes the connection, as Kafka's
//! clients do: a broker that has not answered one request for the whole
//! timeout is gone (a crashed host leaves a half-open socket that nothing
//! else would notice: no reset ever comes) or stuck, and either way the
//! way on is a new connection, which the owner ([`super::Link`], the
//! producer) opens on its next use. Closing also settles what happens to
//! the late answer: it cannot arrive. The other requests in flight on the
//! connection fail as `Disconnected`, which is retriable; the consumer
//! fetches again from its positions and the producer resends under
//! idempotence, so neither loses nor duplicates records.

use super::ClientError;
use crate::protocol::{
    encode_frame_head, ErrorCode, ErrorResponse, Frame, FrameHeader, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsResponse, Message, MetadataRequest, MetadataResponse, Request,
    TopicMeta, FRAME_HEADER_BYTES,
};
use crate::receive::{fill_blocking, fill_ready, header_of};
use futures::channel::oneshot;
use rkyv::util::AlignedVec;
use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest response frame a client accepts.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// How often the reader thread looks for requests past their deadline: a
/// timeout is noticed at most this late.
pub const DEADLINE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Who waits for a response: a future, or a callback run on the reader
/// thread (the producer's sender uses callbacks).
pub enum Waiter {
    Channel(oneshot::Sender<Result<Frame, ClientError>>),
    Callback(Box<dyn FnOnce(Result<Frame, ClientError>) + Send>),
}

impl Waiter {
    fn complete(self, result: Result<Frame, ClientError>) {
        match self {
            Waiter::Channel(tx) => {
                if tx.send(result).is_err() {
                    tracing::trace!("a request's caller stopped waiting");
                }
            }
            Waiter::Callback(f) => f(result),
        }
    }
}

/// A request waiting for its answer.
struct Awaited {
    waiter: Waiter,
    /// The API's name, for the timeout error.
    request: &'static str,
    sent: Instant,
    deadline: Instant,
}

type Pending = Arc<Mutex<HashMap<u32, Awaited>>>;

/// A connection to one broker.
///
/// Lifecycle: alive from `connect` until the socket fails, the broker
/// closes it, a request times out, or it is dropped; once dead it stays
/// dead (every send fails with `Disconnected`) and its owner replaces it.
pub struct Connection {
    addr: SocketAddr,
    writer: Mutex<TcpStream>,
    pending: Pending,
    next_correlation_id: AtomicU32,
    alive: Arc<AtomicBool>,
    request_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    /// Connects to the first address `addr` resolves to that answers.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let addr = &super::with_default_port(addr);
        let address_error =
            |source| ClientError::Address { addr: addr.to_string(), source: Arc::new(source) };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(address_error)?.collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => return Connection::from_stream(a, stream),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(ClientError::Connect { addr: addr.to_string(), source: Arc::new(e) }),
            None => Err(address_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolves to no address",
            ))),
        }
    }

    /// The same connection, its requests failing with `Timeout` when no
    /// answer comes within `timeout` (default
    /// [`super::REQUEST_TIMEOUT_MS_DEFAULT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Connection {
        self.request_timeout = timeout;
        self
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn from_stream(addr: SocketAddr, stream: TcpStream) -> Result<Connection, ClientError> {
        let io = |e: std::io::Error| ClientError::Connect {
            addr: addr.to_string(),
            source: Arc::new(e),
        };
        stream.set_nodelay(true).map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let (p, a) = (pending.clone(), alive.clone());
        std::thread::Builder::new()
            .name(format!("mamba-client-{addr}"))
            .spawn(move || read_responses(reader, p, a))
            .map_err(io)?;
        Ok(Connection {
            addr,
            writer: Mutex::new(stream),
            pending,
            next_correlation_id: AtomicU32::new(1),
            alive,
            request_timeout: Duration::from_millis(super::REQUEST_TIMEOUT_MS_DEFAULT),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Sends a request frame; `waiter` (if any) gets the response, or
    /// `Timeout` after the request timeout. Without a waiter (produce with
    /// acks=0) no response is expected.
    pub fn send_with<R: Request>(
        &self,
        request: &R,
        payload: &[&[u8]],
        waiter: Option<Waiter>,
    ) -> Result<(), ClientError> {
        self.send_within(request, payload, waiter, self.request_timeout)
    }

    /// `send_with`, the waiter giving up after `timeout` (a long poll waits
    /// its own wait on top of the request timeout).
    pub fn send_within<R: Request>(
        &self,
        request: &R,
        payload: &[&[u8]],
        waiter: Option<Waiter>,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        if !self.is_alive() {
            return Err(ClientError::Disconnected { addr: self.addr.to_string() });
        }
        let body = request.encode().map_err(|e| ClientError::Protocol(e.to_string()))?;
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let header = FrameHeader {
            api_key: R::API_KEY.as_u16(),
            api_version: R::VERSION,
            correlation_id,
            flags: 0,
            error_code: 0,
            body_bytes: 0,
            payload_bytes: 0,
        };
        // The payload (record batches) goes out from where it is.
        let head = encode_frame_head(header, &body, payload.iter().map(|p| p.len()).sum());
        let mut pieces: Vec<IoSlice<'_>> = Vec::with_capacity(1 + payload.len());
        pieces.push(IoSlice::new(&head));
        pieces.extend(payload.iter().map(|p| IoSlice::new(p)));
        let mut writer = lock(&self.writer);
        if let Some(waiter) = waiter {
            let sent = Instant::now();
            let awaited =
                Awaited { waiter, request: R::API_KEY.name(), sent, deadline: sent + timeout };
            lock(&self.pending).insert(correlation_id, awaited);
        }
        if let Err(e) = write_all_vectored(&mut *writer, &mut pieces) {
            self.alive.store(false, Ordering::Release);
            drop(writer);
            let error = ClientError::Io { addr: self.addr.to_string(), source: Arc::new(e) };
            if let Some(awaited) = lock(&self.pending).remove(&correlation_id) {
                awaited.waiter.complete(Err(error));
                return Ok(());
            }
            return Err(error);
        }
        Ok(())
    }

    /// Sends a request and decodes its response body.
    pub async fn call<R: Request, A: Message>(
        &self,
        request: &R,
        payload: &[&[u8]],
    ) -> Result<(A, Frame), ClientError> {
        self.call_within(request, payload, self.request_timeout).await
    }

    /// `call`, giving up after `timeout` instead of the request timeout.
    pub async fn call_within<R: Request, A: Message>(
        &self,
        request: &R,
        payload: &[&[u8]],
        timeout: Duration,
    ) -> Result<(A, Frame), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.send_within(request, payload, Some(Waiter::Channel(tx)), timeout)?;
        let frame =
            rx.await.map_err(|_| ClientError::Disconnected { addr: self.addr.to_string() })??;
        let answer = decode_answer::<A>(&frame)?;
        Ok((answer, frame))
    }
}

impl Connection {
    /// One topic's metadata. A topic the broker does not know is
    /// `UnknownTopic`.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMeta, ClientError> {
        let request = MetadataRequest { topics: Some(vec![topic.to_string()]) };
        let (meta, _) = self.call::<_, MetadataResponse>(&request, &[]).await?;
        let t = meta
            .topics
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::UnknownTopic(topic.to_string()))?;
        match ErrorCode::from_u16(t.error_code) {
            ErrorCode::None if !t.partitions.is_empty() => Ok(t),
            ErrorCode::None | ErrorCode::UnknownTopicOrPartition => {
                Err(ClientError::UnknownTopic(topic.to_string()))
            }
            code => Err(ClientError::Broker { code, message: format!("topic {topic:?}") }),
        }
    }

    /// The offset for `timestamp` (or `LATEST_TIMESTAMP`/`EARLIEST_TIMESTAMP`).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        let request = ListOffsetsRequest {
            partitions: vec![ListOffsetsPartition {
                topic: topic.to_string(),
                partition,
                timestamp,
            }],
        };
        let (answer, _) = self.call::<_, ListOffsetsResponse>(&request, &[]).await?;
        let result = answer
            .partitions
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty answer".into()))?;
        if result.error_code != 0 {
            let code = ErrorCode::from_u16(result.error_code);
            let message = format!("{topic}/{partition}: {}", result.message);
            return Err(ClientError::Broker { code, message });
        }
        Ok(result.offset)
    }
}

/// Writes every piece, in as few system calls as the socket allows.
fn write_all_vectored(out: &mut impl Write, mut pieces: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !pieces.is_empty() {
        match out.write_vectored(pieces) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut pieces, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Decodes a response body, turning a frame-level error into `Broker`.
pub fn decode_answer<A: Message>(frame: &Frame) -> Result<A, ClientError> {
    if frame.header.error_code != 0 {
        let message = ErrorResponse::decode(frame.body()).map(|e| e.message).unwrap_or_default();
        return Err(ClientError::Broker {
            code: ErrorCode::from_u16(frame.header.error_code),
            message,
        });
    }
    A::decode(frame.body()).map_err(|e| ClientError::Protocol(e.to_string()))
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the reader thread (its read fails) and any waiting request.
        if let Err(e) = lock(&self.writer).shutdown(std::net::Shutdown::Both) {
            tracing::trace!(error = %e, "shutting down a client connection");
        }
    }
}

fn read_responses(stream: TcpStream, pending: Pending, alive: Arc<AtomicBool>) {
    let addr = stream.peer_addr().map_or_else(|_| "broker".to_string(), |a| a.to_string());
    let fd = stream.as_raw_fd();
    let mut next_check = Instant::now() + DEADLINE_CHECK_INTERVAL;
    let reason = 'frames: loop {
        let mut head = AlignedVec::<16>::with_capacity(FRAME_HEADER_BYTES);
        // Take what has arrived; sleep in poll(2) only when nothing has,
        // failing overdue requests meanwhile.
        loop {
            let now = Instant::now();
            if now >= next_check {
                next_check = now + DEADLINE_CHECK_INTERVAL;
                if let Some(reason) = fail_overdue(&stream, &pending, &alive, &addr, now) {
                    break 'frames reason;
                }
            }
            match fill_ready(fd, &mut head, FRAME_HEADER_BYTES) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => break 'frames e.to_string(),
            }
            if let Err(e) = wait_readable(fd, next_check.saturating_duration_since(now)) {
                break 'frames e.to_string();
            }
        }
        if let Err(e) = fill_blocking(fd, &mut head, FRAME_HEADER_BYTES) {
            break e.to_string();
        }
        let header = match FrameHeader::decode(header_of(&head), RESPONSE_BYTES_MAX) {
            Ok(h) => h,
            Err(e) => break format!("bad response frame: {e}"),
        };
        let payload_bytes = header.payload_bytes as usize;
        let mut payload = AlignedVec::<16>::with_capacity(payload_bytes);
        if let Err(e) = fill_blocking(fd, &mut head, header.head_bytes())
            .and_then(|()| fill_blocking(fd, &mut payload, payload_bytes))
        {
            break e.to_string();
        }
        let awaited = lock(&pending).remove(&header.correlation_id);
        match awaited {
            Some(awaited) => awaited.waiter.complete(Ok(Frame::from_parts(header, head, payload))),
            None => {
                tracing::warn!(correlation_id = header.correlation_id, "response to no request")
            }
        }
    };
    alive.store(false, Ordering::Release);
    tracing::debug!(%addr, %reason, "connection closed");
    let waiters: Vec<Waiter> = lock(&pending).drain().map(|(_, a)| a.waiter).collect();
    for waiter in waiters {
        waiter.complete(Err(ClientError::Disconnected { addr: addr.clone() }));
    }
}

/// Fails every request past its deadline with `Timeout`, first closing
/// the connection (see the module docs: dead before its callers hear of
/// it, so a retry they make at once goes out on a new one). Returns why it
/// closed, if it did.
fn fail_overdue(
    stream: &TcpStream,
    pending: &Pending,
    alive: &AtomicBool,
    addr: &str,
    now: Instant,
) -> Option<String> {
    let overdue: Vec<Awaited> = {
        let mut pending = lock(pending);
        let ids: Vec<u32> =
            pending.iter().filter(|(_, a)| a.deadline <= now).map(|(id, _)| *id).collect();
        ids.iter().filter_map(|id| pending.remove(id)).collect()
    };
    let reason = format!("{} timed out", overdue.first()?.request);
    alive.store(false, Ordering::Release);
    if let Err(e) = stream.shutdown(std::net::Shutdown::Both) {
        tracing::trace!(error = %e, "closing a timed out connection");
    }
    for awaited in overdue {
        let waited = now.duration_since(awaited.sent);
        awaited.waiter.complete(Err(ClientError::Timeout {
            request: awaited.request,
            addr: addr.to_string(),
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        }));
    }
    Some(reason)
}

/// Waits up to `timeout` for `fd` to have something to read (or to fail:
/// the read then says how).
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> std::io::Result<()> {
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // Rounded up, so a wait never ends just before its deadline.
    let timeout_ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
    if ready < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
    }
    Ok(())
}
