//! A shard's connections: who is busy, who is idle, who gets closed.
//!
//! Each connection registers an [`Activity`] when accepted and removes it
//! when it ends; its reader and request tasks keep the activity current
//! (a frame coming in, requests in flight, the last time anything
//! happened). The table closes connections for three reasons:
//!
//! - a frame that takes longer than `frame_receive_timeout_ms` from its
//!   first byte to its last (a sender that stalls mid-frame holds the
//!   memory it sent and a connection slot);
//! - no request in flight and no frame coming in for
//!   `connections_max_idle_ms`;
//! - at `connections_per_shard_max`, to make room for a new connection: the
//!   least recently active one with no request in flight goes, so sockets
//!   that do nothing can never lock out clients that want to work.
//!
//! The timeouts are checked by one sweep per shard, a few times per
//! timeout, not by a timer per frame: the reader's hot path only stores an
//! `Instant` in a `Cell`.
//!
//! Closing means `shutdown(2)` on the socket: the connection's reader then
//! sees the end of the stream and the connection ends the ordinary way
//! (its request memory returns when its buffers drop). A timed-out frame is
//! shut for reading only, so the reader can still answer it `timeout`; if
//! the connection has not ended `CLOSE_GRACE_MS` later (a peer that does
//! not read), writing is shut too.
//!
//! Owned by one shard (`Rc`, `Cell`); lives as long as the shard's
//! listener. Invariant: an activity's `fd` is open while it is in the
//! table (the connection removes it before closing its sockets), so a
//! shutdown never reaches a reused descriptor.

use super::BrokerLimits;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a connection closed for a timed-out frame may take to send
/// its last answers before writing is shut too.
const CLOSE_GRACE_MS: u64 = 5_000;

/// Sweeps per timeout: a connection is closed at most 1/SWEEPS_PER_TIMEOUT
/// of its timeout late.
const SWEEPS_PER_TIMEOUT: u32 = 8;
/// Bounds on the sweep interval: often enough for short test timeouts,
/// rarely enough to cost nothing with the default ones.
const SWEEP_INTERVAL_MS_MIN: u64 = 10;
const SWEEP_INTERVAL_MS_MAX: u64 = 1_000;

/// Connection closes are counted and logged at info at most this often
/// (each one is logged at debug).
const REPORT_INTERVAL_MS: u64 = 10_000;

/// Why the broker closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A frame was not received whole within `frame_receive_timeout_ms`.
    FrameTimeout,
    /// Nothing happened for `connections_max_idle_ms`.
    Idle,
    /// Closed to admit a new connection at `connections_per_shard_max`.
    Evicted,
    /// The broker is stopping.
    Stopping,
}

/// One connection's state as the table sees it.
pub(crate) struct Activity {
    /// The socket to shut down; see the module's invariant.
    fd: RawFd,
    pub peer: Option<SocketAddr>,
    /// When a frame, or a request's answer, last went through.
    last_active: Cell<Instant>,
    /// When the frame being received began (its first byte), if one is.
    frame_started: Cell<Option<Instant>>,
    /// Requests read and not answered yet.
    requests_in_flight: Cell<usize>,
    /// The reader waits for request memory: the broker, not the peer, is
    /// slow, so neither timeout runs and the connection is not evicted.
    waiting_for_memory: Cell<bool>,
    /// Set once the table has decided to close the connection.
    closing: Cell<Option<(CloseReason, Instant)>>,
}

impl Activity {
    /// A frame's first byte arrived.
    pub fn frame_started(&self) {
        let now = Instant::now();
        self.frame_started.set(Some(now));
        self.last_active.set(now);
    }

    /// The reader waits for request memory in the middle of a frame.
    pub fn memory_wait_started(&self) {
        self.waiting_for_memory.set(true);
    }

    /// The memory came: the rest of the frame gets a whole timeout.
    pub fn memory_wait_ended(&self) {
        self.waiting_for_memory.set(false);
        self.frame_started();
    }

