//! Moving a partition's replicas to other brokers (`cluster move`,
//! decommissioning), pure (no I/O).
//!
//! A move is the cluster setting `reassign.<topic id>.<partition>` naming
//! the target replicas. The controller takes it a step at a time, each a
//! `ChangeReplicas` record, each derived from the state alone, so a new
//! controller continues where the last one stopped (Kafka's KIP-455 in
//! three steps):
//!
//! 1. Add: the replicas become the current ones followed by the new ones.
//!    The leader and the preferred order stay while the new replicas copy
//!    the log from the leader (throttled by
//!    `replication.throttle.bytes_per_s`), and join the in-sync set as
//!    any follower does once caught up.
//! 2. Switch: once every target replica is in sync, the replicas become
//!    the target and the others leave the in-sync set; a leader that is
//!    not in the target hands over to the target's first in-sync replica
//!    that may lead (a new leader epoch). Brokers no longer named remove
//!    their copy.
//! 3. Done: the setting goes.
//!
//! No acknowledged record is at risk at any step: the in-sync set only
//! shrinks to members that hold every acknowledged record.

use super::election::Eligibility;
use super::metadata::{BrokerId, MetadataState, Partition, ReplicaChange, TopicId};
use std::collections::BTreeMap;

/// Cluster settings that name a move's target start with this.
pub const SETTING_PREFIX: &str = "reassign.";

/// The setting that holds the target of a move of `partition`.
pub fn setting_name(topic_id: TopicId, partition: u32) -> String {
    format!("{SETTING_PREFIX}{topic_id}.{partition}")
}

/// The partition a move setting is about.
pub fn parse_setting_name(name: &str) -> Option<(TopicId, u32)> {
    let (topic, partition) = name.strip_prefix(SETTING_PREFIX)?.rsplit_once('.')?;
    Some((topic.parse().ok()?, partition.parse().ok()?))
}

/// `1,2,3`: a move's target as its setting holds it.
pub fn format_replicas(replicas: &[BrokerId]) -> String {
    replicas.iter().map(|id| id.0.to_string()).collect::<Vec<_>>().join(",")
}

pub fn parse_replicas(value: &str) -> Option<Vec<BrokerId>> {
    value.split(',').map(|id| id.trim().parse().ok().map(BrokerId)).collect()
}

/// The replicas `partition` of `topic_id` is moving to, if it is.
pub fn target(state: &MetadataState, topic_id: TopicId, partition: u32) -> Option<Vec<BrokerId>> {
    state.setting(&setting_name(topic_id, partition)).and_then(parse_replicas)
}

/// Every move under way: topic name, partition, and its target.
pub fn moves(state: &MetadataState) -> Vec<(String, u32, Vec<BrokerId>)> {
    state
        .settings_with_prefix(SETTING_PREFIX)
        .filter_map(|(name, value)| {
            let (topic_id, partition) = parse_setting_name(name)?;
            Some((state.topic_by_id(topic_id)?.name.clone(), partition, parse_replicas(value)?))
        })
        .collect()
}

/// What a move needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Propose this.
    Change(ReplicaChange),
    /// Wait for new replicas to catch up (or for a target replica that
    /// may lead, to hand the leadership to).
    Wait,
    /// The replicas are the target: the setting can go.
    Done,
}

/// The next step of moving `p` to `target`.
pub fn step(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    target: &[BrokerId],
    who: &Eligibility<'_>,
) -> Step {
    if p.replicas == target {
        return Step::Done;
    }
    let make = |replicas: Vec<BrokerId>, leader: Option<BrokerId>, isr: Vec<BrokerId>| {
        let change = super::election::change(topic_id, partition, p, leader, isr);
        Step::Change(ReplicaChange { replicas, change })
    };
    let adding: Vec<BrokerId> =
        target.iter().copied().filter(|id| !p.replicas.contains(id)).collect();
    if !adding.is_empty() {
        let mut replicas = p.replicas.clone();
        replicas.extend(adding);
        return make(replicas, p.leader, p.isr.clone());
    }
    if !target.iter().all(|id| p.isr.contains(id)) {
        return Step::Wait;
    }
    let isr: Vec<BrokerId> = p.isr.iter().copied().filter(|id| target.contains(id)).collect();
    let leader = match p.leader.filter(|id| target.contains(id)) {
        Some(leader) => leader,
        None => {
            // Hand over to the target's best in-sync replica that may lead.
            let order = who.preferred_order(&Partition { replicas: target.to_vec(), ..p.clone() });
            match order.into_iter().find(|id| isr.contains(id) && (who.may_lead)(*id)) {
                Some(id) => id,
                None => return Step::Wait,
            }
        }
    };
    make(target.to_vec(), Some(leader), isr)
}

