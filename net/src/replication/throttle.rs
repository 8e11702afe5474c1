//! The catch-up throttle (`replication.throttle.bytes_per_s`): one budget
//! per broker, shared by the fetchers of every shard, for the bytes of
//! partitions this broker is not in sync on (moved replicas, followers
//! back from a long absence). In-sync replication is never throttled: it
//! is what `acks=all` waits for.
//!
//! A generic cell rate algorithm over one atomic: the budget is a
//! theoretical arrival time that each fetch's bytes push forward by
//! `bytes / rate`; a fetcher whose push lands past now waits that long
//! before its catching-up partitions fetch again. Lock-free, so shards
//! never wait on each other for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Throttle {
    origin: Instant,
    /// Nanoseconds after `origin` when the bytes taken so far are paid.
    paid_at_ns: AtomicU64,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle { origin: Instant::now(), paid_at_ns: AtomicU64::new(0) }
    }

    /// Charges `bytes` at `bytes_per_s`: how long the caller waits before
    /// it takes more.
    pub(crate) fn charge(&self, bytes: u64, bytes_per_s: u64, now: Instant) -> Duration {
        if bytes == 0 || bytes_per_s == 0 {
            return Duration::ZERO;
        }
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
        let cost_ns = (u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_s)) as u64;
        let mut current = self.paid_at_ns.load(Ordering::Relaxed);
        loop {
            // Time unused while no one fetched is not saved up.
            let next = current.max(now_ns).saturating_add(cost_ns);
            match self.paid_at_ns.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::from_nanos(next.saturating_sub(now_ns)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_makes_the_average_rate_the_limit() {
        let t = Throttle::new();
        let start = t.origin;
        // 1 MiB at 1 MiB/s: a second to pay; a second MiB right away, two.
        assert_eq!(t.charge(1 << 20, 1 << 20, start), Duration::from_secs(1));
        assert_eq!(t.charge(1 << 20, 1 << 20, start), Duration::from_secs(2));
        // Three seconds later all is paid and idle time is not banked.
        let later = start + Duration::from_secs(5);
        assert_eq!(t.charge(512 << 10, 1 << 20, later), Duration::from_millis(500));
        assert_eq!(t.charge(0, 1 << 20, later), Duration::ZERO);
    }
}
