//! One function per API: decode the body, call the engine, encode the answer.

use super::admin;
use super::connection::{error_frame, Answer};
use super::ServerContext;
use crate::protocol::*;
use crate::topic_config;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use mamba_engine::{AppendWait, Batch, EngineError, Offset, PartitionId, TopicConfig};
use rkyv::util::AlignedVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An answer frame; `payload` goes out from where it is (stored batches
/// are not copied into the frame).
fn response(request: &FrameHeader, body: &impl Message, payload: Vec<Bytes>) -> Answer {
    match body.encode() {
        Ok(bytes) => {
            let header = FrameHeader {
                flags: FLAG_RESPONSE,
                error_code: 0,
                body_bytes: 0,
                payload_bytes: 0,
                ..*request
            };
            let payload_bytes = payload.iter().map(Bytes::len).sum();
            Answer { head: encode_frame_head(header, &bytes, payload_bytes), payload }
        }
        Err(e) => Answer::from(error_frame(
            request.api_key,
            request.api_version,
            request.correlation_id,
            ErrorCode::Unknown,
            e.to_string(),
        )),
    }
}

pub(super) fn code_of(e: &EngineError) -> u16 {
    ErrorCode::from(e).as_u16()
}

fn error_answer(h: &FrameHeader, code: ErrorCode, message: String) -> Answer {
    Answer::from(error_frame(h.api_key, h.api_version, h.correlation_id, code, message))
}

/// A request this broker can take: a request (not a response) of an API
/// and version it speaks.
fn check_header(h: &FrameHeader) -> Result<(), Answer> {
    if h.is_response() {
        return Err(error_answer(
            h,
            ErrorCode::InvalidRequest,
            "a client sent a response frame".into(),
        ));
    }
    let Some(&(_, min, max, _)) = SUPPORTED_APIS.iter().find(|(key, ..)| *key == h.api_key) else {
        let message = format!("api key {} is not supported", h.api_key);
        return Err(error_answer(h, ErrorCode::UnsupportedApi, message));
    };
    if h.api_version < min || h.api_version > max {
        let message =
            format!("api {} speaks versions {min}..={max}, not {}", h.api_key, h.api_version);
        return Err(error_answer(h, ErrorCode::UnsupportedVersion, message));
    }
    Ok(())
}

/// Answers one request whose header passed `check_header`; `None` when no
/// answer is due (produce with acks=0).
async fn handle(frame: Frame, ctx: &ServerContext) -> Option<Answer> {
    let h = frame.header;
    let fail = |code: ErrorCode, message: String| Some(error_answer(&h, code, message));
    macro_rules! decode {
        ($ty:ty) => {
            match <$ty>::decode(frame.body()) {
                Ok(body) => body,
                Err(e) => return fail(ErrorCode::InvalidRequest, e.to_string()),
            }
        };
    }
    match h.api_key {
        api::API_VERSIONS => {
            let apis = SUPPORTED_APIS
                .iter()
                .map(|&(api_key, min_version, max_version, _)| ApiVersionRange {
                    api_key,
                    min_version,
                    max_version,
                })
                .collect();
            Some(response(&h, &ApiVersionsResponse { apis }, Vec::new()))
        }
        api::METADATA => {
            let request = decode!(MetadataRequest);
            Some(response(&h, &metadata(ctx, request), Vec::new()))
        }
        api::CREATE_TOPICS => {
            let request = decode!(CreateTopicsRequest);
            let mut results = Vec::new();
            for topic in request.topics {
                let mut config =
                    TopicConfig { partitions: topic.partitions, ..TopicConfig::default() };
                let result = match topic_config::apply(&mut config, &topic.configs) {
                    Err(message) => (ErrorCode::InvalidConfig.as_u16(), message),
                    Ok(()) => match ctx.engine.create_topic(&topic.name, config).await {
                        Ok(_) => (0, String::new()),
                        Err(e) => (code_of(&e), e.to_string()),
                    },
                };
                results.push(TopicResult {
                    name: topic.name,
                    error_code: result.0,
                    message: result.1,
                });
            }
            Some(response(&h, &TopicResults { results }, Vec::new()))
        }
        api::DELETE_TOPICS => {
            let request = decode!(DeleteTopicsRequest);
            let mut results = Vec::new();
            for name in request.names {
                let (error_code, message) = match ctx.engine.delete_topic(&name).await {
                    Ok(()) => (0, String::new()),
                    Err(e) => (code_of(&e), e.to_string()),
                };
                results.push(TopicResult { name, error_code, message });
            }
            Some(response(&h, &TopicResults { results }, Vec::new()))
        }
        api::DESCRIBE_CONFIGS => {
            let request = decode!(DescribeConfigsRequest);
            let topics = request
                .names
                .into_iter()
                .map(|name| match ctx.engine.describe_topic(&name) {
                    Ok(meta) => TopicConfigs {
                        name,
                        error_code: 0,
                        message: String::new(),
                        partitions: meta.config.partitions,
                        configs: topic_config::entries(&meta.config),
                    },
                    Err(e) => TopicConfigs {
                        name,
                        error_code: code_of(&e),
                        message: e.to_string(),
                        partitions: 0,
                        configs: vec![],
                    },
                })
                .collect();
            Some(response(&h, &DescribeConfigsResponse { topics }, Vec::new()))
        }
        api::ALTER_CONFIGS => {
            let request = decode!(AlterConfigsRequest);
            let mut results = Vec::new();
            for topic in request.topics {
                let outcome = match ctx.engine.describe_topic(&topic.name) {
                    Err(e) => Err((code_of(&e), e.to_string())),
                    Ok(meta) => {
                        let mut config = meta.config;
                        match topic_config::apply(&mut config, &topic.configs) {
                            Err(message) => Err((ErrorCode::InvalidConfig.as_u16(), message)),
                            Ok(()) => ctx
                                .engine
                                .alter_topic(&topic.name, config)
                                .await
                                .map_err(|e| (code_of(&e), e.to_string())),
                        }
                    }
                };
                let (error_code, message) = match outcome {
                    Ok(_) => (0, String::new()),
                    Err(e) => e,
                };
                results.push(TopicResult { name: topic.name, error_code, message });
            }
            Some(response(&h, &TopicResults { results }, Vec::new()))
        }
        api::PRODUCE => start_produce(frame, ctx).await.await,
        api::FETCH => {
            let request = decode!(FetchRequest);
            let (answer, chunks) = fetch(ctx, &request).await;
            Some(response(&h, &answer, chunks))
        }
        api::LIST_OFFSETS => {
            let request = decode!(ListOffsetsRequest);
            Some(response(&h, &list_offsets(ctx, request).await, Vec::new()))
        }
        api::INIT_PRODUCER_ID => {
            let _request = decode!(InitProducerIdRequest);
            let answer = match ctx.engine.allocate_producer_id() {
                Ok(producer_id) => {
                    InitProducerIdResponse { error_code: 0, producer_id, producer_epoch: 0 }
                }
                Err(e) => InitProducerIdResponse {
                    error_code: code_of(&e),
                    producer_id: 0,
                    producer_epoch: 0,
                },
            };
            Some(response(&h, &answer, Vec::new()))
        }
        api::CREATE_PARTITIONS => {
            let request = decode!(CreatePartitionsRequest);
            Some(response(&h, &admin::create_partitions(ctx, request).await, Vec::new()))
        }
        api::DESCRIBE_PARTITIONS => {
            let request = decode!(DescribePartitionsRequest);
            Some(response(&h, &admin::describe_partitions(ctx, request).await, Vec::new()))
        }
        api::DESCRIBE_BROKER => {
            let _request = decode!(DescribeBrokerRequest);
            Some(response(&h, &admin::describe_broker(ctx).await, Vec::new()))
        }
        other => fail(ErrorCode::UnsupportedApi, format!("api key {other} is not supported")),
    }
}

fn metadata(ctx: &ServerContext, request: MetadataRequest) -> MetadataResponse {
    let node_id = ctx.config.node_id;
    let brokers = vec![BrokerMeta {
        node_id,
        host: ctx.advertised.ip().to_string(),
        port: ctx.advertised.port(),
        shards: ctx.engine.shard_count() as u32,
    }];
    let describe = |meta: mamba_engine::catalog::TopicMeta| TopicMeta {
        name: meta.name.clone(),
        error_code: 0,
        partitions: meta
            .placement
            .iter()
            .enumerate()
            .map(|(p, shard)| PartitionMeta {
                partition: p as u32,
                leader: node_id,
                shard: shard.0,
            })
            .collect(),
    };
    let topics = match request.topics {
        None => ctx.engine.list_topics().into_iter().map(describe).collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match ctx.engine.describe_topic(&name) {
                Ok(meta) => describe(meta),
                Err(e) => TopicMeta { name, error_code: code_of(&e), partitions: vec![] },
            })
            .collect(),
    };
    MetadataResponse { brokers, topics }
}

