//! Assignors: which member of a consumer group reads which partitions.
//!
//! Pure functions from the group's members (their subscriptions and the
//! previous target assignment) and the topics' partition counts to a new
//! target assignment. The coordinator runs one whenever the group's
//! membership or subscriptions change; reconciling members towards the
//! result (revoke before reassign) is the coordinator's job, not theirs.
//!
//! Every assignor is **balanced**: for each topic, the members subscribed to
//! it get partition counts that differ by at most 1, and every partition of
//! a subscribed topic has exactly one owner. They are deterministic (the
//! same input gives the same output), so a coordinator that restarts
//! computes the same target.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A member of a group, as the coordinator names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub String);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Partitions by topic.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

/// What an assignor knows of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSpec {
    pub subscribed_topics: BTreeSet<String>,
    /// The member's previous target; sticky assignors keep what they can.
    pub previous: Assignment,
}

/// The assignors a group may use, chosen by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssignorKind {
    /// Balanced and sticky: a membership change moves as few partitions as
    /// balance allows, and totals over topics stay even.
    #[default]
    Uniform,
    /// Contiguous ranges of each topic, in member order (Kafka's `range`).
    Range,
    /// Partitions dealt to members in turn, continuing across topics.
    RoundRobin,
}

impl AssignorKind {
    pub const NAMES: &'static str = "uniform, range or round-robin";

    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Uniform => "uniform",
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "round-robin",
        }
    }

    /// The new target assignment: every member of `members` appears, with
    /// an empty assignment when it gets nothing.
    pub fn assign(
        self,
        members: &BTreeMap<MemberId, MemberSpec>,
        partitions_per_topic: &BTreeMap<String, u32>,
    ) -> BTreeMap<MemberId, Assignment> {
        let mut targets: BTreeMap<MemberId, Assignment> =
            members.keys().map(|m| (m.clone(), Assignment::new())).collect();
        // Partitions given so far per member, over all topics, so the
        // choices a topic leaves open even out the totals.
        let mut totals: BTreeMap<&MemberId, usize> = members.keys().map(|m| (m, 0)).collect();
        let mut dealt = 0usize;
        for (topic, &partition_count) in partitions_per_topic {
            let subscribers: Vec<&MemberId> = members
                .iter()
                .filter(|(_, spec)| spec.subscribed_topics.contains(topic))
                .map(|(id, _)| id)
                .collect();
            if subscribers.is_empty() || partition_count == 0 {
                continue;
            }
            let owners = match self {
                AssignorKind::Uniform => {
                    uniform_topic(topic, partition_count, &subscribers, members, &totals)
                }
                AssignorKind::Range => range_topic(partition_count, &subscribers),
                AssignorKind::RoundRobin => round_robin_topic(partition_count, &subscribers, dealt),
            };
            dealt += partition_count as usize;
            assert_eq!(owners.len(), partition_count as usize, "every partition has one owner");
            for (partition, owner) in owners.into_iter().enumerate() {
                *totals.get_mut(owner).expect("owners are members") += 1;
                targets
                    .get_mut(owner)
                    .expect("owners are members")
                    .entry(topic.clone())
                    .or_default()
                    .insert(partition as u32);
            }
        }
        targets
    }
}

impl FromStr for AssignorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<AssignorKind, String> {
        match s {
            "uniform" => Ok(AssignorKind::Uniform),
            "range" => Ok(AssignorKind::Range),
            "round-robin" | "roundrobin" => Ok(AssignorKind::RoundRobin),
            _ => Err(format!("unknown assignor {s:?}: use {}", AssignorKind::NAMES)),
        }
    }
}

impl fmt::Display for AssignorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many partitions each of `member_count` members gets: `floor`, and
/// `floor + 1` for `extra` of them.
fn quotas(partition_count: u32, member_count: usize) -> (usize, usize) {
    let n = partition_count as usize;
    (n / member_count, n % member_count)
}

