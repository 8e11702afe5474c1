//! Replication on clusters of real `mamba serve` processes on loopback
//! (harness: `common/cluster.rs`): leaders killed with SIGKILL under
//! `acks=all` load lose no acknowledged record, a leader's unreplicated
//! tail is cut when it returns as a follower, a stopped follower catches
//! up and rejoins the in-sync replicas, `min.insync.replicas` refuses
//! and recovers, a controlled shutdown under load fails no request, and
//! the operator's failover, failback, transfer-leader, move (also of a
//! partition whose first records retention deleted) and decommission
//! under load lose nothing and fail nothing; a group's committed offsets
//! survive its coordinator's failover (kill -9) and a leadership that
//! moves away and back.
//! Every check ends with the replicas byte for byte alike (`mamba log
//! dump` of each: every batch's offsets, epoch, position, size and CRC).
//!
//! `MAMBA_TEST_LEADER_KILLS` sets how many leaders the kill test kills
//! (CI: 3; the issue's figure: 20).

mod common;

use common::cluster::*;
use mamba_net::client::{Acks, Producer, ProducerConfig, ProducerRecord};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `mamba topic create NAME -p P -r R [--config K=V ...]` through broker 1.
fn create_topic(cluster: &Cluster, name: &str, partitions: u32, rf: u32, configs: &[&str]) {
    let (p, r) = (partitions.to_string(), rf.to_string());
    let mut args = vec!["topic", "create", name, "-p", &p, "-r", &r];
    for c in configs {
        args.extend(["--config", c]);
    }
    common::cli_ok(&cluster.client(cluster.live()[0]), &args);
}

/// `topic describe -o json` through a live broker.
fn describe(cluster: &Cluster, topic: &str) -> Value {
    let through = cluster.client(cluster.live()[0]);
    common::cli_json(&through, &["topic", "describe", topic]).remove(0)
}

fn partition_of(described: &Value, p: u64) -> Value {
    common::partition(described, p).clone()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_u64).collect())
}

