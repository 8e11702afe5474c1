//! Who may call: with a token configured, every request but the health
//! checks and the console's files must carry `Authorization: Bearer <token>`, compared in constant
//! time. Without one the server binds loopback only (checked at start in
//! `server.rs`), unless the operator chose `insecure`. Users and ACLs come
//! later.

use crate::problem::ApiError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The paths anyone may ask: load balancers carry no token, and the
/// console's files hold no data (its API calls carry the token).
fn is_open(path: &str) -> bool {
    ["/livez", "/readyz"].contains(&path) || crate::console::PATHS.contains(&path)
}

/// Refuses a request without the right bearer token (when one is set).
pub async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else { return next.run(request).await };
    if is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::unauthorized("the bearer token is not this broker's").into_response(),
        None => ApiError::unauthorized(
            "this broker's HTTP API needs `Authorization: Bearer <token>` (its --http-token)",
        )
        .into_response(),
    }
}
