//! What a broker is told about its cluster: its node id, where the cluster
//! port listens, the initial voters of the metadata quorum, the seeds a
//! joining broker asks, and the heartbeat and Raft timings.
//!
//! `mamba serve` with none of these is a one-node cluster: node 1, voter
//! of itself, on the default cluster port.

use super::handle::Addresses;
use std::net::SocketAddr;

/// The cluster port `mamba serve` listens on unless told otherwise.
pub const CLUSTER_LISTEN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9401);

/// A voter of the initial metadata quorum: `ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: u64,
    pub cluster_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: u32,
    /// Where this broker's cluster port listens (port 0: the kernel picks).
    pub cluster_listen: SocketAddr,
    /// The voters of a brand-new cluster. Empty with `seeds`: this broker
    /// joins an existing cluster as a learner. Empty without seeds: this
    /// broker alone (a one-node cluster).
    pub voters: Vec<Voter>,
    /// Cluster addresses of live brokers a joining broker asks for the
    /// controller.
    pub seeds: Vec<String>,
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub session_timeout_ms: u64,
    /// Raft's logical clock.
    pub raft_tick_ms: u64,
    /// Ticks without a leader before a voter stands (randomized up to
    /// twice this by raft).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Applied entries past the last snapshot before a new one.
    pub snapshot_entries_max: u64,
    /// The client address registered for clients and other brokers, when
    /// the bound one is not it (`None`: the bound address).
    pub advertised_client: Option<String>,
    /// The cluster address registered for other brokers (`None`: this
    /// node's `voters` entry, else the bound address).
    pub advertised_cluster: Option<String>,
    /// How partitions replicate (follower lag bound, fetch sizes).
    pub replication: crate::replication::ReplicationConfig,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            node_id: 1,
            cluster_listen: CLUSTER_LISTEN_DEFAULT,
            voters: Vec::new(),
            seeds: Vec::new(),
            rack: None,
            heartbeat_interval_ms: 500,
            session_timeout_ms: 3_000,
            raft_tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_entries_max: 10_000,
            advertised_client: None,
            advertised_cluster: None,
            replication: crate::replication::ReplicationConfig::default(),
        }
    }
}

/// Parses `--voters`: `ID@HOST:PORT,...`.
pub fn parse_voters(list: &str) -> Result<Vec<Voter>, String> {
    let mut voters = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) =
            item.split_once('@').ok_or_else(|| format!("voter {item:?}: expected ID@HOST:PORT"))?;
        let node_id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0 && *id <= u64::from(u32::MAX))
            .ok_or_else(|| format!("voter {item:?}: the node id must be a number from 1"))?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("voter {item:?}: expected ID@HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("voter {item:?}: expected ID@HOST:PORT with a port from 1"));
        }
        voters.push(Voter { node_id, cluster_address: address.to_string() });
    }
    Ok(voters)
}