    /// The frame is received whole and becomes a request in flight.
    pub fn frame_received(&self) {
        self.frame_started.set(None);
        self.requests_in_flight.set(self.requests_in_flight.get() + 1);
    }

    /// A request is answered (or needs no answer).
    pub fn request_done(&self) {
        let in_flight = self.requests_in_flight.get();
        assert!(in_flight > 0, "a request done that was not in flight");
        self.requests_in_flight.set(in_flight - 1);
        self.last_active.set(Instant::now());
    }

    /// Why the table closed this connection, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closing.get().map(|(reason, _)| reason)
    }

    fn is_evictable(&self) -> bool {
        self.closing.get().is_none()
            && self.requests_in_flight.get() == 0
            && !self.waiting_for_memory.get()
    }
}

/// Counts of closed and refused connections since the last report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Closed {
    frame_timeout: u64,
    idle: u64,
    evicted: u64,
    refused: u64,
}

pub(crate) struct ConnectionTable {
    connections_max: usize,
    frame_receive_timeout: Duration,
    idle_timeout: Duration,
    connections: RefCell<Vec<Rc<Activity>>>,
    /// Connections in the table that are being closed.
    closing_count: Cell<usize>,
    closed: Cell<Closed>,
    /// Set by `close_all`: the sweep ends.
    stopped: Cell<bool>,
}

/// What to do with a new connection.
pub(crate) enum Admission {
    Admitted(Rc<Activity>),
    /// Every connection has a request in flight: the new one is refused.
    Refused,
}

impl ConnectionTable {
    pub fn new(limits: &BrokerLimits) -> ConnectionTable {
        ConnectionTable {
            connections_max: limits.connections_per_shard_max,
            frame_receive_timeout: Duration::from_millis(limits.frame_receive_timeout_ms),
            idle_timeout: Duration::from_millis(limits.connections_max_idle_ms),
            connections: RefCell::new(Vec::new()),
            closing_count: Cell::new(0),
            closed: Cell::new(Closed::default()),
            stopped: Cell::new(false),
        }
    }

    /// Registers a new connection on socket `fd`, closing the least
    /// recently active idle one if the shard is at its limit.
    pub fn admit(&self, fd: RawFd, peer: Option<SocketAddr>) -> Admission {
        let now = Instant::now();
        let open = self.connections.borrow().len() - self.closing_count.get();
        if open >= self.connections_max {
            // Connections being closed no longer count: they end within a
            // few reactor turns (an evictable or idle one waits for no
            // memory and no answer, and its socket is shut both ways), a
            // timed-out one within CLOSE_GRACE_MS.
            let Some(victim) = self.least_recent() else {
                self.count(|c| c.refused += 1);
                return Admission::Refused;
            };
            self.close(&victim, CloseReason::Evicted, now);
        }
        let activity = Rc::new(Activity {
            fd,
            peer,
            last_active: Cell::new(now),
            frame_started: Cell::new(None),
            requests_in_flight: Cell::new(0),
            waiting_for_memory: Cell::new(false),
            closing: Cell::new(None),
        });
        self.connections.borrow_mut().push(activity.clone());
        Admission::Admitted(activity)
    }

    /// Unregisters a connection; it must close its sockets only after this.
    pub fn remove(&self, activity: &Rc<Activity>) {
        let mut connections = self.connections.borrow_mut();
        let Some(at) = connections.iter().position(|a| Rc::ptr_eq(a, activity)) else {
            panic!("a connection left the table twice");
        };
        connections.swap_remove(at);
        if activity.closing.get().is_some() {
            self.closing_count.set(self.closing_count.get() - 1);
        }
    }

    fn least_recent(&self) -> Option<Rc<Activity>> {
        let connections = self.connections.borrow();
        connections.iter().filter(|a| a.is_evictable()).min_by_key(|a| a.last_active.get()).cloned()
    }

