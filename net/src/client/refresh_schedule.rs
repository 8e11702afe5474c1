//! When a client asks for metadata again. A schedule with no I/O and no
//! clock of its own: the router's refresh thread steps it with the time
//! and refreshes when it says so.
//!
//! - Every `max_age` the view is refreshed anyway, so leader moves and new
//!   brokers are learned even when no request tripped over them.
//! - A request (a `not leader` answer, a partition the broker does not
//!   know, a leader that cannot be reached) refreshes at once, unless the
//!   last requested refresh learned nothing: then the next one waits a
//!   backoff that doubles while refreshes stay fruitless (the cluster is
//!   still electing; asking again at once would only load it) and starts
//!   over once one learns something.
//! - A topic the client has not asked about before refreshes at once: a
//!   new question, not a repeat.
//! - After a failed refresh nothing is asked before a backoff that
//!   doubles while they fail and starts over after a success.
//! - One refresh at a time: requests made while one is under way are
//!   served by the next, which follows at once.

use super::backoff::Backoff;
use std::time::{Duration, Instant};

/// The first wait after a fruitless or failed refresh; doubled up to
/// [`REFRESH_BACKOFF_MAX`]. The bound is what a client adds to a failover
/// at worst (a new leader is learned at the next refresh): a quarter
/// second, at most four metadata requests a second per client meanwhile.
pub const REFRESH_BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const REFRESH_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// What a refresh was asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wants {
    /// Someone found the view wrong.
    requested: bool,
    /// A topic joined the ones asked about.
    topics_added: bool,
}

/// Lifecycle: made with the router; `due` (or `next_at`) says when to
/// start; every `start` is followed by `succeeded` or `failed`.
#[derive(Debug)]
pub struct RefreshSchedule {
    max_age: Duration,
    failures: Backoff,
    fruitless: Backoff,
    wants: Wants,
    /// The refresh under way, and what it was for.
    running: Option<Wants>,
    last_success: Option<Instant>,
    /// After a failure: nothing before this.
    retry_at: Option<Instant>,
    /// After a fruitless requested refresh: requests wait until this.
    calm_until: Option<Instant>,
}

impl RefreshSchedule {
    pub fn new(max_age: Duration) -> RefreshSchedule {
        RefreshSchedule {
            max_age,
            failures: Backoff::new(REFRESH_BACKOFF_FIRST, REFRESH_BACKOFF_MAX),
            fruitless: Backoff::new(REFRESH_BACKOFF_FIRST, REFRESH_BACKOFF_MAX),
            wants: Wants::default(),
            running: None,
            last_success: None,
            retry_at: None,
            calm_until: None,
        }
    }

    /// The view was found wrong: refresh (see the module docs for when).
    pub fn request(&mut self) {
        self.wants.requested = true;
    }

    /// A topic joined the ones asked about: refresh as soon as allowed.
    pub fn topics_added(&mut self) {
        self.wants.topics_added = true;
    }

    /// When the next refresh may start, if nothing else happens (`None`:
    /// one is under way; a time not after `now`: at once).
    pub fn next_at(&self, now: Instant) -> Option<Instant> {
        if self.running.is_some() {
            return None;
        }
        let mut at = self.last_success.map_or(now, |t| t + self.max_age);
        if self.wants.requested {
            at = at.min(self.calm_until.map_or(now, |t| t.max(now)));
        }
        if self.wants.topics_added {
            at = now;
        }
        Some(self.retry_at.map_or(at, |retry| at.max(retry)))
    }

    /// Whether a refresh should start now.
    pub fn due(&self, now: Instant) -> bool {
        self.next_at(now).is_some_and(|at| at <= now)
    }

    /// A refresh starts: it serves every request made so far.
    pub fn start(&mut self) {
        assert!(self.running.is_none(), "a refresh started while another is under way");
        self.running = Some(std::mem::take(&mut self.wants));
    }

    /// The refresh answered; `changed`: its view differs from the last.
    pub fn succeeded(&mut self, now: Instant, changed: bool) {
        let Some(ran) = self.running.take() else { panic!("a refresh succeeded but none ran") };
        self.last_success = Some(now);
        self.retry_at = None;
        self.failures.reset();
        if changed {
            self.fruitless.reset();
            self.calm_until = None;
        } else if ran.requested {
            self.calm_until = Some(now + self.fruitless.next_wait());
        }
    }

