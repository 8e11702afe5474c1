//! Scenarios of the metadata state machine: what a broker that applies a
//! log ends up believing, and what it refuses.

use super::*;

fn seed(name: &str) -> u64 {
    let seed =
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("{name}={seed}");
    seed
}

/// Applies records at the following indexes; panics on a refusal.
struct Log {
    state: MetadataState,
    index: u64,
}

impl Log {
    fn new() -> Log {
        let mut log = Log { state: MetadataState::default(), index: 0 };
        log.apply(MetadataRecord::InitCluster { cluster_id: "test-cluster".into() });
        log
    }

    fn try_apply(&mut self, record: MetadataRecord) -> Result<(), MetadataError> {
        // Through the encoding, as every broker receives records.
        let decoded = MetadataRecord::decode(&record.encode()).expect("a record decodes");
        assert_eq!(decoded, record);
        let result = self.state.apply(self.index + 1, &decoded);
        if result.is_ok() {
            self.index += 1;
        }
        result
    }

    fn apply(&mut self, record: MetadataRecord) {
        let shown = format!("{record:?}");
        if let Err(e) = self.try_apply(record) {
            panic!("{shown} refused: {e}");
        }
    }

    fn register(&mut self, id: u32, rack: Option<&str>) {
        self.apply(register(id, 100 + u64::from(id), rack));
        self.apply(MetadataRecord::UnfenceBroker {
            broker_id: BrokerId(id),
            incarnation_id: IncarnationId(100 + u64::from(id)),
        });
    }
}

fn register(id: u32, incarnation: u64, rack: Option<&str>) -> MetadataRecord {
    MetadataRecord::RegisterBroker(BrokerRegistration {
        broker_id: BrokerId(id),
        incarnation_id: IncarnationId(incarnation),
        client_address: format!("127.0.0.1:{}", 9400 + 10 * id),
        cluster_address: format!("127.0.0.1:{}", 9401 + 10 * id),
        http_address: format!("127.0.0.1:{}", 9480 + 10 * id),
        rack: rack.map(str::to_string),
    })
}

