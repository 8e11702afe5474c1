//! HTTP consumer instances: a consumer group member kept on the broker
//! for a client that only speaks HTTP, as Kafka's REST proxies keep them.
//!
//! Lifecycle: `POST /v1/groups/{group}/consumers` makes one (named by the
//! client or here); `POST .../subscription` joins the group for topics or
//! a pattern; `GET .../records` polls (the group's partitions, from its
//! committed offsets); `POST .../offsets` commits; `DELETE` leaves the
//! group, its partitions moving to the other members at once. An instance
//! nobody has used for its idle timeout is closed the same way, so a
//! client that vanished holds its partitions for that long at most.
//!
//! An instance lives on the broker that made it (requests for it go
//! there; another broker answers 404). Each holds a `Consumer` (a
//! membership thread and connections), so their number is bounded
//! (`HttpConfig::consumer_instances_max`, 429 beyond it). The consumer's
//! calls block, so they run on the runtime's blocking pool, one at a
//! time per instance.

use crate::groups::checked_group_id;
use crate::problem::{ApiError, ApiResult};
use crate::records::{checked_topic, read_record, ReadRecord};
use crate::server::{on_blocking_pool, AppState};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use mamba_net::client::{Consumer, ConsumerConfig, GroupOptions, OffsetReset};
use mamba_net::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::{IntoParams, ToSchema};

const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
const IDLE_TIMEOUT_MS_MAX: u64 = 3_600_000;
const IDLE_TIMEOUT_MS_MIN: u64 = 1_000;

/// What makes an instance.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsumer {
    /// The instance's name, unique in the group on this broker
    /// [default: one made here].
    #[schema(pattern = r"^[a-zA-Z0-9._-]{1,128}$")]
    pub name: Option<String>,
    /// Closed (leaving the group) after this long without a request
    /// [default: 300 000; 1 000 to 3 600 000].
    pub idle_timeout_ms: Option<u64>,
    /// Where a partition with no committed offset starts: `earliest` or
    /// `latest` [default: latest].
    pub auto_offset_reset: Option<String>,
    /// Commit what a fetch answered, every 5 s and on leaving [default:
    /// false: the client commits with `POST .../offsets` once it has
    /// processed the records, so none is skipped if it fails].
    pub auto_commit: Option<bool>,
    /// About how many record bytes one fetch answers [default: 1 MiB].
    pub max_bytes: Option<u32>,
}

/// An instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumerInstance {
    pub group_id: String,
    pub instance_id: String,
    /// Where it is used: the instance's path on this broker.
    pub uri: String,
    pub idle_timeout_ms: u64,
    /// The topics it is subscribed to (a pattern's current matches).
    pub subscription: Vec<String>,
    /// The partitions the group gave it.
    pub assignment: Vec<crate::groups::TopicPartitions>,
}

/// What an instance reads: topics by name, or every topic matching a
/// pattern (a whole-name regular expression), now and as topics come.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    #[serde(default)]
    pub topics: Vec<String>,
    pub topic_pattern: Option<String>,
}

/// A fetch's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FetchQuery {
    /// How long to wait for a record when there is none yet [default: 0,
    /// at most 30 000].
    pub timeout_ms: Option<u32>,
}

/// A record a group member read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupRecord {
    pub topic: String,
    pub partition: u32,
    #[serde(flatten)]
    pub record: ReadRecord,
}

/// What a fetch answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FetchAnswer {
    pub records: Vec<GroupRecord>,
}

/// Offsets to commit; with none given, every partition's position (just
/// past the last record fetched).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    #[serde(default)]
    pub offsets: Vec<CommitAt>,
}

/// One partition's commit: `offset` is the next record to read (the
/// last processed plus one), as in Kafka.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitAt {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// One instance: its consumer, used by one request at a time, and when it
/// was last used (read by the reaper without waiting for a request).
struct Instance {
    consumer: Arc<tokio::sync::Mutex<Option<Consumer>>>,
    idle_timeout: Duration,
    /// Milliseconds since `Instances::epoch` at the last request.
    last_used_ms: AtomicU64,
}

