//! The controller's choice of partition leaders, pure (no I/O): what a
//! partition becomes when brokers are fenced, return, shut down, or an
//! operator or the balancer moves its leadership. The Raft task proposes
//! what these return as `ChangePartition` records.
//!
//! Rules (Kafka's, with its KRaft refinements): a leader is chosen only
//! from the in-sync replicas that may lead (alive, not shutting down),
//! the preferred one first (replica order, or the topic's primary);
//! every leader change bumps the leader epoch, every change the partition
//! epoch; a broker that may not lead leaves the in-sync set, which never
//! loses its last member (with no eligible member left the partition
//! keeps its fenced leader, offline, and waits for a member to come back),
//! unless the topic allows an unclean election. A drained broker (an
//! operator failed over from it, or it is leaving the cluster) stays in
//! sync but leads only where no other in-sync replica can.

use super::metadata::{BrokerId, Partition, PartitionChange, Topic, TopicId};
use super::settings;

/// What decides a partition's election beside its own state.
pub struct Eligibility<'a> {
    /// May lead and stay in sync: registered, unfenced, not shutting down.
    pub may_lead: &'a dyn Fn(BrokerId) -> bool,
    /// `unclean.leader.election`: with no eligible in-sync replica, any
    /// eligible replica may lead (records only it had are lost).
    pub unclean: bool,
    /// The replica that should lead when it can (`None`: the first
    /// replica).
    pub preferred: Option<BrokerId>,
    /// Leads only when no other in-sync replica can (`cluster failover`,
    /// decommissioning).
    pub drained: &'a dyn Fn(BrokerId) -> bool,
}

impl<'a> Eligibility<'a> {
    /// `topic`'s rules: its `unclean.leader.election`, and its primary
    /// (its own `leader.placement`, else the cluster's).
    pub fn of_topic(
        topic: &Topic,
        cluster_primary: Option<BrokerId>,
        may_lead: &'a dyn Fn(BrokerId) -> bool,
        drained: &'a dyn Fn(BrokerId) -> bool,
    ) -> Self {
        Eligibility {
            may_lead,
            unclean: topic.configs.get(settings::UNCLEAN_ELECTION).is_some_and(|v| v == "true"),
            preferred: match topic.configs.get(settings::LEADER_PLACEMENT) {
                Some(placement) => settings::parse_primary(placement),
                None => cluster_primary,
            },
            drained,
        }
    }

    /// Who should lead, best first: the primary, then replica order;
    /// drained brokers last.
    pub fn preferred_order(&self, p: &Partition) -> Vec<BrokerId> {
        let mut order = p.replicas.clone();
        if let Some(primary) = self.preferred.filter(|id| p.replicas.contains(id)) {
            order.retain(|id| *id != primary);
            order.insert(0, primary);
        }
        // Stable: the order above holds among the drained and the rest.
        order.sort_by_key(|id| (self.drained)(*id));
        order
    }

    /// The replica that should lead `p` when it can; never a drained one.
    pub fn preferred_leader(&self, p: &Partition) -> Option<BrokerId> {
        self.preferred_order(p).first().copied().filter(|id| !(self.drained)(*id))
    }
}

/// `p` with a new leader and in-sync set: the leader epoch rises when the
/// leader changes, the partition epoch always.
pub(crate) fn change(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    leader: Option<BrokerId>,
    isr: Vec<BrokerId>,
) -> PartitionChange {
    let leader_epoch = if leader == p.leader { p.leader_epoch } else { p.leader_epoch + 1 };
    PartitionChange {
        topic_id,
        partition,
        leader,
        isr,
        leader_epoch,
        partition_epoch: p.partition_epoch + 1,
    }
}