/// One topic, sticky: each member keeps what it had up to its quota; the
/// `floor + 1` quotas go first to members that had more than `floor` (so
/// they lose nothing), then to the members with the fewest partitions over
/// all topics so far; freed and new partitions fill the members below their
/// quota. A join therefore moves only what the new member receives, and a
/// leave only what the leaver had.
fn uniform_topic<'m>(
    topic: &str,
    partition_count: u32,
    subscribers: &[&'m MemberId],
    members: &BTreeMap<MemberId, MemberSpec>,
    totals: &BTreeMap<&MemberId, usize>,
) -> Vec<&'m MemberId> {
    let (floor, extra) = quotas(partition_count, subscribers.len());
    let kept: Vec<Vec<u32>> = subscribers
        .iter()
        .map(|m| {
            members[*m]
                .previous
                .get(topic)
                .map(|ps| ps.iter().copied().filter(|p| *p < partition_count).collect())
                .unwrap_or_default()
        })
        .collect();
    // A partition two members claim (a previous target never does, but
    // input is input) stays with the first.
    let mut owner: Vec<Option<usize>> = vec![None; partition_count as usize];
    let mut order: Vec<usize> = (0..subscribers.len()).collect();
    order.sort_by_key(|&i| (kept[i].len() <= floor, totals[subscribers[i]], i));
    let mut quota = vec![floor; subscribers.len()];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    let mut held = vec![0usize; subscribers.len()];
    for (i, partitions) in kept.iter().enumerate() {
        for &p in partitions {
            if held[i] < quota[i] && owner[p as usize].is_none() {
                owner[p as usize] = Some(i);
                held[i] += 1;
            }
        }
    }
    // Each free partition, in order, to the next member below its quota.
    let mut needy = (0..subscribers.len()).flat_map(|i| std::iter::repeat_n(i, quota[i] - held[i]));
    for slot in owner.iter_mut().filter(|o| o.is_none()) {
        *slot = Some(needy.next().expect("quotas add up to the partition count"));
    }
    assert!(needy.next().is_none(), "every quota is filled");
    owner.into_iter().map(|i| subscribers[i.expect("every partition placed")]).collect()
}

/// One topic in contiguous ranges: the first `extra` members (by id) get
/// one more.
fn range_topic<'m>(partition_count: u32, subscribers: &[&'m MemberId]) -> Vec<&'m MemberId> {
    let (floor, extra) = quotas(partition_count, subscribers.len());
    subscribers
        .iter()
        .enumerate()
        .flat_map(|(i, m)| std::iter::repeat_n(*m, floor + usize::from(i < extra)))
        .collect()
}

