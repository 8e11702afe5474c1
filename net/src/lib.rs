//! Everything of Mamba that crosses a network: the wire protocol, the
//! broker server and the Rust client.

pub mod client;
pub mod cluster;
pub mod group;
pub mod node;
pub mod protocol;
mod receive;
pub mod replication;
mod runtime;
pub mod server;
pub mod topic_config;
