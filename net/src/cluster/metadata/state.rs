//! `MetadataState`: the cluster's metadata as of one index of the Raft
//! log, built by applying records in log order.
//!
//! Lifecycle: `MetadataState::default()` (or `restore` of a snapshot), then
//! `apply` of every committed record in order. One instance per broker,
//! owned by the shard that drives the Raft node (shard 0); other shards get
//! copies of what they need, never a reference.
//!
//! `apply` is deterministic: it reads nothing but the state and the record
//! (no clock, no configuration, no iteration order of a hash map), so
//! every broker that applied the same log holds the same state and the same
//! `digest`. It checks a record against the state first and changes
//! nothing when it refuses one, so a refused record is a no-op on every
//! broker alike. It checks only structural invariants, not what config
//! values mean: those rules may change between versions, and brokers of
//! two versions must still agree on the log during an upgrade.
//!
//! **Invariants** (checked by `apply`, and by `restore` on a snapshot):
//! every replica, in-sync replica and leader is a registered broker; a
//! partition's replicas are distinct, its ISR is a subset of them, its
//! leader one of the ISR; topic names and ids are unique; producer id
//! blocks never overlap; a partition's epochs never go back.

use super::ids::{BrokerId, IncarnationId, TopicId};
use super::limits::{BROKERS_MAX, PARTITIONS_PER_TOPIC_MAX};
use super::record::{BrokerRegistration, ConfigEntry, MetadataRecord, Partition, PartitionChange};
use std::collections::{BTreeMap, BTreeSet};

/// A registered broker.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub client_address: String,
    pub cluster_address: String,
    pub http_address: String,
    pub rack: Option<String>,
    /// Fenced brokers lead nothing: they stopped heartbeating, or have not
    /// caught up with the log since they registered.
    pub fenced: bool,
    /// Leaving the cluster: no new replicas.
    pub decommissioning: bool,
}

/// What operators see of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerStatus {
    Alive,
    Fenced,
    Decommissioning,
}

/// How operators and clients name a broker's status.
pub fn broker_status_name(broker: &Broker) -> &'static str {
    match broker.status() {
        BrokerStatus::Alive => "alive",
        BrokerStatus::Fenced => "fenced",
        BrokerStatus::Decommissioning => "decommissioning",
    }
}

impl Broker {
    pub fn status(&self) -> BrokerStatus {
        if self.decommissioning {
            BrokerStatus::Decommissioning
        } else if self.fenced {
            BrokerStatus::Fenced
        } else {
            BrokerStatus::Alive
        }
    }

    /// May lead partitions and take new replicas.
    pub fn is_alive(&self) -> bool {
        !self.fenced && !self.decommissioning
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub id: TopicId,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition number.
    pub partitions: Vec<Partition>,
}

/// Producer ids reserved for one broker.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub broker_id: BrokerId,
    pub start: u64,
    pub size: u64,
}