/// Every instance on this broker, by (group, name).
pub(crate) struct Instances {
    by_name: Mutex<HashMap<(String, String), Arc<Instance>>>,
    most: usize,
    epoch: Instant,
    made: AtomicU64,
}

impl Instances {
    pub(crate) fn new(most: usize) -> Instances {
        Instances {
            by_name: Mutex::new(HashMap::new()),
            most,
            epoch: Instant::now(),
            made: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Instance>>> {
        // A panic elsewhere while holding it left a whole map: go on.
        self.by_name.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The instance, marked used now.
    fn get(&self, group: &str, name: &str) -> ApiResult<Arc<Instance>> {
        let instance =
            self.table().get(&(group.to_string(), name.to_string())).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::None,
                    format!(
                        "no consumer instance {name:?} of group {group:?} on this broker (it was \
                         deleted, idle too long, or made on another broker)"
                    ),
                )
            })?;
        instance.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        Ok(instance)
    }

    /// Takes out every instance idle past its timeout and not in use.
    fn take_idle(&self) -> Vec<(String, String, Consumer)> {
        let now_ms = self.now_ms();
        let mut idle = Vec::new();
        self.table().retain(|(group, name), instance| {
            let used_ms = instance.last_used_ms.load(Ordering::Relaxed);
            let timeout_ms = u64::try_from(instance.idle_timeout.as_millis()).unwrap_or(u64::MAX);
            if now_ms.saturating_sub(used_ms) < timeout_ms {
                return true;
            }
            let Ok(mut slot) = instance.consumer.try_lock() else { return true };
            if let Some(consumer) = slot.take() {
                idle.push((group.clone(), name.clone(), consumer));
            }
            false
        });
        idle
    }

    /// Closes every instance, after the requests using them: at the
    /// server's stop, so their partitions move to the other members at
    /// once, not a session timeout later.
    pub(crate) async fn close_all(&self) {
        let all: Vec<_> = self.table().drain().collect();
        for ((group, name), instance) in all {
            let Some(consumer) = Arc::clone(&instance.consumer).lock_owned().await.take() else {
                continue;
            };
            let _closed = on_blocking_pool("close a consumer instance", move || {
                leave(&group, &name, consumer);
                Ok(())
            })
            .await;
        }
    }
}

/// Closes instances idle past their timeout, once a second, until the
/// server stops.
pub(crate) async fn reap_idle(instances: Arc<Instances>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (group, name, consumer) in instances.take_idle() {
            tracing::info!(%group, instance = %name, "closing an idle HTTP consumer instance");
            let _closed = on_blocking_pool("close the idle consumer instance", move || {
                leave(&group, &name, consumer);
                Ok(())
            })
            .await;
        }
    }
}

/// Leaves the group (committing first under auto commit); a failure is
/// only logged: the group's session timeout ends the membership anyway.
fn leave(group: &str, name: &str, consumer: Consumer) {
    if let Err(e) = consumer.close() {
        tracing::warn!(%group, instance = %name, error = %e, "an HTTP consumer instance left its group without its last commit");
    }
}

fn checked_instance(name: String) -> ApiResult<String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "bad consumer instance name {name:?}: use 1 to 128 of a-z, A-Z, 0-9, '.', '_', '-'"
        )));
    }
    Ok(name)
}

fn instance_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<(String, String)> {
    let Path((group, name)) = path?;
    Ok((checked_group_id(group)?, checked_instance(name)?))
}

