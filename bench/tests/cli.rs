//! The real `mamba-bench` binary: where it finds brokers, what it says
//! before a run, and what its report lines mean.

use mamba_engine::{Engine, EngineConfig};
use mamba_net::client::{block_on, Admin};
use mamba_net::server::{Broker, BrokerConfig};
use std::process::Command;

fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mamba-bench"));
    command.env_remove("MAMBA_BROKERS");
    command
}

#[test]
fn a_bare_run_says_how_to_name_a_broker() {
    let out = bench().arg("e2e").output().expect("run mamba-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--embedded") && err.contains("MAMBA_BROKERS"), "{err}");
}

#[test]
fn mamba_brokers_names_the_target_and_an_existing_topic_keeps_its_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine =
        Engine::open(dir.path(), EngineConfig { shards: Some(1), ..EngineConfig::default() })
            .expect("engine");
    let config =
        BrokerConfig { listen: "127.0.0.1:0".parse().expect("address"), ..BrokerConfig::default() };
    let broker = Broker::start(engine.clone(), config).expect("broker");
    let addr = broker.local_addr().to_string();
    let admin = Admin::connect(&addr).expect("admin");
    block_on(admin.create_topic("two", 2, vec![])).expect("create");

    let out = bench()
        .args(["e2e", "--topic", "two", "--partitions", "4", "--rate", "2000"])
        .args(["--duration-s", "2", "--warmup-s", "1", "--batch-bytes", "16384"])
        .env("MAMBA_BROKERS", &addr)
        .output()
        .expect("run mamba-bench");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("topic two exists with 2 partitions, not --partitions 4"),
        "said before starting: {stderr}"
    );
    let line = |name: &str| {
        stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {stdout}"))
    };
    assert!(line("produce ").contains("send to ack"), "{stdout}");
    assert!(
        !line("consume ").contains("latency") && !line("consume ").contains(" p50"),
        "{stdout}"
    );
    assert!(line("e2e ").contains("publish to delivery"), "{stdout}");
    assert!(line("delivery ").contains("lost 0, duplicated 0, out of order 0"), "{stdout}");
    drop(admin);
    drop(broker);
    engine.close().expect("close");
}