/// A partition, named for callers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// Why a record was refused. The state is as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the cluster has no id yet: the log must start with one")]
    ClusterNotInitialized,
    #[error("the cluster already has id {cluster_id:?}")]
    ClusterAlreadyInitialized { cluster_id: String },
    #[error("bad cluster id {cluster_id:?}: {reason}")]
    InvalidClusterId { cluster_id: String, reason: &'static str },
    #[error("broker {broker_id} is not registered")]
    UnknownBroker { broker_id: BrokerId },
    #[error("broker {broker_id} is already registered with incarnation {incarnation_id}")]
    AlreadyRegistered { broker_id: BrokerId, incarnation_id: IncarnationId },
    #[error("broker {broker_id}: incarnation {got} is not the current one, {current}")]
    StaleIncarnation { broker_id: BrokerId, current: IncarnationId, got: IncarnationId },
    #[error("broker {broker_id} must be decommissioned before it leaves")]
    NotDecommissioned { broker_id: BrokerId },
    #[error("broker {broker_id} still hosts {replica_count} replicas")]
    BrokerHostsReplicas { broker_id: BrokerId, replica_count: usize },
    #[error("broker {broker_id} is decommissioning: it takes no new replicas")]
    BrokerDecommissioning { broker_id: BrokerId },
    #[error("the cluster has {BROKERS_MAX} brokers already")]
    TooManyBrokers,
    #[error("topic {name:?} already exists")]
    TopicExists { name: String },
    #[error("topic id {topic_id} is in use")]
    TopicIdInUse { topic_id: TopicId },
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("no topic has id {topic_id}")]
    UnknownTopic { topic_id: TopicId },
    #[error("topic {topic:?} has {partition_count} partitions, not {partition}")]
    UnknownPartition { topic: String, partition: u32, partition_count: usize },
    #[error("topic {topic:?} would have {count} partitions, more than {max}")]
    TooManyPartitions { topic: String, count: usize, max: u32 },
    #[error("topic {topic:?} needs at least one partition")]
    NoPartitions { topic: String },
    #[error("topic {topic:?} partition {partition}: {reason}")]
    InvalidPartition { topic: String, partition: u32, reason: String },
    #[error("topic {topic:?} partition {partition}: {what} {got} is not above {current}")]
    EpochNotRising { topic: String, partition: u32, what: &'static str, current: u32, got: u32 },
    #[error("producer id block {start}+{size}: the next free id is {next}")]
    ProducerIdBlockNotNext { start: u64, size: u64, next: u64 },
    #[error("producer id block {start}+{size}: {reason}")]
    InvalidProducerIdBlock { start: u64, size: u64, reason: &'static str },
    #[error("duplicate setting {name:?}")]
    DuplicateSetting { name: String },
    #[error("empty setting name")]
    EmptySettingName,
}

/// The cluster's metadata. See the module docs for its lifecycle and
/// invariants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    pub(super) applied_index: u64,
    pub(super) cluster_id: Option<String>,
    pub(super) brokers: BTreeMap<BrokerId, Broker>,
    pub(super) topics: BTreeMap<TopicId, Topic>,
    /// Derived from `topics`; rebuilt by `restore`, never stored.
    pub(super) topic_ids_by_name: BTreeMap<String, TopicId>,
    /// The first producer id no block holds.
    pub(super) next_producer_id: u64,
    /// Each broker's latest block.
    pub(super) producer_id_blocks: BTreeMap<BrokerId, ProducerIdBlock>,
    pub(super) settings: BTreeMap<String, String>,
}