/// Where `p`'s replica on `leaving` goes: to an alive broker that is not
/// a replica of it yet, on `leaving`'s rack when one is (the partition
/// keeps its spread over racks), the least loaded first. `load` counts
/// replicas per broker and counts this one in. `None`: no broker can.
pub fn replacement(
    p: &Partition,
    leaving: BrokerId,
    leaving_rack: Option<&str>,
    candidates: &[(BrokerId, Option<String>)],
    load: &mut BTreeMap<BrokerId, u32>,
) -> Option<Vec<BrokerId>> {
    let (to, _) = candidates
        .iter()
        .filter(|(id, _)| *id != leaving && !p.replicas.contains(id))
        .min_by_key(|(id, rack)| {
            let other_rack = leaving_rack.is_some() && rack.as_deref() != leaving_rack;
            (other_rack, load.get(id).copied().unwrap_or(0), *id)
        })?;
    *load.entry(*to).or_default() += 1;
    Some(p.replicas.iter().map(|id| if *id == leaving { *to } else { *id }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(replicas: &[u32], leader: Option<u32>, isr: &[u32]) -> Partition {
        Partition {
            replicas: ids(replicas),
            leader: leader.map(BrokerId),
            leader_epoch: 4,
            partition_epoch: 9,
            isr: ids(isr),
        }
    }

    fn ids(list: &[u32]) -> Vec<BrokerId> {
        list.iter().map(|id| BrokerId(*id)).collect()
    }

    const T: TopicId = TopicId(7);

    fn apply(step: &Step) -> Partition {
        let Step::Change(r) = step else { panic!("no change: {step:?}") };
        Partition {
            replicas: r.replicas.clone(),
            leader: r.change.leader,
            leader_epoch: r.change.leader_epoch,
            partition_epoch: r.change.partition_epoch,
            isr: r.change.isr.clone(),
        }
    }

    #[test]
    fn a_move_adds_waits_for_the_new_replicas_then_switches_and_hands_over_the_leadership() {
        let all = |_: BrokerId| true;
        let who =
            Eligibility { may_lead: &all, unclean: false, preferred: None, drained: &|_| false };
        let target = ids(&[4, 5, 2]);
        let start = p(&[1, 2, 3], Some(1), &[1, 2, 3]);
        let added = apply(&step(T, 0, &start, &target, &who));
        assert_eq!(added.replicas, ids(&[1, 2, 3, 4, 5]), "current first: the leader stays");
        assert_eq!((added.leader, added.leader_epoch), (Some(BrokerId(1)), 4));
        assert_eq!(step(T, 0, &added, &target, &who), Step::Wait, "4 and 5 not in sync");
        let caught_up = Partition { isr: ids(&[1, 2, 3, 5, 4]), ..added.clone() };
        let switched = apply(&step(T, 0, &caught_up, &target, &who));
        assert_eq!(switched.replicas, target);
        assert_eq!(switched.isr, ids(&[2, 5, 4]));
        assert_eq!(switched.leader, Some(BrokerId(4)), "the target's preferred in-sync replica");
        assert_eq!(switched.leader_epoch, 5, "a new leader, a new epoch");
        assert_eq!(step(T, 0, &switched, &target, &who), Step::Done);
    }

    #[test]
    fn a_leader_in_the_target_keeps_its_epoch_and_the_move_waits_for_a_leader_that_may_lead() {
        let all = |_: BrokerId| true;
        let who =
            Eligibility { may_lead: &all, unclean: false, preferred: None, drained: &|_| false };
        let current = p(&[1, 2, 3, 4], Some(2), &[1, 2, 3, 4]);
        let kept = apply(&step(T, 0, &current, &ids(&[2, 4]), &who));
        assert_eq!(
            (kept.leader, kept.leader_epoch, kept.isr.clone()),
            (Some(BrokerId(2)), 4, ids(&[2, 4]))
        );
        let only_1 = |id: BrokerId| id.0 == 1;
        let fenced =
            Eligibility { may_lead: &only_1, unclean: false, preferred: None, drained: &|_| false };
        assert_eq!(
            step(T, 0, &p(&[1, 2, 3], Some(1), &[1, 2, 3]), &ids(&[2, 3]), &fenced),
            Step::Wait
        );
    }

    #[test]
    fn replacements_stay_on_the_rack_then_go_to_the_least_loaded_broker() {
        let candidates = vec![
            (BrokerId(4), Some("a".to_string())),
            (BrokerId(5), Some("b".to_string())),
            (BrokerId(6), Some("b".to_string())),
        ];
        let mut load = BTreeMap::from([(BrokerId(5), 3), (BrokerId(6), 1)]);
        let part = p(&[1, 2, 3], Some(1), &[1, 2, 3]);
        let moved = replacement(&part, BrokerId(2), Some("b"), &candidates, &mut load);
        assert_eq!(moved, Some(ids(&[1, 6, 3])), "rack b, least loaded");
        assert_eq!(load[&BrokerId(6)], 2);
        let moved = replacement(&part, BrokerId(2), None, &candidates, &mut load);
        assert_eq!(moved, Some(ids(&[1, 4, 3])), "no rack: least loaded anywhere");
        let full = p(&[1, 4, 5, 6], Some(1), &[1]);
        assert_eq!(replacement(&full, BrokerId(1), None, &candidates, &mut load), None);
    }

    #[test]
    fn setting_names_and_values_round_trip() {
        let name = setting_name(TopicId(0xabc), 12);
        assert_eq!(parse_setting_name(&name), Some((TopicId(0xabc), 12)));
        assert_eq!(parse_setting_name("leader.placement"), None);
        assert_eq!(parse_replicas(&format_replicas(&ids(&[3, 1]))), Some(ids(&[3, 1])));
        assert_eq!(parse_replicas("1,x"), None);
    }
}
