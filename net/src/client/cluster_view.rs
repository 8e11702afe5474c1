//! What a client knows of the cluster from one metadata answer: the
//! brokers and the address each is reached at, and every partition's
//! leader. Pure: built from a [`MetadataResponse`], asked without I/O, so
//! the routing decisions are tested from data.

use crate::protocol::{BrokerMeta, ErrorCode, MetadataResponse, TopicMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Which topics a metadata request asked about: an answer says nothing of
/// the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Every topic (`MetadataRequest { topics: None }`).
    All,
    Topics(BTreeSet<String>),
}

impl Asked {
    fn covers(&self, topic: &str) -> bool {
        match self {
            Asked::All => true,
            Asked::Topics(topics) => topics.contains(topic),
        }
    }
}

/// Where a partition's produce, fetch and list-offsets requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// To its leader, at this address.
    Leader { node_id: u32, addr: &'a str },
    /// Nowhere for now: the partition is offline (no in-sync replica
    /// alive), or its leader is not among the brokers listed. Wait for a
    /// newer view.
    NoLeader,
    /// The cluster has no such topic or partition (as of this view).
    Unknown,
    /// The view was not asked about the topic: refresh with it.
    NotAsked,
}

/// One metadata answer, indexed. Lifecycle: immutable once built; a
/// refresh builds a new one (`Router` swaps it in whole, so a reader
/// never sees half of two answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    cluster_id: String,
    controller_id: Option<u32>,
    brokers: BTreeMap<u32, BrokerMeta>,
    /// `host:port` of each broker, as a client connects to it.
    addresses: BTreeMap<u32, String>,
    topics: BTreeMap<String, TopicMeta>,
    asked: Asked,
}

impl ClusterView {
    /// The view of `answer`, the reply to a request for `asked`, received
    /// from a broker at `answered_by`: a broker that advertises an
    /// unspecified host (`0.0.0.0`, `::`: it listens on every interface
    /// and did not say which one clients use) is reached at that IP.
    pub fn new(answer: MetadataResponse, asked: Asked, answered_by: IpAddr) -> ClusterView {
        let addresses = answer
            .brokers
            .iter()
            .map(|b| (b.node_id, broker_address(&b.host, b.port, answered_by)))
            .collect();
        ClusterView {
            cluster_id: answer.cluster_id,
            controller_id: answer.controller_id,
            brokers: answer.brokers.into_iter().map(|b| (b.node_id, b)).collect(),
            addresses,
            topics: answer.topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
            asked,
        }
    }

    /// A view that knows nothing: every route is `NotAsked`.
    pub fn empty() -> ClusterView {
        ClusterView {
            cluster_id: String::new(),
            controller_id: None,
            brokers: BTreeMap::new(),
            addresses: BTreeMap::new(),
            topics: BTreeMap::new(),
            asked: Asked::Topics(BTreeSet::new()),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The broker that leads the metadata quorum, when known.
    pub fn controller_id(&self) -> Option<u32> {
        self.controller_id
    }

    /// Every registered broker, by node id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: u32) -> Option<&BrokerMeta> {
        self.brokers.get(&node_id)
    }

    /// Where a client connects to `node_id` (`host:port`).
    pub fn broker_address(&self, node_id: u32) -> Option<&str> {
        self.addresses.get(&node_id).map(String::as_str)
    }

    /// The topics of the answer, by name, with their partitions (leader,
    /// leader epoch, replicas, in-sync replicas) or their error.
    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// A topic the cluster has (`Ok(None)`: the view was not asked about
    /// it; `Err`: the broker's error for it, e.g. unknown).
    pub fn topic(&self, name: &str) -> Result<Option<&TopicMeta>, ErrorCode> {
        match self.topics.get(name) {
            Some(t) if t.error_code == 0 && !t.partitions.is_empty() => Ok(Some(t)),
            Some(t) if t.error_code == 0 => Err(ErrorCode::UnknownTopicOrPartition),
            Some(t) => Err(ErrorCode::from_u16(t.error_code)),
            None if self.asked.covers(name) => Err(ErrorCode::UnknownTopicOrPartition),
            None => Ok(None),
        }
    }

    /// Where `partition` of `topic` is served.
    pub fn route(&self, topic: &str, partition: u32) -> Route<'_> {
        let t = match self.topic(topic) {
            Ok(Some(t)) => t,
            Ok(None) => return Route::NotAsked,
            Err(_) => return Route::Unknown,
        };
        // Partitions are listed in order, so the index finds one at once.
        let listed = t.partitions.get(partition as usize).filter(|p| p.partition == partition);
        let Some(p) = listed.or_else(|| t.partitions.iter().find(|p| p.partition == partition))
        else {
            return Route::Unknown;
        };
        match p.leader.and_then(|node_id| Some((node_id, self.broker_address(node_id)?))) {
            Some((node_id, addr)) => Route::Leader { node_id, addr },
            None => Route::NoLeader,
        }
    }

    /// Whether the answer asked about `topic` (whatever it said).
    pub fn asked_about(&self, topic: &str) -> bool {
        self.asked.covers(topic)
    }
}

