//! The web console at `/`: one page and its script and stylesheet,
//! embedded in the binary (`net/http/console/`; no build step, nothing
//! fetched from anywhere else). The script draws every page from the JSON
//! API under `/v1`, with the token the user gives when one is needed, so
//! the console can do exactly what the API lets its caller do.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Where the console's files are served; anyone may load them (they hold
/// no data: the API calls they make carry the token).
pub const PATHS: [&str; 3] = ["/", "/console/console.js", "/console/console.css"];

/// Scripts and styles from this broker only, requests to it only, never
/// framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The files change with the binary: a restarted broker may
            // serve new ones.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The console's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATHS[0], get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(PATHS[1], get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route(PATHS[2], get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
}
