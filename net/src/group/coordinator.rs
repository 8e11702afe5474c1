//! One consumer group as its coordinator sees it: members, epochs, the
//! target assignment and its reconciliation. No I/O and no clock: every
//! call takes `now_ms`, and the caller persists and answers.
//!
//! The protocol is Kafka 4's (KIP-848): a member heartbeats with its
//! subscription and the partitions it owns; the coordinator answers with
//! the partitions it may own now.
//!
//! - A membership or subscription change bumps the **group epoch** and the
//!   assignor computes every member's **target**.
//! - A member gives up first: partitions it holds that its target lacks are
//!   taken out of its answer, and stay *revoking* (still its own) until a
//!   heartbeat reports them gone. Only then is its **member epoch** raised to
//!   the group epoch.
//! - It gains what its target holds that no other member holds. Partitions
//!   another member is still revoking come later, when released.
//!
//! **Invariant:** a partition is handed to at most one member at a time
//! (`owners`), from the answer that grants it until the heartbeat that
//! confirms its revocation, or the member's removal.
//!
//! A member's answer changes only on the coordinator's events; `changed`
//! collects whose did, so a server can answer their waiting (long-poll)
//! heartbeats at once.

use super::assignor::{Assignment, AssignorKind, MemberId, MemberSpec};
use super::offsets::{CommittedOffset, OffsetStore};
use super::records::{self, GroupRecord};
use mamba_engine::config::validate_topic_name;
use mamba_engine::limits::GROUP_SUBSCRIBED_TOPICS_MAX;
use std::collections::{BTreeMap, BTreeSet};

/// A partition of a topic.
pub type TopicPartition = (String, u32);

/// Bounds and defaults a coordinator applies to every group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub session_timeout_ms_default: u64,
    pub session_timeout_ms_min: u64,
    pub session_timeout_ms_max: u64,
    /// How long a member may wait between heartbeats when nothing changes;
    /// a change is answered at once.
    pub heartbeat_interval_ms: u64,
    pub members_max: usize,
    pub assignor_default: AssignorKind,
    /// Offsets of a group without members are kept this long after their
    /// last commit (Kafka's `offsets.retention.ms`).
    pub offsets_retention_ms: u64,
    /// Partitions of `__consumer_offsets` when the broker creates it; once
    /// it exists its own count places the groups (changing the setting
    /// later moves nothing).
    pub offsets_topic_partitions: u32,
    /// Segment size of `__consumer_offsets` when created; a partition's
    /// groups are compacted (rewritten whole, older segments deleted) each
    /// time this much was appended since the last compaction.
    pub offsets_segment_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout_ms_default: 10_000,
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 300_000,
            heartbeat_interval_ms: 3_000,
            members_max: 1_000,
            assignor_default: AssignorKind::Uniform,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_topic_partitions: 16,
            offsets_segment_bytes: 16 << 20,
        }
    }
}

impl GroupConfig {
    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), String> {
        let (min, default, max) = (
            self.session_timeout_ms_min,
            self.session_timeout_ms_default,
            self.session_timeout_ms_max,
        );
        if min == 0 || !(min..=max).contains(&default) {
            return Err(format!(
                "group session timeouts must satisfy 0 < min ({min} ms) <= default \
                 ({default} ms) <= max ({max} ms)"
            ));
        }
        let positive = [
            ("group heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("group members_max", self.members_max as u64),
            ("offsets_retention_ms", self.offsets_retention_ms),
            ("offsets_topic_partitions", u64::from(self.offsets_topic_partitions)),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        let segment_min = mamba_engine::limits::SEGMENT_BYTES_MIN;
        if self.offsets_segment_bytes < segment_min {
            return Err(format!(
                "offsets_segment_bytes is {}, at least {segment_min} is needed",
                self.offsets_segment_bytes
            ));
        }
        Ok(())
    }
}

/// Member epochs with a meaning in a heartbeat.
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
/// A static member leaving for a restart: its partitions wait for it (no
/// rebalance) until its session times out.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// A member's heartbeat, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// `None` when joining: the coordinator names the member.
    pub member_id: Option<MemberId>,
    /// `JOIN_EPOCH`, `LEAVE_EPOCH`, `STATIC_LEAVE_EPOCH`, or the epoch of
    /// the member's last answer.
    pub member_epoch: i32,
    /// Static membership (`group.instance.id`).
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// Asked for by the first member; later ones cannot change it.
    pub assignor: Option<AssignorKind>,
    /// What the member holds now; `None`: unchanged.
    pub owned: Option<Assignment>,
    pub session_timeout_ms: Option<u64>,
}

/// What a member is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: MemberId,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u64,
    /// Every partition the member may own now (it gives up the others).
    pub assignment: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member {member} of group {group:?}: join again")]
    UnknownMember { group: String, member: MemberId },
    #[error("member {member} of group {group:?} sent epoch {got}, its epoch is {current}: it was fenced; join again")]
    FencedMemberEpoch { group: String, member: MemberId, got: i32, current: i32 },
    #[error("session timeout {asked_ms} ms is outside the broker's bounds {min_ms}..={max_ms} ms")]
    InvalidSessionTimeout { asked_ms: u64, min_ms: u64, max_ms: u64 },
    #[error("group {group:?} has {members} members, the most a group may have")]
    GroupFull { group: String, members: usize },
    #[error("group {group:?} has members; {what} needs an empty group (stop its consumers first)")]
    GroupNotEmpty { group: String, what: &'static str },
    #[error("member {member} of group {group:?} does not own {topic}/{partition}: only its owner commits it")]
    NotAssigned { group: String, member: MemberId, topic: String, partition: u32 },
    #[error("{0}")]
    InvalidRequest(String),
}