/// Waits until every partition of `topic` has a leader and all `rf`
/// replicas in sync; returns the description.
fn wait_in_sync(cluster: &Cluster, topic: &str, partitions: u64, rf: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = describe(cluster, topic);
        let done = (0..partitions).all(|p| {
            let part = partition_of(&last, p);
            part["leader"].is_u64() && ids(&part["isr"]).len() == rf
        });
        if done {
            return last;
        }
        assert!(Instant::now() < deadline, "{topic} not fully in sync within {WAIT:?}: {last:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Numbered records sent to every partition in turn by an idempotent
/// `acks=all` producer on a thread, until stopped; what each partition
/// acknowledged is kept in order.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u32, Vec<u64>>>>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, topic: &str, partitions: u32, pause: Duration) -> Load {
        Load::start_with(cluster, topic, partitions, pause, Acks::All)
    }

    fn start_with(
        cluster: &Cluster,
        topic: &str,
        partitions: u32,
        pause: Duration,
        acks: Acks,
    ) -> Load {
        let brokers = cluster.live().iter().map(|id| cluster.client(*id)).collect::<Vec<_>>();
        let config = ProducerConfig {
            acks,
            idempotence: true,
            linger_ms: 1,
            delivery_timeout_ms: 60_000,
            ..ProducerConfig::default()
        };
        let producer = Producer::connect(&brokers.join(","), config).expect("producer");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f, topic) = (stop.clone(), acked.clone(), failed.clone(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Acquire) {
                let partition = (i % u64::from(partitions)) as u32;
                let record = ProducerRecord {
                    topic: topic.clone(),
                    partition: Some(partition),
                    value: i.to_string().into_bytes(),
                    ..ProducerRecord::default()
                };
                let (a, failures) = (a.clone(), f.clone());
                let sent = producer.send_with_callback(record, move |outcome| match outcome {
                    Ok(m) => a
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(m.partition)
                        .or_insert_with(Vec::new)
                        .push(i),
                    Err(e) => {
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{i}: {e}"))
                    }
                });
                if let Err(e) = sent {
                    f.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{i}: send: {e}"));
                }
                i += 1;
                std::thread::sleep(pause);
            }
            producer.close();
        });
        Load { stop, acked, failed, thread: Some(thread) }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }

    /// Waits until `more` further records were acknowledged.
    fn wait_acked(&self, more: usize) {
        let target = self.acked_count() + more;
        let deadline = Instant::now() + WAIT;
        while self.acked_count() < target {
            if Instant::now() >= deadline {
                let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
                panic!(
                    "{more} more records not acknowledged within {WAIT:?} ({} so far); failures: {:?}",
                    self.acked_count(),
                    &failed[..failed.len().min(5)]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sending, waits for every answer; returns what each partition
    /// acknowledged and every failure.
    fn finish(mut self) -> (BTreeMap<u32, Vec<u64>>, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        self.thread.take().expect("running").join().expect("the load thread");
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (acked, failed)
    }
}

/// Every record of `topic` by partition, in offset order (values as
/// numbers), read through a live broker until `expected` are in.
fn read_all(cluster: &Cluster, topic: &str, expected: usize) -> BTreeMap<u32, Vec<u64>> {
    let through = cluster.live().iter().map(|id| cluster.client(*id)).collect::<Vec<_>>();
    let records = common::consume_all(&through.join(","), topic, expected);
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        let value: u64 = String::from_utf8_lossy(&r.value).parse().expect("a number");
        by_partition.entry(r.partition).or_default().push(value);
    }
    by_partition
}

/// No acknowledged record lost, none twice, each partition in send order.
fn check_delivery(acked: &BTreeMap<u32, Vec<u64>>, read: &BTreeMap<u32, Vec<u64>>) {
    for (p, values) in read {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), values.len(), "partition {p}: a record appears twice");
        assert!(values.windows(2).all(|w| w[0] < w[1]), "partition {p}: out of send order");
    }
    for (p, values) in acked {
        let stored: std::collections::BTreeSet<u64> =
            read.get(p).map(|v| v.iter().copied().collect()).unwrap_or_default();
        let lost: Vec<u64> = values.iter().copied().filter(|v| !stored.contains(v)).collect();
        assert!(lost.is_empty(), "partition {p}: acknowledged records lost: {lost:?}");
    }
}

/// `mamba log dump -o json` of one replica, without file paths: per
/// batch its offsets, epoch, position, size and CRC.
fn dump(cluster: &Cluster, id: u32, topic: &str, partition: u32) -> Vec<Value> {
    let dir = cluster.members[&id].data_dir.join("topics").join(topic).join(partition.to_string());
    common::log_dump(&dir)
}

