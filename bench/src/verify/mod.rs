//! `mamba-bench verify`: a Jepsen-style check that the brokers lose,
//! duplicate, reorder and garble nothing they acknowledged.
//!
//! `workload.rs` runs producers, readers and a consumer group against the
//! brokers and records every operation in a history file
//! (`history.rs`); `checker.rs` then reads the history, offline, and
//! reports anomalies; `availability` below says how much of the load was
//! acknowledged while each kind of fault was on; `timeline.rs` puts it
//! second by second for the plot. `--check FILE` checks a
//! saved history again without running anything.

pub mod checker;
pub mod faults;
pub mod history;
pub mod timeline;
pub mod workload;

use checker::CheckReport;
use history::{Event, Outcome};
use serde::Serialize;
use std::collections::BTreeMap;

/// How much of the load got through, overall and per kind of fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Availability {
    pub attempts: u64,
    pub acknowledged: u64,
    /// The longest time with no acknowledgement, from the first attempt
    /// to the last.
    pub longest_gap_ms: u64,
    /// When that gap began (ms since the start).
    pub longest_gap_at_ms: u64,
    /// By fault kind: attempts begun while it was on, and those
    /// acknowledged.
    pub during: BTreeMap<String, FaultWindowLoad>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultWindowLoad {
    pub windows: u64,
    pub attempts: u64,
    pub acknowledged: u64,
    /// The longest time with no acknowledgement inside one of its windows.
    pub longest_gap_ms: u64,
}

/// Availability from a history.
pub fn availability(events: &[Event]) -> Availability {
    let mut out = Availability::default();
    let mut acks: Vec<u64> = Vec::new();
    let mut begun: Vec<(u64, bool)> = Vec::new();
    let mut windows: Vec<(u64, u64, &str)> = Vec::new();
    for e in events {
        match e {
            Event::Produce { t_ms, latency_us, outcome, .. } => {
                out.attempts += 1;
                let ok = *outcome == Outcome::Ok;
                if ok {
                    out.acknowledged += 1;
                    acks.push(*t_ms);
                }
                begun.push((t_ms.saturating_sub(latency_us / 1000), ok));
            }
            Event::Fault { start_ms, end_ms, kind, .. } => windows.push((*start_ms, *end_ms, kind)),
            _ => {}
        }
    }
    acks.sort_unstable();
    let first = begun.iter().map(|b| b.0).min().unwrap_or(0);
    let last = begun.iter().map(|b| b.0).max().unwrap_or(0);
    let (gap, at) = longest_gap(&acks, first, last);
    out.longest_gap_ms = gap;
    out.longest_gap_at_ms = at;
    for (start, end, kind) in windows {
        let load = out.during.entry(kind.to_string()).or_default();
        load.windows += 1;
        for &(_, ok) in begun.iter().filter(|(t, _)| (start..=end).contains(t)) {
            load.attempts += 1;
            load.acknowledged += u64::from(ok);
        }
        let inside: Vec<u64> = acks.iter().copied().filter(|t| (start..=end).contains(t)).collect();
        load.longest_gap_ms = load.longest_gap_ms.max(longest_gap(&inside, start, end).0);
    }
    out
}

/// The longest stretch of `from..=to` holding none of the sorted `times`,
/// and where it begins.
fn longest_gap(times: &[u64], from: u64, to: u64) -> (u64, u64) {
    let mut best = (0, from);
    let mut previous = from;
    for &t in times.iter().filter(|t| (from..=to).contains(*t)).chain(std::iter::once(&to)) {
        if t - previous > best.0 {
            best = (t - previous, previous);
        }
        previous = t;
    }
    best
}

/// The report, for people.
pub fn print_text(check: &CheckReport, availability: &Availability) {
    println!(
        "produce attempts {}: acknowledged {} ({:.2}%), failed {}, unknown {} (of which read {})",
        check.produces,
        check.acknowledged,
        percent(check.acknowledged, check.produces),
        check.failed,
        check.unknown,
        check.unknown_read,
    );
    println!(
        "reads {}, commits {}; longest time without an acknowledgement {} ms (from {} ms)",
        check.reads, check.commits, availability.longest_gap_ms, availability.longest_gap_at_ms
    );
    for (kind, load) in &availability.during {
        println!(
            "  during {kind} ({} windows): {} of {} attempts acknowledged ({:.1}%), longest gap {} ms",
            load.windows,
            load.acknowledged,
            load.attempts,
            percent(load.acknowledged, load.attempts),
            load.longest_gap_ms
        );
    }
    let kinds = [
        ("lost", &check.lost),
        ("duplicated", &check.duplicated),
        ("inconsistent", &check.inconsistent),
        ("reordered", &check.reordered),
        ("non-monotonic", &check.non_monotonic),
        ("corrupt", &check.corrupt),
    ];
    for (name, found) in kinds {
        println!("{name:<14} {}", found.count);
        for a in &found.examples {
            let offset = a.offset.map_or("-".to_string(), |o| o.to_string());
            let faults =
                if a.faults.is_empty() { "no fault".to_string() } else { a.faults.join(", ") };
            println!(
                "    partition {} offset {offset} value {}: {} (at {} ms, {faults})",
                a.partition,
                a.value.as_deref().unwrap_or("-"),
                a.detail,
                a.t_ms
            );
        }
    }
    if check.failed_but_read > 0 {
        println!("note: {} produces reported failed were read (allowed)", check.failed_but_read);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use history::ValueId;

    fn produce(t_ms: u64, ok: bool) -> Event {
        Event::Produce {
            t_ms,
            latency_us: 0,
            id: ValueId { producer: 0, seq: t_ms },
            outcome: if ok { Outcome::Ok } else { Outcome::Unknown },
            partition: Some(0),
            offset: Some(t_ms),
            error: None,
        }
    }

    #[test]
    fn availability_counts_acknowledgements_and_the_longest_gap_per_fault() {
        let mut events: Vec<Event> = (0..10).map(|t| produce(t * 100, true)).collect();
        events.extend((10..20).map(|t| produce(t * 100, false)));
        events.extend((20..30).map(|t| produce(t * 100, true)));
        events.push(Event::Fault {
            start_ms: 950,
            end_ms: 2050,
            kind: "kill".into(),
            target: "broker 1".into(),
        });
        let a = availability(&events);
        assert_eq!((a.attempts, a.acknowledged), (30, 20));
        assert_eq!((a.longest_gap_ms, a.longest_gap_at_ms), (1100, 900));
        let kill = &a.during["kill"];
        assert_eq!((kill.windows, kill.attempts, kill.acknowledged), (1, 11, 1));
        assert_eq!(kill.longest_gap_ms, 1050);
    }
}
