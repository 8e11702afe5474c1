//! Group state as records of the internal `__consumer_offsets` log, so it
//! survives restarts (and, once partitions replicate, fails over with
//! them). Records are keyed: the last record of a key wins, and a record
//! without a value deletes its key (a tombstone), so compaction may keep
//! only each key's last record.
//!
//! Keys are text, fields separated by NUL (group ids, topic names and
//! member ids never contain control characters): `g␀GROUP` (the group's
//! epoch, assignor and member counter), `m␀GROUP␀MEMBER` (a member and its
//! assignment), `o␀GROUP␀TOPIC␀PARTITION` (a committed offset). Values are
//! rkyv archives, validated when read.
//!
//! A coordinator writes `Group::changes` after each change and rebuilds
//! its groups with `replay` when its shard opens.

use super::assignor::{Assignment, AssignorKind, MemberId};
use super::coordinator::{Group, Member, TopicPartition};
use super::offsets::CommittedOffset;
use std::collections::BTreeMap;

/// One record: its key and value bytes; `None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group record {key:?}: {reason}")]
pub struct RecordError {
    pub key: String,
    pub reason: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct GroupValue {
    assignor: String,
    epoch: i32,
    next_member_number: u64,
    /// The partition counts the target was computed for: a restart must
    /// not look like a topic that grew.
    partition_counts: Vec<(String, u32)>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct MemberValue {
    instance_id: Option<String>,
    client_id: String,
    host: String,
    subscribed_topics: Vec<String>,
    session_timeout_ms: u64,
    epoch: i32,
    previous_epoch: i32,
    target: Vec<(String, Vec<u32>)>,
    assigned: Vec<(String, Vec<u32>)>,
    revoking: Vec<(String, Vec<u32>)>,
    away: bool,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
struct OffsetValue {
    offset: u64,
    metadata: String,
    commit_ms: i64,
}

const SEPARATOR: char = '\0';

pub fn group_key(group: &str) -> Vec<u8> {
    format!("g{SEPARATOR}{group}").into_bytes()
}

pub fn member_key(group: &str, member: &MemberId) -> Vec<u8> {
    format!("m{SEPARATOR}{group}{SEPARATOR}{member}").into_bytes()
}

pub fn offset_key(group: &str, (topic, partition): &TopicPartition) -> Vec<u8> {
    format!("o{SEPARATOR}{group}{SEPARATOR}{topic}{SEPARATOR}{partition}").into_bytes()
}

/// The group a record belongs to, from its key alone: the log partition
/// of a group is chosen by it.
pub fn group_of(key: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(key).ok()?;
    text.split(SEPARATOR).nth(1)
}

fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    // Encoding owned strings and vectors into memory cannot fail.
    rkyv::to_bytes::<rkyv::rancor::Error>(value).map(|b| b.to_vec()).unwrap_or_default()
}

fn listed(a: &Assignment) -> Vec<(String, Vec<u32>)> {
    a.iter().map(|(t, ps)| (t.clone(), ps.iter().copied().collect())).collect()
}

fn unlisted(v: &[(String, Vec<u32>)]) -> Assignment {
    v.iter().map(|(t, ps)| (t.clone(), ps.iter().copied().collect())).collect()
}

/// The records that describe `group`'s membership (not its offsets).
pub(crate) fn membership_records(group: &Group) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut records = BTreeMap::new();
    let value = GroupValue {
        assignor: group.assignor.name().to_string(),
        epoch: group.epoch,
        next_member_number: group.next_member_number(),
        partition_counts: group.partition_counts().iter().map(|(t, n)| (t.clone(), *n)).collect(),
    };
    records.insert(group_key(&group.id), encode(&value));
    for m in group.members.values() {
        let value = MemberValue {
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.host.clone(),
            subscribed_topics: m.subscribed_topics.iter().cloned().collect(),
            session_timeout_ms: m.session_timeout_ms,
            epoch: m.epoch,
            previous_epoch: m.previous_epoch,
            target: listed(&m.target),
            assigned: listed(&m.assigned),
            revoking: listed(&m.revoking),
            away: m.away,
        };
        records.insert(member_key(&group.id, &m.id), encode(&value));
    }
    records
}

pub(crate) fn offset_record(
    group: &str,
    tp: &TopicPartition,
    c: Option<&CommittedOffset>,
) -> GroupRecord {
    let value = c.map(|c| {
        encode(&OffsetValue {
            offset: c.offset,
            metadata: c.metadata.clone(),
            commit_ms: c.commit_ms,
        })
    });
    GroupRecord { key: offset_key(group, tp), value }
}

/// Every live record of `group`: membership, then committed offsets. What
/// a compaction writes again so that older records can go.
pub(crate) fn snapshot(group: &Group) -> Vec<GroupRecord> {
    let mut out: Vec<GroupRecord> = membership_records(group)
        .into_iter()
        .map(|(key, value)| GroupRecord { key, value: Some(value) })
        .collect();
    out.extend(group.offsets.iter().map(|(tp, c)| offset_record(&group.id, tp, Some(c))));
    out
}

fn decode<T>(key: &str, bytes: &[u8]) -> Result<T, RecordError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
            rkyv::api::high::HighValidator<'a, rkyv::rancor::BoxedError>,
        > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::BoxedError>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::BoxedError>(&aligned)
        .map_err(|e| RecordError { key: key.to_string(), reason: e.to_string() })
}