/// Waits until every replica of each partition holds the same batches,
/// byte for byte as `log dump` shows them, and returns them per partition.
fn wait_replicas_identical(cluster: &Cluster, topic: &str, partitions: u32) {
    for p in 0..partitions {
        let replicas = ids(&partition_of(&describe(cluster, topic), u64::from(p))["replicas"]);
        let deadline = Instant::now() + WAIT;
        loop {
            let dumps: Vec<Vec<Value>> =
                replicas.iter().map(|id| dump(cluster, *id as u32, topic, p)).collect();
            if dumps.windows(2).all(|w| w[0] == w[1]) {
                break;
            }
            let last: Vec<usize> = dumps.iter().map(Vec::len).collect();
            assert!(
                Instant::now() < deadline,
                "{topic}/{p}: replicas {replicas:?} differ (batches per replica {last:?})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn leader_of(cluster: &Cluster, topic: &str, p: u64) -> u32 {
    let mut leader = None;
    wait_until("a leader", || {
        leader = partition_of(&describe(cluster, topic), p)["leader"].as_u64();
        leader.is_some()
    });
    leader.expect("a leader") as u32
}

#[test]
fn leaders_killed_with_sigkill_under_acks_all_load_lose_and_duplicate_nothing() {
    let _serial = one_at_a_time();
    let kills: usize =
        std::env::var("MAMBA_TEST_LEADER_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "orders", 2, 3, &[]);
    wait_in_sync(&cluster, "orders", 2, 3);
    let load = Load::start(&cluster, "orders", 2, Duration::from_micros(500));
    load.wait_acked(200);
    for round in 0..kills {
        let victim = leader_of(&cluster, "orders", (round % 2) as u64);
        cluster.kill9(victim);
        load.wait_acked(200);
        cluster.restart(victim);
        wait_in_sync(&cluster, "orders", 2, 3);
        load.wait_acked(100);
    }
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "failed sends: {:?}", &failed[..failed.len().min(5)]);
    let total: usize = acked.values().map(Vec::len).sum();
    let read = read_all(&cluster, "orders", total);
    check_delivery(&acked, &read);
    wait_replicas_identical(&cluster, "orders", 2);
}

/// The offset of the first batch of `epoch` in a replica's log, if any.
fn epoch_start(cluster: &Cluster, id: u32, topic: &str, epoch: u64) -> Option<u64> {
    dump(cluster, id, topic, 0)
        .iter()
        .find(|b| b["leader_epoch"].as_u64() == Some(epoch))
        .and_then(|b| b["base_offset"].as_u64())
}

fn log_end(cluster: &Cluster, id: u32, topic: &str) -> u64 {
    dump(cluster, id, topic, 0).last().and_then(|b| b["last_offset"].as_u64()).map_or(0, |o| o + 1)
}

#[test]
fn a_dead_leaders_unreplicated_tail_is_cut_when_it_returns_and_the_replicas_converge() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "tail", 1, 3, &[]);
    wait_in_sync(&cluster, "tail", 1, 3);
    let old = leader_of(&cluster, "tail", 0);
    let followers: Vec<u32> = (1..=3).filter(|id| *id != old).collect();
    let through = cluster.client(old);
    let produce = |acks: &str, lines: &str| {
        let out = common::mamba_with_input(
            &through,
            &["produce", "tail", "--acks", acks],
            lines.as_bytes(),
            WAIT,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    produce("all", "replicated-0\nreplicated-1\n");
    // The followers stopped (SIGSTOP, within their session): once the
    // fetch each left waiting at the leader has run out its long poll
    // (500 ms), none asks again, so what the leader takes now with acks=1
    // is its alone when it dies.
    let pids: Vec<i32> = followers.iter().map(|id| cluster.pid(*id)).collect();
    let signal = |sig: i32| {
        for pid in &pids {
            // SAFETY: kill(2) on our own children's pids; no memory is involved.
            assert_eq!(unsafe { libc::kill(*pid, sig) }, 0);
        }
    };
    signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_millis(650));
    produce("1", "tail-0\ntail-1\ntail-2\n");
    cluster.kill9(old);
    signal(libc::SIGCONT);
    assert!(stopped_at.elapsed() < Duration::from_millis(SESSION_MS), "within a session");
    let old_end = log_end(&cluster, old, "tail");
    let mut new = old;
    wait_until("a new leader", || {
        new = leader_of(&cluster, "tail", 0);
        new != old
    });
    let through = cluster.client(new);
    let out = common::mamba_with_input(&through, &["produce", "tail"], b"new-leader\n", WAIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_epoch =
        partition_of(&describe(&cluster, "tail"), 0)["leader_epoch"].as_u64().expect("epoch");
    let new_start = epoch_start(&cluster, new, "tail", new_epoch).expect("written in it");
    assert!(
        old_end > new_start,
        "broker {old} ended at {old_end}, epoch {new_epoch} starts at {new_start}"
    );

    cluster.restart(old);
    wait_in_sync(&cluster, "tail", 1, 3);
    wait_replicas_identical(&cluster, "tail", 1);
    let log = std::fs::read_to_string(cluster.log_of(old)).expect("log");
    assert!(log.contains("truncating a diverging log tail"), "broker {old} cut its tail");
    let read: Vec<String> = common::consume_all(&cluster.client(new), "tail", 3)
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(read, ["replicated-0", "replicated-1", "new-leader"], "the dead tail is gone");
}

#[test]
fn a_follower_stopped_a_while_catches_up_and_rejoins_the_in_sync_replicas() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "catch", 1, 3, &[]);
    wait_in_sync(&cluster, "catch", 1, 3);
    let leader = leader_of(&cluster, "catch", 0);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill9(follower);
    let load = Load::start(&cluster, "catch", 1, Duration::ZERO);
    // Fenced, it leaves the in-sync set; acks=all goes on with two.
    wait_until("the stopped follower out of the in-sync replicas", || {
        !ids(&partition_of(&describe(&cluster, "catch"), 0)["isr"]).contains(&u64::from(follower))
    });
    load.wait_acked(5000);
    cluster.restart(follower);
    load.wait_acked(1000);
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "failed sends: {:?}", &failed[..failed.len().min(5)]);
    let described = wait_in_sync(&cluster, "catch", 1, 3);
    assert!(ids(&partition_of(&described, 0)["isr"]).contains(&u64::from(follower)));
    wait_replicas_identical(&cluster, "catch", 1);
    let total: usize = acked.values().map(Vec::len).sum();
    check_delivery(&acked, &read_all(&cluster, "catch", total));
}

