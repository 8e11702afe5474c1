//! Metadata-quorum nodes end to end: each on its own engine in a temporary
//! directory, messages delivered in memory by the test, deterministically.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use mamba_engine::{block_on, Engine, EngineConfig};
use mamba_net::cluster::raft_node::{
    ProposeError, RaftNode, RaftNodeConfig, StateMachine, Transport,
};
use raft::eraftpb::{ConfChange, ConfChangeType, Message};

/// The state machine of the tests: every applied entry, in order.
#[derive(Default)]
struct AppliedLog {
    entries: Vec<(u64, Vec<u8>)>,
}

impl StateMachine for AppliedLog {
    fn apply(&mut self, index: u64, data: &[u8]) {
        self.entries.push((index, data.to_vec()));
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, data) in &self.entries {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }
    fn restore(&mut self, mut bytes: &[u8]) {
        self.entries.clear();
        while !bytes.is_empty() {
            let index = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
            self.entries.push((index, bytes[12..12 + len].to_vec()));
            bytes = &bytes[12 + len..];
        }
    }
}

impl AppliedLog {
    fn data(&self) -> Vec<String> {
        self.entries.iter().map(|(_, d)| String::from_utf8_lossy(d).into_owned()).collect()
    }
}

/// Messages in flight, shared by every node of a test.
#[derive(Clone, Default)]
struct Network {
    in_flight: Rc<RefCell<VecDeque<Message>>>,
}

impl Transport for Network {
    fn send(&self, to: u64, message: Message) {
        assert_eq!(to, message.to);
        self.in_flight.borrow_mut().push_back(message);
    }
}

type Node = RaftNode<Network, AppliedLog>;

struct Member {
    dir: tempfile::TempDir,
    engine: Engine,
    node: Option<Node>,
}

fn config(id: u64, voters: &[u64], snapshot_entries_max: u64) -> RaftNodeConfig {
    RaftNodeConfig {
        id,
        voters_initial: voters.to_vec(),
        election_ticks: 10,
        heartbeat_ticks: 2,
        snapshot_entries_max,
    }
}

fn open_engine(dir: &std::path::Path) -> Engine {
    Engine::open(
        dir,
        EngineConfig { shards: Some(1), pin_shards: false, ..EngineConfig::default() },
    )
    .expect("engine opens")
}

struct Cluster {
    network: Network,
    members: Vec<Member>,
    voters: Vec<u64>,
    snapshot_entries_max: u64,
}

impl Cluster {
    fn new(size: u64, snapshot_entries_max: u64) -> Cluster {
        let network = Network::default();
        let voters: Vec<u64> = (1..=size).collect();
        let members = voters
            .iter()
            .map(|&id| {
                let dir = tempfile::tempdir().expect("tempdir");
                let engine = open_engine(dir.path());
                let node = block_on(Node::open(
                    engine.clone(),
                    &config(id, &voters, snapshot_entries_max),
                    network.clone(),
                    AppliedLog::default(),
                ))
                .expect("node opens");
                Member { dir, engine, node: Some(node) }
            })
            .collect();
        Cluster { network, members, voters, snapshot_entries_max }
    }

    fn node(&self, id: u64) -> &Node {
        self.members[(id - 1) as usize].node.as_ref().expect("node is up")
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.members[(id - 1) as usize].node.as_mut().expect("node is up")
    }

    /// Delivers every message in flight (dropping those to stopped nodes)
    /// and lets every node handle its Ready, until the network is quiet.
    fn settle(&mut self) {
        for _round in 0..1000 {
            for member in &mut self.members {
                if let Some(node) = member.node.as_mut() {
                    block_on(node.handle_ready()).expect("ready handled");
                }
            }
            let in_flight: Vec<Message> = self.network.in_flight.borrow_mut().drain(..).collect();
            if in_flight.is_empty() {
                return;
            }
            for message in in_flight {
                if let Some(node) = self.members[(message.to - 1) as usize].node.as_mut() {
                    node.step(message).expect("message stepped");
                }
            }
        }
        panic!("the network never went quiet");
    }

    fn tick_all(&mut self) {
        for member in &mut self.members {
            if let Some(node) = member.node.as_mut() {
                node.tick();
            }
        }
        self.settle();
    }

    /// Ticks until some node leads; bounded by ticks, not time.
    fn elect(&mut self) -> u64 {
        for _tick in 0..200 {
            self.tick_all();
            let leaders: Vec<u64> = self
                .members
                .iter()
                .filter_map(|m| m.node.as_ref())
                .filter(|n| n.is_leader())
                .map(|n| n.id())
                .collect();
            assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
            if let Some(&leader) = leaders.first() {
                return leader;
            }
        }
        panic!("no leader after 200 ticks");
    }

    fn propose(&mut self, leader: u64, data: &str) -> u64 {
        let answer = self.node_mut(leader).propose(data.as_bytes().to_vec());
        self.settle();
        block_on(answer).expect("committed")
    }

    fn stop(&mut self, id: u64) {
        self.members[(id - 1) as usize].node = None;
        // What was in flight to it is lost, as on a real network.
        self.network.in_flight.borrow_mut().retain(|m| m.to != id);
    }

    /// Starts node `id` (the next one) on an empty store that names no
    /// voters: a broker joining through seeds, before it is added.
    fn join(&mut self, id: u64) {
        assert_eq!(id as usize, self.members.len() + 1, "members are numbered in order");
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open_engine(dir.path());
        let node = block_on(Node::open(
            engine.clone(),
            &config(id, &[], self.snapshot_entries_max),
            self.network.clone(),
            AppliedLog::default(),
        ))
        .expect("node opens");
        self.members.push(Member { dir, engine, node: Some(node) });
    }

