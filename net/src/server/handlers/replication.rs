//! The leader's side of replication on the cluster port: `replica_fetch`
//! (a follower pulls stored batches, reports its progress, learns the
//! high watermark or where its log diverges) and `alter_partition` (a
//! leader asks the controller to change an in-sync set).

use crate::cluster::metadata::BrokerId;
use crate::protocol::*;
use crate::replication::{NotServing, TopicPartition};
use crate::server::errors::code_of;
use crate::server::ServerContext;
use mamba_engine::{EngineError, EpochEnd, LeaderEpoch, Offset, PartitionId, ReadLimit};
use std::time::{Duration, Instant};

/// The longest a follower's fetch may wait at the leader.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(10);

pub(crate) async fn replica_fetch(
    ctx: &ServerContext,
    request: &ReplicaFetchRequest,
) -> (ReplicaFetchResponse, Vec<bytes::Bytes>) {
    let refuse = |code: ErrorCode, message: String| ReplicaFetchResponse {
        error_code: code.as_u16(),
        message,
        partitions: Vec::new(),
    };
    if let Some((code, message)) = super::cluster::cluster_port_only(ctx) {
        return (refuse(ErrorCode::from_u16(code), message), Vec::new());
    }
    let cluster = ctx.cluster.as_ref().expect("checked");
    let ours = cluster.view().metadata.cluster_id().unwrap_or_default().to_string();
    if request.cluster_id != ours {
        let message = format!("this is cluster {ours}, the follower's is {}", request.cluster_id);
        return (refuse(ErrorCode::ClusterIdMismatch, message), Vec::new());
    }
    let replication = cluster.replication();
    let follower = BrokerId(request.replica_id);
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let share = (request.max_bytes.max(1) as usize / request.partitions.len().max(1)).max(1);
    loop {
        let reads = request.partitions.iter().map(|p| async move {
            let tp: TopicPartition = (p.topic.clone(), p.partition);
            let max_bytes = (p.max_bytes as usize).min(share).max(1);
            serve_partition(ctx, replication, follower, &tp, p, max_bytes).await
        });
        let served = futures::future::join_all(reads).await;
        let mut results = Vec::with_capacity(served.len());
        let mut chunks = Vec::new();
        let mut position = 0u32;
        let mut empty = Vec::new();
        for (p, (mut result, read)) in request.partitions.iter().zip(served) {
            match read {
                Some(read) if read.size_bytes() > 0 => {
                    let len = read.size_bytes() as u32;
                    result.records = Slice { offset: position, len };
                    position += len;
                    chunks.extend(read.chunks);
                }
                Some(_) => empty.push(p),
                None => {}
            }
            results.push(result);
        }
        let anything = position > 0
            || results.iter().any(|r| r.error_code != 0 || r.diverging_epoch.is_some());
        let now = Instant::now();
        if anything || now >= deadline || empty.is_empty() {
            return (
                ReplicaFetchResponse { error_code: 0, message: String::new(), partitions: results },
                chunks,
            );
        }
        // Long poll until a partition's leader has more durable data.
        let waits: Vec<_> = empty
            .iter()
            .map(|p| {
                Box::pin(ctx.engine.wait_for_data_with(
                    &p.topic,
                    PartitionId(p.partition),
                    Offset(p.fetch_offset),
                    ReadLimit::LocalHighWatermark,
                ))
            })
            .collect();
        let timer = Box::pin(crate::runtime::sleep(deadline - now));
        futures::future::select(futures::future::select_all(waits), timer).await;
    }
}