/// What `p` must become now that some brokers may not lead: a new leader
/// when its own may not, and no in-sync replica that may not. `None`: it
/// is fine as it is.
pub fn reelect(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    who: &Eligibility<'_>,
) -> Option<PartitionChange> {
    let may_lead = who.may_lead;
    let eligible_isr: Vec<BrokerId> = p.isr.iter().copied().filter(|id| may_lead(*id)).collect();
    if let Some(leader) = p.leader.filter(|id| may_lead(*id)) {
        if eligible_isr.len() == p.isr.len() {
            return None;
        }
        return Some(change(topic_id, partition, p, Some(leader), eligible_isr));
    }
    let from_isr = who.preferred_order(p).into_iter().find(|id| eligible_isr.contains(id));
    if let Some(leader) = from_isr {
        let isr = p.isr.iter().copied().filter(|id| eligible_isr.contains(id)).collect();
        return Some(change(topic_id, partition, p, Some(leader), isr));
    }
    if who.unclean {
        if let Some(leader) = who.preferred_order(p).into_iter().find(|id| may_lead(*id)) {
            return Some(change(topic_id, partition, p, Some(leader), vec![leader]));
        }
    }
    // No one may lead: the partition stays as it is, offline while its
    // leader is fenced (its in-sync members are the ones that may lead
    // without losing records). The leader that comes back leads again at
    // the same epoch, with no change at all: a restarted single broker
    // serves the moment it is unfenced.
    None
}

/// Moves `p`'s leadership to `to` if `to` is an in-sync replica that may
/// lead and does not lead already.
pub fn transfer(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    to: BrokerId,
    who: &Eligibility<'_>,
) -> Result<Option<PartitionChange>, String> {
    if p.leader == Some(to) {
        return Ok(None);
    }
    if !p.replicas.contains(&to) {
        return Err(format!("broker {to} is not a replica (replicas {:?})", ids(&p.replicas)));
    }
    if !p.isr.contains(&to) {
        return Err(format!(
            "broker {to} is not in sync (in-sync replicas {:?}): it would lose records",
            ids(&p.isr)
        ));
    }
    if !(who.may_lead)(to) {
        return Err(format!("broker {to} is fenced or shutting down"));
    }
    if (who.drained)(to) {
        return Err(format!(
            "broker {to} is drained of leaderships (cluster failover, or decommissioning)"
        ));
    }
    Ok(Some(change(topic_id, partition, p, Some(to), p.isr.clone())))
}

/// The move back to the preferred leader (balancing, failback), when it
/// is in sync, may lead and does not lead.
pub fn prefer(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    who: &Eligibility<'_>,
) -> Option<PartitionChange> {
    let preferred = who.preferred_leader(p)?;
    transfer(topic_id, partition, p, preferred, who).ok().flatten()
}

/// Moves `p`'s leadership off a drained leader to the first in-sync
/// replica that may lead and is not drained (the in-sync set stays): what
/// `cluster failover` does. `None` when the leader is not drained, or no
/// other replica can take over (the drained one leads on).
pub fn drain(
    topic_id: TopicId,
    partition: u32,
    p: &Partition,
    who: &Eligibility<'_>,
) -> Option<PartitionChange> {
    let from = p.leader.filter(|id| (who.drained)(*id))?;
    let to = who.preferred_order(p).into_iter().find(|id| {
        *id != from && p.isr.contains(id) && (who.may_lead)(*id) && !(who.drained)(*id)
    })?;
    Some(change(topic_id, partition, p, Some(to), p.isr.clone()))
}

