//! Receiving frames: few wake-ups, no zeroing.
//!
//! A TCP socket is readable as soon as one byte arrives, so a 1 MiB frame
//! read as it trickles in costs a wake-up (and on a shard, an io_uring poll
//! and a park) per arriving segment, often ten per frame. Once part of a
//! frame is in, the reader knows how much more it needs; `SO_RCVLOWAT`
//! tells the kernel not to report the socket readable until that much is
//! there. The kernel caps the mark at half its largest receive buffer and
//! grows the buffer to hold it, so a mark never waits for more than the
//! socket can queue.
//!
//! Bytes are received straight into a buffer's spare capacity: zeroing
//! memory that `recv` is about to overwrite cost as much as the copy out of
//! the kernel.
//!
//! Waiting happens in `poll` (or the ring's poll), never inside `recv`: a
//! `recv` blocked after copying part of the data would wait for the whole
//! mark again and never wake.

use crate::protocol::FRAME_HEADER_BYTES;
use rkyv::util::AlignedVec;
use std::io;
use std::os::fd::RawFd;

/// Raising the mark costs a system call; below this many missing bytes a
/// wake-up or two is cheaper.
const RAISE_FROM_BYTES: usize = 16 * 1024;

/// The receive low-water mark of one socket.
struct LowWater {
    fd: RawFd,
    raised: bool,
}

impl LowWater {
    /// The reader will not proceed before `missing_bytes` more arrive. A
    /// mark once raised always follows the missing count down: left above
    /// it, the socket would never become readable.
    fn expect(&mut self, missing_bytes: usize) {
        if missing_bytes >= RAISE_FROM_BYTES || self.raised {
            self.set(missing_bytes.clamp(1, i32::MAX as usize) as i32);
            self.raised = missing_bytes > 1;
        }
    }

    /// Back to readable-on-any-byte, for the next frame's header.
    fn reset(&mut self) {
        if std::mem::take(&mut self.raised) {
            self.set(1);
        }
    }

    fn set(&self, bytes: i32) {
        // SAFETY: a plain setsockopt on a descriptor the owner keeps open,
        // with a pointer to a live i32 and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // Only wake-ups are at stake; reading stays correct.
            tracing::trace!(error = %io::Error::last_os_error(), "SO_RCVLOWAT not set");
        }
    }
}

/// What one non-blocking `recv` did.
enum Received {
    Bytes,
    WouldBlock,
}

/// Receives what is there, up to `buf` holding `len` bytes, into its spare
/// capacity.
fn recv_spare(fd: RawFd, buf: &mut AlignedVec<16>, len: usize) -> io::Result<Received> {
    if buf.capacity() < len {
        buf.reserve_exact(len - buf.len());
    }
    let filled = buf.len();
    assert!(filled < len && buf.capacity() >= len, "nothing to receive into");
    loop {
        // SAFETY: the kernel writes at most `len - filled` bytes starting at
        // `filled`, inside the capacity reserved above.
        let n = unsafe {
            libc::recv(fd, buf.as_mut_ptr().add(filled).cast(), len - filled, libc::MSG_DONTWAIT)
        };
        if n > 0 {
            // SAFETY: `recv` initialized exactly `n` bytes after `filled`.
            unsafe { buf.set_len(filled + n as usize) };
            return Ok(Received::Bytes);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
            _ => return Err(e),
        }
    }
}

/// Frames from a blocking socket (the client's reader thread).
pub(crate) struct BlockingReceiver {
    low_water: LowWater,
}

impl BlockingReceiver {
    /// `fd` must stay open as long as this is used.
    pub(crate) fn new(fd: RawFd) -> BlockingReceiver {
        BlockingReceiver { low_water: LowWater { fd, raised: false } }
    }

    /// Receives until `buf` holds `len` bytes; `after_bytes` more of the
    /// frame follow them.
    pub(crate) fn fill(
        &mut self,
        buf: &mut AlignedVec<16>,
        len: usize,
        after_bytes: usize,
    ) -> io::Result<()> {
        while buf.len() < len {
            if let Received::WouldBlock = recv_spare(self.low_water.fd, buf, len)? {
                self.low_water.expect(len - buf.len() + after_bytes);
                wait_readable(self.low_water.fd)?;
            }
        }
        Ok(())
    }

    /// The frame is in; the next one starts with a small header.
    pub(crate) fn frame_done(&mut self) {
        self.low_water.reset();
    }
}