/// A produce request's batches, handed to their partitions: each one's
/// outcome to come, or why it was refused on the spot.
type Submitted =
    Vec<(ProducePartitionResult, Result<LocalBoxFuture<'static, AppendOutcome>, (u16, String)>)>;
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
                    .map(|outcome| Box::pin(outcome) as LocalBoxFuture<'static, AppendOutcome>)
                    .map_err(|e| (code_of(&e), e.to_string())),
            },
        };
        submitted.push((result, pending));
    }
    submitted
}

/// The second half: waits for every batch's outcome.
async fn complete_produce(submitted: Submitted) -> ProduceResponse {
    let outcomes = submitted.into_iter().map(|(mut result, pending)| async move {
        let outcome = match pending {
            Ok(outcome) => outcome.await.map_err(|e| (code_of(&e), e.to_string())),
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
    ProduceResponse { partitions: futures::future::join_all(outcomes).await }
}

/// Starts a request and returns the future of its answer. Produce requests
/// are submitted to their partitions before this returns (see
/// `submit_produce`); everything else starts when the future is polled.
pub(crate) async fn start(
    frame: Frame,
    ctx: Arc<ServerContext>,
) -> LocalBoxFuture<'static, Option<Answer>> {
    if let Err(answer) = check_header(&frame.header) {
        return Box::pin(std::future::ready(Some(answer)));
    }
    if frame.header.api_key == api::PRODUCE {
        return start_produce(frame, &ctx).await;
    }
    Box::pin(async move { handle(frame, &ctx).await })
}

/// Submits a produce request's batches now; the returned future answers.
async fn start_produce(
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
    Box::pin(async move {
        let answer = complete_produce(submitted).await;
        (request.acks != 0).then(|| response(&h, &answer, Vec::new()))
    })
}

async fn fetch(ctx: &ServerContext, request: &FetchRequest) -> (FetchResponse, Vec<bytes::Bytes>) {
    let deadline = Instant::now() + Duration::from_millis(u64::from(request.max_wait_ms));
    loop {
        // All partitions are read at once (each may live on another shard);
        // the request's byte budget is shared out evenly, so no partition
        // starves the ones after it.
        let share = (request.max_bytes.max(1) as usize / request.partitions.len().max(1)).max(1);
        let reads = request.partitions.iter().map(|p| {
            let max_bytes = (p.max_bytes as usize).min(share).max(1);
            ctx.engine.read(&p.topic, PartitionId(p.partition), Offset(p.offset), max_bytes)
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
                Err(e) => {
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
        let timer = Box::pin(glommio::timer::sleep(deadline - now));
        if waits.is_empty() {
            timer.await;
        } else {
            futures::future::select(futures::future::select_all(waits), timer).await;
        }
    }
}

async fn list_offsets(ctx: &ServerContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut partitions = Vec::new();
    for p in request.partitions {
        let partition = PartitionId(p.partition);
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
