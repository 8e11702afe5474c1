//! The HTTP server: bound at start (so a taken port or an unprotected
//! address fails `mamba serve` at once, with why), then served on its own
//! thread by a single-threaded tokio runtime until `stop`.
//!
//! Every request is bounded: its body (`body_bytes_max`), its time
//! (`request_timeout`), and who may send it (`auth.rs`).

use crate::consumers::{self, Instances};
use crate::metrics::Telemetry;
use crate::problem::{ApiError, ApiResult};
use crate::{auth, cluster, console, groups, health, metrics, records, stats, topics};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mamba_net::client::{Admin, ClientError, Producer};
use mamba_net::node::Node;
use mamba_net::protocol::ErrorCode;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the HTTP server is told (`mamba serve --http ...`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where it listens (`--http`, default `127.0.0.1:9480`).
    pub listen: SocketAddr,
    /// The bearer token every API request must carry (`--http-token`);
    /// required to listen beyond loopback unless `insecure`.
    pub token: Option<String>,
    /// Listen beyond loopback without a token (`--http-insecure`): anyone
    /// who reaches the port may do anything. Logged as a warning.
    pub insecure: bool,
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Longest a request may take, long polls included.
    pub request_timeout: Duration,
    /// Connections at once, and the time to send a request head.
    pub connections: crate::ConnectionLimits,
    /// HTTP consumer instances this broker keeps at once (each a group
    /// member with its own thread and connections).
    pub consumer_instances_max: usize,
}

impl HttpConfig {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:9480";
    pub const DEFAULT_BODY_BYTES_MAX: usize = 16 << 20;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_CONSUMER_INSTANCES_MAX: usize = 100;
}

impl HttpConfig {
    /// Refuses an address beyond loopback without a token (unless
    /// `insecure`): checked before the broker starts.
    pub fn check(&self) -> Result<(), HttpError> {
        if !self.listen.ip().is_loopback() && self.token.is_none() && !self.insecure {
            return Err(HttpError::Unprotected { listen: self.listen });
        }
        Ok(())
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: HttpConfig::DEFAULT_LISTEN.parse().expect("a socket address"),
            token: None,
            insecure: false,
            body_bytes_max: HttpConfig::DEFAULT_BODY_BYTES_MAX,
            request_timeout: HttpConfig::DEFAULT_REQUEST_TIMEOUT,
            connections: crate::ConnectionLimits::default(),
            consumer_instances_max: HttpConfig::DEFAULT_CONSUMER_INSTANCES_MAX,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "the HTTP API would listen on {listen}, beyond loopback, with no token: give one with \
         --http-token (clients send `Authorization: Bearer <token>`), or --http-insecure to \
         allow anyone who reaches the port"
    )]
    Unprotected { listen: SocketAddr },
    #[error("cannot listen for HTTP on {listen}: {source}")]
    Bind { listen: SocketAddr, source: std::io::Error },
    #[error("cannot start the HTTP thread: {0}")]
    Thread(std::io::Error),
    #[error("the node was stopped before its HTTP API started")]
    Stopped,
    #[error("the HTTP API cannot reach the broker at {broker}: {source}")]
    Broker { broker: String, source: ClientError },
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub admin: Arc<Admin>,
    /// The broker's own counters and cluster view (`/metrics`, `/readyz`).
    pub telemetry: Telemetry,
    /// The broker's client address, for consumers made per request.
    pub broker: Arc<String>,
    /// One producer per `acks` level (all, 1, 0), made on first use.
    pub producers: Arc<[OnceLock<Result<Producer, String>>; 3]>,
    /// HTTP consumer instances (`consumers.rs`).
    pub consumers: Arc<Instances>,
}

/// Runs a blocking client call on the runtime's blocking pool, so the
/// HTTP thread goes on serving meanwhile.
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    what: &'static str,
    call: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            format!("could not {what}: {e}"),
        ))
    })
}

/// The API's OpenAPI document; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Mamba HTTP API", description = "Topics, records, consumer groups, the cluster, and health. Errors are RFC 9457 problems carrying the binary protocol's error code."),
    tags(
        (name = "health", description = "For load balancers and orchestrators"),
        (name = "topics", description = "Create, list, describe, alter and delete topics"),
        (name = "records", description = "Produce records and read them by partition and offset"),
        (name = "groups", description = "Consumer groups: members, lag, offsets"),
        (name = "consumers", description = "Consumer instances kept here for HTTP clients: a group member that subscribes, fetches and commits"),
        (name = "cluster", description = "Brokers, voters, and the operator's actions"),
    )
)]
struct ApiDoc;