/// Runs `call` with the instance's consumer (and its idle timeout) on the
/// blocking pool, after any request already using it.
async fn with_consumer<T: Send + 'static>(
    state: &AppState,
    group: &str,
    name: &str,
    what: &'static str,
    call: impl FnOnce(&mut Consumer, Duration) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let instance = state.consumers.get(group, name)?;
    let idle = instance.idle_timeout;
    let mut slot = Arc::clone(&instance.consumer).lock_owned().await;
    let answer = on_blocking_pool(what, move || match slot.as_mut() {
        Some(consumer) => call(consumer, idle),
        None => Err(ApiError::not_found("the consumer instance was just closed")),
    })
    .await;
    instance.last_used_ms.store(state.consumers.now_ms(), Ordering::Relaxed);
    answer
}

fn refuse_unsubscribed(consumer: &Consumer) -> ApiResult<()> {
    if consumer.subscription().is_empty() {
        return Err(ApiError::bad_request(
            "the instance is not subscribed: POST its subscription first",
        ));
    }
    Ok(())
}

fn described(group: &str, name: &str, idle: Duration, consumer: &Consumer) -> ConsumerInstance {
    let mut assignment: Vec<crate::groups::TopicPartitions> = Vec::new();
    for (topic, partition) in consumer.assignment() {
        match assignment.last_mut() {
            Some(last) if last.topic == topic => last.partitions.push(partition),
            _ => assignment
                .push(crate::groups::TopicPartitions { topic, partitions: vec![partition] }),
        }
    }
    ConsumerInstance {
        group_id: group.to_string(),
        instance_id: name.to_string(),
        uri: format!("/v1/groups/{group}/consumers/{name}"),
        idle_timeout_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        subscription: consumer.subscription(),
        assignment,
    }
}

/// Makes a consumer instance in a group; it reads nothing until
/// subscribed.
#[utoipa::path(post, path = "/v1/groups/{group}/consumers", tag = "consumers",
    params(("group" = String, Path, description = "The group's id")),
    request_body = NewConsumer,
    responses(
        (status = 201, description = "Made", body = ConsumerInstance),
        (status = 400, description = "A bad group id, name or setting", body = crate::Problem),
        (status = 409, description = "The group has an instance of that name here", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 429, description = "This broker holds as many instances as it may", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn create_consumer(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NewConsumer>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ConsumerInstance>)> {
    let Path(group) = path?;
    let group = checked_group_id(group)?;
    let Json(new) = body?;
    let name = match new.name {
        Some(name) => checked_instance(name)?,
        None => format!(
            "http-{}-{}",
            std::process::id(),
            state.consumers.made.fetch_add(1, Ordering::Relaxed)
        ),
    };
    let idle_ms = new.idle_timeout_ms.unwrap_or(IDLE_TIMEOUT_MS_DEFAULT);
    if !(IDLE_TIMEOUT_MS_MIN..=IDLE_TIMEOUT_MS_MAX).contains(&idle_ms) {
        return Err(ApiError::bad_request(format!(
            "idle_timeout_ms is {IDLE_TIMEOUT_MS_MIN} to {IDLE_TIMEOUT_MS_MAX}, not {idle_ms}"
        )));
    }
    let auto_offset_reset = match new.auto_offset_reset.as_deref().unwrap_or("latest") {
        "latest" => OffsetReset::Latest,
        "earliest" => OffsetReset::Earliest,
        other => {
            return Err(ApiError::bad_request(format!(
                "auto_offset_reset is \"earliest\" or \"latest\", not {other:?}"
            )))
        }
    };
    let max_bytes = new.max_bytes.unwrap_or(1 << 20).clamp(1, 64 << 20);
    let config = ConsumerConfig {
        fetch_max_bytes: max_bytes,
        partition_max_bytes: max_bytes,
        enable_auto_commit: new.auto_commit.unwrap_or(false),
        auto_offset_reset,
        ..ConsumerConfig::default()
    };
    let key = (group.clone(), name.clone());
    let instance = Arc::new(Instance {
        consumer: Arc::new(tokio::sync::Mutex::new(None)),
        idle_timeout: Duration::from_millis(idle_ms),
        last_used_ms: AtomicU64::new(state.consumers.now_ms()),
    });
    // The name is taken (with no consumer yet) before connecting, so two
    // requests for one name cannot both make one.
    let mut slot = Arc::clone(&instance.consumer).lock_owned().await;
    {
        let mut table = state.consumers.table();
        if table.contains_key(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::None,
                format!("group {group:?} already has a consumer instance {name:?} here"),
            ));
        }
        if table.len() >= state.consumers.most {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::None,
                format!(
                    "this broker holds {} HTTP consumer instances, as many as it may: delete \
                     some, or wait for idle ones to time out",
                    table.len()
                ),
            ));
        }
        table.insert(key.clone(), Arc::clone(&instance));
    }
    let broker = Arc::clone(&state.broker);
    let made =
        on_blocking_pool("connect a consumer", move || Ok(Consumer::connect(&broker, config)?))
            .await;
    match made {
        Ok(consumer) => {
            let answer = described(&group, &name, instance.idle_timeout, &consumer);
            *slot = Some(consumer);
            Ok((StatusCode::CREATED, Json(answer)))
        }
        Err(e) => {
            state.consumers.table().remove(&key);
            Err(e)
        }
    }
}