/// One partition of a replica fetch: the leader checks, records the
/// follower's progress, and reads (or names the divergence).
async fn serve_partition(
    ctx: &ServerContext,
    replication: &crate::replication::Replication,
    follower: BrokerId,
    tp: &TopicPartition,
    p: &ReplicaFetchPartition,
    max_bytes: usize,
) -> (ReplicaFetchResult, Option<mamba_engine::ReadOutcome>) {
    let mut result = ReplicaFetchResult {
        topic: p.topic.clone(),
        partition: p.partition,
        error_code: 0,
        message: String::new(),
        leader_epoch: replication.leading_epoch(tp).unwrap_or(0),
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 0,
        diverging_epoch: None,
        records: Slice::default(),
    };
    let fail = |mut result: ReplicaFetchResult, code: ErrorCode, message: String| {
        result.error_code = code.as_u16();
        result.message = message;
        (result, None)
    };
    if let Err(why) = replication.check_fetch(tp, follower, p.current_leader_epoch) {
        let (code, message) = match why {
            NotServing::NotLeader => (ErrorCode::NotLeader, "this broker does not lead it".into()),
            NotServing::FencedEpoch { ours } => (
                ErrorCode::FencedLeaderEpoch,
                format!("leader epoch {} is over: it is {ours}", p.current_leader_epoch),
            ),
            NotServing::UnknownEpoch { ours } => (
                ErrorCode::UnknownLeaderEpoch,
                format!(
                    "leader epoch {} is not known here yet (at {ours})",
                    p.current_leader_epoch
                ),
            ),
            NotServing::NotAReplica => (
                ErrorCode::InvalidRequest,
                format!("broker {follower} is not a replica of {}/{}", tp.0, tp.1),
            ),
        };
        return fail(result, code, message);
    }
    let id = PartitionId(p.partition);
    let engine_error = |result, e: EngineError| {
        let code = ErrorCode::from_u16(code_of(&e));
        fail(result, code, e.to_string())
    };
    let offsets = match ctx.engine.list_offsets(&p.topic, id).await {
        Ok(offsets) => offsets,
        Err(e) => return engine_error(result, e),
    };
    let leader_end = offsets.local_high_watermark.0;
    result.log_start_offset = offsets.log_start_offset.0;
    result.log_end_offset = leader_end;
    // Where the follower's last epoch ends here (KIP-320): a follower whose
    // log goes past it, or holds an epoch this log does not, diverges.
    if let (Some(epoch), true) = (p.last_fetched_epoch, p.fetch_offset > 0) {
        match ctx.engine.end_offset_for_epoch(&p.topic, id, LeaderEpoch(epoch)).await {
            Ok(EpochEnd::Known { epoch: e, end_offset })
                if e.0 != epoch || end_offset.0 < p.fetch_offset =>
            {
                result.diverging_epoch =
                    Some(EpochEndOffset { epoch: e.0, end_offset: end_offset.0 });
            }
            Ok(EpochEnd::Known { .. }) => {}
            Ok(EpochEnd::Undefined) => {
                result.diverging_epoch =
                    Some(EpochEndOffset { epoch, end_offset: offsets.log_start_offset.0 });
            }
            Err(e) => return engine_error(result, e),
        }
    }
    // Progress counts only from a follower whose log agrees with ours.
    result.high_watermark = offsets.high_watermark.0;
    if result.diverging_epoch.is_some() {
        return (result, None);
    }
    let hw = replication
        .on_follower_fetch(&ctx.engine, tp, follower, p.fetch_offset, p.durable_offset, &offsets)
        .await;
    result.high_watermark = hw.unwrap_or(result.high_watermark);
    match ctx
        .engine
        .read_with(&p.topic, id, Offset(p.fetch_offset), max_bytes, ReadLimit::LocalHighWatermark)
        .await
    {
        Ok(read) => (result, Some(read)),
        Err(e) => engine_error(result, e),
    }
}

/// A leader's in-sync set change, done by the controller.
pub(crate) async fn alter_partition(
    ctx: &ServerContext,
    request: AlterPartitionRequest,
) -> AlterPartitionResponse {
    let refuse = |code: ErrorCode, message: String| AlterPartitionResponse {
        error_code: code.as_u16(),
        message,
        leader_id: None,
        leader_cluster_address: String::new(),
        leader_epoch: 0,
        partition_epoch: 0,
        isr: Vec::new(),
    };
    if let Some((code, message)) = super::cluster::cluster_port_only(ctx) {
        return refuse(ErrorCode::from_u16(code), message);
    }
    let cluster = ctx.cluster.as_ref().expect("checked");
    let ours = cluster.view().metadata.cluster_id().unwrap_or_default().to_string();
    if request.cluster_id != ours {
        let message = format!("this is cluster {ours}, the leader's is {}", request.cluster_id);
        return refuse(ErrorCode::ClusterIdMismatch, message);
    }
    cluster.alter_partition_here(request).await
}
