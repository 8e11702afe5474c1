//! Consumer groups: the broker-side logic that spreads a topic's partitions
//! over the members of a group. Pure state machines and functions, no I/O;
//! the server feeds them requests and ticks and persists what they return.

pub mod assignor;
pub mod coordinator;
pub mod offsets;
pub mod records;

pub use assignor::{Assignment, AssignorKind, MemberId, MemberSpec};
