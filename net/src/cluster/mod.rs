//! The cluster: the Raft metadata quorum (DESIGN.md §7).

pub mod raft_node;
pub mod raft_store;