    /// Closes every connection (the broker stops): each reader sees the
    /// end of its stream and the connection ends the ordinary way. Ends the
    /// sweep.
    pub fn close_all(&self) {
        self.stopped.set(true);
        let now = Instant::now();
        let connections: Vec<Rc<Activity>> = self.connections.borrow().clone();
        for activity in connections {
            match activity.closing.get() {
                None => self.close(&activity, CloseReason::Stopping, now),
                // Half closed (a timed-out frame being answered): no sweep
                // will finish it now.
                Some(_) => shutdown(&activity, libc::SHUT_RDWR),
            }
        }
    }

    /// Closes connections whose frame or idleness outlasted its timeout,
    /// every few fractions of the shortest timeout, until `close_all`.
    pub async fn sweep_until_stopped(self: Rc<Self>) {
        let shortest = self.frame_receive_timeout.min(self.idle_timeout);
        let interval = (shortest / SWEEPS_PER_TIMEOUT).clamp(
            Duration::from_millis(SWEEP_INTERVAL_MS_MIN),
            Duration::from_millis(SWEEP_INTERVAL_MS_MAX),
        );
        let mut reported = Instant::now();
        while !self.stopped.get() {
            crate::runtime::sleep(interval).await;
            let now = Instant::now();
            self.sweep(now);
            if now - reported >= Duration::from_millis(REPORT_INTERVAL_MS) {
                self.report();
                reported = now;
            }
        }
    }

    fn sweep(&self, now: Instant) {
        let expired: Vec<(Rc<Activity>, CloseReason)> = self
            .connections
            .borrow()
            .iter()
            .filter_map(|a| {
                if let Some((_, since)) = a.closing.get() {
                    if now - since >= Duration::from_millis(CLOSE_GRACE_MS) {
                        shutdown(a, libc::SHUT_RDWR);
                    }
                    return None;
                }
                if a.waiting_for_memory.get() {
                    return None;
                }
                let reason = match a.frame_started.get() {
                    Some(started) => (now - started >= self.frame_receive_timeout)
                        .then_some(CloseReason::FrameTimeout),
                    None => (a.requests_in_flight.get() == 0
                        && now - a.last_active.get() >= self.idle_timeout)
                        .then_some(CloseReason::Idle),
                };
                reason.map(|reason| (a.clone(), reason))
            })
            .collect();
        for (activity, reason) in expired {
            self.close(&activity, reason, now);
        }
    }

    fn close(&self, activity: &Activity, reason: CloseReason, now: Instant) {
        assert!(activity.closing.get().is_none(), "a connection closed twice");
        activity.closing.set(Some((reason, now)));
        self.closing_count.set(self.closing_count.get() + 1);
        self.count(|c| match reason {
            CloseReason::FrameTimeout => c.frame_timeout += 1,
            CloseReason::Idle => c.idle += 1,
            CloseReason::Evicted => c.evicted += 1,
            CloseReason::Stopping => {}
        });
        tracing::debug!(peer = ?activity.peer, ?reason, "closing a connection");
        // The reader answers a timed-out frame before the connection ends.
        let how = if reason == CloseReason::FrameTimeout { libc::SHUT_RD } else { libc::SHUT_RDWR };
        shutdown(activity, how);
    }

    fn count(&self, change: impl FnOnce(&mut Closed)) {
        let mut closed = self.closed.get();
        change(&mut closed);
        self.closed.set(closed);
    }

    /// Logs what was closed or refused since the last report, if anything.
    fn report(&self) {
        let closed = self.closed.take();
        if closed != Closed::default() {
            tracing::info!(
                frame_timeout = closed.frame_timeout,
                idle = closed.idle,
                evicted = closed.evicted,
                refused = closed.refused,
                open = self.connections.borrow().len(),
                "connections closed by the broker"
            );
        }
    }
}

