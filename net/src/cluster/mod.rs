//! The cluster (DESIGN.md §7): the Raft metadata quorum and what every
//! broker agrees on through it. `raft_store` keeps the quorum's log, hard
//! state and snapshots durable in our own storage; `raft_node` drives the
//! `raft` crate over it; `metadata` is the state machine the committed
//! records feed (pure, no I/O) and `placement` the controller's choice of
//! replicas before it proposes a topic.

pub mod metadata;
pub mod placement;
pub mod raft_node;
pub mod raft_store;
