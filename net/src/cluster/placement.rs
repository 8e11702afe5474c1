//! Replica placement: which brokers hold the replicas of new partitions.
//!
//! A pure, deterministic function the controller runs before it proposes
//! a topic creation or growth (the same input gives the same placement).
//! Each new replica goes, one at a time, to the least loaded broker that
//! may take it, counting the load the brokers already carry, so:
//!
//! - **balance:** when the brokers start even (replica counts within 1;
//!   with racks, from nothing), they end even; without racks, the spread
//!   never grows from an uneven start;
//! - **racks:** a partition's replicas go to racks it does not use yet
//!   while there are any (so on distinct racks when there are at least as
//!   many racks as replicas). Rack diversity wins over balance: with racks
//!   of unequal sizes, the brokers of a small rack carry more. Brokers
//!   without a rack count as one rack together;
//! - **leaders:** the first replica is the preferred leader, picked among
//!   a partition's replicas as the one leading the fewest, then evened out
//!   along chains of partitions (`balance_leaders`). On a fresh cluster
//!   leader counts end within 1; on top of an existing load that is the
//!   aim, not a promise (which brokers share partitions may not allow it).
//!
//! Rack-aware balance rests on rack loads: the replicas of each rack per
//! broker, so racks of equal size end within one replica per broker.

use super::metadata::limits::REPLICAS_PER_PARTITION_MAX;
use super::metadata::BrokerId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacementRequest {
    pub partition_count: u32,
    pub replication_factor: u32,
}

/// What a broker carries already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerLoad {
    pub replicas: u32,
    /// Partitions it is the preferred leader of.
    pub leaders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "replication factor {replication_factor} needs as many alive brokers; {alive} are alive"
    )]
    NotEnoughBrokers { replication_factor: u32, alive: usize },
    #[error("replication factor must be between 1 and {REPLICAS_PER_PARTITION_MAX}, not {replication_factor}")]
    InvalidReplicationFactor { replication_factor: u32 },
    #[error("broker {broker_id} is listed twice")]
    DuplicateBroker { broker_id: BrokerId },
}