fn shutdown(activity: &Activity, how: libc::c_int) {
    // SAFETY: shutdown(2) on a descriptor that is open while the activity
    // is in the table (module invariant); no memory is involved.
    let rc = unsafe { libc::shutdown(activity.fd, how) };
    if rc != 0 {
        // ENOTCONN: the peer is already gone; the connection ends anyway.
        let e = std::io::Error::last_os_error();
        tracing::trace!(peer = ?activity.peer, error = %e, "shutting a connection down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn table(connections_max: usize) -> ConnectionTable {
        ConnectionTable::new(&BrokerLimits {
            connections_per_shard_max: connections_max,
            frame_receive_timeout_ms: 1_000,
            connections_max_idle_ms: 10_000,
            ..BrokerLimits::default()
        })
    }

    /// A socket for the table to shut down, and its peer, which sees it.
    fn socket() -> (UnixStream, UnixStream) {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        (ours, peer)
    }

    fn admitted(admission: Admission) -> Rc<Activity> {
        match admission {
            Admission::Admitted(activity) => activity,
            Admission::Refused => panic!("refused"),
        }
    }

    fn closed_for_peer(peer: &mut UnixStream) -> bool {
        matches!(peer.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn at_the_limit_the_least_recently_active_connection_without_requests_makes_room() {
        let table = table(2);
        let (busy_socket, _busy_peer) = socket();
        let (idle_socket, mut idle_peer) = socket();
        let busy = admitted(table.admit(busy_socket.as_raw_fd(), None));
        let idle = admitted(table.admit(idle_socket.as_raw_fd(), None));
        // The busy one is older but has a request in flight.
        busy.frame_started();
        busy.frame_received();

        let (new_socket, _new_peer) = socket();
        let new = admitted(table.admit(new_socket.as_raw_fd(), None));
        assert_eq!(idle.close_reason(), Some(CloseReason::Evicted));
        assert!(closed_for_peer(&mut idle_peer));
        assert_eq!(busy.close_reason(), None);

        // Every open connection busy: a further one is refused.
        new.frame_started();
        new.frame_received();
        let (refused_socket, _refused_peer) = socket();
        assert!(matches!(table.admit(refused_socket.as_raw_fd(), None), Admission::Refused));

        // Once a request is answered its connection can make room again.
        busy.request_done();
        let (late_socket, _late_peer) = socket();
        admitted(table.admit(late_socket.as_raw_fd(), None));
        assert_eq!(busy.close_reason(), Some(CloseReason::Evicted));
        for activity in [busy, idle, new] {
            table.remove(&activity);
        }
    }

    #[test]
    fn a_sweep_closes_stalled_frames_and_idle_connections_but_not_busy_ones() {
        let table = table(16);
        let (stalled_socket, _stalled_peer) = socket();
        let (idle_socket, mut idle_peer) = socket();
        let (busy_socket, _busy_peer) = socket();
        let (waiting_socket, _waiting_peer) = socket();
        let stalled = admitted(table.admit(stalled_socket.as_raw_fd(), None));
        let idle = admitted(table.admit(idle_socket.as_raw_fd(), None));
        let busy = admitted(table.admit(busy_socket.as_raw_fd(), None));
        let waiting = admitted(table.admit(waiting_socket.as_raw_fd(), None));
        stalled.frame_started();
        busy.frame_started();
        busy.frame_received();
        waiting.frame_started();
        waiting.memory_wait_started();

        table.sweep(Instant::now() + Duration::from_millis(500));
        assert!([&stalled, &idle, &busy, &waiting].iter().all(|a| a.close_reason().is_none()));

        table.sweep(Instant::now() + Duration::from_millis(1_500));
        assert_eq!(stalled.close_reason(), Some(CloseReason::FrameTimeout));
        assert_eq!(idle.close_reason(), None, "idle for less than the idle timeout");

        table.sweep(Instant::now() + Duration::from_secs(3_600));
        assert_eq!(idle.close_reason(), Some(CloseReason::Idle));
        assert!(closed_for_peer(&mut idle_peer));
        assert_eq!(busy.close_reason(), None, "a request in flight is not idleness");
        assert_eq!(waiting.close_reason(), None, "waiting for the broker's memory");
        for activity in [stalled, idle, busy, waiting] {
            table.remove(&activity);
        }
    }
}
