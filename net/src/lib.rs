//! Everything of Mamba that crosses a network: the wire protocol, the
//! broker server and the Rust client.

pub mod client;
pub mod group;
pub mod protocol;
mod receive;
pub mod server;
pub mod topic_config;