#[test]
fn acks_all_is_refused_below_min_insync_replicas_and_works_again_once_back() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "strict", 1, 2, &["min.insync.replicas=2"]);
    wait_in_sync(&cluster, "strict", 1, 2);
    let described = describe(&cluster, "strict");
    let part = partition_of(&described, 0);
    let leader = part["leader"].as_u64().expect("leader") as u32;
    let follower =
        ids(&part["replicas"]).into_iter().find(|id| *id != u64::from(leader)).expect("follower")
            as u32;
    let through = cluster.client(leader);
    let produce = |acks: &str, value: &str| {
        common::mamba_with_input(
            &through,
            &["produce", "strict", "--acks", acks],
            format!("{value}\n").as_bytes(),
            WAIT,
        )
    };
    assert!(produce("all", "both-in-sync").status.success());
    cluster.kill9(follower);
    wait_until("the follower out of the in-sync replicas", || {
        ids(&partition_of(&describe(&cluster, "strict"), 0)["isr"]) == [u64::from(leader)]
    });
    let refused = produce("all", "refused");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("not enough replicas"), "{err}");
    assert!(produce("1", "leader-only").status.success(), "acks=1 still works");
    cluster.restart(follower);
    wait_in_sync(&cluster, "strict", 1, 2);
    assert!(produce("all", "again").status.success());
    let read: Vec<String> = common::consume_all(&cluster.client(leader), "strict", 3)
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(read, ["both-in-sync", "leader-only", "again"], "the refused one was not written");
    wait_replicas_identical(&cluster, "strict", 1);
}

#[test]
fn a_controlled_shutdown_under_acks_all_load_fails_no_request() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "calm", 3, 3, &[]);
    wait_in_sync(&cluster, "calm", 3, 3);
    let load = Load::start(&cluster, "calm", 3, Duration::from_micros(500));
    load.wait_acked(500);
    let leader = leader_of(&cluster, "calm", 0);
    let took = cluster.stop(leader);
    eprintln!("controlled shutdown of broker {leader} took {took:?}");
    load.wait_acked(500);
    let led_elsewhere = describe(&cluster, "calm");
    for p in 0..3 {
        assert_ne!(partition_of(&led_elsewhere, p)["leader"], u64::from(leader), "moved away");
    }
    cluster.restart(leader);
    wait_in_sync(&cluster, "calm", 3, 3);
    load.wait_acked(500);
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "failed sends: {:?}", &failed[..failed.len().min(5)]);
    let log = std::fs::read_to_string(cluster.log_of(leader)).expect("log");
    assert!(log.contains("controlled shutdown: leaderships moved"), "the shutdown was controlled");
    let total: usize = acked.values().map(Vec::len).sum();
    check_delivery(&acked, &read_all(&cluster, "calm", total));
    wait_replicas_identical(&cluster, "calm", 3);
}

