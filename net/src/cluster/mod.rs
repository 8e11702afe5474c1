//! The cluster: what every broker agrees on through the metadata quorum,
//! and the decisions the controller makes before it proposes a change.
//! Pure state machines and functions, no I/O: the Raft node (driven on
//! shard 0) feeds them committed records and persists what they return.

pub mod metadata;
pub mod placement;
