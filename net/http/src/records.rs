//! Records over HTTP: `POST /v1/topics/{topic}/records` produces a JSON
//! array of records (or, as `application/octet-stream`, one raw value)
//! and answers each record's partition and offset; `GET
//! /v1/topics/{topic}/partitions/{partition}/records` reads from an offset
//! with a long poll. Keys, values and header values are UTF-8 text, or
//! base64 where a record says `"encoding": "base64"` (reads choose per
//! record: text when every field is valid UTF-8).
//!
//! Producing goes through one idempotent `Producer` per `acks` level,
//! shared by every request (batching across requests); reading through a
//! `Consumer` per request, run on the runtime's blocking pool.

use crate::problem::{ApiError, ApiResult};
use crate::server::{on_blocking_pool, AppState};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use mamba_net::client::{
    Acks, ClientError, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use mamba_net::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How a record's key, value and header values are written in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text, as is.
    #[default]
    Utf8,
    /// Standard base64 (RFC 4648, with padding).
    Base64,
}

/// A record header.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordHeader {
    pub name: String,
    pub value: String,
}

/// A record to produce.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Records with the same key go to the same partition.
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
    #[serde(default)]
    pub headers: Vec<RecordHeader>,
    /// The partition, instead of one chosen by key (or spread, keyless).
    #[serde(default)]
    pub partition: Option<u32>,
    /// How `key`, `value` and header values are written.
    #[serde(default)]
    pub encoding: Encoding,
}

/// Where a produced record went, or why it did not.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Produced {
    pub partition: Option<u32>,
    /// Absent with `acks=0` (nobody answers) and on failure.
    pub offset: Option<u64>,
    /// The failure, when the record was not written.
    pub error: Option<crate::Problem>,
}

/// The answer to a produce: one entry per record, in order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProduceAnswer {
    pub records: Vec<Produced>,
}

/// A produce's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProduceQuery {
    /// `all` (default: every in-sync replica has it), `1` (the leader)
    /// or `0` (no answer awaited).
    pub acks: Option<String>,
    /// For a raw (`application/octet-stream`) value: its key, UTF-8.
    pub key: Option<String>,
    /// For a raw value: its partition.
    pub partition: Option<u32>,
}

/// A read's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsumeQuery {
    /// The first offset to read [default: the log start].
    pub offset: Option<u64>,
    /// Instead of `offset`: read from the first record at or after this
    /// time (ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// About how many record bytes to answer [default: 1 MiB].
    pub max_bytes: Option<u32>,
    /// How long to wait for a record when there is none yet [default: 0].
    pub timeout_ms: Option<u32>,
}

/// A record read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<RecordHeader>,
    /// How `key`, `value` and header values are written here.
    pub encoding: Encoding,
}

/// Records read from one partition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumeAnswer {
    pub records: Vec<ReadRecord>,
    /// Where the next read continues.
    pub next_offset: u64,
}

/// Bytes of a field written in `encoding`.
fn decode(field: &str, text: String, encoding: Encoding) -> ApiResult<Vec<u8>> {
    use base64::Engine as _;
    match encoding {
        Encoding::Utf8 => Ok(text.into_bytes()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("{field} is not base64: {e}"))),
    }
}

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    use base64::Engine as _;
    match encoding {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// The shared producer of an `acks` level, started on first use.
fn producer(state: &AppState, acks: Acks) -> ApiResult<&Producer> {
    let slot: &OnceLock<Result<Producer, String>> = match acks {
        Acks::All => &state.producers[0],
        Acks::Leader => &state.producers[1],
        Acks::None => &state.producers[2],
    };
    let made = slot.get_or_init(|| {
        let config = ProducerConfig {
            acks,
            // Nothing to retry without answers; idempotence needs them.
            idempotence: acks != Acks::None,
            ..ProducerConfig::default()
        };
        Producer::connect(&state.broker, config).map_err(|e| e.to_string())
    });
    made.as_ref().map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::None, format!("no producer: {e}"))
    })
}