fn ids(list: &[BrokerId]) -> Vec<u32> {
    list.iter().map(|id| id.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(replicas: &[u32], leader: Option<u32>, isr: &[u32]) -> Partition {
        Partition {
            replicas: replicas.iter().map(|id| BrokerId(*id)).collect(),
            leader: leader.map(BrokerId),
            leader_epoch: 4,
            partition_epoch: 9,
            isr: isr.iter().map(|id| BrokerId(*id)).collect(),
        }
    }

    fn who<'a>(may_lead: &'a dyn Fn(BrokerId) -> bool) -> Eligibility<'a> {
        Eligibility { may_lead, unclean: false, preferred: None, drained: &|_| false }
    }

    const T: TopicId = TopicId(7);

    #[test]
    fn a_fenced_leader_is_replaced_by_the_first_in_sync_replica_in_preferred_order() {
        let not_1 = |id: BrokerId| id.0 != 1;
        let c = reelect(T, 0, &p(&[1, 2, 3], Some(1), &[1, 3, 2]), &who(&not_1)).expect("change");
        assert_eq!(c.leader, Some(BrokerId(2)), "replica order, not ISR order");
        assert_eq!(c.isr, vec![BrokerId(3), BrokerId(2)], "the fenced leader leaves the ISR");
        assert_eq!((c.leader_epoch, c.partition_epoch), (5, 10));
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_and_the_leader_keeps_its_epoch() {
        let not_3 = |id: BrokerId| id.0 != 3;
        let c = reelect(T, 0, &p(&[1, 2, 3], Some(1), &[1, 2, 3]), &who(&not_3)).expect("change");
        assert_eq!((c.leader, c.leader_epoch), (Some(BrokerId(1)), 4));
        assert_eq!(c.isr, vec![BrokerId(1), BrokerId(2)]);
        let all = |_: BrokerId| true;
        assert_eq!(reelect(T, 0, &p(&[1, 2, 3], Some(1), &[1, 2, 3]), &who(&all)), None);
    }

    #[test]
    fn without_an_eligible_in_sync_replica_the_partition_waits_unless_unclean() {
        let only_3 = |id: BrokerId| id.0 == 3;
        let part = p(&[1, 2, 3], Some(1), &[1]);
        assert_eq!(reelect(T, 0, &part, &who(&only_3)), None, "it waits for broker 1");
        let mut unclean = who(&only_3);
        unclean.unclean = true;
        let c = reelect(T, 0, &part, &unclean).expect("change");
        assert_eq!((c.leader, c.isr.clone()), (Some(BrokerId(3)), vec![BrokerId(3)]));
        // Leaderless already, and no one to elect: nothing to propose.
        assert_eq!(reelect(T, 0, &p(&[1, 2, 3], None, &[1]), &who(&only_3)), None);
        // The last in-sync member returns: it leads again.
        let all = |_: BrokerId| true;
        let c = reelect(T, 0, &p(&[1, 2, 3], None, &[1]), &who(&all)).expect("change");
        assert_eq!(c.leader, Some(BrokerId(1)));
    }

    #[test]
    fn transfers_go_only_to_eligible_in_sync_replicas_and_the_primary_is_preferred() {
        let all = |_: BrokerId| true;
        let part = p(&[1, 2, 3], Some(1), &[1, 2]);
        assert!(transfer(T, 0, &part, BrokerId(3), &who(&all)).is_err(), "3 is not in sync");
        assert!(transfer(T, 0, &part, BrokerId(9), &who(&all)).is_err(), "9 is no replica");
        let c = transfer(T, 0, &part, BrokerId(2), &who(&all)).expect("ok").expect("change");
        assert_eq!((c.leader, c.leader_epoch), (Some(BrokerId(2)), 5));
        let mut primary = who(&all);
        primary.preferred = Some(BrokerId(2));
        assert_eq!(prefer(T, 0, &part, &primary).map(|c| c.leader), Some(Some(BrokerId(2))));
        assert_eq!(prefer(T, 0, &part, &who(&all)), None, "1 is preferred and leads");
    }

    #[test]
    fn a_drained_broker_leads_only_where_no_other_in_sync_replica_can() {
        let all = |_: BrokerId| true;
        let drained_1 = |id: BrokerId| id.0 == 1;
        let mut w = who(&all);
        w.drained = &drained_1;
        let part = p(&[1, 2, 3], Some(1), &[1, 3]);
        let c = drain(T, 0, &part, &w).expect("moved");
        assert_eq!((c.leader, c.isr.clone()), (Some(BrokerId(3)), vec![BrokerId(1), BrokerId(3)]));
        assert_eq!(drain(T, 0, &p(&[1, 2], Some(1), &[1]), &w), None, "no one else in sync");
        assert_eq!(drain(T, 0, &p(&[1, 2], Some(2), &[1, 2]), &w), None, "1 does not lead");
        assert_eq!(prefer(T, 0, &p(&[1, 2], Some(2), &[1, 2]), &w), None, "no failback to 1");
        assert!(
            transfer(T, 0, &p(&[1, 2], Some(2), &[1, 2]), BrokerId(1), &w).is_err(),
            "no transfer to 1"
        );
        // A fenced leader is replaced by a drained replica only when no
        // other can lead.
        let not_2 = |id: BrokerId| id.0 != 2;
        let mut w = who(&not_2);
        w.drained = &drained_1;
        let c = reelect(T, 0, &p(&[1, 2, 3], Some(2), &[1, 2, 3]), &w).expect("change");
        assert_eq!(c.leader, Some(BrokerId(3)));
        let c = reelect(T, 0, &p(&[1, 2, 3], Some(2), &[1, 2]), &w).expect("change");
        assert_eq!(c.leader, Some(BrokerId(1)), "the drained one rather than none");
    }
}
