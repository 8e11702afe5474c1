//! A group subscription by topic-name pattern (Kafka's
//! `subscribe(Pattern)`): the consumer resolves it against the broker's
//! topics when it subscribes and again every `metadata_max_age_ms`, and
//! the membership sends the new topic list whenever the set that matches
//! changes, so a topic created later is picked up.
//!
//! The pattern must match the whole name (`orders-.*` matches
//! `orders-eu`, not `old-orders-eu`), as Kafka's does. Internal topics
//! (names starting with `__`, such as `__consumer_offsets`) never match.

use super::ClientError;
use regex::Regex;
use std::time::{Duration, Instant};

/// Names starting with this are the broker's own topics.
const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Lifecycle: built by `Consumer::subscribe_pattern`, owned by the
/// consumer's group part; `refresh_due` and `refreshed` are called from
/// `poll`.
#[derive(Debug)]
pub(crate) struct TopicPattern {
    regex: Regex,
    /// As the caller wrote it, for errors and logs.
    pattern: String,
    refresh_interval: Duration,
    /// `None` until the first resolution.
    refreshed_at: Option<Instant>,
}

impl TopicPattern {
    pub fn new(pattern: &str, metadata_max_age_ms: u64) -> Result<TopicPattern, ClientError> {
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            ClientError::InvalidArgument(format!("bad topic pattern {pattern:?}: {e}"))
        })?;
        Ok(TopicPattern {
            regex,
            pattern: pattern.to_string(),
            refresh_interval: Duration::from_millis(metadata_max_age_ms),
            refreshed_at: None,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, topic: &str) -> bool {
        !topic.starts_with(INTERNAL_TOPIC_PREFIX) && self.regex.is_match(topic)
    }

    /// The names among `topics` that match, sorted and without repeats.
    pub fn matching<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut matched: Vec<String> =
            topics.into_iter().filter(|t| self.matches(t)).map(str::to_string).collect();
        matched.sort_unstable();
        matched.dedup();
        matched
    }

    pub fn refresh_due(&self, now: Instant) -> bool {
        self.refreshed_at.is_none_or(|at| now.duration_since(at) >= self.refresh_interval)
    }

    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_whole_names_and_never_internal_topics() {
        let pattern = TopicPattern::new("orders-.*|__.*", 5_000).expect("pattern");
        let topics = ["orders-eu", "old-orders-eu", "orders-us", "__consumer_offsets", "orders"];
        assert_eq!(pattern.matching(topics), ["orders-eu", "orders-us"]);
    }

    #[test]
    fn a_bad_pattern_is_refused_naming_it() {
        let refused = TopicPattern::new("orders-(", 5_000).expect_err("unclosed group");
        assert!(
            matches!(&refused, ClientError::InvalidArgument(m) if m.contains("orders-(")),
            "{refused}"
        );
    }

    #[test]
    fn a_refresh_is_due_first_and_then_every_interval() {
        let mut pattern = TopicPattern::new("a", 5_000).expect("pattern");
        let start = Instant::now();
        assert!(pattern.refresh_due(start));
        pattern.refreshed(start);
        assert!(!pattern.refresh_due(start + Duration::from_millis(4_999)));
        assert!(pattern.refresh_due(start + Duration::from_millis(5_000)));
    }
}