/// The replicas of each of `request.partition_count` new partitions, the
/// preferred leader first, over `brokers` (the alive ones, with their
/// racks), given what they carry (`existing`; brokers missing from it carry
/// nothing, entries of other brokers are ignored).
pub fn place(
    request: PlacementRequest,
    brokers: &[(BrokerId, Option<String>)],
    existing: &BTreeMap<BrokerId, BrokerLoad>,
) -> Result<Vec<Vec<BrokerId>>, PlacementError> {
    let PlacementRequest { partition_count, replication_factor } = request;
    if replication_factor == 0 || replication_factor as usize > REPLICAS_PER_PARTITION_MAX {
        return Err(PlacementError::InvalidReplicationFactor { replication_factor });
    }
    if replication_factor as usize > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers { replication_factor, alive: brokers.len() });
    }
    // Sorted by id: the result must not depend on the order of the list.
    let mut load: BTreeMap<BrokerId, (BrokerLoad, Option<&str>)> = BTreeMap::new();
    for (id, rack) in brokers {
        let start = existing.get(id).copied().unwrap_or_default();
        if load.insert(*id, (start, rack.as_deref())).is_some() {
            return Err(PlacementError::DuplicateBroker { broker_id: *id });
        }
    }

    // Replicas and brokers per rack: a rack's load is its replicas per
    // broker, so racks fill evenly even when their sizes differ.
    let mut racks: BTreeMap<Option<&str>, (u64, u64)> = BTreeMap::new();
    for (l, rack) in load.values() {
        let entry = racks.entry(*rack).or_default();
        entry.0 += u64::from(l.replicas);
        entry.1 += 1;
    }
    let rack_order = |a: &(u64, u64), b: &(u64, u64)| (a.0 * b.1).cmp(&(b.0 * a.1));

    let mut placement = Vec::with_capacity(partition_count as usize);
    for _ in 0..partition_count {
        let mut replicas: Vec<BrokerId> = Vec::with_capacity(replication_factor as usize);
        let mut racks_used: BTreeSet<Option<&str>> = BTreeSet::new();
        for _ in 0..replication_factor {
            let free = || load.iter().filter(|(id, _)| !replicas.contains(id));
            let new_rack_free = free().any(|(_, (_, rack))| !racks_used.contains(rack));
            let pool = free().filter(|(_, (_, rack))| !new_rack_free || !racks_used.contains(rack));
            // The least loaded rack, in it the least loaded broker; among
            // equally loaded brokers, those leading fewer first: the
            // leader is picked from the chosen ones.
            let chosen = pool.min_by(|(a_id, (a, a_rack)), (b_id, (b, b_rack))| {
                rack_order(&racks[a_rack], &racks[b_rack])
                    .then((a.replicas, a.leaders, *a_id).cmp(&(b.replicas, b.leaders, *b_id)))
            });
            let (&id, &(_, rack)) = chosen.expect("checked: more brokers than replicas");
            replicas.push(id);
            racks_used.insert(rack);
            load.get_mut(&id).expect("chosen from the map").0.replicas += 1;
            racks.get_mut(&rack).expect("every broker's rack is counted").0 += 1;
        }
        // The preferred leader: the replica leading the fewest partitions.
        let leader_slot = (0..replicas.len())
            .min_by_key(|&slot| (load[&replicas[slot]].0.leaders, replicas[slot]))
            .expect("at least one replica");
        replicas.swap(0, leader_slot);
        load.get_mut(&replicas[0]).expect("chosen from the map").0.leaders += 1;
        placement.push(replicas);
    }
    let mut leaders: BTreeMap<BrokerId, u32> =
        load.iter().map(|(id, (l, _))| (*id, l.leaders)).collect();
    balance_leaders(&mut placement, &mut leaders);
    Ok(placement)
}

