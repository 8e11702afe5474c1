//! Writing: produce (submitted to the partitions before the connection
//! reads its next frame, answered when the appends complete), and
//! init_producer_id.

use crate::cluster::ClusterHandle;
use crate::protocol::*;
use crate::replication::acks_all;
use crate::server::answer::{error_answer, response, Answer};
use crate::server::errors::code_of;
use crate::server::{metrics, ServerContext};
use futures::future::LocalBoxFuture;
use mamba_engine::{AppendWait, Batch, EngineError, Offset, PartitionId};
use rkyv::util::AlignedVec;
use std::sync::Arc;
use std::time::Duration;

/// Submits a produce request's batches now; the returned future answers.
pub(crate) async fn start_produce(
    frame: Frame,
    ctx: &ServerContext,
) -> LocalBoxFuture<'static, Option<Answer>> {
    let h = frame.header;
    let request = match ProduceRequest::decode(frame.body()) {
        Ok(request) => request,
        Err(e) => {
            let answer = error_answer(&h, ErrorCode::InvalidRequest, e.to_string());
            return Box::pin(std::future::ready(Some(answer)));
        }
    };
    let submitted = submit_produce(ctx, &request, frame.into_payload()).await;
    let replicated = (request.acks == -1).then(|| Replicated {
        cluster: ctx.cluster.clone(),
        engine: ctx.engine.clone(),
        timeout: Duration::from_millis(match request.timeout_ms {
            0 => ACKS_ALL_TIMEOUT_MS_DEFAULT,
            ms => u64::from(ms),
        }),
    });
    Box::pin(async move {
        let answer = complete_produce(submitted, replicated).await;
        (request.acks != 0).then(|| response(&h, &answer, Vec::new()))
    })
}

/// How long `acks=all` waits for the in-sync replicas when the request
/// names no timeout.
const ACKS_ALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// What `acks=all` needs to wait for the in-sync replicas.
struct Replicated {
    cluster: Option<Arc<ClusterHandle>>,
    engine: mamba_engine::Engine,
    timeout: Duration,
}

impl Replicated {
    /// Waits until the high watermark passes `last` (see
    /// `acks_all::wait_replicated`).
    async fn wait(
        &self,
        topic: &str,
        partition: u32,
        leader_epoch: u32,
        last: Offset,
    ) -> Result<(), (u16, String)> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        acks_all::wait_replicated(
            cluster,
            &self.engine,
            topic,
            partition,
            leader_epoch,
            last,
            self.timeout,
        )
        .await
    }
}

/// For `acks=all`: the leader epoch the batch is written at on a
/// replicated partition (see `acks_all::check_in_sync`).
fn check_in_sync(
    ctx: &ServerContext,
    topic: &str,
    partition: u32,
) -> Result<Option<u32>, (u16, String)> {
    match &ctx.cluster {
        Some(cluster) => acks_all::check_in_sync(cluster, topic, partition),
        None => Ok(None),
    }
}