/// Rebuilds groups from their records, in log order. Members get a fresh
/// session from `now_ms` (their clients heartbeat again or time out).
pub fn replay(
    records: impl IntoIterator<Item = GroupRecord>,
    now_ms: i64,
) -> Result<BTreeMap<String, Group>, RecordError> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for record in records {
        let key = String::from_utf8(record.key.clone()).map_err(|_| RecordError {
            key: String::from_utf8_lossy(&record.key).into_owned(),
            reason: "the key is not UTF-8".into(),
        })?;
        let bad = |reason: &str| RecordError { key: key.clone(), reason: reason.to_string() };
        let fields: Vec<&str> = key.split(SEPARATOR).collect();
        match (fields.as_slice(), &record.value) {
            (["g", group], None) => {
                groups.remove(*group);
            }
            (["g", group], Some(bytes)) => {
                let v: GroupValue = decode(&key, bytes)?;
                let assignor: AssignorKind = v.assignor.parse().map_err(|e: String| bad(&e))?;
                let g =
                    groups.entry(group.to_string()).or_insert_with(|| Group::new(group, assignor));
                g.assignor = assignor;
                g.epoch = v.epoch;
                g.set_next_member_number(v.next_member_number);
                g.set_partition_counts(v.partition_counts.into_iter().collect());
            }
            // A tombstone of a group not (or no longer) known: a replay
            // from after a compaction starts in the middle of history.
            (["m", group, _] | ["o", group, _, _], None) if !groups.contains_key(*group) => {}
            (["m", group, member], value) => {
                let g = groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, AssignorKind::default()));
                let id = MemberId(member.to_string());
                match value {
                    None => g.restore_member_removed(&id),
                    Some(bytes) => {
                        let v: MemberValue = decode(&key, bytes)?;
                        let member = Member {
                            id: id.clone(),
                            instance_id: v.instance_id,
                            client_id: v.client_id,
                            host: v.host,
                            subscribed_topics: v.subscribed_topics.into_iter().collect(),
                            session_timeout_ms: v.session_timeout_ms,
                            epoch: v.epoch,
                            previous_epoch: v.previous_epoch,
                            target: unlisted(&v.target),
                            assigned: unlisted(&v.assigned),
                            revoking: unlisted(&v.revoking),
                            deadline_ms: now_ms.saturating_add(
                                i64::try_from(v.session_timeout_ms).unwrap_or(i64::MAX),
                            ),
                            away: v.away,
                        };
                        g.restore_member(member);
                    }
                }
            }
            (["o", group, topic, partition], value) => {
                let partition: u32 =
                    partition.parse().map_err(|_| bad("the partition is not a number"))?;
                let g = groups
                    .entry(group.to_string())
                    .or_insert_with(|| Group::new(group, AssignorKind::default()));
                let tp = (topic.to_string(), partition);
                match value {
                    None => {
                        g.offsets.remove(&tp);
                    }
                    Some(bytes) => {
                        let v: OffsetValue = decode(&key, bytes)?;
                        let committed = CommittedOffset {
                            offset: v.offset,
                            metadata: v.metadata,
                            commit_ms: v.commit_ms,
                        };
                        g.offsets.put(tp, committed).map_err(|e| bad(&e))?;
                    }
                }
            }
            _ => return Err(bad("not a group, member or offset key")),
        }
    }
    for g in groups.values_mut() {
        g.mark_persisted();
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::coordinator::{GroupConfig, Heartbeat};
    use std::collections::BTreeSet;

    const NOW: i64 = 1_000_000;

    fn counts(topic: &str) -> Option<u32> {
        (topic == "orders").then_some(6)
    }

    fn join(g: &mut Group, instance: Option<&str>) -> (MemberId, i32) {
        let request = Heartbeat {
            instance_id: instance.map(str::to_string),
            subscribed_topics: Some(BTreeSet::from(["orders".to_string()])),
            ..Heartbeat::default()
        };
        let answer = g
            .heartbeat(&GroupConfig::default(), request, &counts, NOW)
            .expect("join")
            .expect("answer");
        (answer.member_id, answer.member_epoch)
    }

    fn beat(g: &mut Group, id: &MemberId, epoch: i32, owned: Assignment) -> (i32, Assignment) {
        let request = Heartbeat {
            member_id: Some(id.clone()),
            member_epoch: epoch,
            owned: Some(owned),
            ..Heartbeat::default()
        };
        let answer = g
            .heartbeat(&GroupConfig::default(), request, &counts, NOW)
            .expect("heartbeat")
            .expect("answer");
        (answer.member_epoch, answer.assignment)
    }

    type Durable = (BTreeMap<Vec<u8>, Vec<u8>>, Vec<(TopicPartition, CommittedOffset)>);

    /// The state a replay must reproduce (deadlines restart on replay).
    fn durable(g: &Group) -> Durable {
        (membership_records(g), g.offsets.iter().map(|(tp, c)| (tp.clone(), c.clone())).collect())
    }

    #[test]
    fn replaying_the_changes_rebuilds_members_assignments_and_offsets() {
        let mut g = Group::new("app", AssignorKind::Uniform);
        let mut log = Vec::new();
        let (a, a_epoch) = join(&mut g, None);
        log.extend(g.changes());
        let (a_epoch, a_owned) = beat(&mut g, &a, a_epoch, Assignment::new());
        let (b, b_epoch) = join(&mut g, Some("pod-2"));
        log.extend(g.changes());
        // a gives up half, b takes it.
        let (a_epoch, a_owned) = beat(&mut g, &a, a_epoch, a_owned);
        let (a_epoch, a_owned) = beat(&mut g, &a, a_epoch, a_owned);
        let (_, b_owned) = beat(&mut g, &b, b_epoch, Assignment::new());
        log.extend(g.changes());
        let tp = ("orders".to_string(), *a_owned["orders"].iter().next().expect("a holds one"));
        let outcomes = g.commit(Some((&a, a_epoch)), vec![(tp.clone(), 99, "m".into())], NOW);
        assert!(outcomes[0].1.is_ok());
        log.extend(g.changes());
        assert!(!b_owned.is_empty());

        let groups = replay(log.clone(), NOW + 5).expect("replay");
        let rebuilt = &groups["app"];
        assert_eq!(durable(rebuilt), durable(&g));
        assert_eq!(rebuilt.owner(&tp), Some(&a), "owners are rebuilt");
        // Its members go on where they were.
        let mut rebuilt = rebuilt.clone();
        assert_eq!(beat(&mut rebuilt, &a, a_epoch, a_owned.clone()), (a_epoch, a_owned));
        assert!(rebuilt.changes().is_empty(), "nothing new to write after a replay");

        // A leave writes a tombstone; deleting writes one per key.
        let leave = Heartbeat { member_id: Some(b), member_epoch: -1, ..Heartbeat::default() };
        assert_eq!(g.heartbeat(&GroupConfig::default(), leave, &counts, NOW), Ok(None));
        log.extend(g.changes());
        assert_eq!(durable(&replay(log.clone(), NOW).expect("replay")["app"]), durable(&g));
        log.extend(g.deletion());
        assert!(replay(log, NOW).expect("replay").is_empty(), "a deleted group is gone");
    }

    #[test]
    fn damaged_records_are_errors_naming_the_key_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let key = match rng.u8(0..4) {
                0 => group_key("g"),
                1 => member_key("g", &MemberId("g-1".into())),
                2 => offset_key("g", &("t".into(), 3)),
                _ => (0..rng.usize(0..20)).map(|_| rng.u8(..)).collect(),
            };
            let value: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            // An error or a group, never a panic.
            if let Err(e) = replay([GroupRecord { key, value: Some(value) }], NOW) {
                assert!(!e.reason.is_empty());
            }
        }
        let e = replay([GroupRecord { key: b"x\0g".to_vec(), value: None }], NOW).expect_err("bad");
        assert!(e.to_string().contains("not a group, member or offset key"), "{e}");
        assert_eq!(group_of(&offset_key("payments", &("t".into(), 1))), Some("payments"));
    }

    #[test]
    fn a_replay_from_any_point_before_a_snapshot_rebuilds_the_same_groups() {
        // History: two groups; members join, take and give up partitions,
        // commit; one group is deleted.
        let mut g = Group::new("app", AssignorKind::Uniform);
        let mut other = Group::new("gone", AssignorKind::Range);
        let mut log = Vec::new();
        let (a, a_epoch) = join(&mut g, None);
        log.extend(g.changes());
        let (a_epoch, a_owned) = beat(&mut g, &a, a_epoch, Assignment::new());
        log.extend(g.changes());
        let (o, _) = join(&mut other, None);
        log.extend(other.changes());
        for offset in 0..20 {
            let tp = ("orders".to_string(), offset % 3);
            let _ =
                g.commit(Some((&a, a_epoch)), vec![(tp, u64::from(offset), String::new())], NOW);
            log.extend(g.changes());
        }
        let (b, b_epoch) = join(&mut g, None);
        log.extend(g.changes());
        let (a_epoch, a_owned) = beat(&mut g, &a, a_epoch, a_owned);
        let (_, a_owned) = beat(&mut g, &a, a_epoch, a_owned);
        let (_, b_owned) = beat(&mut g, &b, b_epoch, Assignment::new());
        log.extend(g.changes());
        assert!(!a_owned.is_empty() && !b_owned.is_empty());
        log.extend(other.deletion());
        let _ = o;

        // The snapshot of the live state goes after all of it, then more
        // history follows.
        let snapshot_at = log.len();
        log.extend(snapshot(&g));
        let leave = Heartbeat { member_id: Some(b), member_epoch: -1, ..Heartbeat::default() };
        assert_eq!(g.heartbeat(&GroupConfig::default(), leave, &counts, NOW), Ok(None));
        log.extend(g.changes());

        let whole = replay(log.clone(), NOW).expect("replay");
        assert_eq!(whole.keys().collect::<Vec<_>>(), ["app"]);
        for start in 0..=snapshot_at {
            let from_here = replay(log[start..].to_vec(), NOW)
                .unwrap_or_else(|e| panic!("replay from record {start}: {e}"));
            assert_eq!(from_here.keys().collect::<Vec<_>>(), ["app"], "from record {start}");
            assert_eq!(durable(&from_here["app"]), durable(&whole["app"]), "from record {start}");
        }
    }
}
