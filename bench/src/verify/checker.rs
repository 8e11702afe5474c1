//! The checker: reads a recorded history (`history.rs`) after the run,
//! with no I/O, and finds what a message queue must never do.
//!
//! - lost: an acknowledged record that no read found at its acknowledged
//!   partition and offset (never read, or something else read there);
//! - duplicated: one produce read at two positions (idempotence broken);
//! - inconsistent: two reads of one position with different values
//!   (replicas diverged, or a log was rewritten under a reader);
//! - reordered: within a partition, one producer's records at increasing
//!   offsets with decreasing sequence numbers;
//! - non-monotonic: a group member reading a partition below an offset the
//!   group had already committed for it (the group went backwards);
//! - corrupt: a value read that is not one of ours or fails its checksum.
//!
//! Produces with an unknown outcome may or may not have been written:
//! either is allowed, and both are counted. So are produces that failed
//! and were read anyway (a broker may write a record it then reports as
//! not written, e.g. too few replicas after the append; a client cannot
//! tell that from an unknown outcome).

use super::history::{Event, Outcome, ValueId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Examples kept per kind.
const EXAMPLES_PER_KIND: usize = 5;

/// One anomaly, with the fault active when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    pub partition: u32,
    pub offset: Option<u64>,
    pub value: Option<String>,
    pub detail: String,
    /// When the operation it concerns completed (ms since the start).
    pub t_ms: u64,
    /// The faults active then.
    pub faults: Vec<String>,
}

/// Anomalies of one kind: how many, and the first ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Found {
    pub count: u64,
    pub examples: Vec<Anomaly>,
}