impl ClusterConfig {
    /// Checks the settings together; the error is one line for people.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("--node-id must be from 1".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeSet::new();
        for voter in &self.voters {
            if !ids.insert(voter.node_id) {
                return Err(format!("--voters names node {} twice", voter.node_id));
            }
            if !addresses.insert(voter.cluster_address.as_str()) {
                return Err(format!("--voters names address {} twice", voter.cluster_address));
            }
        }
        if let Some(me) = self.voters.iter().find(|v| v.node_id == u64::from(self.node_id)) {
            if let Some(advertised) = &self.advertised_cluster {
                if *advertised != me.cluster_address {
                    return Err(format!(
                        "--voters says node {} is at {}, but --advertised-cluster-listen is {advertised}",
                        self.node_id, me.cluster_address
                    ));
                }
            } else if self.cluster_listen.port() != 0
                && !same_address(&me.cluster_address, self.cluster_listen)
            {
                return Err(format!(
                    "--voters says node {} is at {}, but --cluster-listen is {}",
                    self.node_id, me.cluster_address, self.cluster_listen
                ));
            }
        }
        if self.voters.len() > 7 {
            return Err(format!(
                "{} voters: a quorum has at most 7 (1, 3 or 5 is usual)",
                self.voters.len()
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.session_timeout_ms <= self.heartbeat_interval_ms
        {
            return Err(format!(
                "broker.session.timeout.ms ({}) must be above broker.heartbeat.interval.ms ({})",
                self.session_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.raft_tick_ms == 0
            || self.heartbeat_ticks == 0
            || self.election_ticks <= self.heartbeat_ticks
        {
            return Err("raft timing: the election needs more ticks than the heartbeat".into());
        }
        Ok(())
    }

    /// Whether this broker votes in the initial quorum (or is the one node
    /// of a cluster with no voters and no seeds).
    /// The addresses this broker registers, given the ones it bound: the
    /// advertised ones when set; for the cluster address else its own
    /// `--voters` entry (what the other voters dial); else the bound ones.
    /// A bound wildcard address (0.0.0.0) reaches no one from another
    /// host: said once, loudly.
    pub fn addresses_to_register(&self, client: SocketAddr, cluster: SocketAddr) -> Addresses {
        let me = u64::from(self.node_id);
        let client = match &self.advertised_client {
            Some(advertised) => advertised.clone(),
            None => {
                if client.ip().is_unspecified() {
                    tracing::warn!(%client, "the client address is a wildcard: brokers and clients on other hosts cannot reach it (set --advertised-listen)");
                }
                client.to_string()
            }
        };
        let voter_entry =
            self.voters.iter().find(|v| v.node_id == me).map(|v| v.cluster_address.clone());
        let cluster = match self.advertised_cluster.clone().or(voter_entry) {
            Some(advertised) => advertised,
            None => {
                if cluster.ip().is_unspecified() {
                    tracing::warn!(%cluster, "the cluster address is a wildcard: brokers on other hosts cannot reach it (set --advertised-cluster-listen)");
                }
                cluster.to_string()
            }
        };
        Addresses { client, cluster, http: String::new() }
    }

    pub fn initial_voter_ids(&self) -> Vec<u64> {
        if self.voters.is_empty() && self.seeds.is_empty() {
            return vec![u64::from(self.node_id)];
        }
        self.voters.iter().map(|v| v.node_id).collect()
    }

    /// Whether this broker bootstraps the quorum (votes in the initial set)
    /// rather than joining an existing cluster as a learner.
    pub fn is_initial_voter(&self) -> bool {
        self.initial_voter_ids().contains(&u64::from(self.node_id))
    }
}

/// `address` (`HOST:PORT`) names `listen`: same port, and the same IP or a
/// host name (not checked: it may resolve to any interface).
fn same_address(address: &str, listen: SocketAddr) -> bool {
    match address.parse::<SocketAddr>() {
        Ok(a) => {
            a.port() == listen.port() && (a.ip() == listen.ip() || listen.ip().is_unspecified())
        }
        Err(_) => address.rsplit_once(':').is_some_and(|(_, p)| p == listen.port().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_lists_say_why() {
        let voters = parse_voters("1@127.0.0.1:9401, 2@127.0.0.1:9411,3@host:9421").expect("valid");
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[2], Voter { node_id: 3, cluster_address: "host:9421".into() });
        for (bad, says) in [
            ("1-127.0.0.1:9401", "ID@HOST:PORT"),
            ("x@127.0.0.1:9401", "node id"),
            ("0@127.0.0.1:9401", "node id"),
            ("1@127.0.0.1", "ID@HOST:PORT"),
            ("1@127.0.0.1:0", "port"),
        ] {
            let e = parse_voters(bad).expect_err("refused");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn inconsistent_settings_are_refused_in_one_line() {
        let base = ClusterConfig {
            node_id: 1,
            cluster_listen: "127.0.0.1:9401".parse().expect("valid"),
            voters: parse_voters("1@127.0.0.1:9401,2@127.0.0.1:9411,3@127.0.0.1:9421")
                .expect("valid"),
            ..ClusterConfig::default()
        };
        assert_eq!(base.validate(), Ok(()));
        assert!(base.is_initial_voter());
        let elsewhere = ClusterConfig {
            cluster_listen: "127.0.0.1:9999".parse().expect("valid"),
            ..base.clone()
        };
        assert!(elsewhere.validate().expect_err("refused").contains("--cluster-listen"));
        let twice = ClusterConfig {
            voters: parse_voters("1@127.0.0.1:9401,1@127.0.0.1:9411").expect("valid"),
            ..base.clone()
        };
        assert!(twice.validate().expect_err("refused").contains("twice"));
        let session = ClusterConfig { session_timeout_ms: 100, ..base.clone() };
        assert!(session.validate().expect_err("refused").contains("session"));
        let learner = ClusterConfig { node_id: 4, ..base };
        assert_eq!(learner.validate(), Ok(()));
        assert!(!learner.is_initial_voter());
        let alone = ClusterConfig::default();
        assert_eq!(alone.initial_voter_ids(), vec![1]);
    }

    #[test]
    fn a_wildcard_listener_registers_its_voter_entry_or_what_it_advertises() {
        let voters = parse_voters("1@10.0.0.1:9401,2@10.0.0.2:9401").expect("valid");
        let wildcard = ClusterConfig {
            node_id: 1,
            cluster_listen: "0.0.0.0:9401".parse().expect("valid"),
            voters,
            advertised_client: Some("broker-1.example:9400".into()),
            ..ClusterConfig::default()
        };
        assert_eq!(wildcard.validate(), Ok(()));
        let bound = |a: &str| a.parse::<SocketAddr>().expect("valid");
        let registered =
            wildcard.addresses_to_register(bound("0.0.0.0:9400"), bound("0.0.0.0:9401"));
        assert_eq!(registered.client, "broker-1.example:9400");
        assert_eq!(registered.cluster, "10.0.0.1:9401", "what the other voters dial");
        let contradicting =
            ClusterConfig { advertised_cluster: Some("10.0.0.9:9401".into()), ..wildcard };
        let why = contradicting.validate().expect_err("refused");
        assert!(why.contains("--advertised-cluster-listen"), "{why}");
        let plain = ClusterConfig::default();
        let registered =
            plain.addresses_to_register(bound("127.0.0.1:9400"), bound("127.0.0.1:9401"));
        assert_eq!(
            (registered.client.as_str(), registered.cluster.as_str()),
            ("127.0.0.1:9400", "127.0.0.1:9401")
        );
    }
}