/// Where a group stands, for people and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (its offsets may remain).
    Empty,
    /// Members are giving up or waiting for partitions.
    Reconciling,
    /// Every member holds its whole target at the group's epoch.
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "empty",
            GroupState::Reconciling => "reconciling",
            GroupState::Stable => "stable",
        }
    }
}

/// One member, as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub subscribed_topics: BTreeSet<String>,
    pub session_timeout_ms: u64,
    /// The group epoch whose target this member has reconciled to.
    pub epoch: i32,
    /// The epoch before, still accepted for a heartbeat whose answer was
    /// lost and for commits in flight.
    pub previous_epoch: i32,
    pub target: Assignment,
    /// Handed to the member: it may read these.
    pub assigned: Assignment,
    /// Taken out of its answer, not yet confirmed given up: still its own.
    pub revoking: Assignment,
    /// Removed (its partitions released) when no heartbeat comes by then.
    pub deadline_ms: i64,
    /// A static member that left for a restart, its partitions kept.
    pub away: bool,
}

impl Member {
    /// How long this member may go between heartbeats when nothing
    /// changes (and a long poll may wait): the broker's interval, but at
    /// most a third of its session, so a short session never ends while
    /// the member waits as told.
    pub fn heartbeat_interval_ms(&self, config: &GroupConfig) -> u64 {
        config.heartbeat_interval_ms.min(self.session_timeout_ms / 3).max(1)
    }
}

/// A consumer group's membership and assignment state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub assignor: AssignorKind,
    /// Bumped by every membership or subscription change.
    pub epoch: i32,
    pub members: BTreeMap<MemberId, Member>,
    /// Partition -> the member it is handed to (assigned or revoking).
    owners: BTreeMap<TopicPartition, MemberId>,
    /// Partition counts the current target was computed for.
    partition_counts: BTreeMap<String, u32>,
    /// Names new members: `<group>-<n>`, never reused in the group's life.
    next_member_number: u64,
    /// Members whose answer changed since `take_changed`.
    changed: BTreeSet<MemberId>,
    pub offsets: OffsetStore,
    /// Membership records as last written (see `changes`).
    persisted: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Offset records not yet written.
    pending_offsets: Vec<GroupRecord>,
}

/// A subscription the broker can keep: at most
/// `GROUP_SUBSCRIBED_TOPICS_MAX` names, each one a topic could have (a
/// name no topic can have would be kept and looked up for nothing).
fn check_subscription(topics: &BTreeSet<String>) -> Result<(), GroupError> {
    if topics.len() > GROUP_SUBSCRIBED_TOPICS_MAX {
        return Err(GroupError::InvalidRequest(format!(
            "a subscription of {} topics: at most {GROUP_SUBSCRIBED_TOPICS_MAX}",
            topics.len()
        )));
    }
    for topic in topics {
        validate_topic_name(topic).map_err(|e| {
            GroupError::InvalidRequest(format!("subscribed to a topic that cannot exist: {e}"))
        })?;
    }
    Ok(())
}

fn insert(a: &mut Assignment, (topic, partition): &TopicPartition) {
    a.entry(topic.clone()).or_default().insert(*partition);
}

fn remove(a: &mut Assignment, (topic, partition): &TopicPartition) -> bool {
    let Some(ps) = a.get_mut(topic) else { return false };
    let removed = ps.remove(partition);
    if ps.is_empty() {
        a.remove(topic);
    }
    removed
}

fn contains(a: &Assignment, (topic, partition): &TopicPartition) -> bool {
    a.get(topic).is_some_and(|ps| ps.contains(partition))
}

fn partitions(a: &Assignment) -> Vec<TopicPartition> {
    a.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect()
}

impl Group {
    pub fn new(id: &str, assignor: AssignorKind) -> Group {
        Group {
            id: id.to_string(),
            assignor,
            epoch: 0,
            members: BTreeMap::new(),
            owners: BTreeMap::new(),
            partition_counts: BTreeMap::new(),
            next_member_number: 1,
            changed: BTreeSet::new(),
            offsets: OffsetStore::default(),
            persisted: BTreeMap::new(),
            pending_offsets: Vec::new(),
        }
    }

    /// The records to append for what changed since the last call: the
    /// membership records that differ from those written, tombstones for
    /// members gone, and every offset committed or expired since.
    pub fn changes(&mut self) -> Vec<GroupRecord> {
        let current = records::membership_records(self);
        let mut out: Vec<GroupRecord> = current
            .iter()
            .filter(|(key, value)| self.persisted.get(*key) != Some(*value))
            .map(|(key, value)| GroupRecord { key: key.clone(), value: Some(value.clone()) })
            .collect();
        out.extend(
            self.persisted
                .keys()
                .filter(|key| !current.contains_key(*key))
                .map(|key| GroupRecord { key: key.clone(), value: None }),
        );
        self.persisted = current;
        out.append(&mut self.pending_offsets);
        out
    }

