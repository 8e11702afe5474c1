//! The work of each API, one file per family; `dispatch.rs` decodes and
//! routes to them.

pub(crate) mod cluster;
pub(crate) mod fetch;
pub(crate) mod groups;
pub(crate) mod metadata;
pub(crate) mod produce;
pub(crate) mod replication;
pub(crate) mod topics;
