//! An operator's actions on leaderships and replicas — failover,
//! failback, transfer-leader, move, decommission, cluster settings — as
//! metadata records checked against the state; and the controller's
//! standing work that carries out moves and decommissions. Pure (no I/O):
//! the CLI and the HTTP API reach these through `AdminCommand::Operator`,
//! the controller calls `pending` on each elections pass.

use super::election::Eligibility;
use super::handle::AdminError;
use super::metadata::{BrokerId, MetadataRecord, MetadataState, ReplicaChange, Topic, TopicId};
use super::{election, reassign, settings};
use crate::protocol::ErrorCode;
use std::collections::BTreeMap;

/// What an operator asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Leaderships off broker `from` (the cluster's primary when `None`):
    /// it leads only where no other in-sync replica can, until failback.
    Failover { from: Option<BrokerId> },
    /// Broker `to` (when `None`: the primary if drained, else the only
    /// drained broker) may lead again; preferred leaderships go back to it
    /// as its replicas are in sync.
    Failback { to: Option<BrokerId> },
    /// `to` leads the partition now, and stays its preferred leader.
    TransferLeader { topic: String, partition: u32, to: BrokerId },
    /// The partition's replicas become `replicas` (the first the
    /// preferred leader), copied before the old ones go.
    Move { topic: String, partition: u32, replicas: Vec<BrokerId> },
    /// Every replica of the broker moves to other brokers, its leaderships
    /// first; once it is stopped and hosts nothing the cluster forgets it.
    Decommission { broker_id: BrokerId },
    /// An operator setting (`settings::OPERATOR_SETTINGS`); `None` removes.
    SetSetting { name: String, value: Option<String> },
}

fn refused(code: ErrorCode, message: String) -> AdminError {
    AdminError::Refused { code, message }
}

fn invalid(message: String) -> AdminError {
    refused(ErrorCode::InvalidRequest, message)
}

/// The record `action` needs now (`None`: it is done already), or why it
/// cannot be done. `voters` are the metadata quorum's voters.
pub fn record_for<'a>(
    state: &MetadataState,
    voters: &[u64],
    action: OperatorAction,
    who: &dyn Fn(&Topic) -> Eligibility<'a>,
) -> Result<Option<MetadataRecord>, AdminError> {
    let broker = |id: BrokerId| {
        state.broker(id).ok_or_else(|| {
            refused(ErrorCode::InvalidRequest, format!("broker {id} is not in the cluster"))
        })
    };
    let partition_of = |topic: &str, partition: u32| {
        let t = state.topic(topic).ok_or_else(|| {
            refused(ErrorCode::UnknownTopicOrPartition, format!("unknown topic {topic:?}"))
        })?;
        let p = t.partitions.get(partition as usize).ok_or_else(|| {
            refused(
                ErrorCode::UnknownTopicOrPartition,
                format!("{topic} has {} partitions; there is no {partition}", t.partitions.len()),
            )
        })?;
        Ok::<_, AdminError>((t, p))
    };
    let setting = |name: String, value: Option<String>| {
        Some(MetadataRecord::SetClusterSetting { name, value })
    };
    match action {
        OperatorAction::Failover { from } => {
            let from = from.or_else(|| settings::cluster_primary(state)).ok_or_else(|| {
                invalid("name the broker to fail over from (--from N): the cluster has no primary (leader.placement=primary:N)".into())
            })?;
            broker(from)?;
            let name = settings::drained_setting(from);
            Ok(state.setting(&name).is_none().then(|| setting(name, Some("true".into()))).flatten())
        }
        OperatorAction::Failback { to } => {
            let drained = settings::drained(state);
            let to = match to {
                Some(to) => {
                    broker(to)?;
                    to
                }
                None => match settings::cluster_primary(state).filter(|p| drained.contains(p)) {
                    Some(primary) => primary,
                    None if drained.len() == 1 => drained[0],
                    None if drained.is_empty() => return Ok(None),
                    None => {
                        return Err(invalid(format!(
                            "name the broker to fail back to (--to N): brokers {} are drained",
                            list(&drained)
                        )))
                    }
                },
            };
            let name = settings::drained_setting(to);
            Ok(state.setting(&name).is_some().then(|| setting(name, None)).flatten())
        }
        OperatorAction::TransferLeader { topic, partition, to } => {
            let (t, p) = partition_of(&topic, partition)?;
            let who = who(t);
            if let Some(primary) = who.preferred.filter(|primary| *primary != to) {
                return Err(invalid(format!(
                    "{topic} has leader.placement=primary:{primary}: leadership would go back to {primary}; change leader.placement, or fail over from {primary}"
                )));
            }
            let Some(change) = election::transfer(t.id, partition, p, to, &who)
                .map_err(|why| invalid(format!("cannot transfer {topic}/{partition}: {why}")))?
            else {
                return Ok(None);
            };
            // `to` first in the replicas: it stays the preferred leader, and
            // the balancer keeps it there.
            let mut replicas = p.replicas.clone();
            replicas.retain(|id| *id != to);
            replicas.insert(0, to);
            Ok(Some(MetadataRecord::ChangeReplicas(Box::new(ReplicaChange { replicas, change }))))
        }
        OperatorAction::Move { topic, partition, replicas } => {
            let (t, p) = partition_of(&topic, partition)?;
            check_target(state, &replicas)?;
            let name = reassign::setting_name(t.id, partition);
            let pending = state.setting(&name).is_some();
            if p.replicas == replicas {
                // Where it is already: a pending move elsewhere is called off.
                return Ok(pending.then(|| setting(name, None)).flatten());
            }
            Ok(setting(name, Some(reassign::format_replicas(&replicas))))
        }
        OperatorAction::Decommission { broker_id } => {
            let b = broker(broker_id)?;
            if b.decommissioning {
                return Ok(None);
            }
            if voters.contains(&u64::from(broker_id.0)) {
                return Err(invalid(format!(
                    "broker {broker_id} is a voter of the metadata quorum: remove it first (mamba cluster voters remove {broker_id})"
                )));
            }
            // Every replica it hosts must have somewhere to go.
            let candidates = candidates(state, broker_id);
            let mut load = replica_counts(state);
            for t in state.topics() {
                for (i, p) in t.partitions.iter().enumerate() {
                    if p.replicas.contains(&broker_id)
                        && reassign::replacement(
                            p,
                            broker_id,
                            b.rack.as_deref(),
                            &candidates,
                            &mut load,
                        )
                        .is_none()
                    {
                        return Err(invalid(format!(
                            "{}/{i} has replicas on {} and no other alive broker can take broker {broker_id}'s",
                            t.name,
                            list(&p.replicas)
                        )));
                    }
                }
            }
            Ok(Some(MetadataRecord::DecommissionBroker { broker_id }))
        }
        OperatorAction::SetSetting { name, value } => {
            let value = settings::check(&name, value.as_deref()).map_err(invalid)?;
            if state.setting(&name) == value.as_deref() {
                return Ok(None);
            }
            Ok(setting(name, value))
        }
    }
}

