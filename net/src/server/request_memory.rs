//! A shard's memory for request frames, charged as bytes arrive.
//!
//! A frame's header announces its size, but a sender may stop after the
//! header: memory reserved for what it announced would be held for bytes
//! that never come (16 headers of 64 MiB, 512 bytes sent, used to take the
//! whole budget of a shard and stop every client). So a frame is charged
//! for the bytes received, as they are received, and a sender that stalls
//! holds only what it sent.
//!
//! Charging as bytes arrive could deadlock honest clients: many frames
//! half received, each waiting for memory the others hold. Hence two parts:
//!
//! - the shared pool (`request_bytes_per_shard_max - frame_bytes_max`),
//!   taken without waiting, byte for byte as `recv` returns them;
//! - the reserve (`frame_bytes_max`), for frames that find the shared pool
//!   spent: such a frame waits (in arrival order) until the reserve holds
//!   the whole rest of it at once, and then never waits for memory again.
//!
//! No frame waits while another waits on it: frames in the reserve have all
//! they need and finish (or their sender times out), frames in the shared
//! pool never wait. A frame enters the reserve only once bytes of it are
//! there to read, so a stalled header never queues for it.
//!
//! Owned by one shard (`Rc`, `Cell`); lives as long as its listener.
//! Invariant: shared bytes charged + free = the shared pool's size, and a
//! frame's charges return when its `FrameMemory` drops (after its answer).

use std::cell::Cell;
use std::rc::Rc;

/// The least a receive takes from the shared pool: with less room left,
/// the frame goes to the reserve rather than receiving a few bytes per
/// system call.
const RECEIVE_BYTES_MIN: usize = 64 * 1024;

pub(crate) struct RequestMemory {
    shared_free_bytes: Cell<usize>,
    reserve: crate::runtime::Semaphore,
}

impl RequestMemory {
    /// Room for `request_bytes_max` bytes of frames, each at most
    /// `frame_bytes_max` (validated: the first is at least the second).
    pub fn new(request_bytes_max: usize, frame_bytes_max: usize) -> RequestMemory {
        assert!(request_bytes_max >= frame_bytes_max, "the reserve fits in the budget");
        RequestMemory {
            shared_free_bytes: Cell::new(request_bytes_max - frame_bytes_max),
            reserve: crate::runtime::Semaphore::new(frame_bytes_max as u64),
        }
    }
}

/// The memory one frame's body holds, from its header until its request is
/// answered.
pub(crate) struct FrameMemory {
    memory: Rc<RequestMemory>,
    /// Bytes of the frame not received yet.
    unreceived_bytes: usize,
    /// Bytes charged to the shared pool.
    shared_bytes: usize,
    /// Bytes held in the reserve (the rest of the frame when it entered).
    reserve_bytes: usize,
}

impl FrameMemory {
    /// Charges for a frame whose header announced `unreceived_bytes` more.
    pub fn new(memory: Rc<RequestMemory>, unreceived_bytes: usize) -> FrameMemory {
        FrameMemory { memory, unreceived_bytes, shared_bytes: 0, reserve_bytes: 0 }
    }

    /// Bytes the frame may receive now without waiting, or `None` if it
    /// must first wait for the reserve ([`FrameMemory::reserve_rest`]).
    pub fn room_bytes(&self) -> Option<usize> {
        if self.reserve_bytes > 0 {
            return Some(self.unreceived_bytes);
        }
        let free = self.memory.shared_free_bytes.get();
        let room = free.min(self.unreceived_bytes);
        (room > 0 && room >= self.unreceived_bytes.min(RECEIVE_BYTES_MIN)).then_some(room)
    }

    /// `bytes` arrived, within the room [`FrameMemory::room_bytes`] gave.
    pub fn received(&mut self, bytes: usize) {
        assert!(bytes <= self.unreceived_bytes, "more received than the frame announced");
        self.unreceived_bytes -= bytes;
        if self.reserve_bytes == 0 {
            let free = self.memory.shared_free_bytes.get();
            assert!(bytes <= free, "received beyond the shared pool's room");
            self.memory.shared_free_bytes.set(free - bytes);
            self.shared_bytes += bytes;
        }
    }

    /// Waits until the reserve holds the rest of the frame.
    pub async fn reserve_rest(&mut self) -> std::io::Result<()> {
        assert_eq!(self.reserve_bytes, 0, "a frame enters the reserve once");
        assert!(self.unreceived_bytes > 0, "nothing left to reserve for");
        // The reserve is never closed; an error would be a broken invariant
        // of the semaphore, reported as the connection's end.
        self.memory
            .reserve
            .acquire(self.unreceived_bytes as u64)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.reserve_bytes = self.unreceived_bytes;
        Ok(())
    }
}

impl Drop for FrameMemory {
    fn drop(&mut self) {
        let free = self.memory.shared_free_bytes.get();
        self.memory.shared_free_bytes.set(free + self.shared_bytes);
        if self.reserve_bytes > 0 {
            self.memory.reserve.signal(self.reserve_bytes as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn shared_free(memory: &RequestMemory) -> usize {
        memory.shared_free_bytes.get()
    }

    #[test]
    fn a_stalled_frame_holds_only_the_bytes_it_sent() {
        let memory = Rc::new(RequestMemory::new(256 * MIB, 64 * MIB));
        let stalled: Vec<FrameMemory> =
            (0..16).map(|_| FrameMemory::new(memory.clone(), 64 * MIB)).collect();
        assert_eq!(shared_free(&memory), 192 * MIB, "headers alone take nothing");
        let mut frame = FrameMemory::new(memory.clone(), MIB);
        assert_eq!(frame.room_bytes(), Some(MIB));
        frame.received(4096);
        assert_eq!(shared_free(&memory), 192 * MIB - 4096);
        drop(frame);
        drop(stalled);
        assert_eq!(shared_free(&memory), 192 * MIB, "everything returns");
    }

    #[test]
    fn a_frame_finishes_in_the_reserve_when_half_received_frames_spent_the_pool() {
        // Two frames half received fill the shared pool; each then gets the
        // rest of itself from the reserve, one after the other, instead of
        // both waiting for memory the other holds.
        let memory = Rc::new(RequestMemory::new(2 * MIB, MIB));
        let mut first = FrameMemory::new(memory.clone(), MIB);
        let mut second = FrameMemory::new(memory.clone(), MIB);
        first.received(MIB / 2);
        second.received(MIB / 2);
        assert_eq!(first.room_bytes(), None, "the shared pool is spent");
        futures::executor::block_on(first.reserve_rest()).expect("the reserve is free");
        assert_eq!(first.room_bytes(), Some(MIB / 2));
        first.received(MIB / 2);
        assert_eq!(first.room_bytes(), Some(0), "nothing left to receive");
        drop(first);
        assert_eq!(second.room_bytes(), Some(MIB / 2), "the first frame's shared bytes came back");
        second.received(MIB / 2);
        drop(second);
        assert_eq!(shared_free(&memory), MIB);
        assert_eq!(memory.reserve.available(), MIB as u64);
    }

    #[test]
    fn a_few_bytes_of_room_send_a_frame_to_the_reserve_rather_than_to_tiny_receives() {
        let memory = Rc::new(RequestMemory::new(MIB + 100, MIB));
        let frame = FrameMemory::new(memory.clone(), MIB);
        assert_eq!(frame.room_bytes(), None);
        let small = FrameMemory::new(memory, 64);
        assert_eq!(small.room_bytes(), Some(64), "a frame smaller than the room fits");
    }
}
