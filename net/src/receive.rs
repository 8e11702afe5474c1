//! Receiving frames straight into unzeroed memory.
//!
//! A frame's head and payload go into buffers sized from its header. Safe
//! reads need initialized memory, and zeroing a megabyte that `recv` is
//! about to overwrite cost as much as the copy out of the kernel; so bytes
//! are received into each buffer's spare capacity and only what `recv`
//! wrote becomes part of it.
//!
//! (Raising `SO_RCVLOWAT` to the rest of a frame, to wake readers once per
//! frame rather than once per arriving segment, was tried and dropped: no
//! gain in CPU or latency in paired runs, a system call more per frame.)

use crate::protocol::FRAME_HEADER_BYTES;
use rkyv::util::AlignedVec;
use std::io;
use std::os::fd::RawFd;

/// What one `recv` did.
enum Received {
    Bytes,
    WouldBlock,
}

/// Receives what is there (waiting for it unless `flags` has
/// `MSG_DONTWAIT`), up to `buf` holding `len` bytes, into its spare
/// capacity.
fn recv_spare(
    fd: RawFd,
    buf: &mut AlignedVec<16>,
    len: usize,
    flags: libc::c_int,
) -> io::Result<Received> {
    if buf.capacity() < len {
        buf.reserve_exact(len - buf.len());
    }
    let filled = buf.len();
    assert!(filled < len && buf.capacity() >= len, "nothing to receive into");
    loop {
        // SAFETY: the kernel writes at most `len - filled` bytes starting at
        // `filled`, inside the capacity reserved above.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().add(filled).cast(), len - filled, flags) };
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

/// Receives on a blocking socket (the client's reader thread) until `buf`
/// holds `len` bytes.
pub(crate) fn fill_blocking(fd: RawFd, buf: &mut AlignedVec<16>, len: usize) -> io::Result<()> {
    while buf.len() < len {
        if let Received::WouldBlock = recv_spare(fd, buf, len, 0)? {
            // Only a receive timeout makes a blocking socket say this.
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    Ok(())
}

/// Receives on a blocking socket what is there now, without waiting, up to
/// `buf` holding `len` bytes; says whether any came. The client's reader
/// thread takes what has arrived before it sleeps in `poll(2)`, so under
/// load a frame costs no more system calls than a blocking read.
pub(crate) fn fill_ready(fd: RawFd, buf: &mut AlignedVec<16>, len: usize) -> io::Result<bool> {
    match recv_spare(fd, buf, len, libc::MSG_DONTWAIT)? {
        Received::Bytes => Ok(true),
        Received::WouldBlock => Ok(false),
    }
}

/// Frames from a shard's socket. Bytes come by non-blocking `recv`; the
/// wait for more goes through a duplicate of the socket handed to glommio,
/// whose one-byte peek completes when the ring sees it readable.
pub(crate) struct ShardReceiver {
    readiness: crate::runtime::TcpStream,
    fd: RawFd,
}

impl ShardReceiver {
    /// Receives on `stream`'s socket; `stream` itself stays free for
    /// writing.
    pub(crate) fn new(stream: &crate::runtime::TcpStream) -> io::Result<ShardReceiver> {
        use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
        // SAFETY: `stream` keeps its descriptor open for this call.
        let own = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        let fd = own.try_clone_to_owned()?.into_raw_fd();
        // SAFETY: `fd` is a connected TCP socket we own (a fresh duplicate),
        // given up to the stream, which closes it; `self.fd` lives no longer.
        let readiness = unsafe { crate::runtime::TcpStream::from_raw_fd(fd) };
        Ok(ShardReceiver { readiness, fd })
    }

    /// Receives until `buf` holds `len` bytes.
    pub(crate) async fn fill(&mut self, buf: &mut AlignedVec<16>, len: usize) -> io::Result<()> {
        while buf.len() < len {
            if self.receive_ready(buf, len)? == 0 {
                self.readable().await?;
            }
        }
        Ok(())
    }

    /// Receives what is there now, without waiting, up to `buf` holding
    /// `len` bytes; returns how many bytes came (0: none yet). `buf` grows
    /// to `len` if its capacity is smaller; reserve more beforehand to
    /// receive a buffer in several limited steps without reallocating it.
    pub(crate) fn receive_ready(
        &mut self,
        buf: &mut AlignedVec<16>,
        len: usize,
    ) -> io::Result<usize> {
        let before = buf.len();
        match recv_spare(self.fd, buf, len, libc::MSG_DONTWAIT)? {
            Received::Bytes => Ok(buf.len() - before),
            Received::WouldBlock => Ok(0),
        }
    }

    /// Waits until the socket has bytes to read; the end of the stream (or
    /// a shutdown of the socket) is an `UnexpectedEof` error.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        if self.readiness.peek(&mut [0u8; 1]).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The socket's descriptor, open as long as this receiver (for
    /// `shutdown(2)` by whoever closes the connection).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
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
    /// receiver sees it trickle in.
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
    fn a_trickled_frame_arrives_whole_and_the_next_one_after_it() {
        let (client, server) = connected_pair();
        let (first, second) = (message(1 << 20), message(100));
        let sent = [first.clone(), second.clone()].concat();
        let sender = std::thread::spawn(move || trickle(client, sent, None));
        let fd = server.as_raw_fd();
        let mut buf = AlignedVec::<16>::new();
        fill_blocking(fd, &mut buf, 4096).expect("head");
        fill_blocking(fd, &mut buf, first.len()).expect("rest");
        assert!(buf.as_slice() == first.as_slice(), "first frame differs");
        let mut next = AlignedVec::<16>::new();
        fill_blocking(fd, &mut next, second.len()).expect("second");
        assert_eq!(next.as_slice(), second.as_slice());
        sender.join().expect("sender");
    }

    #[test]
    fn a_peer_gone_mid_frame_is_an_end_of_stream_error() {
        let (client, server) = connected_pair();
        let sender = std::thread::spawn(move || trickle(client, message(1 << 20), Some(300_000)));
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = AlignedVec::<16>::new();
            let outcome = fill_blocking(server.as_raw_fd(), &mut buf, 1 << 20).map(|()| buf.len());
            done.send(outcome).expect("report");
        });
        sender.join().expect("sender");
        let outcome =
            result.recv_timeout(Duration::from_secs(10)).expect("no hang at end of stream");
        assert_eq!(outcome.expect_err("short frame").kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_shard_receives_a_trickled_frame_and_still_writes_on_the_socket() {
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
            let stream = unsafe { crate::runtime::TcpStream::from_raw_fd(server.into_raw_fd()) };
            let mut receiver = ShardReceiver::new(&stream).expect("receiver");
            let mut buf = AlignedVec::<16>::new();
            receiver.fill(&mut buf, 64).await.expect("head");
            receiver.fill(&mut buf, 3 << 20).await.expect("rest");
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