fn wait_readable(fd: RawFd) -> io::Result<()> {
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, count 1.
    if unsafe { libc::poll(&mut poll_fd, 1, -1) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Frames from a shard's socket. Bytes come by `recv` on the socket; the
/// wait for more goes through a duplicate of it handed to glommio, whose
/// one-byte peek completes when the ring sees the socket readable.
pub(crate) struct ShardReceiver {
    readiness: glommio::net::TcpStream,
    low_water: LowWater,
}

impl ShardReceiver {
    /// Receives on `stream`'s socket; `stream` itself stays free for
    /// writing.
    pub(crate) fn new(stream: &glommio::net::TcpStream) -> io::Result<ShardReceiver> {
        use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
        // SAFETY: `stream` keeps its descriptor open for this call.
        let own = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let fd = own.try_clone_to_owned()?.into_raw_fd();
        // SAFETY: `fd` is a connected TCP socket we own (a fresh duplicate),
        // given up to the stream, which closes it.
        let readiness = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
        Ok(ShardReceiver { readiness, low_water: LowWater { fd, raised: false } })
    }

    /// [`BlockingReceiver::fill`], waiting on the ring.
    pub(crate) async fn fill(
        &mut self,
        buf: &mut AlignedVec<16>,
        len: usize,
        after_bytes: usize,
    ) -> io::Result<()> {
        while buf.len() < len {
            if let Received::WouldBlock = recv_spare(self.low_water.fd, buf, len)? {
                self.low_water.expect(len - buf.len() + after_bytes);
                if self.readiness.peek(&mut [0u8; 1]).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Ok(())
    }

    /// The frame is in; the next one starts with a small header.
    pub(crate) fn frame_done(&mut self) {
        self.low_water.reset();
    }
}

/// The frame header at the start of `head` (filled to at least
/// `FRAME_HEADER_BYTES`).
pub(crate) fn header_of(head: &AlignedVec<16>) -> &[u8; FRAME_HEADER_BYTES] {
    head.first_chunk().expect("a frame head starts with a whole header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mamba_engine::runtime;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A frame-sized message sent in small pieces with pauses, so the
    /// receiver sees it trickle in and raises its mark several times.
    fn trickle(mut out: TcpStream, message: Vec<u8>, close_after_bytes: Option<usize>) {
        let end = close_after_bytes.unwrap_or(message.len());
        for (i, piece) in message[..end].chunks(7_919).enumerate() {
            out.write_all(piece).expect("send");
            if i % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn blocking_receiver_reads_a_trickled_frame_whole_and_the_next_one() {
        let (client, server) = connected_pair();
        let (first, second) = (message(1 << 20), message(100));
        let sent = [first.clone(), second.clone()].concat();
        let sender = std::thread::spawn(move || trickle(client, sent, None));
        let mut receiver = BlockingReceiver::new(server.as_raw_fd());
        let mut buf = AlignedVec::<16>::new();
        receiver.fill(&mut buf, 4096, first.len() - 4096).expect("head");
        receiver.fill(&mut buf, first.len(), 0).expect("rest");
        receiver.frame_done();
        assert!(buf.as_slice() == first.as_slice(), "first frame differs");
        let mut next = AlignedVec::<16>::new();
        receiver.fill(&mut next, second.len(), 0).expect("second");
        assert_eq!(next.as_slice(), second.as_slice());
        sender.join().expect("sender");
    }

    #[test]
    fn blocking_receiver_reports_a_peer_gone_mid_frame() {
        let (client, server) = connected_pair();
        let sender = std::thread::spawn(move || trickle(client, message(1 << 20), Some(300_000)));
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut receiver = BlockingReceiver::new(server.as_raw_fd());
            let mut buf = AlignedVec::<16>::new();
            done.send(receiver.fill(&mut buf, 1 << 20, 0).map(|()| buf.len())).expect("report");
        });
        sender.join().expect("sender");
        let outcome =
            result.recv_timeout(Duration::from_secs(10)).expect("no hang at end of stream");
        assert_eq!(outcome.expect_err("short frame").kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn shard_receiver_reads_a_trickled_frame_and_leaves_the_socket_writable() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let frame = message(3 << 20);
        let sent = frame.clone();
        let client = std::thread::spawn(move || {
            let stream = TcpStream::connect(addr).expect("connect");
            trickle(stream.try_clone().expect("clone"), sent, None);
            let mut answer = [0u8; 2];
            std::io::Read::read_exact(&mut &stream, &mut answer).expect("answer");
            answer
        });
        let (server, _) = listener.accept().expect("accept");
        let options = runtime::ExecutorOptions {
            name: "receive-test".into(),
            core: None,
            io_memory_bytes: runtime::io_memory_per_shard_bytes(1),
        };
        let received = runtime::spawn_executor(options, move || async move {
            use futures::io::AsyncWriteExt;
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the accepted socket is ours, handed over whole.
            let stream = unsafe { glommio::net::TcpStream::from_raw_fd(server.into_raw_fd()) };
            let mut receiver = ShardReceiver::new(&stream).expect("receiver");
            let mut buf = AlignedVec::<16>::new();
            receiver.fill(&mut buf, 64, (3 << 20) - 64).await.expect("head");
            receiver.fill(&mut buf, 3 << 20, 0).await.expect("rest");
            receiver.frame_done();
            let mut writer = stream;
            writer.write_all(b"ok").await.expect("answer");
            buf.to_vec()
        })
        .expect("executor")
        .join()
        .expect("join")
        .expect("ran");
        assert!(received == frame, "frame differs");
        assert_eq!(&client.join().expect("client"), b"ok");
    }
}
