//! Clusters of real `mamba serve` processes on loopback (the harness is
//! `common/cluster.rs`), watched through `mamba cluster` and `mamba
//! topic`: metadata agreed on by every broker, controller failover, a
//! broker killed and restarted, a broker joining through seeds, and
//! starts that must be refused.

mod common;

use common::cluster::*;

use mamba_net::client::{block_on, Admin};
use mamba_net::protocol::ConfigEntry;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn three_brokers_agree_on_metadata_created_through_any_of_them() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(3);
    cluster.settle();
    for id in 1..=3 {
        common::cli_ok(
            &cluster.client(id),
            &["topic", "create", &format!("made-at-{id}"), "-p", "3"],
        );
    }
    let status = cluster.settle();
    for id in 1..=3u32 {
        let b = broker(&status, id);
        assert_eq!(b["partitions_hosted"], 9, "9 partitions, 3 replicas each (the default): {b}");
        assert_eq!(b["partitions_led"], 3, "{b}");
        assert!(b["last_heartbeat_age_ms"].as_u64().is_some(), "the controller knows: {b}");
    }
    let voters: Vec<(u64, String)> = status["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .map(|v| (v["node_id"].as_u64().expect("id"), v["role"].as_str().expect("role").into()))
        .collect();
    assert_eq!(voters.iter().filter(|(_, r)| r == "leader").count(), 1, "{voters:?}");
    assert_eq!(voters.iter().filter(|(_, r)| r == "follower").count(), 2, "{voters:?}");
    assert!(status["voters"].as_array().expect("voters").iter().all(|v| v["log_lag"].is_u64()));

    // Every broker describes the same leaders, each one a broker of the
    // cluster.
    for topic in ["made-at-1", "made-at-2", "made-at-3"] {
        let leaders: Vec<_> = (1..=3).map(|id| topic_leaders(&cluster.client(id), topic)).collect();
        assert!(leaders.iter().all(|l| *l == leaders[0]), "{topic}: {leaders:?}");
        assert!(leaders[0].iter().all(|l| matches!(l, Some(1..=3))), "{topic}: {leaders:?}");
    }

    // The text forms, for people.
    let controller = status["controller_id"].as_u64().expect("controller");
    let text = common::cli_ok(&cluster.client(1), &["cluster", "status"]);
    assert!(text.contains(&format!("controller  node {controller}, term")), "{text}");
    assert!(text.contains("offline partitions: none"), "{text}");
    let table = common::cli_ok(&cluster.client(2), &["cluster", "brokers"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("BROKER  CLIENT ADDRESS"), "{table}");
    assert_eq!(lines.len(), 4, "a header and 3 brokers: {table}");
    assert!(lines[1..].iter().all(|l| l.contains(" alive ") && l.contains(" ago ")), "{table}");
}

/// Each partition's records go to and come from its leader while the CLI
/// names one broker only: the client must find the leaders. Producers that
/// start at different brokers get different producer ids (the same id
/// made one's batches look like retries of the other's: acknowledged,
/// never written).
#[test]
fn produce_and_consume_through_one_broker_reach_partitions_led_by_each() {
    let _serial = one_at_a_time();
    let cluster = Cluster::start(3);
    cluster.settle();
    common::cli_ok(&cluster.client(1), &["topic", "create", "routed", "-p", "3"]);
    cluster.settle();
    let leaders = topic_leaders(&cluster.client(1), "routed");
    let mut led: Vec<u64> = leaders.iter().map(|l| l.expect("a leader")).collect();
    led.sort_unstable();
    assert_eq!(led, [1, 2, 3], "each broker leads one partition");
    for through in 1..=3 {
        let addr = cluster.client(through);
        for p in 0..3u32 {
            let lines: String = (0..5).map(|i| format!("via-{through}-p{p}-{i}\n")).collect();
            let partition = p.to_string();
            let out = run_bounded(
                &addr,
                &["produce", "routed", "--partition", &partition],
                lines.as_bytes(),
            );
            assert!(
                out.status.success(),
                "produce to {p} via {through}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for through in 1..=3 {
        let addr = cluster.client(through);
        for p in 0..3u32 {
            let partition = p.to_string();
            let args = [
                "consume",
                "routed",
                "--partition",
                &partition,
                "--count",
                "15",
                "--timeout-ms",
                "10000",
            ];
            let out = run_bounded(&addr, &args, b"");
            assert!(
                out.status.success(),
                "consume {p} via {through}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let values: Vec<String> =
                String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            let expected: Vec<String> = (1..=3)
                .flat_map(|via| (0..5).map(move |i| format!("via-{via}-p{p}-{i}")))
                .collect();
            assert_eq!(
                values, expected,
                "partition {p} (led by {:?}) read via {through}",
                leaders[p as usize]
            );
        }
    }

    // Groups live on the coordinators their ids hash to, all over the
    // cluster; listing through any broker shows every one.
    let groups: Vec<String> = (0..12).map(|i| format!("readers-{i}")).collect();
    for g in &groups {
        common::cli_ok(
            &cluster.client(1),
            &["group", "reset-offsets", g, "--topic", "routed", "--to", "earliest"],
        );
    }
    for through in 1..=3 {
        let listed = common::cli_json(&cluster.client(through), &["group", "list"]);
        let mut ids: Vec<String> =
            listed.iter().map(|g| g["group_id"].as_str().expect("id").to_string()).collect();
        ids.sort();
        let mut expected = groups.clone();
        expected.sort();
        assert_eq!(ids, expected, "every group, listed through broker {through}");
    }
}

#[test]
fn the_controller_killed_with_sigkill_is_replaced_and_rejoins() {
    let _serial = one_at_a_time();
    let rounds: u32 = std::env::var("MAMBA_FAILOVER_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("MAMBA_FAILOVER_ROUNDS is a number"))
        .unwrap_or(3);
    let mut cluster = Cluster::start(3);
    cluster.settle();
    for round in 0..rounds {
        let old = cluster.controller();
        cluster.kill9(old);
        let survivor = *cluster.live().first().expect("survivors");
        let mut new = None;
        wait_until(&format!("round {round}: a controller other than {old}"), || {
            let s = cluster.status(survivor);
            new = s["controller_id"].as_u64().filter(|id| *id != u64::from(old));
            new.is_some() && s["from_controller"] == true
        });
        let topic = format!("after-failover-{round}");
        let out =
            common::mamba_cli(&cluster.client(survivor), &["topic", "create", &topic, "-p", "2"]);
        assert!(
            out.status.success(),
            "round {round}: create through {survivor} after {old} died (controller now {new:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.restart(old);
        let status = cluster.settle();
        assert_eq!(role_of(&status, old).as_deref(), Some("follower"), "round {round}: {status}");
        eprintln!("round {round}: controller {old} killed, {new:?} took over, {old} rejoined");
    }
}

#[test]
fn a_killed_broker_is_fenced_with_its_partitions_offline_and_a_restart_brings_them_back() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    // One replica each: no other broker can take over (replication.rs
    // covers failover).
    common::cli_ok(&cluster.client(1), &["topic", "create", "spread", "-p", "6", "-r", "1"]);
    cluster.settle();
    let controller = cluster.controller();
    let victim = (1..=3).find(|id| *id != controller).expect("a non-controller");
    let witness = (1..=3).find(|id| *id != victim).expect("another broker");
    let leaders = topic_leaders(&cluster.client(witness), "spread");
    let victims: Vec<u64> =
        (0..6u64).filter(|p| leaders[*p as usize] == Some(u64::from(victim))).collect();
    assert_eq!(victims.len(), 2, "6 partitions, 2 led by each broker: {leaders:?}");

    cluster.kill9(victim);
    let killed_at = Instant::now();
    let mut offline = Vec::new();
    wait_until("the killed broker fenced", || {
        let lines = common::cli_json(&cluster.client(witness), &["cluster", "brokers"]);
        let b = lines.iter().find(|b| b["node_id"] == victim).expect("still registered");
        b["status"] == "fenced"
    });
    let fenced_after = killed_at.elapsed();
    assert!(
        fenced_after < Duration::from_millis(SESSION_MS) + Duration::from_secs(5),
        "fenced {fenced_after:?} after the kill; the session is {SESSION_MS} ms"
    );
    let status = cluster.status(witness);
    for p in status["offline_partitions"]["partitions"].as_array().expect("offline") {
        assert_eq!(p["topic"], "spread");
        offline.push(p["partition"].as_u64().expect("partition"));
    }
    offline.sort_unstable();
    assert_eq!(offline, victims, "exactly the fenced broker's partitions are offline: {status}");
    let text = common::cli_ok(&cluster.client(witness), &["cluster", "status"]);
    assert!(text.contains("offline partitions: 2 (spread/"), "{text}");

    cluster.restart(victim);
    let status = cluster.settle();
    assert_eq!(broker(&status, victim)["status"], "alive");
    assert_eq!(broker(&status, victim)["partitions_led"], 2);
    for through in [victim, witness] {
        let leaders_now = topic_leaders(&cluster.client(through), "spread");
        assert_eq!(leaders_now, leaders, "through {through}: the leaders shown again");
    }
}

#[test]
fn a_broker_joining_through_seeds_becomes_a_learner_and_takes_new_partitions() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    common::cli_ok(&cluster.client(1), &["topic", "create", "before-join", "-p", "3"]);
    cluster.settle();
    let seed = cluster.cluster_address(2);
    cluster.join(4, &seed);
    let status = cluster.settle();
    assert_eq!(broker(&status, 4)["status"], "alive");
    assert_eq!(role_of(&status, 4).as_deref(), Some("learner"), "{status}");
    // It holds the metadata made before it came (settle compared digests),
    // and describes a topic it holds no partition of.
    let before: Vec<_> =
        (1..=4).map(|id| topic_leaders(&cluster.client(id), "before-join")).collect();
    assert!(before.iter().all(|l| *l == before[0] && l.len() == 3), "{before:?}");

    common::cli_ok(&cluster.client(4), &["topic", "create", "after-join", "-p", "8"]);
    let leaders = topic_leaders(&cluster.client(4), "after-join");
    assert_eq!(leaders, topic_leaders(&cluster.client(1), "after-join"));
    let status = cluster.settle();
    let d = common::cli_json(&cluster.client(1), &["topic", "describe", "after-join"]);
    let on_4 = d[0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["replicas"].as_array().expect("replicas").contains(&Value::from(4)))
        .count();
    assert!(on_4 >= 2, "8 new partitions over 4 brokers, balanced: {}", d[0]);
    assert_eq!(broker(&status, 4)["partitions_hosted"], on_4);

    // A learner becomes a voter and back, one change per request.
    let out = common::cli_ok(&cluster.client(3), &["cluster", "voters", "add", "4"]);
    assert_eq!(out.trim(), "node 4 is a voter now");
    wait_until("node 4 a follower", || {
        role_of(&cluster.status(1), 4).as_deref() == Some("follower")
    });
    let (code, err) = common::cli_err(&cluster.client(1), &["cluster", "voters", "add", "4"]);
    assert_eq!(code, 1);
    assert!(err.contains("node 4 is a voter already"), "{err}");
    let (_, err) = common::cli_err(&cluster.client(1), &["cluster", "voters", "add", "9"]);
    assert!(err.contains("node 9 is not a registered broker"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let removed = common::cli_json(&cluster.client(4), &["cluster", "voters", "remove", "4"]);
    assert_eq!(removed, [serde_json::json!({"voter_removed": 4})]);
    wait_until("node 4 a learner again", || {
        role_of(&cluster.status(2), 4).as_deref() == Some("learner")
    });
    cluster.settle();
}

/// Runs `mamba serve ARGS`, which must exit non-zero within `limit`;
/// returns its standard error.
fn serve_fails(args: &[String], limit: Duration) -> String {
    let mut child = mamba()
        .arg("serve")
        .args(args)
        .env("RUST_LOG", std::env::var("MAMBA_TEST_SERVE_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mamba serve");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = exit_within(&mut child, limit);
    let err = reader.join().expect("stderr read");
    let status =
        status.unwrap_or_else(|| panic!("mamba serve {args:?} still ran after {limit:?}: {err}"));
    assert!(!status.success(), "mamba serve {args:?} must fail: {err}");
    err
}

/// The lines a person reads: the last one says why (the lines before it
/// are the broker's log of its start and stop).
fn last_line(err: &str) -> &str {
    err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default()
}

#[test]
fn bad_cluster_settings_and_identities_are_refused_with_one_clear_line() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let ports = free_ports(3);
    let at = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let quick = Duration::from_secs(10);
    let base = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["--shards", "1", "--listen", "127.0.0.1:0", "--data-dir"].map(String::from).to_vec();
        args.push(data("refused"));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // A voter that is not ID@HOST:PORT: clap's one-line error (then its
    // usual pointer to --help).
    let err = serve_fails(&base(&["--voters", "1@x"]), quick);
    assert!(
        err.lines().next().unwrap_or_default().contains("\"1@x\": expected ID@HOST:PORT"),
        "{err}"
    );
    // The same id twice.
    let twice = format!("1@{},1@{}", at(0), at(1));
    let err = serve_fails(
        &base(&["--node-id", "1", "--cluster-listen", &at(0), "--voters", &twice]),
        quick,
    );
    assert_eq!(err.trim(), "mamba: --voters names node 1 twice");
    // This broker's own entry at another address than it listens on.
    let elsewhere = format!("1@{},2@{}", at(1), at(2));
    let err = serve_fails(
        &base(&["--node-id", "1", "--cluster-listen", &at(0), "--voters", &elsewhere]),
        quick,
    );
    assert_eq!(
        err.trim(),
        format!("mamba: --voters says node 1 is at {}, but --cluster-listen is {}", at(1), at(0))
    );
    // An advertised address no one can dial.
    let err = serve_fails(&base(&["--advertised-listen", "0.0.0.0:9400"]), quick);
    assert!(err.lines().next().unwrap_or_default().contains("not 0.0.0.0"), "{err}");
    assert!(!dir.path().join("refused").exists(), "nothing was written");

    let cluster = Cluster::start(3);
    cluster.settle();
    common::cli_ok(&cluster.client(1), &["topic", "create", "ours", "-p", "3"]);
    let before = cluster.settle();
    let seeds = format!("{},{}", cluster.cluster_address(1), cluster.cluster_address(3));
    let timings = ["--broker-heartbeat-interval-ms", "300", "--broker-session-timeout-ms", "1500"];
    let joining = |id: &str, data_dir: &str, membership: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["--node-id", id, "--shards", "1", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec();
        args.extend(["--cluster-listen", "127.0.0.1:0", "--data-dir", data_dir].map(String::from));
        args.extend(timings.iter().chain(membership).map(|s| s.to_string()));
        args
    };

    // A second broker with the id of a live one: it leaves, naming the
    // conflict, after one session (a restarted broker may still be beating
    // its old session out); the cluster keeps the live one.
    let started = Instant::now();
    let limit = Duration::from_millis(SESSION_MS) + Duration::from_secs(8);
    let err = serve_fails(&joining("2", &data("duplicate"), &["--seeds", &seeds]), limit);
    assert!(
        last_line(&err).starts_with("mamba: node id 2 is in use by a live broker at ")
            && last_line(&err).contains(&cluster.cluster_address(2)),
        "after {:?}: {err}",
        started.elapsed()
    );
    let after = cluster.settle();
    assert_eq!(after["metadata_digest"], before["metadata_digest"], "the cluster is as it was");

    // The data directory of another (one-node) cluster, started as a
    // member of this one, by voters or by seeds: it must not serve as a
    // cluster of its own beside this one, nor get in.
    let other = data("other-cluster");
    let alone = Serve::start(
        &[
            "--node-id",
            "5",
            "--shards",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--cluster-listen",
            "127.0.0.1:0",
            "--data-dir",
            &other,
        ]
        .map(String::from),
        &dir.path().join("other.log"),
    )
    .unwrap_or_else(|(code, log)| panic!("a one-node cluster starts ({code:?}): {log}"));
    common::cli_ok(&alone.client, &["topic", "create", "theirs"]);
    let theirs = common::cli_json(&alone.client, &["cluster", "status"]);
    let their_id = theirs[0]["cluster_id"].as_str().expect("cluster id").to_string();
    alone.kill9();
    let ours_id = after["cluster_id"].as_str().expect("cluster id").to_string();
    for membership in [["--voters", cluster.voters.as_str()], ["--seeds", seeds.as_str()]] {
        let err = serve_fails(&joining("5", &other, &membership), limit);
        let why = last_line(&err);
        assert!(
            why.starts_with("mamba: ") && why.contains(&their_id) && why.contains(&ours_id),
            "{membership:?}: {err}"
        );
    }
    let after = cluster.settle();
    assert_eq!(after["metadata_digest"], before["metadata_digest"], "the cluster is as it was");
    assert!(after["brokers"].as_array().expect("brokers").iter().all(|b| b["node_id"] != 5));
}

#[test]
fn a_learner_far_behind_catches_up_by_installing_a_snapshot() {
    let _serial = one_at_a_time();
    // Snapshots every 100 entries: the leader's log soon starts past where
    // a stopped broker left off.
    let mut cluster = Cluster::start_with(3, &["--metadata-snapshot-entries", "100"]);
    let seeds = cluster.cluster_address(1);
    cluster.join(4, &seeds);
    cluster.settle();
    cluster.kill9(4);

    const CHANGES: u32 = 1_500;
    let admin = Admin::connect(&cluster.client(1)).expect("admin");
    block_on(admin.create_topic("churn", 2, vec![])).expect("create");
    for chunk in (0..CHANGES).collect::<Vec<_>>().chunks(50) {
        let alters = chunk.iter().map(|i| {
            let entry =
                ConfigEntry { name: "retention.ms".into(), value: (3_600_000 + i).to_string() };
            admin.alter_topic("churn", vec![entry])
        });
        for outcome in block_on(futures::future::join_all(alters)) {
            outcome.expect("a metadata change while broker 4 is down");
        }
    }
    let last = (3_600_000 + CHANGES - 1).to_string();

    cluster.restart(4);
    cluster.settle();
    let log = std::fs::read_to_string(cluster.log_of(4)).expect("log");
    assert!(
        log.contains("installed a metadata snapshot"),
        "broker 4 caught up by snapshot, not by replaying the log"
    );
    let described = common::cli_json(&cluster.client(4), &["topic", "describe", "churn"]);
    assert_eq!(
        described[0]["configs"]["retention.ms"].as_str(),
        Some(last.as_str()),
        "broker 4 serves the latest metadata: {described:?}"
    );
}

#[test]
fn five_brokers_with_three_voters_spread_2000_partitions_evenly_and_restart_with_them() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    let seeds = cluster.cluster_address(2);
    cluster.join(4, &seeds);
    cluster.join(5, &seeds);
    cluster.settle();

    const TOPICS: u32 = 20;
    const PARTITIONS: u32 = 100;
    for t in 0..TOPICS {
        let through = cluster.client(t % 5 + 1);
        let admin = Admin::connect(&through).expect("admin");
        let one_replica = ConfigEntry { name: "replication.factor".into(), value: "1".into() };
        block_on(admin.create_topic(&format!("load-{t}"), PARTITIONS, vec![one_replica]))
            .unwrap_or_else(|e| panic!("create load-{t} through {through}: {e}"));
    }
    let check = |status: &Value| {
        let roles: Vec<Option<String>> = (1..=5).map(|id| role_of(status, id)).collect();
        let voters = roles.iter().filter(|r| matches!(r.as_deref(), Some("leader" | "follower")));
        assert_eq!(voters.count(), 3, "three voters: {roles:?}");
        assert_eq!(roles[3].as_deref(), Some("learner"), "broker 4 follows as a learner");
        assert_eq!(roles[4].as_deref(), Some("learner"), "broker 5 follows as a learner");
        let led: Vec<u64> =
            (1..=5).map(|id| broker(status, id)["partitions_led"].as_u64().expect("led")).collect();
        let hosted: Vec<u64> = (1..=5)
            .map(|id| broker(status, id)["partitions_hosted"].as_u64().expect("hosted"))
            .collect();
        assert_eq!(led.iter().sum::<u64>(), u64::from(TOPICS * PARTITIONS), "led: {led:?}");
        let spread = led.iter().max().expect("max") - led.iter().min().expect("min");
        assert!(spread <= 1, "partitions per broker differ by at most 1: {led:?}");
        assert_eq!(led, hosted, "with one replica each, a broker hosts what it leads");
        led
    };
    let before = check(&cluster.settle());

    // Every broker down at once, then back: each opens its 400 partitions.
    for id in 1..=5 {
        cluster.kill9(id);
    }
    for id in 1..=5 {
        cluster.restart(id);
    }
    let after = check(&cluster.settle());
    assert_eq!(before, after, "the same placement after a restart");
    let leaders = topic_leaders(&cluster.client(5), "load-7");
    assert!(leaders.iter().all(Option::is_some), "every partition has a leader: {leaders:?}");
}

#[test]
fn with_a_majority_of_voters_down_changes_wait_for_quorum_and_the_survivor_serves_what_it_leads() {
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(3);
    cluster.settle();
    // One replica each: with the quorum gone no in-sync set can shrink,
    // so a replicated partition waits for its dead followers.
    common::cli_ok(&cluster.client(1), &["topic", "create", "kept", "-p", "3", "-r", "1"]);
    cluster.settle();
    let leaders = topic_leaders(&cluster.client(1), "kept");
    let mine = leaders.iter().position(|l| *l == Some(1)).expect("broker 1 leads a partition");
    let partition = mine.to_string();
    let survivor = cluster.client(1);
    let produce = |values: &[&str]| {
        let lines: String = values.iter().map(|v| format!("{v}\n")).collect();
        run_bounded(&survivor, &["produce", "kept", "--partition", &partition], lines.as_bytes())
    };
    assert!(produce(&["before-0", "before-1"]).status.success());

    cluster.kill9(2);
    cluster.kill9(3);
    let asked_at = Instant::now();
    let refused = run_bounded(&cluster.client(1), &["topic", "create", "lonely"], b"");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "no metadata change without a majority");
    // Broker 1 says so itself, or (when another broker was the
    // controller) says that controller does not answer.
    assert!(
        stderr.contains("waiting for quorum") || stderr.contains("did not answer"),
        "a clear error: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(asked_at.elapsed() < WAIT, "refused in bounded time: {:?}", asked_at.elapsed());
    let status = common::cli_ok(&cluster.client(1), &["cluster", "status"]);
    assert!(status.contains("waiting for quorum"), "{status}");

    // The survivor still serves the partition it leads, to new producers
    // too (their ids come from the block it holds).
    let alone = produce(&["alone-0", "alone-1", "alone-2"]);
    assert!(alone.status.success(), "produce alone: {}", String::from_utf8_lossy(&alone.stderr));
    let args =
        ["consume", "kept", "--partition", &partition, "--count", "5", "--timeout-ms", "10000"];
    let out = run_bounded(&cluster.client(1), &args, b"");
    assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));
    let values: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(values, ["before-0", "before-1", "alone-0", "alone-1", "alone-2"]);
}

#[test]
fn a_broker_on_wildcard_addresses_registers_the_addresses_it_advertises() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let client = format!("127.0.0.1:{}", ports[0]);
    let cluster_address = format!("127.0.0.1:{}", ports[1]);
    let args: Vec<String> = [
        "--shards",
        "1",
        "--listen",
        &format!("0.0.0.0:{}", ports[0]),
        "--cluster-listen",
        &format!("0.0.0.0:{}", ports[1]),
        "--advertised-listen",
        &client,
        "--advertised-cluster-listen",
        &cluster_address,
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
    ]
    .map(String::from)
    .to_vec();
    let _serve = Serve::start(&args, &dir.path().join("broker.log"))
        .unwrap_or_else(|(code, log)| panic!("serve exited ({code:?}):\n{log}"));
    let brokers = common::cli_json(&client, &["cluster", "brokers"]);
    assert_eq!(brokers.len(), 1, "{brokers:?}");
    assert_eq!(brokers[0]["client_address"], client.as_str(), "{brokers:?}");
    assert_eq!(brokers[0]["cluster_address"], cluster_address.as_str(), "{brokers:?}");
    // Clients are sent to the advertised address, and it works.
    common::cli_ok(&client, &["topic", "create", "reachable", "-p", "2"]);
    let leaders = topic_leaders(&client, "reachable");
    assert_eq!(leaders, [Some(1), Some(1)]);
}
