//! Rate pacing with coordinated-omission correction: each message has an
//! intended send time on a fixed schedule, and its latency is measured from
//! that time, so a stall delays the schedule's messages and shows up in the
//! percentiles instead of silently lowering the send rate.

use std::time::{Duration, Instant};

/// The schedule of one sender.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// `None`: as fast as possible (intended time = actual send time).
    interval: Option<Duration>,
    sent: u64,
}

impl Pacer {
    /// `rate_per_s` = 0: unpaced.
    pub fn new(start: Instant, rate_per_s: f64) -> Pacer {
        let interval = (rate_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_per_s));
        Pacer { start, interval, sent: 0 }
    }

    /// When the next message is meant to go.
    pub fn next_intended(&self, now: Instant) -> Instant {
        match self.interval {
            Some(interval) => self.start + interval.mul_f64(self.sent as f64),
            None => now,
        }
    }

    /// Marks the next message as sent; returns its intended time.
    pub fn advance(&mut self, now: Instant) -> Instant {
        let intended = self.next_intended(now);
        self.sent += 1;
        intended
    }
}

/// Latency of a message completed at `done`, from its intended send time.
pub fn latency_us(intended: Instant, done: Instant) -> u64 {
    done.saturating_duration_since(intended).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_schedule_is_fixed_and_stalls_count_against_latency() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 1000.0);
        let first = pacer.advance(start);
        let second = pacer.advance(start);
        assert_eq!(first, start);
        assert_eq!(second - first, Duration::from_millis(1));
        // A 50 ms stall: the message meant for t=2ms is measured from 2ms.
        let stalled_done = start + Duration::from_millis(52);
        let third = pacer.advance(stalled_done);
        assert_eq!(third - start, Duration::from_millis(2));
        assert_eq!(latency_us(third, stalled_done), 50_000);
    }

    #[test]
    fn unpaced_messages_are_intended_when_sent() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 0.0);
        let now = start + Duration::from_millis(7);
        assert_eq!(pacer.advance(now), now);
    }
}