#[test]
fn active_passive_leads_from_the_primary_fails_over_to_the_standby_and_fails_back() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "primary", 4, 3, &["leader.placement=primary:2"]);
    let leaders = |cluster: &Cluster| -> Vec<Option<u64>> {
        let d = describe(cluster, "primary");
        (0..4).map(|p| partition_of(&d, p)["leader"].as_u64()).collect()
    };
    wait_until("every leader on the primary", || leaders(&cluster) == vec![Some(2); 4]);
    cluster.kill9(2);
    wait_until("every leader on a standby", || {
        leaders(&cluster).iter().all(|l| l.is_some_and(|id| id != 2))
    });
    cluster.restart(2);
    wait_until("every leader back on the primary", || leaders(&cluster) == vec![Some(2); 4]);
    wait_in_sync(&cluster, "primary", 4, 3);
}

#[test]
fn a_replicated_topic_deleted_under_load_leaves_the_brokers_serving() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "doomed", 3, 3, &[]);
    wait_in_sync(&cluster, "doomed", 3, 3);
    let load = Load::start_with(&cluster, "doomed", 3, Duration::ZERO, Acks::Leader);
    load.wait_acked(2000);
    common::cli_ok(&cluster.client(1), &["topic", "delete", "doomed"]);
    drop(load.finish());
    // Followers were fetching and appending when their partitions went.
    create_topic(&cluster, "after", 1, 3, &[]);
    wait_in_sync(&cluster, "after", 1, 3);
    let through = cluster.client(1);
    let out = common::mamba_with_input(&through, &["produce", "after"], b"still-here\n", WAIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_replicas_identical(&cluster, "after", 1);
}

/// The partitions of `topic` (of `count`) broker `id` leads.
fn led_by(cluster: &Cluster, topic: &str, count: u64, id: u64) -> Vec<u64> {
    let d = describe(cluster, topic);
    (0..count).filter(|p| partition_of(&d, *p)["leader"].as_u64() == Some(id)).collect()
}

fn cluster_json(cluster: &Cluster, args: &[&str]) -> Value {
    common::cli_json(&cluster.client(cluster.live()[0]), args).remove(0)
}

#[test]
fn failover_failback_and_transfer_leader_under_acks_all_load_fail_no_request() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(3);
    cluster.settle();
    create_topic(&cluster, "ops", 3, 3, &[]);
    wait_in_sync(&cluster, "ops", 3, 3);
    let through = cluster.client(1);
    // Bad requests: one clear line each, nothing changed.
    for (args, says) in [
        (&["cluster", "failover", "--no-wait"][..], "--from"),
        (&["cluster", "failover", "--from", "9"][..], "broker 9 is not in the cluster"),
        (&["cluster", "transfer-leader", "ops:7", "--to", "1"][..], "there is no 7"),
        (&["cluster", "transfer-leader", "ops", "--to", "1"][..], "TOPIC:PARTITION"),
        (&["cluster", "move", "ops:0", "--to", "1,1"][..], "named twice"),
        (&["cluster", "move", "ops:0", "--to", "1,9"][..], "broker 9 is not in the cluster"),
        (&["cluster", "decommission", "2"][..], "voters remove 2"),
        (&["cluster", "config", "set", "color", "blue"][..], "unknown cluster setting"),
        (&["cluster", "config", "set", "leader.placement", "primary:x"][..], "primary:N"),
    ] {
        let (code, err) = common::cli_err(&through, args);
        assert!(err.contains(says), "{args:?}: exit {code}: {err}");
    }
    let load = Load::start(&cluster, "ops", 3, Duration::from_micros(500));
    load.wait_acked(300);
    // Failover: broker 1 leads nothing, and stays so past a balancing pass.
    common::cli_ok(&through, &["cluster", "failover", "--from", "1"]);
    assert_eq!(led_by(&cluster, "ops", 3, 1), Vec::<u64>::new(), "failover waited for it");
    let status = cluster_json(&cluster, &["cluster", "status"]);
    assert_eq!(broker(&status, 1)["drained"], true, "{status:#}");
    load.wait_acked(300);
    std::thread::sleep(Duration::from_millis(5_500));
    assert_eq!(led_by(&cluster, "ops", 3, 1), Vec::<u64>::new(), "no failback by the balancer");
    // Failback: the partitions broker 1 is the preferred leader of return.
    common::cli_ok(&through, &["cluster", "failback", "--to", "1"]);
    let d = describe(&cluster, "ops");
    let preferred: Vec<u64> =
        (0..3).filter(|p| ids(&partition_of(&d, *p)["replicas"])[0] == 1).collect();
    assert!(!preferred.is_empty(), "placement spreads preferred leaders: {d:#}");
    wait_until("broker 1 leads its preferred partitions again", || {
        led_by(&cluster, "ops", 3, 1) == preferred
    });
    load.wait_acked(300);
    // Transfer: to a follower, which stays the leader (preferred now).
    let p0 = partition_of(&describe(&cluster, "ops"), 0);
    let to = ids(&p0["isr"])
        .into_iter()
        .find(|id| Some(*id) != p0["leader"].as_u64())
        .expect("a follower");
    common::cli_ok(&through, &["cluster", "transfer-leader", "ops:0", "--to", &to.to_string()]);
    let p0 = partition_of(&describe(&cluster, "ops"), 0);
    assert_eq!((p0["leader"].as_u64(), ids(&p0["replicas"])[0]), (Some(to), to), "{p0:#}");
    load.wait_acked(300);
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "failed sends: {:?}", &failed[..failed.len().min(5)]);
    let total: usize = acked.values().map(Vec::len).sum();
    check_delivery(&acked, &read_all(&cluster, "ops", total));
    wait_replicas_identical(&cluster, "ops", 3);
}

