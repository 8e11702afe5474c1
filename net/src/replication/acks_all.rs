//! What a write that must survive a failover waits for (`acks=all`): a
//! producer's batch, and the consumer-group coordinator's records in
//! `__consumer_offsets`. Before the append, the in-sync set must be at
//! least `min.insync.replicas` (else nothing is written); after it, the
//! high watermark must pass the batch at the leader epoch it was written
//! at. Both halves answer a failure as `(code, message)`.

use crate::cluster::metadata::BrokerId;
use crate::cluster::ClusterHandle;
use crate::protocol::ErrorCode;
use crate::server::errors::code_of;
use futures::FutureExt;
use mamba_engine::{Engine, Offset, PartitionId};
use std::time::{Duration, Instant};

/// A refused or failed write: its error code and message.
pub(crate) type Failure = (u16, String);

/// The leader epoch a replicated write to `topic`/`partition` is made at,
/// once the in-sync set is at least `min.insync.replicas` (`not enough
/// replicas` otherwise: the caller writes nothing). `None`: the partition
/// has one replica (or is not in the metadata), so there is nothing to
/// wait for beyond the local log.
pub(crate) fn check_in_sync(
    cluster: &ClusterHandle,
    topic: &str,
    partition: u32,
) -> Result<Option<u32>, Failure> {
    let view = cluster.view();
    let Some(t) = view.metadata.topic(topic) else { return Ok(None) };
    let Some(p) = t.partitions.get(partition as usize) else { return Ok(None) };
    if p.replicas.len() < 2 {
        return Ok(None);
    }
    let min_insync = crate::topic_config::min_insync_replicas(&t.configs, p.replicas.len());
    if p.isr.len() < min_insync {
        return Err((
            ErrorCode::NotEnoughReplicas.as_u16(),
            format!(
                "{topic}/{partition} has {} in-sync replicas {:?}, fewer than min.insync.replicas={min_insync}; nothing was written (acks=1 still works)",
                p.isr.len(),
                p.isr.iter().map(|id| id.0).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(Some(p.leader_epoch))
}

/// Waits until the high watermark of `topic`/`partition` passes `last`
/// (every in-sync replica has it, durably under the topic's policy).
/// Fails with `not leader` once the metadata moves the leadership away
/// from `leader_epoch` (the write may or may not survive: an idempotent
/// producer's resend is answered as a duplicate if it did), and with
/// `timeout` after `timeout`.
pub(crate) async fn wait_replicated(
    cluster: &ClusterHandle,
    engine: &Engine,
    topic: &str,
    partition: u32,
    leader_epoch: u32,
    last: Offset,
    timeout: Duration,
) -> Result<(), Failure> {
    let me = BrokerId(cluster.node_id());
    let deadline = Instant::now() + timeout;
    loop {
        let listener = cluster.view_changed.listen();
        let still_leading = cluster
            .view()
            .metadata
            .topic(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .is_some_and(|p| p.leader == Some(me) && p.leader_epoch == leader_epoch);
        if !still_leading {
            return Err((
                ErrorCode::NotLeader.as_u16(),
                format!("{topic}/{partition}: the leadership moved before the in-sync replicas had offset {last}; retry at the new leader"),
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((
                ErrorCode::Timeout.as_u16(),
                format!(
                    "{topic}/{partition}: the in-sync replicas did not reach offset {last} within {timeout:?}"
                ),
            ));
        }
        let replicated = engine.wait_for_data(topic, PartitionId(partition), last);
        futures::select! {
            done = replicated.fuse() => return done.map_err(|e| (code_of(&e), e.to_string())),
            () = listener.fuse() => {}
            () = crate::runtime::sleep(left).fuse() => {}
        }
    }
}
