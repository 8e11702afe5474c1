//! A node in this process stops cleanly: its port is free, its clients'
//! connections are closed, and a new node on the same data directory and
//! port serves what the old one stored.

use mamba_engine::EngineConfig;
use mamba_net::client::{block_on, Admin};
use mamba_net::node::{Node, NodeConfig};
use mamba_net::server::BrokerConfig;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

fn start(dir: &Path, listen: SocketAddr) -> Node {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        engine: EngineConfig { shards: Some(2), pin_shards: false, ..EngineConfig::default() },
        cluster: None,
        broker: BrokerConfig { listen, ..BrokerConfig::default() },
    })
    .expect("start node")
}

#[test]
fn a_stopped_node_frees_its_port_and_closes_its_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    let addr = node.client_addr().expect("listening");
    let admin = Admin::connect(&addr.to_string()).expect("admin");
    block_on(admin.create_topic("kept", 2, vec![])).expect("create");
    let connection = admin.connection().expect("a live connection");
    assert!(connection.is_alive());

    node.stop().expect("stop");
    // The client's reader thread sees the end of the stream.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while connection.is_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!connection.is_alive(), "the broker closed the client's connection");
    drop(TcpListener::bind(addr).expect("the port is free once stop returns"));

    // Same directory, same port: the topic is there, and the same Admin
    // reconnects to it.
    let node = start(dir.path(), addr);
    let topics = block_on(admin.list_topics()).expect("list after the restart");
    assert_eq!(topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["kept"]);
    drop(node);
    drop(TcpListener::bind(addr).expect("a dropped node stops too"));
}