impl Found {
    fn add(&mut self, anomaly: Anomaly) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_PER_KIND {
            self.examples.push(anomaly);
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub lost: Found,
    pub duplicated: Found,
    pub inconsistent: Found,
    pub reordered: Found,
    pub non_monotonic: Found,
    pub corrupt: Found,
    pub produces: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub failed_but_read: u64,
    pub unknown: u64,
    pub unknown_read: u64,
    pub reads: u64,
    pub commits: u64,
}

impl CheckReport {
    /// Anomalies of every kind together; the run passes at zero.
    pub fn anomalies(&self) -> u64 {
        [
            &self.lost,
            &self.duplicated,
            &self.inconsistent,
            &self.reordered,
            &self.non_monotonic,
            &self.corrupt,
        ]
        .iter()
        .map(|f| f.count)
        .sum()
    }
}

/// A produce's outcome, partition, offset and completion time (ms).
type Produced = (Outcome, Option<u32>, Option<u64>, u64);

/// Fault windows, to name the faults active at a moment.
struct Faults(Vec<(u64, u64, String)>);

impl Faults {
    fn at(&self, t_ms: u64) -> Vec<String> {
        self.0
            .iter()
            .filter(|(start, end, _)| (*start..=*end).contains(&t_ms))
            .map(|(_, _, name)| name.clone())
            .collect()
    }
}

/// Checks a history. Events may come in any order; reads and commits are
/// taken in time order (ties in the order given).
pub fn check(events: &[Event]) -> CheckReport {
    let mut report = CheckReport::default();
    let mut faults = Vec::new();
    let mut produces: HashMap<ValueId, Produced> = HashMap::new();
    for event in events {
        match event {
            Event::Produce { t_ms, id, outcome, partition, offset, .. } => {
                report.produces += 1;
                match outcome {
                    Outcome::Ok => report.acknowledged += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::Unknown => report.unknown += 1,
                }
                produces.insert(*id, (*outcome, *partition, *offset, *t_ms));
            }
            Event::Fault { start_ms, end_ms, kind, target } => {
                faults.push((*start_ms, *end_ms, format!("{kind} {target}")));
            }
            _ => {}
        }
    }
    let faults = Faults(faults);
    let mut timed: Vec<&Event> =
        events.iter().filter(|e| matches!(e, Event::Read { .. } | Event::Commit { .. })).collect();
    timed.sort_by_key(|e| e.t_ms());

    // What was read where: the first value seen at each position, and
    // every position each produce was seen at.
    let mut at_position: BTreeMap<(u32, u64), ValueId> = BTreeMap::new();
    let mut positions_of: HashMap<ValueId, BTreeSet<(u32, u64)>> = HashMap::new();
    let mut committed: HashMap<u32, u64> = HashMap::new();
    for event in timed {
        match event {
            Event::Commit { partition, offset, .. } => {
                report.commits += 1;
                let c = committed.entry(*partition).or_default();
                *c = (*c).max(*offset);
            }
            Event::Read { t_ms, reader, group, partition, offset, id, garbled } => {
                report.reads += 1;
                let anomaly = |value: Option<String>, detail: String| Anomaly {
                    partition: *partition,
                    offset: Some(*offset),
                    value,
                    detail,
                    t_ms: *t_ms,
                    faults: faults.at(*t_ms),
                };
                let Some(id) = id else {
                    let what = garbled.clone().unwrap_or_default();
                    report.corrupt.add(anomaly(Some(what), format!("read by {reader}")));
                    continue;
                };
                if *group {
                    if let Some(&c) = committed.get(partition) {
                        if *offset < c {
                            report.non_monotonic.add(anomaly(
                                Some(id.to_string()),
                                format!("{reader} read below the group's committed offset {c}"),
                            ));
                        }
                    }
                }
                match at_position.get(&(*partition, *offset)) {
                    Some(first) if first != id => report.inconsistent.add(anomaly(
                        Some(id.to_string()),
                        format!("{reader} read {id} where {first} was read before"),
                    )),
                    Some(_) => {}
                    None => {
                        at_position.insert((*partition, *offset), *id);
                    }
                }
                positions_of.entry(*id).or_default().insert((*partition, *offset));
            }
            _ => {}
        }
    }

    for (id, positions) in &positions_of {
        let t_ms = produces.get(id).map_or(0, |p| p.3);
        if positions.len() > 1 {
            let (partition, offset) = *positions.iter().next().expect("two positions");
            report.duplicated.add(Anomaly {
                partition,
                offset: Some(offset),
                value: Some(id.to_string()),
                detail: format!("one produce read at {positions:?} (partition, offset)"),
                t_ms,
                faults: faults.at(t_ms),
            });
        }
        match produces.get(id).map(|p| p.0) {
            Some(Outcome::Failed) => report.failed_but_read += 1,
            Some(Outcome::Unknown) => report.unknown_read += 1,
            _ => {}
        }
    }

    // Reordering: one producer's sequence numbers must grow with the
    // offset in each partition.
    let mut last_seq: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    for (&(partition, offset), id) in &at_position {
        if let Some(&(seq, at)) = last_seq.get(&(partition, id.producer)) {
            if id.seq < seq {
                let t_ms = produces.get(id).map_or(0, |p| p.3);
                report.reordered.add(Anomaly {
                    partition,
                    offset: Some(offset),
                    value: Some(id.to_string()),
                    detail: format!(
                        "sequence {} of producer {} at offset {offset}, after sequence {seq} at \
                         offset {at}",
                        id.seq, id.producer
                    ),
                    t_ms,
                    faults: faults.at(t_ms),
                });
            }
        }
        last_seq.insert((partition, id.producer), (id.seq, offset));
    }

    let mut acknowledged: Vec<(&ValueId, &Produced)> =
        produces.iter().filter(|(_, p)| p.0 == Outcome::Ok).collect();
    acknowledged.sort_by_key(|(id, _)| **id);
    for (id, &(_, partition, offset, t_ms)) in acknowledged {
        let (Some(partition), Some(offset)) = (partition, offset) else {
            report.lost.add(Anomaly {
                partition: partition.unwrap_or(u32::MAX),
                offset,
                value: Some(id.to_string()),
                detail: "acknowledged without a partition and offset".into(),
                t_ms,
                faults: faults.at(t_ms),
            });
            continue;
        };
        let detail = match at_position.get(&(partition, offset)) {
            Some(read) if read == id => continue,
            Some(read) => format!("acknowledged here, but {read} was read here"),
            None => match positions_of.get(id) {
                Some(elsewhere) => format!("acknowledged here, but read at {elsewhere:?}"),
                None => "acknowledged, never read".to_string(),
            },
        };
        report.lost.add(Anomaly {
            partition,
            offset: Some(offset),
            value: Some(id.to_string()),
            detail,
            t_ms,
            faults: faults.at(t_ms),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer: u32, seq: u64) -> ValueId {
        ValueId { producer, seq }
    }

    fn acked(t_ms: u64, v: ValueId, partition: u32, offset: u64) -> Event {
        Event::Produce {
            t_ms,
            latency_us: 1,
            id: v,
            outcome: Outcome::Ok,
            partition: Some(partition),
            offset: Some(offset),
            error: None,
        }
    }

    fn ended(v: ValueId, outcome: Outcome) -> Event {
        Event::Produce {
            t_ms: 1,
            latency_us: 1,
            id: v,
            outcome,
            partition: None,
            offset: None,
            error: Some("timed out".into()),
        }
    }

    fn read(t_ms: u64, group: bool, partition: u32, offset: u64, v: ValueId) -> Event {
        Event::Read {
            t_ms,
            reader: if group { "g0".into() } else { "r0".into() },
            group,
            partition,
            offset,
            id: Some(v),
            garbled: None,
        }
    }

    #[test]
    fn a_clean_history_has_no_anomaly_and_counts_what_happened() {
        let events = vec![
            acked(1, id(0, 0), 0, 0),
            acked(2, id(0, 1), 0, 1),
            ended(id(0, 2), Outcome::Unknown),
            ended(id(0, 3), Outcome::Unknown),
            ended(id(0, 4), Outcome::Failed),
            read(3, false, 0, 0, id(0, 0)),
            read(3, false, 0, 1, id(0, 1)),
            read(3, false, 0, 2, id(0, 2)),
            Event::Commit { t_ms: 4, reader: "g0".into(), partition: 0, offset: 1 },
            read(5, true, 0, 1, id(0, 1)),
            read(5, true, 0, 2, id(0, 2)),
        ];
        let report = check(&events);
        assert_eq!(report.anomalies(), 0, "{report:#?}");
        assert_eq!(
            (report.produces, report.acknowledged, report.unknown, report.unknown_read),
            (5, 2, 2, 1)
        );
        assert_eq!(
            (report.failed, report.failed_but_read, report.reads, report.commits),
            (1, 0, 5, 1)
        );
    }

    #[test]
    fn each_kind_of_anomaly_is_found_with_the_fault_active_then() {
        let events = vec![
            Event::Fault {
                start_ms: 10,
                end_ms: 20,
                kind: "kill".into(),
                target: "broker 2".into(),
            },
            // Never read.
            acked(15, id(0, 0), 0, 0),
            // Read with another value at its offset, and that other value
            // read at two offsets.
            acked(30, id(0, 1), 0, 1),
            acked(31, id(0, 2), 0, 2),
            read(40, false, 0, 1, id(0, 2)),
            read(40, false, 0, 2, id(0, 2)),
            // Two values at one position.
            read(41, false, 0, 3, id(1, 0)),
            read(42, false, 0, 3, id(1, 1)),
            // Producer 2 out of order in partition 1.
            read(43, false, 1, 0, id(2, 5)),
            read(43, false, 1, 1, id(2, 4)),
            // The group went back below its commit.
            Event::Commit { t_ms: 44, reader: "g0".into(), partition: 1, offset: 2 },
            read(45, true, 1, 1, id(2, 4)),
            Event::Read {
                t_ms: 46,
                reader: "r0".into(),
                group: false,
                partition: 1,
                offset: 9,
                id: None,
                garbled: Some("\"xx\"".into()),
            },
        ];
        let report = check(&events);
        assert_eq!(report.lost.count, 2, "{:#?}", report.lost);
        assert_eq!(report.lost.examples[0].detail, "acknowledged, never read");
        assert_eq!(report.lost.examples[0].faults, ["kill broker 2"]);
        assert!(report.lost.examples[1].detail.contains("0:2 was read here"));
        assert_eq!(report.duplicated.count, 1, "{:#?}", report.duplicated);
        assert_eq!(report.inconsistent.count, 1, "{:#?}", report.inconsistent);
        assert_eq!(report.reordered.count, 1, "{:#?}", report.reordered);
        assert_eq!(report.non_monotonic.count, 1, "{:#?}", report.non_monotonic);
        assert_eq!(report.corrupt.count, 1, "{:#?}", report.corrupt);
        assert_eq!(report.corrupt.examples[0].detail, "read by r0");
        assert_eq!(report.anomalies(), 7);
    }
}