/// A move's target: brokers of the cluster, none leaving, none twice.
fn check_target(state: &MetadataState, replicas: &[BrokerId]) -> Result<(), AdminError> {
    if replicas.is_empty() {
        return Err(invalid("a partition needs at least one replica".into()));
    }
    for (i, id) in replicas.iter().enumerate() {
        if replicas[..i].contains(id) {
            return Err(invalid(format!("broker {id} is named twice")));
        }
        match state.broker(*id) {
            None => return Err(invalid(format!("broker {id} is not in the cluster"))),
            Some(b) if b.decommissioning => {
                return Err(invalid(format!("broker {id} is decommissioning")))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Alive brokers other than `leaving`, with their racks.
fn candidates(state: &MetadataState, leaving: BrokerId) -> Vec<(BrokerId, Option<String>)> {
    state
        .brokers()
        .filter(|b| b.is_alive() && b.id != leaving)
        .map(|b| (b.id, b.rack.clone()))
        .collect()
}

fn replica_counts(state: &MetadataState) -> BTreeMap<BrokerId, u32> {
    state.replica_load().into_iter().map(|(id, (replicas, _))| (id, replicas)).collect()
}

fn list(ids: &[BrokerId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// A record the controller's standing work needs, and what it is about
/// (the controller proposes each at most once per retry interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A change of one partition from `from_epoch` (its partition epoch).
    Partition { topic_id: TopicId, partition: u32, from_epoch: u32, record: MetadataRecord },
    /// A cluster setting or broker record, named by `key`.
    Other { key: String, record: MetadataRecord },
}

/// What moves and decommissions need next: each move's next step, a move
/// for every replica of a decommissioning broker that has none, and the
/// removal of decommissioned brokers that are stopped and host nothing.
pub fn pending<'a>(state: &MetadataState, who: &dyn Fn(&Topic) -> Eligibility<'a>) -> Vec<Work> {
    let mut work = Vec::new();
    let setting = |name: &str, value: Option<String>| Work::Other {
        key: format!("setting {name}"),
        record: MetadataRecord::SetClusterSetting { name: name.to_string(), value },
    };
    for (name, value) in state.settings_with_prefix(reassign::SETTING_PREFIX) {
        let target = reassign::parse_replicas(value);
        let found = reassign::parse_setting_name(name).and_then(|(topic_id, partition)| {
            let t = state.topic_by_id(topic_id)?;
            Some((t, partition, t.partitions.get(partition as usize)?))
        });
        let (Some((t, partition, p)), Some(target)) = (found, target) else {
            // Its topic was deleted (or the setting is not a move's).
            work.push(setting(name, None));
            continue;
        };
        match reassign::step(t.id, partition, p, &target, &who(t)) {
            reassign::Step::Change(change) => work.push(Work::Partition {
                topic_id: t.id,
                partition,
                from_epoch: p.partition_epoch,
                record: MetadataRecord::ChangeReplicas(Box::new(change)),
            }),
            reassign::Step::Wait => {}
            reassign::Step::Done => work.push(setting(name, None)),
        }
    }
    for leaving in state.brokers().filter(|b| b.decommissioning) {
        let candidates = candidates(state, leaving.id);
        let mut load = replica_counts(state);
        let mut hosts = false;
        for t in state.topics() {
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&leaving.id) {
                    continue;
                }
                hosts = true;
                let name = reassign::setting_name(t.id, i as u32);
                if state.setting(&name).is_some() {
                    continue;
                }
                let target = reassign::replacement(
                    p,
                    leaving.id,
                    leaving.rack.as_deref(),
                    &candidates,
                    &mut load,
                );
                if let Some(target) = target {
                    work.push(setting(&name, Some(reassign::format_replicas(&target))));
                }
            }
        }
        if !hosts && leaving.fenced {
            work.push(Work::Other {
                key: format!("unregister {}", leaving.id),
                record: MetadataRecord::UnregisterBroker { broker_id: leaving.id },
            });
        }
    }
    work
}