impl MetadataState {
    /// Applies the committed record at `index`, or refuses it and changes
    /// nothing (not even the applied index: replaying a refused record
    /// refuses it again, so a snapshot taken before it stays right).
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), MetadataError> {
        assert!(
            index > self.applied_index,
            "metadata applied out of order: index {index} after {}",
            self.applied_index
        );
        self.check(record)?;
        self.change(record);
        self.applied_index = index;
        Ok(())
    }

    /// Whether `apply` would take `record` now. The controller asks before
    /// it proposes, so the log rarely holds a refused record.
    pub fn check(&self, record: &MetadataRecord) -> Result<(), MetadataError> {
        if let MetadataRecord::InitCluster { cluster_id } = record {
            if let Some(current) = &self.cluster_id {
                return Err(MetadataError::ClusterAlreadyInitialized {
                    cluster_id: current.clone(),
                });
            }
            return check_cluster_id(cluster_id);
        }
        if self.cluster_id.is_none() {
            return Err(MetadataError::ClusterNotInitialized);
        }
        match record {
            MetadataRecord::InitCluster { .. } => Ok(()),
            MetadataRecord::RegisterBroker(r) => self.check_register(r),
            MetadataRecord::FenceBroker { broker_id, incarnation_id }
            | MetadataRecord::UnfenceBroker { broker_id, incarnation_id } => {
                let broker = self.broker_or_err(*broker_id)?;
                if broker.incarnation_id != *incarnation_id {
                    return Err(MetadataError::StaleIncarnation {
                        broker_id: *broker_id,
                        current: broker.incarnation_id,
                        got: *incarnation_id,
                    });
                }
                Ok(())
            }
            MetadataRecord::DecommissionBroker { broker_id } => {
                self.broker_or_err(*broker_id).map(drop)
            }
            MetadataRecord::UnregisterBroker { broker_id } => {
                let broker = self.broker_or_err(*broker_id)?;
                if !broker.decommissioning {
                    return Err(MetadataError::NotDecommissioned { broker_id: *broker_id });
                }
                let replica_count = self.replica_count(*broker_id);
                if replica_count > 0 {
                    return Err(MetadataError::BrokerHostsReplicas {
                        broker_id: *broker_id,
                        replica_count,
                    });
                }
                Ok(())
            }
            MetadataRecord::CreateTopic(t) => {
                mamba_engine::config::validate_topic_name(&t.name)
                    .map_err(|e| MetadataError::InvalidTopicName(e.to_string()))?;
                if self.topic_ids_by_name.contains_key(&t.name) {
                    return Err(MetadataError::TopicExists { name: t.name.clone() });
                }
                if self.topics.contains_key(&t.topic_id) {
                    return Err(MetadataError::TopicIdInUse { topic_id: t.topic_id });
                }
                if t.partitions.is_empty() {
                    return Err(MetadataError::NoPartitions { topic: t.name.clone() });
                }
                check_settings(&t.configs)?;
                self.check_new_partitions(&t.name, 0, &t.partitions)
            }
            MetadataRecord::DeleteTopic { topic_id } => self.topic_or_err(*topic_id).map(drop),
            MetadataRecord::AlterTopicConfigs { topic_id, set, remove } => {
                self.topic_or_err(*topic_id)?;
                check_settings(set)?;
                if remove.iter().any(String::is_empty) {
                    return Err(MetadataError::EmptySettingName);
                }
                Ok(())
            }
            MetadataRecord::CreatePartitions { topic_id, partitions } => {
                let topic = self.topic_or_err(*topic_id)?;
                if partitions.is_empty() {
                    return Err(MetadataError::NoPartitions { topic: topic.name.clone() });
                }
                self.check_new_partitions(&topic.name, topic.partitions.len(), partitions)
            }
            MetadataRecord::ChangePartition(c) => self.check_change(c, None),
            MetadataRecord::ChangeReplicas(r) => self.check_change(&r.change, Some(&r.replicas)),
            MetadataRecord::AllocateProducerIds { broker_id, start, size } => {
                self.broker_or_err(*broker_id)?;
                let bad = |reason| MetadataError::InvalidProducerIdBlock {
                    start: *start,
                    size: *size,
                    reason,
                };
                if *size == 0 {
                    return Err(bad("empty"));
                }
                if start.checked_add(*size).is_none() {
                    return Err(bad("past the last id"));
                }
                if *start != self.next_producer_id {
                    return Err(MetadataError::ProducerIdBlockNotNext {
                        start: *start,
                        size: *size,
                        next: self.next_producer_id,
                    });
                }
                Ok(())
            }
            MetadataRecord::SetClusterSetting { name, .. } => {
                if name.is_empty() {
                    return Err(MetadataError::EmptySettingName);
                }
                Ok(())
            }
        }
    }

    /// Makes the change of a record `check` accepted.
    fn change(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                self.cluster_id = Some(cluster_id.clone())
            }
            MetadataRecord::RegisterBroker(r) => {
                // A new incarnation keeps a decommissioning broker leaving:
                // it restarted, it did not change its mind.
                let decommissioning =
                    self.brokers.get(&r.broker_id).is_some_and(|b| b.decommissioning);
                let broker = Broker {
                    id: r.broker_id,
                    incarnation_id: r.incarnation_id,
                    client_address: r.client_address.clone(),
                    cluster_address: r.cluster_address.clone(),
                    http_address: r.http_address.clone(),
                    rack: r.rack.clone(),
                    fenced: true,
                    decommissioning,
                };
                self.brokers.insert(r.broker_id, broker);
            }
            MetadataRecord::FenceBroker { broker_id, .. } => {
                self.broker_mut(*broker_id).fenced = true
            }
            MetadataRecord::UnfenceBroker { broker_id, .. } => {
                self.broker_mut(*broker_id).fenced = false
            }
            MetadataRecord::DecommissionBroker { broker_id } => {
                self.broker_mut(*broker_id).decommissioning = true
            }
            MetadataRecord::UnregisterBroker { broker_id } => {
                self.brokers.remove(broker_id);
                self.producer_id_blocks.remove(broker_id);
            }
            MetadataRecord::CreateTopic(t) => {
                let topic = Topic {
                    id: t.topic_id,
                    name: t.name.clone(),
                    configs: t.configs.iter().map(|c| (c.name.clone(), c.value.clone())).collect(),
                    partitions: t.partitions.clone(),
                };
                self.topic_ids_by_name.insert(t.name.clone(), t.topic_id);
                self.topics.insert(t.topic_id, topic);
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let topic = self.topics.remove(topic_id);
                let topic = topic.expect("checked: the topic exists");
                self.topic_ids_by_name.remove(&topic.name);
            }
            MetadataRecord::AlterTopicConfigs { topic_id, set, remove } => {
                let topic = self.topic_mut(*topic_id);
                for name in remove {
                    topic.configs.remove(name);
                }
                for c in set {
                    topic.configs.insert(c.name.clone(), c.value.clone());
                }
            }
            MetadataRecord::CreatePartitions { topic_id, partitions } => {
                self.topic_mut(*topic_id).partitions.extend(partitions.iter().cloned());
            }
            MetadataRecord::ChangePartition(c) => self.change_partition(c, None),
            MetadataRecord::ChangeReplicas(r) => {
                self.change_partition(&r.change, Some(&r.replicas))
            }
            MetadataRecord::AllocateProducerIds { broker_id, start, size } => {
                let block = ProducerIdBlock { broker_id: *broker_id, start: *start, size: *size };
                self.next_producer_id = start + size;
                self.producer_id_blocks.insert(*broker_id, block);
            }
            MetadataRecord::SetClusterSetting { name, value } => match value {
                Some(value) => drop(self.settings.insert(name.clone(), value.clone())),
                None => drop(self.settings.remove(name)),
            },
        }
    }

    fn change_partition(&mut self, c: &PartitionChange, replicas: Option<&[BrokerId]>) {
        let partition = &mut self.topic_mut(c.topic_id).partitions[c.partition as usize];
        if let Some(replicas) = replicas {
            partition.replicas = replicas.to_vec();
        }
        partition.leader = c.leader;
        partition.isr = c.isr.clone();
        partition.leader_epoch = c.leader_epoch;
        partition.partition_epoch = c.partition_epoch;
    }

    fn check_register(&self, r: &BrokerRegistration) -> Result<(), MetadataError> {
        match self.brokers.get(&r.broker_id) {
            Some(b) if b.incarnation_id == r.incarnation_id => {
                Err(MetadataError::AlreadyRegistered {
                    broker_id: r.broker_id,
                    incarnation_id: r.incarnation_id,
                })
            }
            Some(_) => Ok(()),
            None if self.brokers.len() >= BROKERS_MAX => Err(MetadataError::TooManyBrokers),
            None => Ok(()),
        }
    }

    /// Partitions numbered from `first` on, about to join topic `topic`.
    fn check_new_partitions(
        &self,
        topic: &str,
        first: usize,
        partitions: &[Partition],
    ) -> Result<(), MetadataError> {
        let count = first + partitions.len();
        if count > PARTITIONS_PER_TOPIC_MAX as usize {
            return Err(MetadataError::TooManyPartitions {
                topic: topic.to_string(),
                count,
                max: PARTITIONS_PER_TOPIC_MAX,
            });
        }
        for (i, p) in partitions.iter().enumerate() {
            let number = u32::try_from(first + i).unwrap_or(u32::MAX);
            let bad = |reason: String| MetadataError::InvalidPartition {
                topic: topic.to_string(),
                partition: number,
                reason,
            };
            if p.replicas.is_empty() {
                return Err(bad("no replicas".into()));
            }
            for id in &p.replicas {
                if self.broker_or_err(*id)?.decommissioning {
                    return Err(MetadataError::BrokerDecommissioning { broker_id: *id });
                }
            }
            check_partition_shape(p).map_err(bad)?;
        }
        Ok(())
    }

    /// A change of one partition's leader and in-sync set, and of its
    /// replicas when `replicas` is given (the brokers it adds must be
    /// registered and not leaving).
    fn check_change(
        &self,
        c: &PartitionChange,
        replicas: Option<&[BrokerId]>,
    ) -> Result<(), MetadataError> {
        let topic = self.topic_or_err(c.topic_id)?;
        let current = topic.partitions.get(c.partition as usize).ok_or_else(|| {
            MetadataError::UnknownPartition {
                topic: topic.name.clone(),
                partition: c.partition,
                partition_count: topic.partitions.len(),
            }
        })?;
        let not_rising = |what, current, got| MetadataError::EpochNotRising {
            topic: topic.name.clone(),
            partition: c.partition,
            what,
            current,
            got,
        };
        if c.partition_epoch <= current.partition_epoch {
            return Err(not_rising("partition epoch", current.partition_epoch, c.partition_epoch));
        }
        if c.leader_epoch < current.leader_epoch
            || (c.leader != current.leader && c.leader_epoch == current.leader_epoch)
        {
            return Err(not_rising("leader epoch", current.leader_epoch, c.leader_epoch));
        }
        let bad = |reason: String| MetadataError::InvalidPartition {
            topic: topic.name.clone(),
            partition: c.partition,
            reason,
        };
        if let Some(replicas) = replicas {
            if replicas.is_empty() {
                return Err(bad("no replicas".into()));
            }
            for id in replicas.iter().filter(|id| !current.replicas.contains(id)) {
                if self.broker_or_err(*id)?.decommissioning {
                    return Err(MetadataError::BrokerDecommissioning { broker_id: *id });
                }
            }
        }
        let changed = Partition {
            replicas: replicas.map_or_else(|| current.replicas.clone(), <[BrokerId]>::to_vec),
            leader: c.leader,
            leader_epoch: c.leader_epoch,
            partition_epoch: c.partition_epoch,
            isr: c.isr.clone(),
        };
        check_partition_shape(&changed).map_err(bad)
    }

    fn broker_or_err(&self, broker_id: BrokerId) -> Result<&Broker, MetadataError> {
        self.brokers.get(&broker_id).ok_or(MetadataError::UnknownBroker { broker_id })
    }

    fn topic_or_err(&self, topic_id: TopicId) -> Result<&Topic, MetadataError> {
        self.topics.get(&topic_id).ok_or(MetadataError::UnknownTopic { topic_id })
    }

    fn broker_mut(&mut self, broker_id: BrokerId) -> &mut Broker {
        self.brokers.get_mut(&broker_id).expect("checked: the broker is registered")
    }

    fn topic_mut(&mut self, topic_id: TopicId) -> &mut Topic {
        self.topics.get_mut(&topic_id).expect("checked: the topic exists")
    }

    // Queries.

    /// The index of the last record applied (0: none).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Brokers in id order.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&Broker> {
        self.brokers.get(&broker_id)
    }

    /// Topics in id order.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topic_ids_by_name.get(name).and_then(|id| self.topics.get(id))
    }

    pub fn topic_by_id(&self, topic_id: TopicId) -> Option<&Topic> {
        self.topics.get(&topic_id)
    }

    pub fn partition_leader(&self, topic: &str, partition: u32) -> Option<BrokerId> {
        self.topic(topic)?.partitions.get(partition as usize)?.leader
    }

    /// Partitions whose leader is `broker_id`, in topic name order.
    pub fn partitions_led_by(&self, broker_id: BrokerId) -> Vec<TopicPartition> {
        self.partitions_where(|p| p.leader == Some(broker_id))
    }

    /// Partitions with a replica on `broker_id`, in topic name order.
    pub fn partitions_hosted_by(&self, broker_id: BrokerId) -> Vec<TopicPartition> {
        self.partitions_where(|p| p.replicas.contains(&broker_id))
    }

    /// Partitions no alive broker leads: no leader, or a fenced one.
    pub fn offline_partitions(&self) -> Vec<TopicPartition> {
        self.partitions_where(|p| match p.leader {
            None => true,
            Some(id) => self.brokers.get(&id).is_none_or(|b| b.fenced),
        })
    }

    fn partitions_where(&self, keep: impl Fn(&Partition) -> bool) -> Vec<TopicPartition> {
        let mut out = Vec::new();
        for (name, id) in &self.topic_ids_by_name {
            for (number, p) in self.topics[id].partitions.iter().enumerate() {
                if keep(p) {
                    let partition = u32::try_from(number).expect("partition count is bounded");
                    out.push(TopicPartition { topic: name.clone(), partition });
                }
            }
        }
        out
    }

    /// Replicas (and preferred leaders: first replicas) per broker, over
    /// every topic: the existing load `placement::place` balances against.
    pub fn replica_load(&self) -> BTreeMap<BrokerId, (u32, u32)> {
        let mut load: BTreeMap<BrokerId, (u32, u32)> = BTreeMap::new();
        for p in self.topics.values().flat_map(|t| &t.partitions) {
            for (slot, id) in p.replicas.iter().enumerate() {
                let entry = load.entry(*id).or_default();
                entry.0 += 1;
                if slot == 0 {
                    entry.1 += 1;
                }
            }
        }
        load
    }

    fn replica_count(&self, broker_id: BrokerId) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.replicas.contains(&broker_id))
            .count()
    }

    /// The first producer id no block holds yet.
    pub fn next_producer_id(&self) -> u64 {
        self.next_producer_id
    }

    /// The latest producer id block of `broker_id`.
    pub fn producer_id_block(&self, broker_id: BrokerId) -> Option<ProducerIdBlock> {
        self.producer_id_blocks.get(&broker_id).copied()
    }

    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).map(String::as_str)
    }

    /// The cluster settings whose names start with `prefix`.
    pub fn settings_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.settings
            .range(prefix.to_string()..)
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Every invariant of the module docs, on the whole state: what
    /// `restore` asks of a snapshot before it believes it.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        let empty = self.brokers.is_empty()
            && self.topics.is_empty()
            && self.settings.is_empty()
            && self.next_producer_id == 0;
        if self.cluster_id.is_none() && !empty {
            return Err("metadata without a cluster id".into());
        }
        if let Some(id) = &self.cluster_id {
            check_cluster_id(id).map_err(|e| e.to_string())?;
        }
        for (id, b) in &self.brokers {
            if *id != b.id {
                return Err(format!("broker {} filed under {id}", b.id));
            }
        }
        let mut names = BTreeSet::new();
        for (id, t) in &self.topics {
            if *id != t.id {
                return Err(format!("topic {} filed under {id}", t.id));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("two topics named {:?}", t.name));
            }
            mamba_engine::config::validate_topic_name(&t.name).map_err(|e| e.to_string())?;
            if t.partitions.is_empty() || t.partitions.len() > PARTITIONS_PER_TOPIC_MAX as usize {
                return Err(format!("topic {:?}: {} partitions", t.name, t.partitions.len()));
            }
            for (number, p) in t.partitions.iter().enumerate() {
                let bad =
                    |reason: String| format!("topic {:?} partition {number}: {reason}", t.name);
                if p.replicas.is_empty() {
                    return Err(bad("no replicas".into()));
                }
                if let Some(id) = p.replicas.iter().find(|id| !self.brokers.contains_key(id)) {
                    return Err(bad(format!("replica on unknown broker {id}")));
                }
                check_partition_shape(p).map_err(bad)?;
            }
        }
        if self.topic_ids_by_name.len() != self.topics.len() {
            return Err("topic name index out of step".into());
        }
        for block in self.producer_id_blocks.values() {
            let end = block.start.checked_add(block.size);
            if block.size == 0 || end.is_none_or(|end| end > self.next_producer_id) {
                return Err(format!("producer id block {block:?} past {}", self.next_producer_id));
            }
            if !self.brokers.contains_key(&block.broker_id) {
                return Err(format!("producer id block of unknown broker {}", block.broker_id));
            }
        }
        Ok(())
    }
}