fn acks_of(query: Option<&str>) -> ApiResult<Acks> {
    match query.unwrap_or("all") {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        other => Err(ApiError::bad_request(format!("acks is all, 1 or 0, not {other:?}"))),
    }
}

/// A record as JSON: text when every field is valid UTF-8, else base64.
pub(crate) fn read_record(r: &ConsumerRecord) -> ReadRecord {
    let text = std::str::from_utf8(&r.value).is_ok()
        && r.key.as_deref().is_none_or(|k| std::str::from_utf8(k).is_ok())
        && r.headers.iter().all(|(_, v)| std::str::from_utf8(v).is_ok());
    let encoding = if text { Encoding::Utf8 } else { Encoding::Base64 };
    ReadRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key.as_deref().map(|k| encode(k, encoding)),
        value: encode(&r.value, encoding),
        headers: r
            .headers
            .iter()
            .map(|(name, v)| RecordHeader { name: name.clone(), value: encode(v, encoding) })
            .collect(),
        encoding,
    }
}

/// A topic name from a URL, checked like everywhere else.
pub(crate) fn checked_topic(name: String) -> ApiResult<String> {
    mamba_engine::config::validate_topic_name(&name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name)
}

/// Produces records: a JSON array of records, or one raw value.
#[utoipa::path(post, path = "/v1/topics/{topic}/records", tag = "records",
    params(("topic" = String, Path, description = "The topic's name", pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"), ProduceQuery),
    request_body(content(
        (Vec<NewRecord> = "application/json"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Each record's partition and offset, or why it failed", body = ProduceAnswer),
        (status = 400, description = "Bad JSON, encoding or query", body = crate::Problem),
        (status = 404, description = "No such topic", body = crate::Problem),
        (status = 413, description = "The body is too large", body = crate::Problem),
        (status = 415, description = "Neither JSON nor octet-stream", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn produce(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ProduceQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ProduceAnswer>> {
    let Path(topic) = path?;
    let topic = checked_topic(topic)?;
    let Query(query) = query?;
    let acks = acks_of(query.acks.as_deref())?;
    let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let kind = if kind.starts_with("application/octet-stream") {
        Body::Raw { key: query.key, partition: query.partition }
    } else if kind.starts_with("application/json") {
        Body::Json
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            format!("records are application/json (an array) or application/octet-stream (one value), not {kind:?}"),
        ));
    };
    // Decoding and queueing run on the blocking pool: requests decode in
    // parallel, and a producer connecting or waiting for buffer space
    // (backpressure) holds a pool thread, not the HTTP thread.
    let sent = on_blocking_pool("queue the records", move || {
        let producer = producer(&state, acks)?;
        let records = kind.records(&topic, &body)?;
        let mut sent = Vec::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            match producer.send(record) {
                Ok(delivery) => sent.push(Ok(delivery)),
                // An unknown topic is one answer, not one failure per record.
                Err(e) if i == 0 && is_unknown_topic(&e) => return Err(e.into()),
                Err(e) => sent.push(Err(e)),
            }
        }
        Ok(sent)
    })
    .await?;
    let mut answers = Vec::with_capacity(sent.len());
    for send in sent {
        let outcome = match send {
            Ok(delivery) => delivery.await,
            Err(e) => Err(e),
        };
        answers.push(match outcome {
            Ok(m) => Produced { partition: Some(m.partition), offset: m.offset, error: None },
            Err(e) => {
                Produced { partition: None, offset: None, error: Some(ApiError::from(e).problem()) }
            }
        });
    }
    Ok(Json(ProduceAnswer { records: answers }))
}

/// What a produce's body holds.
enum Body {
    /// A JSON array of records.
    Json,
    /// One raw value, its key and partition from the query.
    Raw { key: Option<String>, partition: Option<u32> },
}

impl Body {
    fn records(self, topic: &str, body: &[u8]) -> ApiResult<Vec<ProducerRecord>> {
        let Body::Raw { key, partition } = self else {
            let parsed: Vec<NewRecord> = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("bad JSON records: {e}")))?;
            return parsed.into_iter().enumerate().map(|(i, r)| r.into_record(topic, i)).collect();
        };
        Ok(vec![ProducerRecord {
            topic: topic.to_string(),
            partition,
            key: key.map(String::into_bytes),
            value: body.to_vec(),
            ..ProducerRecord::default()
        }])
    }
}

impl NewRecord {
    /// The record to send; `i` names it in errors.
    fn into_record(self, topic: &str, i: usize) -> ApiResult<ProducerRecord> {
        let field = |name: &str| format!("record {i}'s {name}");
        let encoding = self.encoding;
        Ok(ProducerRecord {
            topic: topic.to_string(),
            partition: self.partition,
            key: self.key.map(|k| decode(&field("key"), k, encoding)).transpose()?,
            value: decode(&field("value"), self.value, encoding)?,
            headers: self
                .headers
                .into_iter()
                .map(|h| Ok((h.name, decode(&field("header value"), h.value, encoding)?)))
                .collect::<ApiResult<_>>()?,
            timestamp_ms: None,
        })
    }
}

fn is_unknown_topic(e: &ClientError) -> bool {
    matches!(e, ClientError::UnknownTopic(_))
        || matches!(e, ClientError::Broker { code: ErrorCode::UnknownTopicOrPartition, .. })
}

/// Reads one partition from an offset; waits up to `timeout_ms` for a
/// record when there is none yet.
#[utoipa::path(get, path = "/v1/topics/{topic}/partitions/{partition}/records", tag = "records",
    params(
        ("topic" = String, Path, description = "The topic's name", pattern = r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"),
        ("partition" = u32, Path, description = "The partition"),
        ConsumeQuery,
    ),
    responses(
        (status = 200, description = "The records", body = ConsumeAnswer),
        (status = 400, description = "Bad name or query", body = crate::Problem),
        (status = 404, description = "No such topic or partition", body = crate::Problem),
        (status = 416, description = "The offset is outside the log", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn consume(
    State(state): State<AppState>,
    path: Result<Path<(String, u32)>, PathRejection>,
    query: Result<Query<ConsumeQuery>, QueryRejection>,
) -> ApiResult<Json<ConsumeAnswer>> {
    let Path((topic, partition)) = path?;
    let topic = checked_topic(topic)?;
    let Query(query) = query?;
    let max_bytes = query.max_bytes.unwrap_or(1 << 20).clamp(1, 64 << 20);
    let wait = Duration::from_millis(u64::from(query.timeout_ms.unwrap_or(0).min(30_000)));
    let from = match (query.offset, query.timestamp_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give offset or timestamp_ms, not both"));
        }
        (Some(offset), None) => SeekTo::Offset(offset),
        (None, Some(ms)) => SeekTo::Timestamp(ms),
        (None, None) => SeekTo::Earliest,
    };
    let broker = Arc::clone(&state.broker);
    let read = on_blocking_pool("read", move || {
        let config = ConsumerConfig {
            fetch_max_bytes: max_bytes,
            partition_max_bytes: max_bytes,
            enable_auto_commit: false,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::connect(&broker, config)?;
        if !consumer.partitions(&topic)?.contains(&partition) {
            return Err(ClientError::Broker {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic {topic:?} has no partition {partition}"),
            }
            .into());
        }
        consumer.assign(&topic, &[partition], from)?;
        let records = consumer.poll(wait)?;
        let next_offset = consumer
            .position(&topic, partition)
            .unwrap_or_else(|| records.last().map_or(0, |r| r.offset + 1));
        let records = records.iter().map(read_record).collect();
        Ok(ConsumeAnswer { records, next_offset })
    })
    .await?;
    Ok(Json(read))
}
