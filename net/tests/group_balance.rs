//! Consumer groups as their members live them, against a node in this
//! process: real `Consumer`s, each polled on its own thread, with a
//! rebalance listener that records every partition gained and given up.
//! After every join and leave the group is balanced, seen from the
//! members' callbacks and from the coordinator; no partition ever has two
//! holders on the callback timeline; a static member restarts without a
//! rebalance; and hostile requests get their error codes and leave the
//! group as it was.

use mamba_engine::EngineConfig;
use mamba_net::client::{
    block_on, Admin, ClientError, Connection, Consumer, ConsumerConfig, GroupOptions, Partitions,
    RebalanceListener,
};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::protocol::*;
use mamba_net::server::BrokerConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Partitions of every topic here: divisible by 1..=4 and 6, not by 5.
const PARTITIONS: u32 = 12;
/// Bound on every wait for the group to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

fn start(dir: &Path) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..BrokerConfig::default()
        },
    })
    .expect("start node")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Assigned,
    Revoked,
}

/// One callback: member `member` gained or gave up `partitions` at `at`.
#[derive(Debug, Clone)]
struct Event {
    member: usize,
    change: Change,
    partitions: BTreeSet<u32>,
    at: Instant,
}

/// Every member's callbacks, in the order they happened: each event takes
/// its instant under the lock, so the vector's order is the time order.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<Event>>>);

impl Timeline {
    fn record(&self, member: usize, change: Change, partitions: &Partitions) {
        let partitions: BTreeSet<u32> = partitions.values().flatten().copied().collect();
        let mut events = self.0.lock().expect("timeline");
        events.push(Event { member, change, partitions, at: Instant::now() });
    }

    fn events(&self) -> Vec<Event> {
        self.0.lock().expect("timeline").clone()
    }

    /// What each member holds now, by its own callbacks. Panics if a
    /// partition was ever assigned to one member before the member that
    /// held it had revoked it, naming both and when.
    fn holdings(&self, origin: Instant) -> BTreeMap<usize, BTreeSet<u32>> {
        let mut events = self.events();
        events.sort_by_key(|e| e.at);
        let mut holder: BTreeMap<u32, (usize, Instant)> = BTreeMap::new();
        let mut held: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
        let ms = |at: Instant| at.duration_since(origin).as_secs_f64() * 1e3;
        for e in &events {
            for &p in &e.partitions {
                match e.change {
                    Change::Assigned => {
                        if let Some((other, since)) = holder.get(&p) {
                            panic!(
                                "partition {p} assigned to member {} at {:.1} ms while member \
                                 {other} held it (since {:.1} ms)",
                                e.member,
                                ms(e.at),
                                ms(*since)
                            );
                        }
                        holder.insert(p, (e.member, e.at));
                        held.entry(e.member).or_default().insert(p);
                    }
                    Change::Revoked => {
                        let owner = holder.remove(&p).map(|(m, _)| m);
                        assert_eq!(
                            owner,
                            Some(e.member),
                            "member {} revoked partition {p} at {:.1} ms without holding it",
                            e.member,
                            ms(e.at)
                        );
                        held.entry(e.member).or_default().remove(&p);
                    }
                }
            }
        }
        held.retain(|_, ps| !ps.is_empty());
        held
    }
}

struct Recorder {
    member: usize,
    timeline: Timeline,
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.timeline.record(self.member, Change::Assigned, partitions);
    }
    fn on_revoked(&mut self, _: &mut Consumer, partitions: &Partitions) {
        self.timeline.record(self.member, Change::Revoked, partitions);
    }
}

fn options(group: &str, topic: &str, instance_id: Option<&str>) -> GroupOptions {
    GroupOptions {
        group_id: group.into(),
        topics: vec![topic.into()],
        instance_id: instance_id.map(str::to_string),
        assignor: None,
        session_timeout_ms: 0,
        client_id: "balance-test".into(),
    }
}

/// A subscribed consumer polling on its own thread until closed. Dropped
/// (a failed test), it stops and leaves all the same.
struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ClientError>>>,
}