fn check_cluster_id(cluster_id: &str) -> Result<(), MetadataError> {
    let bad =
        |reason| MetadataError::InvalidClusterId { cluster_id: cluster_id.to_string(), reason };
    if cluster_id.is_empty() {
        return Err(bad("empty"));
    }
    if !cluster_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("use printable ASCII without spaces"));
    }
    Ok(())
}

fn check_settings(entries: &[ConfigEntry]) -> Result<(), MetadataError> {
    let mut seen = BTreeSet::new();
    for e in entries {
        if e.name.is_empty() {
            return Err(MetadataError::EmptySettingName);
        }
        if !seen.insert(e.name.as_str()) {
            return Err(MetadataError::DuplicateSetting { name: e.name.clone() });
        }
    }
    Ok(())
}

/// The shape every partition keeps: distinct replicas, ISR a subset of
/// them without repeats, the leader in the ISR. Registration of the
/// replicas is the caller's check.
fn check_partition_shape(p: &Partition) -> Result<(), String> {
    let replicas: BTreeSet<BrokerId> = p.replicas.iter().copied().collect();
    if replicas.len() != p.replicas.len() {
        return Err(format!("replicas {:?} repeat a broker", p.replicas));
    }
    let isr: BTreeSet<BrokerId> = p.isr.iter().copied().collect();
    if isr.len() != p.isr.len() {
        return Err(format!("in-sync replicas {:?} repeat a broker", p.isr));
    }
    if let Some(id) = p.isr.iter().find(|id| !replicas.contains(id)) {
        return Err(format!("in-sync replica {id} is not a replica"));
    }
    if let Some(leader) = p.leader {
        if !isr.contains(&leader) {
            return Err(format!("leader {leader} is not an in-sync replica"));
        }
    }
    Ok(())
}