    /// The refresh failed (no broker answered, or with an error): it is
    /// wanted again, after the failure backoff.
    pub fn failed(&mut self, now: Instant) {
        let Some(ran) = self.running.take() else { panic!("a refresh failed but none ran") };
        self.retry_at = Some(now + self.failures.next_wait());
        self.wants.requested |= ran.requested;
        self.wants.topics_added |= ran.topics_added;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_refresh_is_due_at_once_and_the_next_after_the_max_age() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        assert!(schedule.due(t0));
        schedule.start();
        schedule.succeeded(t0, true);
        assert!(!schedule.due(t0 + MAX_AGE - ms(1)));
        assert_eq!(schedule.next_at(t0), Some(t0 + MAX_AGE));
        assert!(schedule.due(t0 + MAX_AGE));
    }

    #[test]
    fn one_refresh_at_a_time_and_a_request_made_meanwhile_gets_the_next() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        schedule.start();
        schedule.request();
        assert!(!schedule.due(t0), "one is under way");
        assert_eq!(schedule.next_at(t0), None);
        schedule.succeeded(t0, true);
        assert!(schedule.due(t0), "the request made while it ran is served next, at once");
    }

    #[test]
    fn requests_are_spaced_while_refreshes_learn_nothing_and_not_once_one_does() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        schedule.start();
        schedule.succeeded(t0, true);
        let mut now = t0;
        // The leader moved; every refresh still names the old one.
        for wait in [100, 200, 250, 250] {
            schedule.request();
            assert!(schedule.due(now), "asked as soon as allowed");
            schedule.start();
            schedule.succeeded(now, false);
            schedule.request();
            assert!(!schedule.due(now + ms(wait) - ms(1)), "calm for {wait} ms");
            now += ms(wait);
            assert!(schedule.due(now));
        }
        schedule.start();
        schedule.succeeded(now, true);
        schedule.request();
        assert!(schedule.due(now), "a refresh that learned something ends the calm");
        schedule.start();
        schedule.succeeded(now, false);
        schedule.request();
        assert_eq!(schedule.next_at(now), Some(now + ms(100)), "and starts the backoff over");
    }

    #[test]
    fn a_max_age_refresh_that_learns_nothing_does_not_delay_the_next_request() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        schedule.start();
        schedule.succeeded(t0, true);
        let t1 = t0 + MAX_AGE;
        schedule.start();
        schedule.succeeded(t1, false);
        schedule.request();
        assert!(schedule.due(t1));
    }

    #[test]
    fn failures_back_off_doubling_and_a_success_starts_over() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        let mut now = t0;
        for wait in [100, 200, 250] {
            assert!(schedule.due(now));
            schedule.start();
            schedule.failed(now);
            // Even a request or a new topic waits out the failure backoff.
            schedule.request();
            schedule.topics_added();
            assert!(!schedule.due(now + ms(wait) - ms(1)), "nothing for {wait} ms");
            now += ms(wait);
        }
        assert!(schedule.due(now));
        schedule.start();
        schedule.succeeded(now, true);
        schedule.request();
        schedule.start();
        schedule.failed(now);
        assert_eq!(schedule.next_at(now), Some(now + ms(100)));
    }

    #[test]
    fn a_failed_refresh_is_wanted_again_with_what_it_was_asked_for() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        schedule.start();
        schedule.succeeded(t0, true);
        schedule.topics_added();
        schedule.start();
        schedule.failed(t0);
        assert!(schedule.due(t0 + ms(100)), "the new topic is asked about again after the backoff");
    }

    #[test]
    fn a_new_topic_is_asked_about_at_once_even_while_requests_are_calmed() {
        let t0 = Instant::now();
        let mut schedule = RefreshSchedule::new(MAX_AGE);
        schedule.start();
        schedule.succeeded(t0, true);
        schedule.request();
        schedule.start();
        schedule.succeeded(t0, false);
        schedule.request();
        assert!(!schedule.due(t0));
        schedule.topics_added();
        assert!(schedule.due(t0));
    }
}