fn partition(replicas: &[u32]) -> Partition {
    let replicas: Vec<BrokerId> = replicas.iter().copied().map(BrokerId).collect();
    Partition {
        leader: replicas.first().copied(),
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

fn create(name: &str, id: u128, partitions: &[&[u32]]) -> MetadataRecord {
    MetadataRecord::CreateTopic(TopicCreation {
        name: name.into(),
        topic_id: TopicId(id),
        configs: vec![ConfigEntry { name: "retention_ms".into(), value: "3600000".into() }],
        partitions: partitions.iter().map(|r| partition(r)).collect(),
    })
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition { topic: topic.into(), partition }
}

/// Three brokers, topic `orders` (id 1) with partitions led by 1, 2, 3.
fn three_brokers() -> Log {
    let mut log = Log::new();
    for id in 1..=3 {
        log.register(id, None);
    }
    log.apply(create("orders", 1, &[&[1, 2], &[2, 3], &[3, 1]]));
    log
}

#[test]
fn a_cluster_of_three_brokers_knows_who_leads_what() {
    let log = three_brokers();
    let s = &log.state;
    assert_eq!(s.cluster_id(), Some("test-cluster"));
    assert_eq!(s.applied_index(), 8);
    assert_eq!(s.brokers().map(|b| b.status()).collect::<Vec<_>>(), vec![BrokerStatus::Alive; 3]);
    let orders = s.topic("orders").expect("created");
    assert_eq!(orders.partitions.len(), 3);
    assert_eq!(orders.configs.get("retention_ms").map(String::as_str), Some("3600000"));
    assert_eq!(s.partition_leader("orders", 1), Some(BrokerId(2)));
    assert_eq!(s.partition_leader("orders", 3), None);
    assert_eq!(s.partitions_led_by(BrokerId(3)), vec![tp("orders", 2)]);
    assert_eq!(s.partitions_hosted_by(BrokerId(1)), vec![tp("orders", 0), tp("orders", 2)]);
    assert!(s.offline_partitions().is_empty());
}

#[test]
fn a_fenced_broker_takes_its_partitions_offline_until_it_is_back() {
    let mut log = three_brokers();
    let fence =
        MetadataRecord::FenceBroker { broker_id: BrokerId(2), incarnation_id: IncarnationId(102) };
    log.apply(fence);
    assert_eq!(log.state.broker(BrokerId(2)).map(Broker::status), Some(BrokerStatus::Fenced));
    assert_eq!(log.state.offline_partitions(), vec![tp("orders", 1)]);

    // It restarts: a new incarnation registers fenced, and a late fence of
    // the old one must not hit it.
    log.apply(register(2, 202, None));
    let stale = MetadataRecord::UnfenceBroker {
        broker_id: BrokerId(2),
        incarnation_id: IncarnationId(102),
    };
    assert!(matches!(log.try_apply(stale), Err(MetadataError::StaleIncarnation { .. })));
    assert_eq!(log.state.offline_partitions(), vec![tp("orders", 1)]);
    log.apply(MetadataRecord::UnfenceBroker {
        broker_id: BrokerId(2),
        incarnation_id: IncarnationId(202),
    });
    assert!(log.state.offline_partitions().is_empty());
}

#[test]
fn a_new_leader_raises_the_epochs_and_never_lowers_them() {
    let mut log = three_brokers();
    let change = |leader: u32, isr: &[u32], leader_epoch, partition_epoch| {
        MetadataRecord::ChangePartition(PartitionChange {
            topic_id: TopicId(1),
            partition: 0,
            leader: Some(BrokerId(leader)),
            isr: isr.iter().copied().map(BrokerId).collect(),
            leader_epoch,
            partition_epoch,
        })
    };
    log.apply(change(2, &[2], 1, 1));
    assert_eq!(log.state.partition_leader("orders", 0), Some(BrokerId(2)));
    // An ISR change alone keeps the leader epoch.
    log.apply(change(2, &[2, 1], 1, 2));
    for (record, what) in [
        (change(1, &[2, 1], 1, 3), "leader epoch"),
        (change(2, &[2], 0, 3), "leader epoch"),
        (change(2, &[2], 1, 2), "partition epoch"),
    ] {
        match log.try_apply(record) {
            Err(MetadataError::EpochNotRising { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{other:?}"),
        }
    }
    let p = &log.state.topic("orders").expect("exists").partitions[0];
    assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut log = three_brokers();
    log.apply(MetadataRecord::AllocateProducerIds { broker_id: BrokerId(1), start: 0, size: 1000 });
    let overlapping =
        MetadataRecord::AllocateProducerIds { broker_id: BrokerId(2), start: 500, size: 1000 };
    assert!(matches!(
        log.try_apply(overlapping),
        Err(MetadataError::ProducerIdBlockNotNext { next: 1000, .. })
    ));
    log.apply(MetadataRecord::AllocateProducerIds {
        broker_id: BrokerId(2),
        start: 1000,
        size: 1000,
    });
    assert_eq!(log.state.next_producer_id(), 2000);
    let block = log.state.producer_id_block(BrokerId(1)).expect("allocated");
    assert_eq!((block.start, block.size), (0, 1000));
}

#[test]
fn a_broker_leaves_only_after_its_replicas_moved() {
    let mut log = three_brokers();
    let unregister = MetadataRecord::UnregisterBroker { broker_id: BrokerId(3) };
    assert!(matches!(
        log.try_apply(unregister.clone()),
        Err(MetadataError::NotDecommissioned { .. })
    ));
    log.apply(MetadataRecord::DecommissionBroker { broker_id: BrokerId(3) });
    assert_eq!(
        log.state.broker(BrokerId(3)).map(Broker::status),
        Some(BrokerStatus::Decommissioning)
    );
    assert!(matches!(
        log.try_apply(create("more", 2, &[&[3]])),
        Err(MetadataError::BrokerDecommissioning { .. })
    ));
    assert!(matches!(
        log.try_apply(unregister.clone()),
        Err(MetadataError::BrokerHostsReplicas { replica_count: 2, .. })
    ));
    log.apply(MetadataRecord::DeleteTopic { topic_id: TopicId(1) });
    log.apply(unregister);
    assert!(log.state.broker(BrokerId(3)).is_none());
    assert!(log.state.topic("orders").is_none());
}

#[test]
fn refused_records_change_nothing() {
    let mut log = three_brokers();
    log.apply(MetadataRecord::AllocateProducerIds { broker_id: BrokerId(1), start: 0, size: 10 });
    let before = log.state.clone();
    let digest = before.digest();
    let mut bad_leader = partition(&[1, 2]);
    bad_leader.leader = Some(BrokerId(3));
    let mut bad_isr = partition(&[1, 2]);
    bad_isr.isr = vec![BrokerId(1), BrokerId(3)];
    let with = |p: Partition| {
        MetadataRecord::CreateTopic(TopicCreation {
            name: "bad".into(),
            topic_id: TopicId(9),
            configs: vec![],
            partitions: vec![p],
        })
    };
    let refused = [
        MetadataRecord::InitCluster { cluster_id: "other".into() },
        register(1, 101, None),
        MetadataRecord::FenceBroker { broker_id: BrokerId(7), incarnation_id: IncarnationId(1) },
        create("orders", 2, &[&[1]]),
        create("fresh", 1, &[&[1]]),
        create("bad/name", 3, &[&[1]]),
        create("empty", 3, &[]),
        create("ghost", 3, &[&[1, 7]]),
        create("twice", 3, &[&[1, 1]]),
        with(bad_leader),
        with(bad_isr),
        MetadataRecord::DeleteTopic { topic_id: TopicId(5) },
        MetadataRecord::CreatePartitions {
            topic_id: TopicId(1),
            partitions: vec![partition(&[4])],
        },
        MetadataRecord::AlterTopicConfigs {
            topic_id: TopicId(1),
            set: vec![
                ConfigEntry { name: "a".into(), value: "1".into() },
                ConfigEntry { name: "a".into(), value: "2".into() },
            ],
            remove: vec![],
        },
        MetadataRecord::AllocateProducerIds { broker_id: BrokerId(1), start: 10, size: 0 },
        MetadataRecord::AllocateProducerIds { broker_id: BrokerId(1), start: 0, size: 10 },
        MetadataRecord::UnregisterBroker { broker_id: BrokerId(1) },
        MetadataRecord::SetClusterSetting { name: String::new(), value: None },
    ];
    for record in refused {
        let shown = format!("{record:?}");
        assert!(log.try_apply(record).is_err(), "{shown} was taken");
        assert_eq!(log.state, before, "{shown} changed the state");
        assert_eq!(log.state.digest(), digest, "{shown} changed the digest");
    }
}

#[test]
fn nothing_is_taken_before_the_cluster_id() {
    let mut state = MetadataState::default();
    assert_eq!(state.apply(1, &register(1, 1, None)), Err(MetadataError::ClusterNotInitialized));
    assert_eq!(state, MetadataState::default());
}

#[test]
fn the_digest_depends_on_the_content_not_on_the_order_it_came_in() {
    let mut a = three_brokers();
    a.apply(create("b", 3, &[&[1]]));
    a.apply(create("a", 2, &[&[2]]));
    a.apply(MetadataRecord::SetClusterSetting { name: "y".into(), value: Some("1".into()) });
    a.apply(MetadataRecord::SetClusterSetting { name: "x".into(), value: Some("2".into()) });
    let mut b = three_brokers();
    b.apply(MetadataRecord::SetClusterSetting { name: "x".into(), value: Some("2".into()) });
    b.apply(create("a", 2, &[&[2]]));
    b.apply(MetadataRecord::SetClusterSetting { name: "y".into(), value: Some("1".into()) });
    b.apply(create("b", 3, &[&[1]]));
    assert_eq!(a.state.digest(), b.state.digest());
    b.apply(MetadataRecord::SetClusterSetting { name: "x".into(), value: Some("3".into()) });
    assert_ne!(a.state.digest(), b.state.digest());
}

/// A random mix of sensible and senseless records: after each, the
/// invariants hold, a refusal changed nothing, and a snapshot restores
/// the same state. Replay with MAMBA_METADATA_SEED.
#[test]
fn random_logs_keep_the_invariants_and_survive_snapshots() {
    let seed = seed("MAMBA_METADATA_SEED");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut log = Log::new();
    let mut taken = 0;
    for step in 0..3000 {
        let record = random_record(&mut rng, &log.state);
        let before = log.state.clone();
        match log.try_apply(record.clone()) {
            Ok(()) => taken += 1,
            Err(e) => {
                assert_eq!(
                    log.state, before,
                    "seed {seed} step {step}: {record:?} refused ({e}) yet changed"
                );
            }
        }
        if let Err(e) = log.state.check_invariants() {
            panic!("seed {seed} step {step}: after {record:?}: {e}");
        }
        if step % 100 == 0 {
            let restored = MetadataState::restore(&log.state.snapshot());
            assert_eq!(restored.as_ref(), Ok(&log.state), "seed {seed} step {step}");
            assert_eq!(restored.map(|s| s.digest()), Ok(log.state.digest()));
        }
    }
    assert!(taken > 500, "seed {seed}: only {taken} records taken; the generator is off");
}

fn random_record(rng: &mut fastrand::Rng, state: &MetadataState) -> MetadataRecord {
    let broker = BrokerId(rng.u32(1..8));
    let ids: Vec<BrokerId> = state.brokers().map(|b| b.id).collect();
    let some_brokers = |rng: &mut fastrand::Rng| -> Vec<BrokerId> {
        let mut pool = ids.clone();
        if rng.u8(..10) == 0 {
            pool.push(BrokerId(99));
        }
        rng.shuffle(&mut pool);
        pool.truncate(rng.usize(0..=pool.len().min(3)));
        pool
    };
    let topic_ids: Vec<TopicId> = state.topics().map(|t| t.id).collect();
    let some_topic = |rng: &mut fastrand::Rng| {
        rng.choice(topic_ids.iter().copied()).unwrap_or(TopicId(rng.u128(..4)))
    };
    let incarnation = |rng: &mut fastrand::Rng| {
        state
            .broker(broker)
            .filter(|_| rng.u8(..5) > 0)
            .map_or(IncarnationId(rng.u64(..3)), |b| b.incarnation_id)
    };
    let random_partition = |rng: &mut fastrand::Rng| {
        let replicas = some_brokers(rng);
        let mut isr = replicas.clone();
        isr.truncate(rng.usize(0..=isr.len()));
        Partition {
            leader: isr.first().copied().filter(|_| rng.u8(..8) > 0),
            replicas,
            isr,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    };
    match rng.u8(..12) {
        0 => register(broker.0, rng.u64(..4), rng.bool().then_some("rack-a")),
        1 => MetadataRecord::UnfenceBroker { broker_id: broker, incarnation_id: incarnation(rng) },
        2 => MetadataRecord::FenceBroker { broker_id: broker, incarnation_id: incarnation(rng) },
        3 => MetadataRecord::DecommissionBroker { broker_id: broker },
        4 => MetadataRecord::UnregisterBroker { broker_id: broker },
        5 | 6 => MetadataRecord::CreateTopic(TopicCreation {
            name: format!("t{}", rng.u8(..20)),
            topic_id: TopicId(rng.u128(..30)),
            configs: vec![ConfigEntry { name: "k".into(), value: rng.u8(..).to_string() }],
            partitions: (0..rng.usize(0..4)).map(|_| random_partition(rng)).collect(),
        }),
        7 => MetadataRecord::DeleteTopic { topic_id: some_topic(rng) },
        8 => MetadataRecord::CreatePartitions {
            topic_id: some_topic(rng),
            partitions: (0..rng.usize(0..3)).map(|_| random_partition(rng)).collect(),
        },
        9 => {
            let topic_id = some_topic(rng);
            let current = state.topic_by_id(topic_id).and_then(|t| t.partitions.first());
            let p = random_partition(rng);
            let (leader_epoch, partition_epoch) =
                current.map_or((0, 0), |c| (c.leader_epoch, c.partition_epoch));
            MetadataRecord::ChangePartition(PartitionChange {
                topic_id,
                partition: 0,
                leader: p.leader,
                isr: p.isr,
                leader_epoch: leader_epoch + rng.u32(..2),
                partition_epoch: partition_epoch + rng.u32(..2),
            })
        }
        10 => MetadataRecord::AllocateProducerIds {
            broker_id: broker,
            start: if rng.bool() { state.next_producer_id() } else { rng.u64(..100) },
            size: rng.u64(..50),
        },
        _ => MetadataRecord::SetClusterSetting {
            name: format!("s{}", rng.u8(..4)),
            value: rng.bool().then(|| "v".to_string()),
        },
    }
}

#[test]
fn a_snapshot_restores_the_same_state() {
    let mut log = three_brokers();
    log.apply(MetadataRecord::AllocateProducerIds { broker_id: BrokerId(2), start: 0, size: 64 });
    log.apply(MetadataRecord::SetClusterSetting { name: "x".into(), value: Some("1".into()) });
    let restored = MetadataState::restore(&log.state.snapshot()).expect("restores");
    assert_eq!(restored, log.state);
    assert_eq!(restored.digest(), log.state.digest());
    assert_eq!(restored.applied_index(), log.index);
    assert_eq!(restored.partition_leader("orders", 2), Some(BrokerId(3)));
    // The restored state goes on where the log left off.
    let mut log = Log { state: restored, index: log.index };
    log.apply(create("after", 2, &[&[1]]));
}

/// Damaged snapshots are errors, never panics and never a silently
/// different state. Replay with MAMBA_METADATA_SEED.
#[test]
fn damaged_snapshots_are_refused() {
    let seed = seed("MAMBA_METADATA_SEED");
    let mut rng = fastrand::Rng::with_seed(seed);
    let snapshot = three_brokers().state.snapshot();
    for i in 0..snapshot.len() {
        let mut bytes = snapshot.clone();
        bytes[i] ^= 1 << rng.u8(..8);
        assert!(
            MetadataState::restore(&bytes).is_err(),
            "seed {seed}: flip at byte {i} went unnoticed"
        );
    }
    for len in 0..snapshot.len() {
        assert!(MetadataState::restore(&snapshot[..len]).is_err(), "truncated to {len} bytes");
    }
    for _ in 0..20_000 {
        let mut bytes = snapshot.clone();
        match rng.u8(..3) {
            0 => {
                for _ in 0..rng.usize(1..8) {
                    let i = rng.usize(..bytes.len());
                    bytes[i] = rng.u8(..);
                }
            }
            1 => bytes = (0..rng.usize(..300)).map(|_| rng.u8(..)).collect(),
            _ => bytes.extend((0..rng.usize(1..20)).map(|_| rng.u8(..))),
        }
        // A collision of CRC32C may let damage through the checksum;
        // the archive and invariant checks must still hold without panic.
        drop(MetadataState::restore(&bytes));
    }
}

#[test]
fn a_snapshot_with_a_right_checksum_and_a_broken_invariant_is_refused() {
    let mut state = three_brokers().state;
    state.topics.get_mut(&TopicId(1)).expect("exists").partitions[0].leader = Some(BrokerId(3));
    assert!(matches!(
        MetadataState::restore(&state.snapshot()),
        Err(SnapshotError::Inconsistent { .. })
    ));
    let mut state = three_brokers().state;
    state.brokers.remove(&BrokerId(2));
    assert!(matches!(
        MetadataState::restore(&state.snapshot()),
        Err(SnapshotError::Inconsistent { .. })
    ));
}