/// A produce request's batches, handed to their partitions: each one's
/// outcome to come, or why it was refused on the spot.
type Submitted = Vec<(
    ProducePartitionResult,
    Result<(LocalBoxFuture<'static, AppendOutcome>, Option<u32>), (u16, String)>,
)>;
type AppendOutcome = Result<mamba_engine::AppendInfo, EngineError>;

/// The first half of a produce request: verifies each batch (bounds, CRC,
/// archive) and hands it to its partition. The connection's reader runs it
/// before reading the next frame, so the batches of one connection reach
/// a partition in the order they were sent, however many requests the
/// producer keeps in flight.
async fn submit_produce(
    ctx: &ServerContext,
    request: &ProduceRequest,
    mut payload: AlignedVec<16>,
) -> Submitted {
    // acks=all waits until the batch is durable under the topic's policy;
    // acks=1 (and 0) once the leader has it in its log.
    let wait = if request.acks == -1 { AppendWait::Visible } else { AppendWait::Appended };
    let mut submitted = Vec::with_capacity(request.partitions.len());
    for p in &request.partitions {
        let result = ProducePartitionResult {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code: 0,
            message: String::new(),
            base_offset: 0,
            last_offset: 0,
        };
        let checked = super::topics::refuse_internal(ctx, &p.topic, "produce to")
            .and_then(|()| super::cluster::check_leader(ctx, &p.topic, p.partition));
        if let Err(refused) = checked {
            submitted.push((result, Err(refused)));
            continue;
        }
        let leader_epoch = match request.acks {
            -1 => match check_in_sync(ctx, &p.topic, p.partition) {
                Ok(epoch) => epoch,
                Err(refused) => {
                    submitted.push((result, Err(refused)));
                    continue;
                }
            },
            _ => None,
        };
        // A request with one batch (what our producer sends) hands the
        // payload buffer over as the batch; others copy each batch out.
        let whole_payload = request.partitions.len() == 1
            && p.batch.offset == 0
            && p.batch.len as usize == payload.len();
        let batch = if whole_payload {
            Some(Batch::from_aligned(std::mem::replace(&mut payload, AlignedVec::new())))
        } else {
            slice_of(&payload, p.batch).map(Batch::from_bytes)
        };
        let pending = match batch {
            None => Err((
                ErrorCode::InvalidRequest.as_u16(),
                "batch slice outside the payload".to_string(),
            )),
            Some(batch) => match batch {
                Err(e) => Err((ErrorCode::CorruptBatch.as_u16(), e.to_string())),
                Ok(batch) => ctx
                    .engine
                    .submit_append(&p.topic, PartitionId(p.partition), batch, wait)
                    .await
                    .map(|outcome| {
                        (Box::pin(outcome) as LocalBoxFuture<'static, AppendOutcome>, leader_epoch)
                    })
                    .map_err(|e| (code_of(&e), e.to_string())),
            },
        };
        submitted.push((result, pending));
    }
    submitted
}

/// The second half: waits for every batch's outcome (under `acks=all`
/// on a replicated partition, for the in-sync replicas too).
async fn complete_produce(submitted: Submitted, replicated: Option<Replicated>) -> ProduceResponse {
    let replicated = &replicated;
    let outcomes = submitted.into_iter().map(|(mut result, pending)| async move {
        let outcome = match pending {
            Ok((outcome, leader_epoch)) => {
                match outcome.await.map_err(|e| (code_of(&e), e.to_string())) {
                    Ok(info) => match (replicated, leader_epoch) {
                        (Some(r), Some(epoch)) => r
                            .wait(&result.topic, result.partition, epoch, info.last_offset)
                            .await
                            .map(|()| info),
                        _ => Ok(info),
                    },
                    Err(e) => Err(e),
                }
            }
            Err(refused) => Err(refused),
        };
        match outcome {
            Ok(info) => {
                result.base_offset = info.base_offset.0;
                result.last_offset = info.last_offset.0;
            }
            Err((code, message)) => {
                result.error_code = code;
                result.message = message;
            }
        }
        result
    });
    let partitions = futures::future::join_all(outcomes).await;
    metrics::partition_errors(ApiKey::Produce, partitions.iter().map(|p| p.error_code));
    ProduceResponse { partitions }
}

/// A producer id no other producer has: in a cluster from this broker's
/// block of the metadata log's producer ids, else from the data
/// directory's own counter.
pub(crate) async fn init_producer_id(ctx: &ServerContext) -> InitProducerIdResponse {
    let allocated = match &ctx.cluster {
        Some(cluster) => cluster.allocate_producer_id().await.map_err(|e| {
            tracing::warn!(error = %e, "no producer id for a producer");
            e.code().as_u16()
        }),
        None => ctx.engine.allocate_producer_id().map_err(|e| code_of(&e)),
    };
    match allocated {
        Ok(producer_id) => InitProducerIdResponse { error_code: 0, producer_id, producer_epoch: 0 },
        Err(error_code) => InitProducerIdResponse { error_code, producer_id: 0, producer_epoch: 0 },
    }
}