/// An instance: its subscription and the partitions it holds.
#[utoipa::path(get, path = "/v1/groups/{group}/consumers/{instance}", tag = "consumers",
    params(
        ("group" = String, Path, description = "The group's id"),
        ("instance" = String, Path, description = "The instance's name", pattern = r"^[a-zA-Z0-9._-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The instance", body = ConsumerInstance),
        (status = 400, description = "A bad group id or name", body = crate::Problem),
        (status = 404, description = "No such instance on this broker", body = crate::Problem),
    ))]
pub async fn describe_consumer(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<ConsumerInstance>> {
    let (group, name) = instance_path(path)?;
    let (g, n) = (group.clone(), name.clone());
    with_consumer(&state, &group, &name, "describe the consumer", move |consumer, idle| {
        Ok(Json(described(&g, &n, idle, consumer)))
    })
    .await
}

/// Leaves the group (committing first under auto commit) and forgets the
/// instance.
#[utoipa::path(delete, path = "/v1/groups/{group}/consumers/{instance}", tag = "consumers",
    params(
        ("group" = String, Path, description = "The group's id"),
        ("instance" = String, Path, description = "The instance's name", pattern = r"^[a-zA-Z0-9._-]{1,128}$"),
    ),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, description = "A bad group id or name", body = crate::Problem),
        (status = 404, description = "No such instance on this broker", body = crate::Problem),
    ))]