#[test]
fn a_move_and_a_decommission_under_acks_all_load_lose_nothing() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start_with(3, &["--retention-check-interval-ms", "200"]);
    cluster.settle();
    let seeds = cluster.cluster_address(1);
    cluster.join(4, &seeds);
    wait_until("broker 4 alive", || {
        broker(&cluster_json(&cluster, &["cluster", "status"]), 4)["status"] == "alive"
    });
    let through = cluster.client(1);
    // The catch-up throttle in the path (high: the test does not time it).
    common::cli_ok(
        &through,
        &["cluster", "config", "set", "replication.throttle.bytes_per_s", "64MiB"],
    );
    // A partition whose first records retention deleted: a new replica
    // cannot copy its log from offset 0, it starts at the leader's start.
    create_topic(&cluster, "trimmed", 1, 1, &["segment.bytes=64KiB", "retention.bytes=64KiB"]);
    let lines: String = (0..3000).map(|i| format!("{i:0>99}\n")).collect();
    let out = common::mamba_with_input(&through, &["produce", "trimmed"], lines.as_bytes(), WAIT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until("retention deleting trimmed's first segments", || {
        partition_of(&describe(&cluster, "trimmed"), 0)["log_start_offset"].as_u64() > Some(0)
    });
    let from = ids(&partition_of(&describe(&cluster, "trimmed"), 0)["replicas"]);
    let to = (1..=4).find(|id| !from.contains(id)).expect("another broker");
    common::cli_ok(&through, &["cluster", "move", "trimmed:0", "--to", &to.to_string()]);
    let moved = partition_of(&describe(&cluster, "trimmed"), 0);
    assert_eq!(
        (ids(&moved["replicas"]), moved["leader"].as_u64()),
        (vec![to], Some(to)),
        "{moved:#}"
    );
    assert_eq!(moved["log_end_offset"], 3000, "{moved:#}");
    create_topic(&cluster, "moving", 4, 2, &[]);
    wait_in_sync(&cluster, "moving", 4, 2);
    let load = Load::start(&cluster, "moving", 4, Duration::from_micros(500));
    load.wait_acked(1000);
    // Move partition 0 to two brokers it is not on: every replica changes,
    // the leadership with them.
    let before = ids(&partition_of(&describe(&cluster, "moving"), 0)["replicas"]);
    let target: Vec<u64> = (1..=4).filter(|id| !before.contains(id)).collect();
    let to = target.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    common::cli_ok(&through, &["cluster", "move", "moving:0", "--to", &to]);
    let p0 = partition_of(&describe(&cluster, "moving"), 0);
    assert_eq!(ids(&p0["replicas"]), target, "{p0:#}");
    assert!(target.contains(&p0["leader"].as_u64().expect("a leader")), "{p0:#}");
    load.wait_acked(1000);
    // Decommission broker 4 (not a voter): it ends up hosting nothing,
    // and once stopped the cluster forgets it.
    common::cli_ok(&through, &["cluster", "decommission", "4"]);
    let d = describe(&cluster, "moving");
    for p in 0..4 {
        assert!(!ids(&partition_of(&d, p)["replicas"]).contains(&4), "{d:#}");
    }
    load.wait_acked(1000);
    cluster.stop(4);
    wait_until("the cluster forgets broker 4", || {
        let status = cluster_json(&cluster, &["cluster", "status"]);
        status["brokers"].as_array().is_some_and(|b| b.iter().all(|b| b["node_id"] != 4))
    });
    let (acked, failed) = load.finish();
    assert!(failed.is_empty(), "failed sends: {:?}", &failed[..failed.len().min(5)]);
    let total: usize = acked.values().map(Vec::len).sum();
    check_delivery(&acked, &read_all(&cluster, "moving", total));
    wait_in_sync(&cluster, "moving", 4, 2);
    wait_replicas_identical(&cluster, "moving", 4);
}