    /// Tombstones for every record of the group: what deleting it writes.
    pub fn deletion(&self) -> Vec<GroupRecord> {
        let mut out: Vec<GroupRecord> =
            self.offsets.iter().map(|(tp, _)| records::offset_record(&self.id, tp, None)).collect();
        // The group's own key last: a replay that stops early still knows
        // the group.
        let mut keys: Vec<&Vec<u8>> = self.persisted.keys().collect();
        keys.sort_by_key(|k| k.first() == Some(&b'g'));
        out.extend(keys.into_iter().map(|key| GroupRecord { key: key.clone(), value: None }));
        out
    }

    /// Forgets offsets older than `retention_ms` once the group has no
    /// members (Kafka's `offsets.retention.ms`); their tombstones go out
    /// with the next `changes`. Returns how many expired.
    pub fn expire_offsets(&mut self, retention_ms: u64, now_ms: i64) -> usize {
        if !self.members.is_empty() {
            return 0;
        }
        let expired = self.offsets.expire(retention_ms, now_ms);
        for tp in &expired {
            self.pending_offsets.push(records::offset_record(&self.id, tp, None));
        }
        expired.len()
    }

    pub(crate) fn next_member_number(&self) -> u64 {
        self.next_member_number
    }

    pub(crate) fn set_next_member_number(&mut self, n: u64) {
        self.next_member_number = n;
    }

    pub(crate) fn partition_counts(&self) -> &BTreeMap<String, u32> {
        &self.partition_counts
    }

    pub(crate) fn set_partition_counts(&mut self, counts: BTreeMap<String, u32>) {
        self.partition_counts = counts;
    }

    /// Puts back a member read from the log, claiming what it holds. The
    /// later record wins a partition another member's earlier record still
    /// claims: a change's records go out in one batch in key order, so the
    /// member that took a partition may come before the one that gave it
    /// up, and a replay after a compaction may start with records that
    /// later ones overrule.
    pub(crate) fn restore_member(&mut self, member: Member) {
        self.restore_member_removed(&member.id);
        for tp in partitions(&member.assigned).iter().chain(&partitions(&member.revoking)) {
            if let Some(other) = self.owners.insert(tp.clone(), member.id.clone()) {
                if let Some(o) = self.members.get_mut(&other) {
                    remove(&mut o.assigned, tp);
                    remove(&mut o.revoking, tp);
                }
            }
        }
        self.members.insert(member.id.clone(), member);
    }

    pub(crate) fn restore_member_removed(&mut self, id: &MemberId) {
        self.remove_member_quietly(id);
    }

    /// Whether any record of the group was written (or read back).
    pub fn is_persisted(&self) -> bool {
        !self.persisted.is_empty()
    }

    /// After a replay: what was read is what is written.
    pub(crate) fn mark_persisted(&mut self) {
        self.persisted = records::membership_records(self);
        self.pending_offsets.clear();
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let settled = self
            .members
            .values()
            .all(|m| m.epoch == self.epoch && m.revoking.is_empty() && m.assigned == m.target);
        if settled {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Commits offsets: a member's (`Some((member, member_epoch))`) for
    /// partitions it holds, or, with `None`, anyone's while the group has
    /// no members (a consumer that assigns partitions itself, or a reset).
    /// One outcome per partition; a refused member refuses them all.
    pub fn commit(
        &mut self,
        member: Option<(&MemberId, i32)>,
        offsets: Vec<(TopicPartition, u64, String)>,
        now_ms: i64,
    ) -> Vec<(TopicPartition, Result<(), GroupError>)> {
        offsets
            .into_iter()
            .map(|(tp, offset, metadata)| {
                let allowed = match member {
                    None if self.members.is_empty() => Ok(()),
                    None => Err(GroupError::GroupNotEmpty {
                        group: self.id.clone(),
                        what: "committing without a member id",
                    }),
                    Some((id, epoch)) => match self.may_commit(id, epoch, &tp) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(GroupError::NotAssigned {
                            group: self.id.clone(),
                            member: id.clone(),
                            topic: tp.0.clone(),
                            partition: tp.1,
                        }),
                        Err(e) => Err(e),
                    },
                };
                let outcome = allowed.and_then(|()| {
                    let committed = CommittedOffset { offset, metadata, commit_ms: now_ms };
                    let record = records::offset_record(&self.id, &tp, Some(&committed));
                    self.offsets.put(tp.clone(), committed).map_err(GroupError::InvalidRequest)?;
                    self.pending_offsets.push(record);
                    Ok(())
                });
                (tp, outcome)
            })
            .collect()
    }

    /// Members whose answer changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<MemberId> {
        std::mem::take(&mut self.changed)
    }

    /// The member `partition` is handed to.
    pub fn owner(&self, partition: &TopicPartition) -> Option<&MemberId> {
        self.owners.get(partition)
    }