/// The routes and the OpenAPI document they make.
fn app(state: AppState, config: &HttpConfig) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(stats::stats))
        .routes(routes!(topics::list_topics, topics::create_topic))
        .routes(routes!(topics::describe_topic, topics::delete_topic))
        .routes(routes!(topics::alter_topic_configs))
        .routes(routes!(records::produce))
        .routes(routes!(records::consume))
        .routes(routes!(groups::list_groups))
        .routes(routes!(groups::describe_group, groups::delete_group))
        .routes(routes!(groups::reset_offsets))
        .routes(routes!(consumers::create_consumer))
        .routes(routes!(consumers::describe_consumer, consumers::delete_consumer))
        .routes(routes!(consumers::subscribe))
        .routes(routes!(consumers::fetch))
        .routes(routes!(consumers::commit))
        .routes(routes!(cluster::cluster_state))
        .routes(routes!(cluster::cluster_action))
        .with_state(state)
        .split_for_parts();
    let api = Arc::new(with_problem_json(api));
    let token: Option<Arc<str>> = config.token.as_deref().map(Arc::from);
    router
        .route("/openapi.json", get(move || std::future::ready(Json(api.as_ref().clone()))))
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("no such route; see /openapi.json") })
        .layer(middleware::from_fn_with_state(token, auth::require_token))
        .layer(middleware::from_fn_with_state(config.request_timeout, bounded_in_time))
        .layer(DefaultBodyLimit::max(config.body_bytes_max))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The document with every error answer's content type as served:
/// `application/problem+json` (RFC 9457), which a handler's `body =
/// Problem` annotation cannot say.
fn with_problem_json(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::RefOr;
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else { continue };
                if !status.starts_with(['4', '5']) {
                    continue;
                }
                if let Some(problem) = response.content.shift_remove("application/json") {
                    response.content.insert("application/problem+json".to_string(), problem);
                }
            }
        }
    }
    api
}

/// Answers `504` for a request still running after the request timeout.
async fn bounded_in_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            format!("the request took longer than the HTTP request timeout ({limit:?})"),
        )
        .into_response(),
    }
}

/// A running HTTP server.
pub struct HttpServer {
    local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `config.listen` and serves on a thread of its own, reaching
    /// `node` at its client address and reading its counters.
    pub fn start(config: HttpConfig, node: &Node) -> Result<HttpServer, HttpError> {
        let broker = &node.client_addr().map(|a| a.to_string()).unwrap_or_default();
        let telemetry = Telemetry {
            engine: node.engine().metrics(),
            server: node.server_metrics().ok_or(HttpError::Stopped)?,
            cluster: node.cluster().cloned(),
        };
        let listen = config.listen;
        config.check()?;
        if !listen.ip().is_loopback() && config.token.is_none() {
            tracing::warn!(address = %listen, "the HTTP API listens beyond loopback with no token (--http-insecure): anyone who reaches it may do anything");
        }
        let admin = Admin::connect(broker)
            .map_err(|source| HttpError::Broker { broker: broker.to_string(), source })?;
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|source| HttpError::Bind { listen, source })?;
        let local_addr =
            listener.local_addr().map_err(|source| HttpError::Bind { listen, source })?;
        listener.set_nonblocking(true).map_err(|source| HttpError::Bind { listen, source })?;
        let state = AppState {
            admin: Arc::new(admin),
            telemetry,
            broker: Arc::new(broker.to_string()),
            producers: Arc::new([OnceLock::new(), OnceLock::new(), OnceLock::new()]),
            consumers: Arc::new(Instances::new(config.consumer_instances_max)),
        };
        let instances = Arc::clone(&state.consumers);
        let app = app(state, &config);
        let limits = config.connections;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpError::Thread)?;
        let thread = std::thread::Builder::new()
            .name("mamba-http".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(error = %e, "the HTTP listener cannot join its runtime");
                            return;
                        }
                    };
                    let stopping = async {
                        let _either_way = stopped.await;
                    };
                    let reaper = tokio::spawn(consumers::reap_idle(Arc::clone(&instances)));
                    crate::connections::serve(listener, app, limits, stopping).await;
                    reaper.abort();
                    instances.close_all().await;
                });
            })
            .map_err(HttpError::Thread)?;
        tracing::info!(%local_addr, "HTTP API, health checks and /openapi.json listening");
        Ok(HttpServer { local_addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and joins the
    /// thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _already_stopped = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the HTTP thread panicked");
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}