    fn restart(&mut self, id: u64) {
        let member = &mut self.members[(id - 1) as usize];
        assert!(member.node.is_none(), "stopped first");
        member.engine.close().expect("engine closes");
        member.engine = open_engine(member.dir.path());
        let node = block_on(Node::open(
            member.engine.clone(),
            &config(id, &self.voters, self.snapshot_entries_max),
            self.network.clone(),
            AppliedLog::default(),
        ))
        .expect("node reopens");
        member.node = Some(node);
    }
}

#[test]
fn single_voter_elects_itself_and_applies_proposals_in_order() {
    let mut cluster = Cluster::new(1, 1000);
    assert_eq!(cluster.elect(), 1);
    let indexes: Vec<u64> = ["a", "b", "c"].iter().map(|d| cluster.propose(1, d)).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "increasing indexes: {indexes:?}");
    assert_eq!(cluster.node(1).state_machine().data(), ["a", "b", "c"]);
    let applied: Vec<u64> = cluster.node(1).state_machine().entries.iter().map(|e| e.0).collect();
    assert_eq!(applied, indexes, "each proposal answered with the index it was applied at");

    // After a restart the node replays its log into a fresh state machine.
    cluster.stop(1);
    cluster.restart(1);
    assert_eq!(cluster.elect(), 1);
    cluster.propose(1, "d");
    assert_eq!(cluster.node(1).state_machine().data(), ["a", "b", "c", "d"]);
}

#[test]
fn three_nodes_elect_one_leader_replicate_and_a_restarted_follower_catches_up() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.elect();
    for i in 0..5 {
        cluster.propose(leader, &format!("m{i}"));
    }
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    cluster.tick_all(); // a heartbeat carries the commit index to followers
    for id in 1..=3 {
        assert_eq!(cluster.node(id).state_machine().data(), expected, "node {id}");
    }

    let follower = if leader == 1 { 2 } else { 1 };
    let not_leader = cluster.node_mut(follower).propose(b"x".to_vec());
    assert_eq!(block_on(not_leader), Err(ProposeError::NotLeader { leader_hint: Some(leader) }));

    cluster.stop(follower);
    let mut expected = expected;
    for i in 5..10 {
        cluster.propose(leader, &format!("m{i}"));
        expected.push(format!("m{i}"));
    }
    cluster.restart(follower);
    for _ in 0..5 {
        cluster.tick_all();
    }
    assert_eq!(
        cluster.node(follower).state_machine().data(),
        expected,
        "caught up from disk + leader"
    );
    assert!(cluster.node(leader).is_leader(), "a returning follower does not disrupt the leader");
}

#[test]
fn a_node_far_behind_is_sent_a_snapshot() {
    let mut cluster = Cluster::new(3, 10);
    let leader = cluster.elect();
    let lagging = if leader == 3 { 2 } else { 3 };
    cluster.stop(lagging);
    let mut expected = Vec::new();
    for i in 0..40 {
        cluster.propose(leader, &format!("m{i}"));
        expected.push(format!("m{i}"));
    }
    // The leader no longer has the entries the lagging node misses, so
    // only a snapshot can bring it up to date.
    assert!(cluster.node(leader).snapshot_index() >= 30, "the leader compacted its log");
    cluster.restart(lagging);
    for _ in 0..5 {
        cluster.tick_all();
    }
    let node = cluster.node(lagging);
    assert!(node.snapshot_index() >= 30, "it installed a snapshot, not the entries one by one");
    assert_eq!(node.state_machine().data(), expected);

    // Restarted again, it loads the installed snapshot from its own disk.
    cluster.stop(lagging);
    cluster.restart(lagging);
    let node = cluster.node(lagging);
    assert!(node.snapshot_index() >= 30);
    assert!(node.state_machine().data().len() >= 30, "state restored from the local snapshot");
}

#[test]
fn a_node_joining_with_an_empty_store_gets_the_configuration_by_snapshot_and_follows() {
    let mut cluster = Cluster::new(3, 1000);
    let leader = cluster.elect();
    let mut expected = Vec::new();
    for i in 0..5 {
        cluster.propose(leader, &format!("m{i}"));
        expected.push(format!("m{i}"));
    }
    cluster.join(4);
    let change = ConfChange {
        change_type: ConfChangeType::AddLearnerNode,
        node_id: 4,
        ..Default::default()
    };
    let added = cluster.node_mut(leader).propose_conf_change(change);
    cluster.settle();
    block_on(added).expect("the learner is added");
    for _ in 0..5 {
        cluster.tick_all();
    }
    let learner = cluster.node(4);
    assert_eq!(learner.conf_state().voters, [1, 2, 3], "the voters, from the leader's snapshot");
    assert_eq!(learner.conf_state().learners, [4]);
    assert_eq!(learner.state_machine().data(), expected, "everything applied before it joined");

    cluster.propose(leader, "after");
    expected.push("after".into());
    cluster.tick_all();
    assert_eq!(cluster.node(4).state_machine().data(), expected, "and what comes after");
    assert!(!cluster.node(4).is_leader() && cluster.node(leader).is_leader());

    // Restarted, it follows on from its own disk.
    cluster.stop(4);
    cluster.restart(4);
    cluster.propose(leader, "later");
    expected.push("later".into());
    for _ in 0..3 {
        cluster.tick_all();
    }
    assert_eq!(cluster.node(4).state_machine().data(), expected);
}