    /// One heartbeat. `partition_count` gives each topic's partitions
    /// (`None`: no such topic, which is assigned nothing until it exists).
    pub fn heartbeat(
        &mut self,
        config: &GroupConfig,
        request: Heartbeat,
        partition_count: &dyn Fn(&str) -> Option<u32>,
        now_ms: i64,
    ) -> Result<Option<HeartbeatAnswer>, GroupError> {
        let session_timeout_ms =
            request.session_timeout_ms.unwrap_or(config.session_timeout_ms_default);
        if !(config.session_timeout_ms_min..=config.session_timeout_ms_max)
            .contains(&session_timeout_ms)
        {
            return Err(GroupError::InvalidSessionTimeout {
                asked_ms: session_timeout_ms,
                min_ms: config.session_timeout_ms_min,
                max_ms: config.session_timeout_ms_max,
            });
        }
        if let Some(topics) = &request.subscribed_topics {
            check_subscription(topics)?;
        }
        let mut rebalance = false;
        let member_id = match request.member_epoch {
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
                let id = self.known(request.member_id.as_ref())?;
                if request.member_epoch == STATIC_LEAVE_EPOCH
                    && self.members[&id].instance_id.is_some()
                {
                    let member = self.members.get_mut(&id).expect("known");
                    member.away = true;
                    member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms as i64);
                } else {
                    self.remove_member(&id, partition_count);
                }
                return Ok(None);
            }
            JOIN_EPOCH => {
                let (id, rejoined) = self.join(config, &request, now_ms)?;
                rebalance |= rejoined;
                id
            }
            epoch if epoch > 0 => {
                let id = self.known(request.member_id.as_ref())?;
                let member = &self.members[&id];
                let lost_answer = epoch == member.previous_epoch
                    && request.owned.as_ref().is_some_and(|owned| {
                        partitions(owned).iter().all(|tp| {
                            contains(&member.assigned, tp) || contains(&member.revoking, tp)
                        })
                    });
                if epoch != member.epoch && !lost_answer {
                    return Err(GroupError::FencedMemberEpoch {
                        group: self.id.clone(),
                        member: id,
                        got: epoch,
                        current: member.epoch,
                    });
                }
                id
            }
            epoch => {
                return Err(GroupError::InvalidRequest(format!(
                    "member epoch {epoch} means nothing: use 0 to join, -1 to leave, \
                     -2 for a static member's restart, or the epoch last answered"
                )))
            }
        };
        let member = self.members.get_mut(&member_id).expect("joined or known");
        member.deadline_ms = now_ms.saturating_add(session_timeout_ms as i64);
        member.session_timeout_ms = session_timeout_ms;
        member.client_id = request.client_id;
        member.host = request.host;
        if let Some(topics) = request.subscribed_topics {
            if topics != member.subscribed_topics {
                member.subscribed_topics = topics;
                rebalance = true;
            }
        }
        if let Some(owned) = &request.owned {
            // What it no longer holds of what it was revoking is released.
            let given_up: Vec<TopicPartition> = partitions(&member.revoking)
                .into_iter()
                .filter(|tp| !contains(owned, tp))
                .collect();
            for tp in &given_up {
                remove(&mut member.revoking, tp);
            }
            for tp in &given_up {
                self.release(tp, &member_id);
            }
        }
        rebalance |= self.partition_counts_moved(partition_count);
        if rebalance {
            self.compute_targets(partition_count);
        }
        Ok(Some(self.poll(config, &member_id)))
    }

    /// Reconciles `member` and answers it: the end of its heartbeat, or of
    /// a waiting heartbeat woken because it `changed`.
    pub fn poll(&mut self, config: &GroupConfig, member: &MemberId) -> HeartbeatAnswer {
        self.reconcile(member);
        self.changed.remove(member);
        self.mark_changed();
        self.changed.remove(member);
        let m = &self.members[member];
        HeartbeatAnswer {
            member_id: member.clone(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: m.heartbeat_interval_ms(config),
            assignment: m.assigned.clone(),
        }
    }

    /// Removes members whose session ran out; their partitions move.
    /// Returns who was removed.
    pub fn expire(
        &mut self,
        partition_count: &dyn Fn(&str) -> Option<u32>,
        now_ms: i64,
    ) -> Vec<MemberId> {
        let expired: Vec<MemberId> = self
            .members
            .values()
            .filter(|m| m.deadline_ms < now_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, partition_count);
        }
        expired
    }

    /// Whether `member` at `member_epoch` may commit an offset of
    /// `partition`: it must hold it (assigned or revoking), at its epoch or
    /// the one before (a commit sent before its last answer arrived).
    pub fn may_commit(
        &self,
        member: &MemberId,
        member_epoch: i32,
        partition: &TopicPartition,
    ) -> Result<bool, GroupError> {
        let m = self.members.get(member).ok_or_else(|| GroupError::UnknownMember {
            group: self.id.clone(),
            member: member.clone(),
        })?;
        if member_epoch != m.epoch && member_epoch != m.previous_epoch {
            return Err(GroupError::FencedMemberEpoch {
                group: self.id.clone(),
                member: member.clone(),
                got: member_epoch,
                current: m.epoch,
            });
        }
        Ok(self.owners.get(partition) == Some(member))
    }

    fn known(&self, id: Option<&MemberId>) -> Result<MemberId, GroupError> {
        match id {
            Some(id) if self.members.contains_key(id) => Ok(id.clone()),
            Some(id) => {
                Err(GroupError::UnknownMember { group: self.id.clone(), member: id.clone() })
            }
            None => Err(GroupError::InvalidRequest(
                "a heartbeat after joining must carry the member id".into(),
            )),
        }
    }

    /// Adds a member, or gives a static member that comes back its place
    /// (and its partitions) under a new id, without a rebalance. Returns
    /// the member and whether an old one went (a rebalance is due).
    fn join(
        &mut self,
        config: &GroupConfig,
        request: &Heartbeat,
        now_ms: i64,
    ) -> Result<(MemberId, bool), GroupError> {
        // A member that joins again (after being fenced) starts afresh.
        let rejoined = match request.member_id.as_ref() {
            Some(old) if self.members.contains_key(old) => {
                let old = old.clone();
                self.remove_member_quietly(&old);
                true
            }
            _ => false,
        };
        let id = MemberId(format!("{}-{}", self.id, self.next_member_number));
        self.next_member_number += 1;
        let returning = request.instance_id.as_ref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .map(|m| m.id.clone())
        });
        if let Some(old) = returning {
            let mut member = self.members.remove(&old).expect("found");
            member.id = id.clone();
            member.away = false;
            for tp in partitions(&member.assigned).iter().chain(&partitions(&member.revoking)) {
                self.owners.insert(tp.clone(), id.clone());
            }
            self.members.insert(id.clone(), member);
            self.changed.insert(id.clone());
            return Ok((id, rejoined));
        }
        if self.members.len() >= config.members_max {
            return Err(GroupError::GroupFull {
                group: self.id.clone(),
                members: self.members.len(),
            });
        }
        if self.members.is_empty() {
            self.assignor = request.assignor.unwrap_or(config.assignor_default);
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: request.instance_id.clone(),
                client_id: String::new(),
                host: String::new(),
                subscribed_topics: BTreeSet::new(),
                session_timeout_ms: config.session_timeout_ms_default,
                epoch: 0,
                previous_epoch: 0,
                target: Assignment::new(),
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                deadline_ms: now_ms,
                away: false,
            },
        );
        // The subscription that comes with the join starts a new epoch.
        Ok((id, rejoined))
    }

    fn remove_member(&mut self, id: &MemberId, partition_count: &dyn Fn(&str) -> Option<u32>) {
        self.remove_member_quietly(id);
        self.compute_targets(partition_count);
        self.mark_changed();
    }

    /// Drops a member and releases what it held, without recomputing.
    fn remove_member_quietly(&mut self, id: &MemberId) {
        if let Some(m) = self.members.remove(id) {
            for tp in partitions(&m.assigned).iter().chain(&partitions(&m.revoking)) {
                self.release(tp, id);
            }
        }
        self.changed.remove(id);
    }

    fn release(&mut self, tp: &TopicPartition, from: &MemberId) {
        if self.owners.get(tp) == Some(from) {
            self.owners.remove(tp);
        }
    }

    /// Whether a subscribed topic's partition count differs from the one
    /// the target was computed for (a topic grew, appeared or went away).
    fn partition_counts_moved(&self, partition_count: &dyn Fn(&str) -> Option<u32>) -> bool {
        self.subscribed().iter().any(|t| {
            partition_count(t).unwrap_or(0) != self.partition_counts.get(t).copied().unwrap_or(0)
        })
    }

    fn subscribed(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.subscribed_topics.iter().cloned()).collect()
    }

    /// A new group epoch and every member's target for it.
    fn compute_targets(&mut self, partition_count: &dyn Fn(&str) -> Option<u32>) {
        self.epoch += 1;
        self.partition_counts = self
            .subscribed()
            .into_iter()
            .filter_map(|t| partition_count(&t).map(|n| (t, n)))
            .collect();
        let specs: BTreeMap<MemberId, MemberSpec> = self
            .members
            .values()
            .map(|m| {
                let spec = MemberSpec {
                    subscribed_topics: m.subscribed_topics.clone(),
                    previous: m.target.clone(),
                };
                (m.id.clone(), spec)
            })
            .collect();
        let mut targets = self.assignor.assign(&specs, &self.partition_counts);
        for (id, m) in &mut self.members {
            m.target = targets.remove(id).unwrap_or_default();
        }
    }

    /// Moves `id` towards its target as far as it can now: it gives up
    /// what its target lacks; with nothing left to give up it reaches the
    /// group epoch and takes the targeted partitions nobody holds. Only a
    /// member's own heartbeat does this, so its epoch moves one step per
    /// answer it gets.
    fn reconcile(&mut self, id: &MemberId) {
        let m = self.members.get_mut(id).expect("reconciling a member");
        for tp in partitions(&m.assigned) {
            if !contains(&m.target, &tp) {
                remove(&mut m.assigned, &tp);
                insert(&mut m.revoking, &tp);
            }
        }
        if m.away || !m.revoking.is_empty() {
            return;
        }
        if m.epoch != self.epoch {
            m.previous_epoch = m.epoch;
            m.epoch = self.epoch;
        }
        for tp in partitions(&m.target) {
            if !contains(&m.assigned, &tp) && !self.owners.contains_key(&tp) {
                self.owners.insert(tp.clone(), id.clone());
                insert(&mut m.assigned, &tp);
            }
        }
        self.assert_owners();
    }

    /// Marks the members whose next answer would differ from their last:
    /// something to give up, a new epoch to reach, or a free partition to
    /// take. Their waiting heartbeats should be answered now.
    fn mark_changed(&mut self) {
        for (id, m) in &self.members {
            let gives_up = partitions(&m.assigned).iter().any(|tp| !contains(&m.target, tp));
            let ready = !m.away && m.revoking.is_empty();
            let takes = partitions(&m.target)
                .iter()
                .any(|tp| !contains(&m.assigned, tp) && !self.owners.contains_key(tp));
            if gives_up || (ready && (m.epoch != self.epoch || takes)) {
                self.changed.insert(id.clone());
            }
        }
    }

    /// Every assigned or revoking partition is in `owners` under its
    /// member, and nothing else is.
    fn assert_owners(&self) {
        let mut held = 0;
        for m in self.members.values() {
            for tp in partitions(&m.assigned).iter().chain(&partitions(&m.revoking)) {
                assert_eq!(self.owners.get(tp), Some(&m.id), "{tp:?} is handed to one member");
                held += 1;
            }
        }
        assert_eq!(held, self.owners.len(), "owners lists only what members hold");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn topics(t: &[&str]) -> Option<BTreeSet<String>> {
        Some(t.iter().map(|s| s.to_string()).collect())
    }

    fn counts(topic: &str) -> Option<u32> {
        match topic {
            "orders" => Some(12),
            "clicks" => Some(3),
            _ => None,
        }
    }

    /// A simulated member: holds what it was answered, gives up revoked
    /// partitions on its next heartbeat.
    #[derive(Clone)]
    struct Client {
        id: MemberId,
        epoch: i32,
        owned: Assignment,
        /// When its last answer came: a client that hears nothing for its
        /// session timeout stops reading, as the coordinator will have
        /// dropped it (Kafka's "partitions lost").
        answered_ms: i64,
    }

    fn join(g: &mut Group, config: &GroupConfig, subscribed: &[&str]) -> Client {
        let answer = g
            .heartbeat(
                config,
                Heartbeat { subscribed_topics: topics(subscribed), ..Heartbeat::default() },
                &counts,
                NOW,
            )
            .expect("join")
            .expect("answer");
        Client {
            id: answer.member_id,
            epoch: answer.member_epoch,
            owned: answer.assignment,
            answered_ms: NOW,
        }
    }

    fn beat(g: &mut Group, config: &GroupConfig, c: &mut Client, now: i64) {
        let answer = g
            .heartbeat(
                config,
                Heartbeat {
                    member_id: Some(c.id.clone()),
                    member_epoch: c.epoch,
                    owned: Some(c.owned.clone()),
                    ..Heartbeat::default()
                },
                &counts,
                now,
            )
            .expect("heartbeat")
            .expect("answer");
        c.epoch = answer.member_epoch;
        c.owned = answer.assignment;
        c.answered_ms = now;
    }

    /// Heartbeats every client until a round changes no answer.
    fn settle(g: &mut Group, config: &GroupConfig, clients: &mut [Client]) {
        for _ in 0..10 {
            let mut moved = false;
            for c in clients.iter_mut() {
                let before = (c.epoch, c.owned.clone());
                beat(g, config, c, NOW);
                moved |= before != (c.epoch, c.owned.clone());
            }
            // No partition is owned by two clients at any point.
            let mut seen = BTreeSet::new();
            for c in clients.iter() {
                for tp in partitions(&c.owned) {
                    assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the group did not settle");
    }

    fn counts_of(clients: &[Client]) -> Vec<usize> {
        clients.iter().map(|c| partitions(&c.owned).len()).collect()
    }

    #[test]
    fn members_join_and_leave_one_by_one_and_stay_balanced() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let mut clients: Vec<Client> = Vec::new();
        for n in 1..=6 {
            clients.push(join(&mut g, &config, &["orders"]));
            settle(&mut g, &config, &mut clients);
            let c = counts_of(&clients);
            assert_eq!(c.iter().sum::<usize>(), 12, "{n} members: {c:?}");
            assert!(c.iter().all(|&k| k == 12 / n || k == 12 / n + 1), "{n} members: {c:?}");
        }
        while clients.len() > 1 {
            let leaving = clients.remove(0);
            let left = g.heartbeat(
                &config,
                Heartbeat {
                    member_id: Some(leaving.id),
                    member_epoch: LEAVE_EPOCH,
                    ..Heartbeat::default()
                },
                &counts,
                NOW,
            );
            assert_eq!(left, Ok(None));
            settle(&mut g, &config, &mut clients);
            let c = counts_of(&clients);
            assert_eq!(c.iter().sum::<usize>(), 12, "{c:?}");
            assert!(c.iter().max().zip(c.iter().min()).is_some_and(|(a, b)| a - b <= 1), "{c:?}");
        }
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_gave_it_up() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let mut a = join(&mut g, &config, &["clicks"]);
        assert_eq!(partitions(&a.owned).len(), 3);
        let mut b = join(&mut g, &config, &["clicks"]);
        assert!(b.owned.is_empty(), "b waits: a still holds everything");
        assert!(g.take_changed().contains(&a.id), "a's waiting heartbeat is answered at once");
        // a is told to give one up, at its old epoch.
        let old_epoch = a.epoch;
        beat(&mut g, &config, &mut a, NOW);
        assert_eq!((partitions(&a.owned).len(), a.epoch), (2, old_epoch));
        let revoked: Vec<TopicPartition> =
            partitions(&g.members[&a.id].revoking).into_iter().collect();
        assert_eq!(revoked.len(), 1);
        // a may still commit what it is revoking; b may not.
        assert_eq!(g.may_commit(&a.id, a.epoch, &revoked[0]), Ok(true));
        assert_eq!(g.may_commit(&b.id, b.epoch, &revoked[0]), Ok(false));
        beat(&mut g, &config, &mut b, NOW);
        assert!(b.owned.is_empty(), "still not released");
        // a's next heartbeat confirms; b gets the partition.
        beat(&mut g, &config, &mut a, NOW);
        assert!(a.epoch > old_epoch);
        assert!(g.take_changed().contains(&b.id));
        beat(&mut g, &config, &mut b, NOW);
        assert_eq!(partitions(&b.owned), revoked);
    }

    #[test]
    fn stale_epochs_are_fenced_and_a_lost_answer_is_forgiven() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let mut clients =
            vec![join(&mut g, &config, &["orders"]), join(&mut g, &config, &["orders"])];
        settle(&mut g, &config, &mut clients);
        let a = &clients[0];
        let forged = Heartbeat {
            member_id: Some(a.id.clone()),
            member_epoch: a.epoch + 7,
            ..Heartbeat::default()
        };
        assert!(matches!(
            g.heartbeat(&config, forged, &counts, NOW),
            Err(GroupError::FencedMemberEpoch { .. })
        ));
        // A third member joins: a gives partitions up, and the answer that
        // raises its epoch is lost; a repeats its old epoch and gets it again.
        clients.push(join(&mut g, &config, &["orders"]));
        let a = &mut clients[0];
        beat(&mut g, &config, a, NOW);
        let old_epoch = a.epoch;
        let mut answered = a.clone();
        beat(&mut g, &config, &mut answered, NOW);
        assert!(answered.epoch > old_epoch);
        beat(&mut g, &config, a, NOW);
        assert_eq!(a.epoch, answered.epoch, "the lost answer, again");
        settle(&mut g, &config, &mut clients);
        let a = &clients[0];
        assert!(matches!(
            g.may_commit(&a.id, old_epoch - 1, &("orders".into(), 0)),
            Err(GroupError::FencedMemberEpoch { .. })
        ));
    }

    #[test]
    fn a_silent_member_is_removed_and_its_partitions_move() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let mut clients =
            vec![join(&mut g, &config, &["orders"]), join(&mut g, &config, &["orders"])];
        settle(&mut g, &config, &mut clients);
        let silent = clients.remove(1);
        assert!(g.expire(&counts, NOW + 5_000).is_empty());
        beat(&mut g, &config, &mut clients[0], NOW + 9_000);
        assert_eq!(g.expire(&counts, NOW + 10_001), vec![silent.id.clone()]);
        settle(&mut g, &config, &mut clients);
        assert_eq!(counts_of(&clients), [12]);
        let unknown = Heartbeat {
            member_id: Some(silent.id),
            member_epoch: silent.epoch,
            ..Heartbeat::default()
        };
        assert!(matches!(
            g.heartbeat(&config, unknown, &counts, NOW + 10_002),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_static_member_that_restarts_in_time_gets_its_partitions_back() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let join_static = |g: &mut Group| {
            let request = Heartbeat {
                instance_id: Some("pod-1".into()),
                subscribed_topics: topics(&["orders"]),
                ..Heartbeat::default()
            };
            let answer =
                g.heartbeat(&config, request, &counts, NOW).expect("join").expect("answer");
            Client {
                id: answer.member_id,
                epoch: answer.member_epoch,
                owned: answer.assignment,
                answered_ms: NOW,
            }
        };
        let mut clients = vec![join_static(&mut g), join(&mut g, &config, &["orders"])];
        settle(&mut g, &config, &mut clients);
        let held = clients[0].owned.clone();
        let epoch_before = g.epoch;
        let restarting = Heartbeat {
            member_id: Some(clients[0].id.clone()),
            member_epoch: STATIC_LEAVE_EPOCH,
            ..Heartbeat::default()
        };
        assert_eq!(g.heartbeat(&config, restarting, &counts, NOW), Ok(None));
        beat(&mut g, &config, &mut clients[1], NOW);
        assert_eq!(partitions(&clients[1].owned).len(), 6, "nothing moves while it restarts");
        let back = join_static(&mut g);
        assert_eq!(back.owned, held, "its partitions, at once");
        assert_eq!(g.epoch, epoch_before, "no rebalance");
        // Had it not come back, its session would have ended and its
        // partitions moved.
        let mut g2 = g.clone();
        g2.expire(&counts, NOW + 5_000);
        assert_eq!(g2.members.len(), 2);
    }

    /// Random joins, leaves, silences and heartbeats in random order:
    /// no partition is ever held by two clients, and once everyone
    /// heartbeats the group is balanced. Replay with MAMBA_GROUP_SEED.
    #[test]
    fn random_schedules_never_give_a_partition_two_holders() {
        let seed = std::env::var("MAMBA_GROUP_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("MAMBA_GROUP_SEED={seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let config = GroupConfig::default();
        for _ in 0..50 {
            let mut g = Group::new("g", AssignorKind::Uniform);
            let mut clients: Vec<Client> = Vec::new();
            let mut now = NOW;
            for _ in 0..200 {
                now += rng.i64(0..2_000);
                match rng.u8(0..10) {
                    0 | 1 if clients.len() < 8 => {
                        let subscribed: &[&str] =
                            if rng.bool() { &["orders"] } else { &["orders", "clicks"] };
                        let c = g
                            .heartbeat(
                                &config,
                                Heartbeat {
                                    subscribed_topics: topics(subscribed),
                                    ..Heartbeat::default()
                                },
                                &counts,
                                now,
                            )
                            .expect("join")
                            .expect("answer");
                        clients.push(Client {
                            id: c.member_id,
                            epoch: c.member_epoch,
                            owned: c.assignment,
                            answered_ms: now,
                        });
                    }
                    2 if !clients.is_empty() => {
                        let c = clients.remove(rng.usize(..clients.len()));
                        let leave = Heartbeat {
                            member_id: Some(c.id),
                            member_epoch: LEAVE_EPOCH,
                            ..Heartbeat::default()
                        };
                        match g.heartbeat(&config, leave, &counts, now) {
                            // Unless its session ended meanwhile.
                            Ok(None) | Err(GroupError::UnknownMember { .. }) => {}
                            other => panic!("seed {seed}: leave: {other:?}"),
                        }
                    }
                    3 if !clients.is_empty() => {
                        // Killed: it stops heartbeating and reading.
                        clients.remove(rng.usize(..clients.len()));
                    }
                    _ if !clients.is_empty() => {
                        let i = rng.usize(..clients.len());
                        let mut c = clients[i].clone();
                        match g.heartbeat(
                            &config,
                            Heartbeat {
                                member_id: Some(c.id.clone()),
                                member_epoch: c.epoch,
                                owned: Some(c.owned.clone()),
                                ..Heartbeat::default()
                            },
                            &counts,
                            now,
                        ) {
                            Ok(Some(answer)) => {
                                c.epoch = answer.member_epoch;
                                c.owned = answer.assignment;
                                c.answered_ms = now;
                                clients[i] = c;
                            }
                            // Timed out meanwhile: it stops reading.
                            Err(GroupError::UnknownMember { .. }) => {
                                clients.remove(i);
                            }
                            other => panic!("seed {seed}: {other:?}"),
                        }
                    }
                    _ => {}
                }
                g.expire(&counts, now);
                let session_ms = config.session_timeout_ms_default as i64;
                clients.retain(|c| now - c.answered_ms < session_ms);
                let mut held = BTreeSet::new();
                for c in &clients {
                    for tp in partitions(&c.owned) {
                        assert!(held.insert(tp.clone()), "seed {seed}: {tp:?} held twice");
                    }
                }
            }
            if !clients.is_empty() {
                // The live clients heartbeat once more, then the sessions
                // of the killed ones end: their partitions move.
                let later = now + config.session_timeout_ms_default as i64 + 1;
                for c in &mut clients {
                    beat(&mut g, &config, c, later);
                }
                g.expire(&counts, later);
                settle(&mut g, &config, &mut clients);
                let total: usize = counts_of(&clients).iter().sum();
                let orders = 12;
                let clicks = if clients
                    .iter()
                    .any(|c| g.members[&c.id].subscribed_topics.contains("clicks"))
                {
                    3
                } else {
                    0
                };
                assert_eq!(total, orders + clicks, "seed {seed}: everything is read once settled");
            }
        }
    }

    #[test]
    fn only_a_partition_s_holder_commits_it_and_an_empty_group_takes_any_commit() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let commit_none =
            |g: &mut Group| g.commit(None, vec![(("orders".into(), 0), 5, String::new())], NOW);
        assert!(commit_none(&mut g)[0].1.is_ok(), "no members: a standalone commit");
        assert_eq!(g.state(), GroupState::Empty);
        let mut clients =
            vec![join(&mut g, &config, &["orders"]), join(&mut g, &config, &["orders"])];
        settle(&mut g, &config, &mut clients);
        assert_eq!(g.state(), GroupState::Stable);
        assert!(matches!(commit_none(&mut g)[0].1, Err(GroupError::GroupNotEmpty { .. })));
        let (a, b) = (&clients[0], &clients[1]);
        let mine = partitions(&a.owned)[0].clone();
        let outcomes =
            g.commit(Some((&b.id, b.epoch)), vec![(mine.clone(), 7, String::new())], NOW);
        assert!(matches!(outcomes[0].1, Err(GroupError::NotAssigned { .. })), "{outcomes:?}");
        let outcomes =
            g.commit(Some((&a.id, a.epoch)), vec![(mine.clone(), 42, "note".into())], NOW);
        assert!(outcomes[0].1.is_ok());
        assert_eq!(
            g.offsets.get(&mine).map(|c| (c.offset, c.metadata.as_str())),
            Some((42, "note"))
        );
        let stale = g.commit(Some((&a.id, a.epoch + 3)), vec![(mine, 43, String::new())], NOW);
        assert!(matches!(stale[0].1, Err(GroupError::FencedMemberEpoch { .. })));
    }

    #[test]
    fn subscriptions_too_long_or_naming_impossible_topics_are_refused() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let join = |topics: BTreeSet<String>| Heartbeat {
            subscribed_topics: Some(topics),
            ..Heartbeat::default()
        };
        let most: BTreeSet<String> =
            (0..GROUP_SUBSCRIBED_TOPICS_MAX).map(|i| format!("t{i}")).collect();
        let mut too_many = most.clone();
        too_many.insert("one-more".into());
        let err = g.heartbeat(&config, join(too_many), &counts, NOW).expect_err("too many");
        assert!(err.to_string().contains("at most 10000"), "{err}");
        for bad in ["", "a/b", &"t".repeat(250)] {
            let topics = BTreeSet::from([bad.to_string()]);
            let err = g.heartbeat(&config, join(topics), &counts, NOW).expect_err(bad);
            assert!(err.to_string().contains("cannot exist"), "{err}");
        }
        assert!(g.members.is_empty(), "nothing changed");
        g.heartbeat(&config, join(most), &counts, NOW).expect("the most topics join");
    }

    #[test]
    fn session_timeouts_outside_the_bounds_are_refused() {
        let config = GroupConfig::default();
        let mut g = Group::new("g", AssignorKind::Uniform);
        let asked = Heartbeat { session_timeout_ms: Some(50), ..Heartbeat::default() };
        let err = g.heartbeat(&config, asked, &counts, NOW).expect_err("too short");
        assert!(err.to_string().contains("1000..=300000"), "{err}");
        assert!(g.members.is_empty(), "nothing changed");
    }
}