impl Member {
    fn start(addr: &str, index: usize, options: GroupOptions, timeline: &Timeline) -> Member {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, timeline, stopped) = (addr.to_string(), timeline.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut consumer = Consumer::connect(&addr, ConsumerConfig::default())?;
            consumer.subscribe(options)?;
            consumer.set_rebalance_listener(Box::new(Recorder { member: index, timeline }))?;
            while !stopped.load(Ordering::Acquire) {
                consumer.poll(Duration::from_millis(50))?;
            }
            // `close` tells the listener of everything it gives up before
            // the leave goes out.
            consumer.close()
        });
        Member { stop, thread: Some(thread) }
    }

    /// Stops polling, leaves the group, and says how that went.
    fn close(mut self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take().expect("running");
        thread.join().expect("member thread").expect("the member polled and left cleanly");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            if let Err(e) = thread.join() {
                eprintln!("a member thread panicked: {e:?}");
            }
        }
    }
}

fn describe(admin: &Admin, group: &str) -> GroupDescription {
    let mut groups = block_on(admin.describe_groups(&[group.to_string()])).expect("describe");
    groups.pop().expect("one group")
}

fn counts_balanced(sets: &[BTreeSet<u32>]) -> bool {
    let counts = sets.iter().map(BTreeSet::len);
    counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0) <= 1
}

/// Waits until `members` hold the whole topic between them, balanced, by
/// their callbacks, and the coordinator says the same (stable, the same
/// partition sets). Returns the callbacks' view.
fn wait_balanced(
    admin: &Admin,
    timeline: &Timeline,
    origin: Instant,
    group: &str,
    members: &BTreeSet<usize>,
) -> BTreeMap<usize, BTreeSet<u32>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let held = timeline.holdings(origin);
        let described = describe(admin, group);
        let by_members: Vec<BTreeSet<u32>> =
            members.iter().map(|m| held.get(m).cloned().unwrap_or_default()).collect();
        let by_coordinator: Vec<BTreeSet<u32>> = described
            .members
            .iter()
            .map(|m| m.assignment.iter().flat_map(|t| t.partitions.iter().copied()).collect())
            .collect();
        let covered: BTreeSet<u32> = by_members.iter().flatten().copied().collect();
        let sorted = |mut sets: Vec<BTreeSet<u32>>| {
            sets.sort();
            sets
        };
        let settled = held.keys().all(|m| members.contains(m))
            && covered.len() == PARTITIONS as usize
            && counts_balanced(&by_members)
            && described.state == "stable"
            && sorted(by_members.clone()) == sorted(by_coordinator.clone());
        if settled {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: members {members:?} hold {held:?}; coordinator ({}): \
             {by_coordinator:?}",
            described.state
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_to_six_members_join_and_leave_one_by_one_balanced_and_never_sharing_a_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let addr = node.client_addr().expect("listening").to_string();
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("balanced", PARTITIONS, vec![])).expect("create");
    let timeline = Timeline::default();
    let origin = Instant::now();

    let mut members: Vec<Member> = Vec::new();
    let mut live = BTreeSet::new();
    for index in 0..6 {
        members.push(Member::start(&addr, index, options("six", "balanced", None), &timeline));
        live.insert(index);
        let held = wait_balanced(&admin, &timeline, origin, "six", &live);
        let counts: Vec<usize> = held.values().map(BTreeSet::len).collect();
        let each = PARTITIONS as usize / live.len();
        assert!(
            counts.iter().all(|c| *c == each || *c == each + 1),
            "{} members: {counts:?}",
            live.len()
        );
    }
    // Leave in the order they joined: the oldest (most moved) first.
    for (index, member) in members.drain(..).enumerate() {
        member.close();
        live.remove(&index);
        if live.is_empty() {
            break;
        }
        wait_balanced(&admin, &timeline, origin, "six", &live);
    }
    let last = describe(&admin, "six");
    assert_eq!((last.state.as_str(), last.members.len()), ("empty", 0));
    assert!(timeline.holdings(origin).is_empty(), "everything given up at the end");
    // Every partition moved at least once on the way: the check above
    // looked at real handovers, not at a group that never rebalanced.
    let handed: usize = timeline
        .events()
        .iter()
        .filter(|e| e.change == Change::Assigned)
        .map(|e| e.partitions.len())
        .sum();
    assert!(handed > PARTITIONS as usize * 2, "only {handed} partition handovers");
    node.stop().expect("stop");
}