/// Group `g`'s committed offset of `src`/0, asked through a live broker
/// (`None` while its coordinator cannot answer, during a failover).
fn committed(cluster: &Cluster, group: &str) -> Option<u64> {
    let out = run_bounded(
        &cluster.client(cluster.live()[0]),
        &["group", "describe", group, "-o", "json"],
        b"",
    );
    let described: Value = serde_json::from_slice(&out.stdout).ok()?;
    let partitions = described["partitions"].as_array()?;
    partitions.iter().find(|p| p["topic"] == "src" && p["partition"] == 0)?["committed_offset"]
        .as_u64()
}

/// Commits `offset` of `src`/0 for `group` (a reset of its offsets) and
/// returns once the coordinator acknowledged it.
fn commit(cluster: &Cluster, group: &str, offset: u64) {
    let to = offset.to_string();
    let args = ["group", "reset-offsets", group, "--topic", "src", "--to", &to];
    common::cli_ok(&cluster.client(cluster.live()[0]), &args);
}

#[test]
fn committed_offsets_fail_over_with_their_partition_of_consumer_offsets() {
    const OFFSETS: &str = "__consumer_offsets";
    let _serial = one_at_a_time();
    // One partition of __consumer_offsets: every group is on partition 0.
    let mut cluster = Cluster::start_with(3, &["--offsets-topic-partitions", "1"]);
    cluster.settle();
    create_topic(&cluster, "src", 1, 3, &[]);
    let lines: String = (0..100).map(|i| format!("r{i}\n")).collect();
    let out = run_bounded(&cluster.client(1), &["produce", "src"], lines.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    commit(&cluster, "g", 10);
    wait_in_sync(&cluster, OFFSETS, 1, 3);

    // The leadership moves away, a commit is made at the new leader, and
    // it comes back: the first leader reads the group's state anew.
    let first = leader_of(&cluster, OFFSETS, 0);
    let other = (1..=3).find(|id| *id != first).expect("another broker");
    let transfer = |to: u32| {
        let args = ["cluster", "transfer-leader", "__consumer_offsets:0", "--to", &to.to_string()];
        common::cli_ok(&cluster.client(1), &args);
    };
    transfer(other);
    commit(&cluster, "g", 20);
    transfer(first);
    assert_eq!(committed(&cluster, "g"), Some(20), "the commit made while broker {other} led");

    // The coordinator dies right after acknowledging a commit: the new one
    // has it (acknowledged means every in-sync replica has it).
    for round in 0..3u64 {
        let offset = 30 + 10 * round;
        commit(&cluster, "g", offset);
        let victim = leader_of(&cluster, OFFSETS, 0);
        cluster.kill9(victim);
        let mut seen = None;
        wait_until("the new coordinator answers", || {
            seen = committed(&cluster, "g");
            seen.is_some()
        });
        assert_eq!(seen, Some(offset), "round {round}: broker {victim} was killed after the ack");
        cluster.restart(victim);
        wait_in_sync(&cluster, OFFSETS, 1, 3);
    }
    wait_replicas_identical(&cluster, OFFSETS, 1);
}

/// A small tmpfs mounted on a directory, filled and emptied on demand, and
/// unmounted when dropped (lazily: the broker may still hold files).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` where this process may not mount: it is not root (as root,
    /// a mount that fails is a failure).
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(dir).expect("the mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount a tmpfs on {}: {status}", dir.display());
        Some(SmallDisk { dir: dir.to_path_buf() })
    }

    fn fill_path(&self) -> std::path::PathBuf {
        self.dir.join("fill")
    }

    /// Writes one file until the disk refuses more.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.fill_path()).expect("the fill file");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.fill_path()).expect("the fill file removed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Each batch of one replica as `log dump` shows it (offsets, epoch, size,
