//! Waits between retries: doubling from a first wait up to a cap, so a
//! broker that is away for a moment is found again quickly and one that is
//! away for long is not hammered.

use std::time::Duration;

/// Lifecycle: `next` gives each wait in turn; `reset` after a success
/// starts again from the first.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `first`, twice that, ... up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        assert!(first <= max, "the first wait ({first:?}) exceeds the cap ({max:?})");
        Backoff { first, max, next: first }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next_wait()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), ms(100));
    }
}