#[test]
fn a_static_member_that_restarts_within_its_session_gets_its_partitions_back_without_a_rebalance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path());
    let addr = node.client_addr().expect("listening").to_string();
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("steady", PARTITIONS, vec![])).expect("create");
    let timeline = Timeline::default();
    let origin = Instant::now();

    let s = Member::start(&addr, 0, options("static", "steady", Some("reader-1")), &timeline);
    wait_balanced(&admin, &timeline, origin, "static", &BTreeSet::from([0]));
    let other = Member::start(&addr, 1, options("static", "steady", None), &timeline);
    let before = wait_balanced(&admin, &timeline, origin, "static", &BTreeSet::from([0, 1]));
    let epoch_before = describe(&admin, "static").group_epoch;
    let events_before = timeline.events().len();

    // The restart: the process closes, a new one with the same instance id
    // comes back well within the session (10 s).
    s.close();
    let away = describe(&admin, "static");
    assert_eq!(away.members.len(), 2, "a static member that left for a restart stays a member");
    let again = Member::start(&addr, 2, options("static", "steady", Some("reader-1")), &timeline);
    let after = wait_balanced(&admin, &timeline, origin, "static", &BTreeSet::from([1, 2]));

    assert_eq!(after[&2], before[&0], "the restarted member gets exactly its old partitions");
    assert_eq!(after[&1], before[&1], "the other member kept its partitions");
    let other_moves: Vec<Event> =
        timeline.events()[events_before..].iter().filter(|e| e.member == 1).cloned().collect();
    assert!(other_moves.is_empty(), "no rebalance reached the other member: {other_moves:?}");
    let described = describe(&admin, "static");
    assert_eq!(described.group_epoch, epoch_before, "the group epoch did not move");
    let returned = described
        .members
        .iter()
        .find(|m| m.instance_id.as_deref() == Some("reader-1"))
        .expect("the static member");
    let returned: BTreeSet<u32> =
        returned.assignment.iter().flat_map(|t| t.partitions.iter().copied()).collect();
    assert_eq!(returned, before[&0]);
    again.close();
    other.close();
    node.stop().expect("stop");
}

mod hostile {
    use super::*;

    fn call<R: Request, A: Message>(conn: &Connection, request: &R) -> A {
        block_on(conn.call::<_, A>(request, &[])).expect("the broker answers").0
    }

    fn heartbeat(conn: &Connection, request: &GroupHeartbeatRequest) -> GroupHeartbeatResponse {
        call(conn, request)
    }

    fn join_request(group: &str, topics: Vec<String>) -> GroupHeartbeatRequest {
        GroupHeartbeatRequest {
            group_id: group.into(),
            member_id: String::new(),
            member_epoch: 0,
            instance_id: None,
            client_id: "hostile-test".into(),
            subscribed_topics: Some(topics),
            assignor: None,
            owned: Some(vec![]),
            session_timeout_ms: 0,
            max_wait_ms: 0,
        }
    }

