//! A history second by second, for the timeline plot: produce outcomes,
//! reads and produce latency per second, and the fault windows. Pure: the
//! plot (`report::write_verify`) only draws what this computes.

use super::history::{Event, Outcome};
use super::workload::FINAL_SCAN;
use serde::Serialize;

/// One second of the history (by when each operation's outcome was known).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the history began (the bucket's start).
    pub at_s: u64,
    pub acknowledged: u64,
    /// Produces that failed or whose outcome is unknown.
    pub not_acknowledged: u64,
    /// Records read by the readers and group members (not the final scan).
    pub reads: u64,
    /// Of the produces answered this second (acknowledged or not).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// A fault from its start to its heal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
    pub kind: String,
    pub target: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub seconds: Vec<Second>,
    pub faults: Vec<Window>,
}

impl Timeline {
    pub fn of(events: &[Event]) -> Timeline {
        let end_s = events.iter().map(|e| e.t_ms() / 1000).max().map_or(0, |s| s + 1);
        let mut seconds: Vec<Second> =
            (0..end_s).map(|at_s| Second { at_s, ..Second::default() }).collect();
        let mut latencies_us: Vec<Vec<u64>> = vec![Vec::new(); seconds.len()];
        let mut faults = Vec::new();
        for e in events {
            let at = (e.t_ms() / 1000) as usize;
            match e {
                Event::Produce { latency_us, outcome, .. } => {
                    if *outcome == Outcome::Ok {
                        seconds[at].acknowledged += 1;
                    } else {
                        seconds[at].not_acknowledged += 1;
                    }
                    latencies_us[at].push(*latency_us);
                }
                // The final scan reads everything after the load: not load.
                Event::Read { reader, .. } if reader != FINAL_SCAN => seconds[at].reads += 1,
                Event::Read { .. } | Event::Commit { .. } => {}
                Event::Fault { start_ms, end_ms, kind, target } => faults.push(Window {
                    start_s: *start_ms as f64 / 1000.0,
                    end_s: *end_ms as f64 / 1000.0,
                    kind: kind.clone(),
                    target: target.clone(),
                }),
            }
        }
        for (second, mut us) in seconds.iter_mut().zip(latencies_us) {
            us.sort_unstable();
            second.latency_p50_ms = percentile_ms(&us, 0.50);
            second.latency_p99_ms = percentile_ms(&us, 0.99);
        }
        Timeline { seconds, faults }
    }
}

/// The `q` quantile (nearest rank) of sorted microseconds, in ms; 0 when
/// there are none.
fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::history::ValueId;

    fn produce(t_ms: u64, latency_us: u64, ok: bool) -> Event {
        Event::Produce {
            t_ms,
            latency_us,
            id: ValueId { producer: 0, seq: t_ms },
            outcome: if ok { Outcome::Ok } else { Outcome::Unknown },
            partition: Some(0),
            offset: ok.then_some(t_ms),
            error: None,
        }
    }

    #[test]
    fn seconds_count_outcomes_reads_and_latency_and_faults_keep_their_windows() {
        let mut events: Vec<Event> = (1..=100).map(|i| produce(i * 5, i * 1000, true)).collect();
        events.push(produce(1500, 3_000_000, false));
        let read = |t_ms, reader: &str| Event::Read {
            t_ms,
            reader: reader.into(),
            group: false,
            partition: 0,
            offset: 5,
            id: None,
            garbled: None,
        };
        events.push(read(1200, "r0"));
        events.push(read(2100, FINAL_SCAN)); // not load
        events.push(Event::Fault {
            start_ms: 1250,
            end_ms: 1750,
            kind: "pause".into(),
            target: "broker 2".into(),
        });
        let t = Timeline::of(&events);
        assert_eq!(t.seconds.len(), 3);
        assert_eq!((t.seconds[0].acknowledged, t.seconds[0].not_acknowledged), (100, 0));
        assert_eq!((t.seconds[0].latency_p50_ms, t.seconds[0].latency_p99_ms), (50.0, 99.0));
        assert_eq!((t.seconds[1].acknowledged, t.seconds[1].not_acknowledged), (0, 1));
        assert_eq!((t.seconds[1].reads, t.seconds[2].reads), (1, 0));
        assert_eq!(t.seconds[1].latency_p99_ms, 3000.0);
        assert_eq!(t.faults.len(), 1);
        assert_eq!((t.faults[0].start_s, t.faults[0].end_s), (1.25, 1.75));
    }

    #[test]
    fn an_empty_history_has_no_seconds() {
        assert_eq!(Timeline::of(&[]), Timeline::default());
    }
}