pub async fn delete_consumer(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (group, name) = instance_path(path)?;
    let instance = state.consumers.get(&group, &name)?;
    let mut slot = Arc::clone(&instance.consumer).lock_owned().await;
    state.consumers.table().remove(&(group.clone(), name.clone()));
    let consumer =
        slot.take().ok_or_else(|| ApiError::not_found("the instance was just closed"))?;
    on_blocking_pool("close the consumer", move || {
        leave(&group, &name, consumer);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Joins the group for the given topics, or every topic matching a
/// pattern. Once per instance.
#[utoipa::path(post, path = "/v1/groups/{group}/consumers/{instance}/subscription", tag = "consumers",
    params(
        ("group" = String, Path, description = "The group's id"),
        ("instance" = String, Path, description = "The instance's name", pattern = r"^[a-zA-Z0-9._-]{1,128}$"),
    ),
    request_body = Subscription,
    responses(
        (status = 200, description = "Subscribed; the instance", body = ConsumerInstance),
        (status = 400, description = "Bad topics or pattern, or already subscribed", body = crate::Problem),
        (status = 404, description = "No such instance on this broker", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn subscribe(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<Subscription>, JsonRejection>,
) -> ApiResult<Json<ConsumerInstance>> {
    let (group, name) = instance_path(path)?;
    let Json(subscription) = body?;
    let topics =
        subscription.topics.into_iter().map(checked_topic).collect::<ApiResult<Vec<_>>>()?;
    let pattern = subscription.topic_pattern;
    match (&pattern, topics.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::bad_request("give topics or topic_pattern, not both"));
        }
        (None, true) => return Err(ApiError::bad_request("give topics or topic_pattern")),
        _ => {}
    }
    let (g, n) = (group.clone(), name.clone());
    with_consumer(&state, &group, &name, "subscribe", move |consumer, idle| {
        let options = GroupOptions {
            group_id: g.clone(),
            topics,
            instance_id: None,
            assignor: None,
            session_timeout_ms: 0,
            client_id: format!("mamba-http/{n}"),
        };
        match &pattern {
            Some(pattern) => consumer.subscribe_pattern(options, pattern)?,
            None => consumer.subscribe(options)?,
        }
        Ok(Json(described(&g, &n, idle, consumer)))
    })
    .await
}

/// Reads the next records of the partitions the group gave this instance,
/// waiting up to `timeout_ms` when there are none yet. The first fetches
/// after a subscription may answer none while the group assigns.
#[utoipa::path(get, path = "/v1/groups/{group}/consumers/{instance}/records", tag = "consumers",
    params(
        ("group" = String, Path, description = "The group's id"),
        ("instance" = String, Path, description = "The instance's name", pattern = r"^[a-zA-Z0-9._-]{1,128}$"),
        FetchQuery,
    ),
    responses(
        (status = 200, description = "The records, in order per partition", body = FetchAnswer),
        (status = 400, description = "A bad query, or not subscribed", body = crate::Problem),
        (status = 404, description = "No such instance on this broker", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> ApiResult<Json<FetchAnswer>> {
    let (group, name) = instance_path(path)?;
    let Query(query) = query?;
    let wait = Duration::from_millis(u64::from(query.timeout_ms.unwrap_or(0).min(30_000)));
    with_consumer(&state, &group, &name, "fetch", move |consumer, _idle| {
        refuse_unsubscribed(consumer)?;
        let records = consumer
            .poll(wait)?
            .iter()
            .map(|r| GroupRecord {
                topic: r.topic.clone(),
                partition: r.partition,
                record: read_record(r),
            })
            .collect();
        Ok(Json(FetchAnswer { records }))
    })
    .await
}

/// Commits offsets for the group: those given, or with none every
/// partition's position (just past the last record fetched).
#[utoipa::path(post, path = "/v1/groups/{group}/consumers/{instance}/offsets", tag = "consumers",
    params(
        ("group" = String, Path, description = "The group's id"),
        ("instance" = String, Path, description = "The instance's name", pattern = r"^[a-zA-Z0-9._-]{1,128}$"),
    ),
    request_body = Commit,
    responses(
        (status = 204, description = "Committed"),
        (status = 400, description = "A bad body, or not subscribed", body = crate::Problem),
        (status = 404, description = "No such instance on this broker", body = crate::Problem),
        (status = 409, description = "The group took a partition away (a rebalance): fetch again", body = crate::Problem),
        (status = 415, description = "The body is not JSON", body = crate::Problem),
        (status = 503, description = "The broker cannot answer now", body = crate::Problem),
    ))]
pub async fn commit(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<Commit>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let (group, name) = instance_path(path)?;
    let Json(commit) = body?;
    let offsets = commit
        .offsets
        .into_iter()
        .map(|c| Ok(((checked_topic(c.topic)?, c.partition), c.offset)))
        .collect::<ApiResult<Vec<_>>>()?;
    with_consumer(&state, &group, &name, "commit", move |consumer, _idle| {
        refuse_unsubscribed(consumer)?;
        if offsets.is_empty() {
            consumer.commit_sync()?;
        } else {
            consumer.commit_offsets(&offsets)?;
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