/// CRC), without its place in the segment files: a replica that recovered
/// from a write error goes on in a new segment.
fn batches(cluster: &Cluster, id: u32, topic: &str, partition: u32) -> Vec<Value> {
    let mut dump = dump(cluster, id, topic, partition);
    for batch in &mut dump {
        if let Some(o) = batch.as_object_mut() {
            o.remove("position_bytes");
        }
    }
    dump
}

#[test]
fn a_follower_whose_disk_fills_leaves_the_in_sync_replicas_and_catches_up_once_it_has_room() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(3);
    cluster.settle();
    // Each broker keeps the topic on a small disk of its own.
    let disks: Vec<SmallDisk> = (1..=3)
        .filter_map(|id| {
            let dir = cluster.members[&id].data_dir.join("topics").join("full");
            SmallDisk::mount(&dir, "16m")
        })
        .collect();
    if disks.len() < 3 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    create_topic(&cluster, "full", 1, 3, &[]);
    wait_in_sync(&cluster, "full", 1, 3);
    let leader = leader_of(&cluster, "full", 0);
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let brokers = cluster.live().iter().map(|id| cluster.client(*id)).collect::<Vec<_>>();
    let send = |acks: Acks, value: Vec<u8>| {
        // Bounded: a follower kept in sync while it cannot write would
        // hold an acks=all write until its disk had room.
        let config =
            ProducerConfig { acks, delivery_timeout_ms: 15_000, ..ProducerConfig::default() };
        let producer = Producer::connect(&brokers.join(","), config).expect("producer");
        let record = ProducerRecord { topic: "full".into(), value, ..ProducerRecord::default() };
        common::send_and_wait(&producer, record).expect("acknowledged");
    };
    send(Acks::All, b"before".to_vec());

    // The last batch the leader gets is one the follower cannot write
    // (it got it into memory: its log's end is the leader's). It leaves
    // the in-sync replicas, and the write is acknowledged without it.
    disks[follower as usize - 1].fill();
    send(Acks::All, vec![7u8; 256 << 10]);
    let log = std::fs::read_to_string(cluster.log_of(follower)).expect("the follower's log");
    assert!(log.contains("partition fenced after a storage error"), "no write failed:\n{log}");
    wait_until("the follower out of the in-sync replicas", || {
        !ids(&partition_of(&describe(&cluster, "full"), 0)["isr"]).contains(&u64::from(follower))
    });
    // Nothing more is sent: once the disk has room the follower must get
    // there by itself.
    std::thread::sleep(Duration::from_millis(1500));
    disks[follower as usize - 1].free();

    let deadline = Instant::now() + WAIT;
    let copies = |id| batches(&cluster, id, "full", 0);
    while copies(follower) != copies(leader) {
        assert!(
            Instant::now() < deadline,
            "the follower still has {} batches, the leader {}, {WAIT:?} after its disk had room",
            copies(follower).len(),
            copies(leader).len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And it takes part in acks=all again.
    wait_in_sync(&cluster, "full", 1, 3);
    send(Acks::All, b"after".to_vec());
    wait_until("every replica with the last record", || {
        (1..=3).all(|id| copies(id) == copies(leader))
    });
}
