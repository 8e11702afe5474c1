//! Reading: fetch (with its long poll) and list_offsets.

use crate::protocol::*;
use crate::server::errors::code_of;
use crate::server::ServerContext;
use mamba_engine::{EngineError, Offset, PartitionId};
use std::time::{Duration, Instant};

/// Why a partition was not read.
enum Unreadable {
    /// Another broker leads it, or no one (code and message).
    NotHere((u16, String)),
    Engine(EngineError),
}

pub(crate) async fn fetch(
    ctx: &ServerContext,
    request: &FetchRequest,
) -> (FetchResponse, Vec<bytes::Bytes>) {
    let deadline = Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
    loop {
        // All partitions are read at once (each may live on another shard);
        // the request's byte budget is shared out evenly, so no partition
        // starves the ones after it.
        let share = (request.max_bytes.max(1) as usize / request.partitions.len().max(1)).max(1);
        let reads = request.partitions.iter().map(|p| {
            let max_bytes = (p.max_bytes as usize).min(share).max(1);
            let led = super::cluster::check_leader(ctx, &p.topic, p.partition);
            async move {
                led.map_err(Unreadable::NotHere)?;
                let read = ctx.engine.read(
                    &p.topic,
                    PartitionId(p.partition),
                    Offset(p.offset),
                    max_bytes,
                );
                read.await.map_err(Unreadable::Engine)
            }
        });
        let reads = futures::future::join_all(reads).await;
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut chunks = Vec::new();
        let mut position = 0u32;
        for (p, read) in request.partitions.iter().zip(reads) {
            let mut result = FetchPartitionResult {
                topic: p.topic.clone(),
                partition: p.partition,
                error_code: 0,
                message: String::new(),
                high_watermark: 0,
                log_start_offset: 0,
                records: Slice::default(),
            };
            match read {
                Ok(read) => {
                    result.high_watermark = read.high_watermark.0;
                    result.log_start_offset = read.log_start_offset.0;
                    let len: usize = read.size_bytes();
                    result.records = Slice { offset: position, len: len as u32 };
                    position += len as u32;
                    chunks.extend(read.chunks);
                }
                Err(Unreadable::NotHere((code, message))) => {
                    result.error_code = code;
                    result.message = message;
                }
                Err(Unreadable::Engine(e)) => {
                    result.error_code = code_of(&e);
                    result.message = e.to_string();
                    if let EngineError::OffsetOutOfRange {
                        high_watermark, log_start_offset, ..
                    } = e
                    {
                        result.high_watermark = high_watermark.0;
                        result.log_start_offset = log_start_offset.0;
                    }
                }
            }
            results.push(result);
        }
        let any_error = results.iter().any(|r| r.error_code != 0);
        let now = Instant::now();
        if position as usize >= (request.min_bytes as usize).max(1) || any_error || now >= deadline
        {
            return (FetchResponse { partitions: results }, chunks);
        }
        // Long poll: sleep until a partition that had nothing gets data, or
        // the deadline. The waits are cancelled when this future drops them.
        let waits: Vec<_> = request
            .partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.records.len == 0)
            .map(|(p, _)| {
                Box::pin(ctx.engine.wait_for_data(
                    &p.topic,
                    PartitionId(p.partition),
                    Offset(p.offset),
                ))
            })
            .collect();
        let timer = Box::pin(crate::runtime::sleep(deadline - now));
        if waits.is_empty() {
            timer.await;
        } else {
            futures::future::select(futures::future::select_all(waits), timer).await;
        }
    }
}

pub(crate) async fn list_offsets(
    ctx: &ServerContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut partitions = Vec::new();
    for p in request.partitions {
        let partition = PartitionId(p.partition);
        if let Err((error_code, message)) = super::cluster::check_leader(ctx, &p.topic, p.partition)
        {
            partitions.push(ListOffsetsResult {
                topic: p.topic,
                partition: p.partition,
                error_code,
                message,
                offset: 0,
                timestamp: -1,
            });
            continue;
        }
        let outcome = match p.timestamp {
            LATEST_TIMESTAMP => {
                ctx.engine.list_offsets(&p.topic, partition).await.map(|o| (o.high_watermark.0, -1))
            }
            EARLIEST_TIMESTAMP => ctx
                .engine
                .list_offsets(&p.topic, partition)
                .await
                .map(|o| (o.log_start_offset.0, -1)),
            ts => match ctx.engine.offset_for_timestamp(&p.topic, partition, ts).await {
                Ok(Some((offset, ts))) => Ok((offset.0, ts)),
                Ok(None) => ctx
                    .engine
                    .list_offsets(&p.topic, partition)
                    .await
                    .map(|o| (o.high_watermark.0, -1)),
                Err(e) => Err(e),
            },
        };
        let (error_code, message, offset, timestamp) = match outcome {
            Ok((offset, ts)) => (0, String::new(), offset, ts),
            Err(e) => (code_of(&e), e.to_string(), 0, -1),
        };
        partitions.push(ListOffsetsResult {
            topic: p.topic,
            partition: p.partition,
            error_code,
            message,
            offset,
            timestamp,
        });
    }
    ListOffsetsResponse { partitions }
}