/// `host:port` for a broker's advertised host and port; an unspecified
/// host becomes `answered_by` (see [`ClusterView::new`]), and IPv6
/// literals get their brackets.
pub fn broker_address(host: &str, port: u16, answered_by: IpAddr) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => socket_address(answered_by, port),
        Ok(ip) => socket_address(ip, port),
        Err(_) => format!("{host}:{port}"),
    }
}

fn socket_address(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PartitionMeta;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn broker(node_id: u32, host: &str, port: u16) -> BrokerMeta {
        BrokerMeta {
            node_id,
            host: host.into(),
            port,
            shards: 0,
            rack: None,
            status: "alive".into(),
        }
    }

    fn partition(partition: u32, leader: Option<u32>) -> PartitionMeta {
        PartitionMeta {
            partition,
            leader,
            leader_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            target_replicas: vec![],
            shard: None,
        }
    }

    /// Three brokers; `orders` has a partition led by each and one offline.
    fn three_brokers() -> MetadataResponse {
        MetadataResponse {
            cluster_id: "c".into(),
            controller_id: Some(2),
            brokers: vec![
                broker(1, "10.0.0.1", 9400),
                broker(2, "broker-2.example", 9400),
                broker(3, "::1", 9500),
            ],
            topics: vec![
                TopicMeta {
                    name: "orders".into(),
                    error_code: 0,
                    partitions: vec![
                        partition(0, Some(1)),
                        partition(1, Some(2)),
                        partition(2, Some(3)),
                        partition(3, None),
                        partition(4, Some(9)),
                    ],
                },
                TopicMeta {
                    name: "gone".into(),
                    error_code: ErrorCode::UnknownTopicOrPartition.as_u16(),
                    partitions: vec![],
                },
            ],
        }
    }

    #[test]
    fn each_partition_routes_to_its_leaders_address() {
        let asked = Asked::Topics(["orders".to_string(), "gone".to_string()].into());
        let view = ClusterView::new(three_brokers(), asked, LOOPBACK);
        assert_eq!(view.route("orders", 0), Route::Leader { node_id: 1, addr: "10.0.0.1:9400" });
        assert_eq!(
            view.route("orders", 1),
            Route::Leader { node_id: 2, addr: "broker-2.example:9400" }
        );
        assert_eq!(view.route("orders", 2), Route::Leader { node_id: 3, addr: "[::1]:9500" });
        assert_eq!(view.controller_id(), Some(2));
        assert_eq!(view.brokers().map(|b| b.node_id).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn an_offline_partition_or_an_unlisted_leader_has_no_route_yet() {
        let view = ClusterView::new(three_brokers(), Asked::All, LOOPBACK);
        assert_eq!(view.route("orders", 3), Route::NoLeader, "leader none: offline");
        assert_eq!(view.route("orders", 4), Route::NoLeader, "leader 9 is not a broker listed");
    }

    #[test]
    fn unknown_topics_and_partitions_differ_from_topics_not_asked_about() {
        let asked = Asked::Topics(["orders".to_string(), "gone".to_string()].into());
        let view = ClusterView::new(three_brokers(), asked, LOOPBACK);
        assert_eq!(view.route("orders", 5), Route::Unknown, "no partition 5");
        assert_eq!(view.route("gone", 0), Route::Unknown, "the broker said unknown");
        assert_eq!(view.route("other", 0), Route::NotAsked, "not asked: refresh with it");
        assert_eq!(view.topic("other"), Ok(None));
        let all = ClusterView::new(three_brokers(), Asked::All, LOOPBACK);
        assert_eq!(all.route("other", 0), Route::Unknown, "asked about all: it is not there");
        assert_eq!(ClusterView::empty().route("orders", 0), Route::NotAsked);
    }

    #[test]
    fn a_broker_advertising_an_unspecified_host_is_reached_where_the_answer_came_from() {
        let answered_by: IpAddr = "192.168.1.7".parse().expect("ip");
        assert_eq!(broker_address("0.0.0.0", 9400, answered_by), "192.168.1.7:9400");
        assert_eq!(broker_address("::", 9401, answered_by), "192.168.1.7:9401");
        let v6: IpAddr = "fe80::1".parse().expect("ip");
        assert_eq!(broker_address("0.0.0.0", 9400, v6), "[fe80::1]:9400");
        assert_eq!(broker_address("10.1.2.3", 9400, answered_by), "10.1.2.3:9400");
        assert_eq!(broker_address("kafka-1", 19092, answered_by), "kafka-1:19092");
    }

    #[test]
    fn views_of_equal_answers_are_equal_and_a_moved_leader_is_not() {
        let a = ClusterView::new(three_brokers(), Asked::All, LOOPBACK);
        let b = ClusterView::new(three_brokers(), Asked::All, LOOPBACK);
        assert_eq!(a, b);
        let mut moved = three_brokers();
        moved.topics[0].partitions[0].leader = Some(2);
        assert_ne!(a, ClusterView::new(moved, Asked::All, LOOPBACK));
    }
}