    fn commit_request(
        group: &str,
        member: &str,
        epoch: i32,
        topic: &str,
        p: u32,
    ) -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: group.into(),
            member_id: member.into(),
            member_epoch: epoch,
            offsets: vec![CommitOffset {
                topic: topic.into(),
                partition: p,
                offset: 1_000,
                metadata: String::new(),
            }],
        }
    }

    /// The commit's one partition result (or the whole request's code).
    fn commit_code(conn: &Connection, request: &OffsetCommitRequest) -> u16 {
        let answer: OffsetCommitResponse = call(conn, request);
        if answer.error_code != 0 {
            return answer.error_code;
        }
        answer.partitions[0].error_code
    }

    /// What a user sees of a group: members with ids, epochs and
    /// assignments, committed offsets, state and epoch.
    fn snapshot(conn: &Connection, group: &str) -> GroupDescription {
        let request = DescribeGroupsRequest { group_ids: vec![group.into()] };
        let mut answer: DescribeGroupsResponse = call(conn, &request);
        let mut g = answer.groups.pop().expect("one group");
        for o in &mut g.offsets {
            o.commit_ms = 0;
        }
        g
    }

    #[test]
    fn hostile_group_requests_get_their_error_codes_and_leave_the_group_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = start(dir.path());
        let addr = node.client_addr().expect("listening").to_string();
        let admin = Admin::connect(&addr).expect("admin");
        block_on(admin.create_topic("orders", 4, vec![])).expect("create");
        let conn = Connection::connect(&addr, Duration::from_secs(10)).expect("connect");

        // A well-behaved member holding every partition, with a commit.
        let joined = heartbeat(&conn, &join_request("app", vec!["orders".into()]));
        assert_eq!(joined.error_code, 0, "{}", joined.message);
        let (id, epoch) = (joined.member_id.clone(), joined.member_epoch);
        let owned = joined.assignment.clone();
        let settled = heartbeat(
            &conn,
            &GroupHeartbeatRequest {
                member_id: id.clone(),
                member_epoch: epoch,
                subscribed_topics: None,
                owned: Some(owned.clone()),
                ..join_request("app", vec![])
            },
        );
        assert_eq!(settled.error_code, 0, "{}", settled.message);
        let mut epoch = settled.member_epoch;
        assert_eq!(commit_code(&conn, &commit_request("app", &id, epoch, "orders", 0)), 0);
        let before = snapshot(&conn, "app");
        assert_eq!((before.state.as_str(), before.members.len()), ("stable", 1));

        let code = |c: ErrorCode| c.as_u16();
        let beat = |member: &str, member_epoch: i32| GroupHeartbeatRequest {
            member_id: member.into(),
            member_epoch,
            subscribed_topics: None,
            owned: Some(owned.clone()),
            ..join_request("app", vec![])
        };
        // Unknown member ids: heartbeat, leave, commit.
        for forged in ["app-999", "", "other-0", &"x".repeat(10_000)] {
            let answer = heartbeat(&conn, &beat(forged, 1));
            let expected = if forged.is_empty() {
                ErrorCode::InvalidRequest
            } else {
                ErrorCode::UnknownMemberId
            };
            assert_eq!(
                answer.error_code,
                code(expected),
                "member {forged:.20}: {}",
                answer.message
            );
        }
        assert_eq!(
            heartbeat(&conn, &beat("app-999", -1)).error_code,
            code(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            heartbeat(&conn, &beat("app-999", -2)).error_code,
            code(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            commit_code(&conn, &commit_request("app", "app-999", 1, "orders", 0)),
            code(ErrorCode::UnknownMemberId)
        );
        // Forged epochs of the real member.
        for forged in [epoch + 1, epoch + 1_000, i32::MAX] {
            let answer = heartbeat(&conn, &beat(&id, forged));
            assert_eq!(answer.error_code, code(ErrorCode::FencedMemberEpoch), "epoch {forged}");
            assert_eq!(
                commit_code(&conn, &commit_request("app", &id, forged, "orders", 1)),
                code(ErrorCode::FencedMemberEpoch),
                "commit at epoch {forged}"
            );
        }
        for meaningless in [-3, -7, i32::MIN] {
            let answer = heartbeat(&conn, &beat(&id, meaningless));
            assert_eq!(answer.error_code, code(ErrorCode::InvalidRequest), "epoch {meaningless}");
        }
        // Commits for what the member does not hold: a partition past the
        // topic's end, a topic that does not exist.
        for (topic, p) in [("orders", 99), ("nowhere", 0)] {
            assert_eq!(
                commit_code(&conn, &commit_request("app", &id, epoch, topic, p)),
                code(ErrorCode::NotAssigned),
                "{topic}/{p}"
            );
        }
        // Bad group ids, on every group API.
        let long = "g".repeat(256);
        for bad in [long.as_str(), "", "tab\there", "nul\0", "bell\u{7}", "del\u{7f}", "c1\u{85}"] {
            let shown = format!("{bad:?}");
            let answer = heartbeat(&conn, &join_request(bad, vec!["orders".into()]));
            assert_eq!(answer.error_code, code(ErrorCode::InvalidGroupId), "join {shown}");
            let commit = commit_request(bad, "", -1, "orders", 0);
            assert_eq!(
                commit_code(&conn, &commit),
                code(ErrorCode::InvalidGroupId),
                "commit {shown}"
            );
            let reset =
                ResetOffsetsRequest { group_id: bad.into(), offsets: commit.offsets.clone() };
            let answer: OffsetCommitResponse = call(&conn, &reset);
            assert_eq!(answer.error_code, code(ErrorCode::InvalidGroupId), "reset {shown}");
            let fetch = OffsetFetchRequest { group_id: bad.into(), partitions: None };
            let answer: OffsetFetchResponse = call(&conn, &fetch);
            assert_eq!(answer.error_code, code(ErrorCode::InvalidGroupId), "fetch {shown}");
            let described = snapshot(&conn, bad);
            assert_eq!(described.error_code, code(ErrorCode::InvalidGroupId), "describe {shown}");
            let delete = DeleteGroupsRequest { group_ids: vec![bad.into()] };
            let answer: DeleteGroupsResponse = call(&conn, &delete);
            assert_eq!(
                answer.results[0].error_code,
                code(ErrorCode::InvalidGroupId),
                "delete {shown}"
            );
        }
        // 255 bytes is a good id.
        let longest = "g".repeat(255);
        let answer = heartbeat(&conn, &join_request(&longest, vec!["orders".into()]));
        assert_eq!(answer.error_code, 0, "{}", answer.message);
        let leave = GroupHeartbeatRequest {
            member_id: answer.member_id,
            member_epoch: -1,
            ..join_request(&longest, vec![])
        };
        assert_eq!(heartbeat(&conn, &leave).error_code, 0);

        assert_eq!(snapshot(&conn, "app"), before, "the hostile requests changed nothing");

        // A member of unknown topics only joins, holds nothing, and takes
        // nothing from the real member; it leaves again.
        let stranger =
            heartbeat(&conn, &join_request("app", vec!["nowhere".into(), "nor-here".into()]));
        assert_eq!(stranger.error_code, 0, "{}", stranger.message);
        assert!(stranger.assignment.is_empty(), "{:?}", stranger.assignment);
        let still = heartbeat(&conn, &beat(&id, epoch));
        assert_eq!((still.error_code, &still.assignment), (0, &owned), "{}", still.message);
        epoch = still.member_epoch;
        let leave = GroupHeartbeatRequest {
            member_id: stranger.member_id,
            member_epoch: -1,
            ..join_request("app", vec![])
        };
        assert_eq!(heartbeat(&conn, &leave).error_code, 0);
        let still = heartbeat(&conn, &beat(&id, epoch));
        assert_eq!((still.error_code, &still.assignment), (0, &owned), "{}", still.message);
        epoch = still.member_epoch;
        let before = snapshot(&conn, "app");

        // A huge subscription: 100 000 topic names.
        let names: Vec<String> = (0..100_000).map(|i| format!("topic-{i:06}")).collect();
        let huge = heartbeat(&conn, &join_request("app", names));
        assert_eq!(huge.error_code, code(ErrorCode::InvalidRequest), "{}", huge.message);

        // The group is as it was, and its member goes on.
        let after = snapshot(&conn, "app");
        assert_eq!(after.members, before.members, "members, epochs and assignments unchanged");
        assert_eq!(after.group_epoch, before.group_epoch);
        assert_eq!(after.offsets, before.offsets, "committed offsets unchanged");
        assert_eq!(after.state, before.state);
        let still = heartbeat(&conn, &beat(&id, epoch));
        assert_eq!((still.error_code, &still.assignment), (0, &owned), "{}", still.message);
        assert_eq!(commit_code(&conn, &commit_request("app", &id, epoch, "orders", 2)), 0);
        node.stop().expect("stop");
    }
}
