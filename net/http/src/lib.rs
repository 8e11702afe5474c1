//! The broker's HTTP side (DESIGN.md §2, §5): the JSON API under `/v1`,
//! health checks for load balancers and orchestrators (`/livez`,
//! `/readyz`), Prometheus metrics (`/metrics`), the API's OpenAPI 3.1
//! document (`/openapi.json`), generated from the handlers' types, and the
//! web console at `/` (`console.rs`), drawn from that same API.
//!
//! It runs on the control-plane thread, a small tokio runtime of its own
//! (`server.rs`), never on a shard: data-path cores never parse HTTP. It
//! reaches the broker as a client of the broker's own client port
//! (`mamba_net::client`), as Kafka's REST proxies do, so routing to
//! leaders, `acks`, groups and cluster actions are the very code the CLI
//! runs; the cost is one loopback hop per call.
//!
//! Safety by default: it binds loopback unless told otherwise, and a
//! non-loopback address needs a bearer token (`auth.rs`) unless the
//! operator says `insecure` outright. Every failure is an RFC 9457
//! problem carrying the binary protocol's numbered error code
//! (`problem.rs`).

mod auth;
mod cluster;
mod connections;
mod console;
mod consumers;
mod groups;
mod health;
mod metrics;
mod problem;
mod records;
mod server;
mod stats;
mod topics;

pub use connections::ConnectionLimits;
pub use metrics::Telemetry;
pub use problem::Problem;
pub use server::{HttpConfig, HttpError, HttpServer};