/// Evens out leader counts by moving leadership along chains of the new
/// partitions: broker `a` leads one with a replica on `b`, `b` one with a
/// replica on `c`...; handing each on makes `a` lead one fewer and the end
/// of the chain one more, everyone between as many as before. The
/// greedy choice above gets close; chains fix what it cannot see ahead (a
/// broker that is always one replica ahead is never picked first).
/// Each step lowers the sum of squared leader counts, so it ends.
fn balance_leaders(placement: &mut [Vec<BrokerId>], leaders: &mut BTreeMap<BrokerId, u32>) {
    loop {
        let max = leaders.values().copied().max().unwrap_or(0);
        let min = leaders.values().copied().min().unwrap_or(0);
        if max - min <= 1 {
            return;
        }
        // Who can hand a leadership to whom: (partition, to) by leader.
        let mut hand_over: BTreeMap<BrokerId, Vec<(usize, BrokerId)>> = BTreeMap::new();
        for (index, replicas) in placement.iter().enumerate() {
            for to in &replicas[1..] {
                hand_over.entry(replicas[0]).or_default().push((index, *to));
            }
        }
        // Breadth first from every broker at the maximum, to one that
        // leads at most max - 2.
        let mut reached: BTreeMap<BrokerId, Option<(usize, BrokerId)>> = BTreeMap::new();
        let mut queue: VecDeque<BrokerId> = VecDeque::new();
        for (id, count) in leaders.iter() {
            if *count == max {
                reached.insert(*id, None);
                queue.push_back(*id);
            }
        }
        let mut end = None;
        while let Some(from) = queue.pop_front() {
            for &(index, to) in hand_over.get(&from).map_or(&[][..], Vec::as_slice) {
                if reached.contains_key(&to) {
                    continue;
                }
                reached.insert(to, Some((index, from)));
                if leaders[&to] + 2 <= max {
                    end = Some(to);
                    break;
                }
                queue.push_back(to);
            }
            if end.is_some() {
                break;
            }
        }
        let Some(end) = end else { return };
        let mut at = end;
        while let Some(&Some((index, from))) = reached.get(&at) {
            let replicas = &mut placement[index];
            assert_eq!(replicas[0], from, "a chain hands on leaderships its links hold");
            let slot =
                replicas.iter().position(|id| *id == at).expect("a replica of the partition");
            replicas.swap(0, slot);
            at = from;
        }
        *leaders.get_mut(&at).expect("a listed broker") -= 1;
        *leaders.get_mut(&end).expect("a listed broker") += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(count: u32) -> Vec<(BrokerId, Option<String>)> {
        (1..=count).map(|id| (BrokerId(id), None)).collect()
    }

    fn request(partition_count: u32, replication_factor: u32) -> PlacementRequest {
        PlacementRequest { partition_count, replication_factor }
    }

    /// Replicas and leaders per broker after `placement` on top of `existing`.
    fn totals(
        brokers: &[(BrokerId, Option<String>)],
        existing: &BTreeMap<BrokerId, BrokerLoad>,
        placement: &[Vec<BrokerId>],
    ) -> BTreeMap<BrokerId, BrokerLoad> {
        let mut out: BTreeMap<BrokerId, BrokerLoad> = brokers
            .iter()
            .map(|(id, _)| (*id, existing.get(id).copied().unwrap_or_default()))
            .collect();
        for replicas in placement {
            for (slot, id) in replicas.iter().enumerate() {
                let l = out.get_mut(id).expect("placed on a listed broker");
                l.replicas += 1;
                if slot == 0 {
                    l.leaders += 1;
                }
            }
        }
        out
    }

    fn spread(values: impl Iterator<Item = u32> + Clone) -> u32 {
        values.clone().max().unwrap_or(0) - values.min().unwrap_or(0)
    }

    #[test]
    fn five_brokers_two_thousand_partitions_come_out_even() {
        let b = brokers(5);
        for rf in 1..=3 {
            let placement = place(request(2000, rf), &b, &BTreeMap::new()).expect("placed");
            assert_eq!(placement.len(), 2000);
            let t = totals(&b, &BTreeMap::new(), &placement);
            assert!(spread(t.values().map(|l| l.replicas)) <= 1, "rf {rf}: {t:?}");
            assert!(spread(t.values().map(|l| l.leaders)) <= 1, "rf {rf}: {t:?}");
        }
    }

    #[test]
    fn more_replicas_than_alive_brokers_is_an_error() {
        assert_eq!(
            place(request(1, 4), &brokers(3), &BTreeMap::new()),
            Err(PlacementError::NotEnoughBrokers { replication_factor: 4, alive: 3 })
        );
        assert!(matches!(
            place(request(1, 0), &brokers(3), &BTreeMap::new()),
            Err(PlacementError::InvalidReplicationFactor { .. })
        ));
    }

    #[test]
    fn new_partitions_fill_the_emptiest_brokers_first() {
        // Broker 3 joined late: new partitions go there until it catches up.
        let existing: BTreeMap<BrokerId, BrokerLoad> = [
            (BrokerId(1), BrokerLoad { replicas: 4, leaders: 2 }),
            (BrokerId(2), BrokerLoad { replicas: 4, leaders: 2 }),
        ]
        .into();
        let placement = place(request(4, 1), &brokers(3), &existing).expect("placed");
        assert_eq!(placement, vec![vec![BrokerId(3)]; 4]);
    }

    #[test]
    fn replicas_land_on_distinct_racks() {
        let b: Vec<(BrokerId, Option<String>)> =
            (1..=6).map(|id| (BrokerId(id), Some(format!("rack-{}", id % 3)))).collect();
        let rack_of = |id: &BrokerId| b.iter().find(|(i, _)| i == id).and_then(|(_, r)| r.clone());
        let placement = place(request(300, 3), &b, &BTreeMap::new()).expect("placed");
        for replicas in &placement {
            let racks: BTreeSet<_> = replicas.iter().map(rack_of).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        let t = totals(&b, &BTreeMap::new(), &placement);
        assert!(spread(t.values().map(|l| l.replicas)) <= 1, "{t:?}");
        assert!(spread(t.values().map(|l| l.leaders)) <= 1, "{t:?}");
    }

    #[test]
    fn the_same_input_gives_the_same_placement() {
        let mut b = brokers(7);
        let first = place(request(50, 3), &b, &BTreeMap::new());
        b.reverse();
        assert_eq!(place(request(50, 3), &b, &BTreeMap::new()), first);
    }

    /// Random clusters, racks and existing loads: the bounds of the module
    /// docs hold. Replay with MAMBA_PLACEMENT_SEED.
    #[test]
    fn random_clusters_keep_the_balance_bounds() {
        let seed = std::env::var("MAMBA_PLACEMENT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("MAMBA_PLACEMENT_SEED={seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        for round in 0..500 {
            let broker_count = rng.u32(1..12);
            let rack_count = rng.u32(0..5);
            // Equal racks (or none): balance is owed; unequal: diversity only.
            let equal_racks = rack_count == 0 || broker_count % rack_count == 0;
            let b: Vec<(BrokerId, Option<String>)> = (0..broker_count)
                .map(|i| {
                    let rack = (rack_count > 0).then(|| {
                        let r = if equal_racks { i % rack_count } else { rng.u32(..rack_count) };
                        format!("r{r}")
                    });
                    (BrokerId(rng.u32(..1000) * 16 + i), rack)
                })
                .collect();
            // Balance is owed when the brokers start even: without racks,
            // replica counts within 1; with racks, from nothing (a rack
            // that carries more keeps carrying more: every partition puts
            // a replica on it).
            let even = rng.bool();
            let base = rng.u32(..20);
            let existing: BTreeMap<BrokerId, BrokerLoad> = b
                .iter()
                .map(|(id, _)| {
                    let replicas = match (even, rack_count) {
                        (true, 0) if base > 10 => base + rng.u32(..2),
                        (true, _) => 0,
                        (false, _) => rng.u32(..30),
                    };
                    (*id, BrokerLoad { replicas, leaders: replicas / 2 })
                })
                .collect();
            let rf = rng.u32(1..=broker_count.min(4));
            let partitions = rng.u32(0..200);
            let ctx = format!("seed {seed} round {round}: {b:?} rf {rf} partitions {partitions} existing {existing:?}");
            let placement = place(request(partitions, rf), &b, &existing).expect(&ctx);
            assert_eq!(placement.len(), partitions as usize, "{ctx}");
            let racks: BTreeSet<_> = b.iter().map(|(_, r)| r.clone()).collect();
            for replicas in &placement {
                let distinct: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(distinct.len(), rf as usize, "{ctx}: {replicas:?}");
                let used: BTreeSet<_> = replicas
                    .iter()
                    .map(|id| b.iter().find(|(i, _)| i == id).map(|(_, r)| r.clone()))
                    .collect();
                assert_eq!(
                    used.len(),
                    racks.len().min(rf as usize),
                    "{ctx}: racks of {replicas:?}"
                );
            }
            let before = spread(existing.values().map(|l| l.replicas));
            let t = totals(&b, &existing, &placement);
            let after = spread(t.values().map(|l| l.replicas));
            if equal_racks && (even || rack_count == 0) {
                assert!(after <= before.max(1), "{ctx}: replica spread {before} → {after}");
            }
            // Leaders are owed balance on a fresh cluster; on top of an
            // existing load the chains of `balance_leaders` do their best.
            if equal_racks && existing.values().all(|l| l.replicas == 0) {
                let leaders_after = spread(t.values().map(|l| l.leaders));
                assert!(leaders_after <= 1, "{ctx}: leader spread {leaders_after}");
            }
            assert_eq!(
                place(request(partitions, rf), &b, &existing).as_ref(),
                Ok(&placement),
                "{ctx}"
            );
        }
    }
}