/// One topic dealt in turn, starting where the previous topic's deal
/// stopped (`dealt` partitions ago), so totals stay even across topics.
fn round_robin_topic<'m>(
    partition_count: u32,
    subscribers: &[&'m MemberId],
    dealt: usize,
) -> Vec<&'m MemberId> {
    (0..partition_count as usize).map(|p| subscribers[(dealt + p) % subscribers.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize) -> MemberId {
        MemberId(format!("m{i:02}"))
    }

    fn group(
        count: usize,
        topics: &[&str],
        previous: &BTreeMap<MemberId, Assignment>,
    ) -> BTreeMap<MemberId, MemberSpec> {
        (0..count)
            .map(|i| {
                let id = member(i);
                let spec = MemberSpec {
                    subscribed_topics: topics.iter().map(|t| t.to_string()).collect(),
                    previous: previous.get(&id).cloned().unwrap_or_default(),
                };
                (id, spec)
            })
            .collect()
    }

    fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    /// Every partition of a subscribed topic has exactly one owner, owners
    /// are subscribed, and per topic the counts differ by at most 1.
    fn assert_balanced(
        members: &BTreeMap<MemberId, MemberSpec>,
        partitions: &BTreeMap<String, u32>,
        target: &BTreeMap<MemberId, Assignment>,
    ) {
        for (topic, &n) in partitions {
            let subscribers: Vec<&MemberId> = members
                .iter()
                .filter(|(_, s)| s.subscribed_topics.contains(topic))
                .map(|(m, _)| m)
                .collect();
            let mut owners = vec![0; n as usize];
            let mut counts = Vec::new();
            for (m, assignment) in target {
                let mine = assignment.get(topic).map_or(0, BTreeSet::len);
                if mine > 0 {
                    assert!(subscribers.contains(&m), "{m} got {topic} without subscribing");
                }
                for &p in assignment.get(topic).into_iter().flatten() {
                    owners[p as usize] += 1;
                }
                if subscribers.contains(&m) {
                    counts.push(mine);
                }
            }
            if subscribers.is_empty() {
                assert!(owners.iter().all(|&o| o == 0));
                continue;
            }
            assert!(owners.iter().all(|&o| o == 1), "{topic}: owners per partition {owners:?}");
            let (min, max) = (counts.iter().min(), counts.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{topic}: counts {counts:?}");
        }
    }

    /// Partitions whose owner changed between two targets.
    fn moved(
        before: &BTreeMap<MemberId, Assignment>,
        after: &BTreeMap<MemberId, Assignment>,
    ) -> usize {
        let owners = |t: &BTreeMap<MemberId, Assignment>| -> BTreeMap<(String, u32), MemberId> {
            t.iter()
                .flat_map(|(m, a)| {
                    a.iter().flat_map(move |(topic, ps)| {
                        ps.iter().map(move |p| ((topic.clone(), *p), m.clone()))
                    })
                })
                .collect()
        };
        let (b, a) = (owners(before), owners(after));
        a.iter().filter(|(tp, m)| b.get(*tp).is_some_and(|old| old != *m)).count()
    }

    #[test]
    fn every_assignor_is_balanced_for_every_group_size() {
        let partitions = topics(&[("a", 12), ("b", 5), ("c", 1)]);
        for kind in [AssignorKind::Uniform, AssignorKind::Range, AssignorKind::RoundRobin] {
            for count in 1..=14 {
                let members = group(count, &["a", "b", "c"], &BTreeMap::new());
                let target = kind.assign(&members, &partitions);
                assert_eq!(target.len(), count, "{kind}: every member appears");
                assert_balanced(&members, &partitions, &target);
            }
        }
    }

    #[test]
    fn uniform_moves_only_what_a_joiner_gets_or_a_leaver_had() {
        let partitions = topics(&[("orders", 12), ("clicks", 7)]);
        let mut previous = BTreeMap::new();
        // Members join one by one, then leave one by one from the front.
        for count in 1..=6 {
            let members = group(count, &["orders", "clicks"], &previous);
            let target = AssignorKind::Uniform.assign(&members, &partitions);
            assert_balanced(&members, &partitions, &target);
            let joiner_got: usize = target[&member(count - 1)].values().map(BTreeSet::len).sum();
            if count > 1 {
                assert_eq!(moved(&previous, &target), joiner_got, "join of member {count}");
            }
            previous = target;
        }
        for leaving in 0..5 {
            let leaver_had: usize = previous[&member(leaving)].values().map(BTreeSet::len).sum();
            let members: BTreeMap<MemberId, MemberSpec> =
                group(6, &["orders", "clicks"], &previous)
                    .into_iter()
                    .filter(|(m, _)| *m > member(leaving))
                    .collect();
            let target = AssignorKind::Uniform.assign(&members, &partitions);
            assert_balanced(&members, &partitions, &target);
            let stayed: BTreeMap<MemberId, Assignment> = previous
                .iter()
                .filter(|(m, _)| **m != member(leaving))
                .map(|(m, a)| (m.clone(), a.clone()))
                .collect();
            assert_eq!(moved(&stayed, &target), 0, "no partition moves between members that stay");
            let gained: usize =
                target.values().flat_map(|a| a.values()).map(BTreeSet::len).sum::<usize>()
                    - stayed.values().flat_map(|a| a.values()).map(BTreeSet::len).sum::<usize>();
            assert_eq!(gained, leaver_had, "leave of {}", member(leaving));
            previous = target;
        }
    }

    #[test]
    fn uniform_evens_out_totals_over_many_small_topics() {
        let names: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
        let partitions: BTreeMap<String, u32> = names.iter().map(|t| (t.clone(), 1)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let members = group(3, &refs, &BTreeMap::new());
        let target = AssignorKind::Uniform.assign(&members, &partitions);
        let totals: Vec<usize> =
            target.values().map(|a| a.values().map(BTreeSet::len).sum()).collect();
        assert_eq!(totals, [3, 3, 3]);
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let partitions = topics(&[("a", 4), ("b", 4), ("unread", 3)]);
        let mut members = group(3, &["a"], &BTreeMap::new());
        members.get_mut(&member(2)).expect("m02").subscribed_topics.insert("b".into());
        for kind in [AssignorKind::Uniform, AssignorKind::Range, AssignorKind::RoundRobin] {
            let target = kind.assign(&members, &partitions);
            assert_balanced(&members, &partitions, &target);
            assert_eq!(
                target[&member(2)]["b"].len(),
                4,
                "{kind}: the only reader of b gets it all"
            );
            assert!(target.values().all(|a| !a.contains_key("unread")));
        }
    }

    /// Random groups (subscriptions, topic sizes, previous targets that
    /// may name vanished partitions): every assignor stays balanced.
    /// Replay a failure with MAMBA_ASSIGNOR_SEED.
    #[test]
    fn random_groups_are_always_balanced() {
        let seed = std::env::var("MAMBA_ASSIGNOR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("MAMBA_ASSIGNOR_SEED={seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..300 {
            let topic_names: Vec<String> = (0..rng.usize(1..5)).map(|t| format!("t{t}")).collect();
            let partitions: BTreeMap<String, u32> =
                topic_names.iter().map(|t| (t.clone(), rng.u32(0..20))).collect();
            let members: BTreeMap<MemberId, MemberSpec> = (0..rng.usize(0..9))
                .map(|i| {
                    let subscribed_topics =
                        topic_names.iter().filter(|_| rng.bool()).cloned().collect();
                    let previous = topic_names
                        .iter()
                        .map(|t| (t.clone(), (0..rng.u32(0..6)).map(|_| rng.u32(0..25)).collect()))
                        .collect();
                    (member(i), MemberSpec { subscribed_topics, previous })
                })
                .collect();
            for kind in [AssignorKind::Uniform, AssignorKind::Range, AssignorKind::RoundRobin] {
                let target = kind.assign(&members, &partitions);
                assert_balanced(&members, &partitions, &target);
                assert_eq!(kind.assign(&members, &partitions), target, "{kind} is deterministic");
            }
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_and_names_parse() {
        let members = group(3, &["t"], &BTreeMap::new());
        let target = AssignorKind::Range.assign(&members, &topics(&[("t", 8)]));
        let ranges: Vec<Vec<u32>> =
            target.values().map(|a| a["t"].iter().copied().collect()).collect();
        assert_eq!(ranges, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
        for kind in [AssignorKind::Uniform, AssignorKind::Range, AssignorKind::RoundRobin] {
            assert_eq!(kind.name().parse(), Ok(kind));
        }
        let err = "sticky".parse::<AssignorKind>().expect_err("unknown");
        assert!(err.contains("uniform, range or round-robin"), "{err}");
    }

    #[test]
    fn a_shrunk_topic_or_a_claim_twice_never_gives_a_partition_two_owners() {
        // The previous target names partitions that no longer exist and, as
        // hostile input, one partition twice.
        let mut previous = BTreeMap::new();
        previous
            .insert(member(0), Assignment::from([("t".to_string(), BTreeSet::from([0, 1, 9]))]));
        previous.insert(member(1), Assignment::from([("t".to_string(), BTreeSet::from([1, 2]))]));
        let members = group(2, &["t"], &previous);
        let partitions = topics(&[("t", 4)]);
        let target = AssignorKind::Uniform.assign(&members, &partitions);
        assert_balanced(&members, &partitions, &target);
    }
}
