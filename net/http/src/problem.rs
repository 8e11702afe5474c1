//! Errors as `application/problem+json` (RFC 9457), each carrying the
//! binary protocol's numbered error code, so an HTTP client and a binary
//! one see the same cause.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use mamba_net::client::ClientError;
use mamba_net::protocol::ErrorCode;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:mamba:error:<code name>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind, in words (the error code's name).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time, and what to do.
    pub detail: String,
    /// The binary protocol's error code (0 when the request never reached
    /// the broker's protocol: bad JSON, an unknown route).
    pub code: u16,
}

/// A failed request: an HTTP status, the protocol's code and the detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into() }
    }

    /// A request the API refuses before asking the broker.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::None, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::None, detail)
    }

    pub fn problem(&self) -> Problem {
        let title = match self.code {
            ErrorCode::None => self.status.canonical_reason().unwrap_or("error").to_string(),
            code => code.name().to_string(),
        };
        Problem {
            kind: format!("urn:mamba:error:{}", title.replace(' ', "-")),
            title,
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_u16(),
        }
    }
}

/// The HTTP status of a broker's error code: the client's mistakes are
/// 4xx, the broker's momentary state (no leader, shutting down, too few
/// replicas) 503 so that callers retry, and only unexplained failures 500.
fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::UnknownTopicOrPartition | C::GroupNotFound => StatusCode::NOT_FOUND,
        // A group member fenced or dropped (a rebalance): poll again.
        C::TopicAlreadyExists | C::GroupNotEmpty | C::UnknownMemberId | C::FencedMemberEpoch => {
            StatusCode::CONFLICT
        }
        C::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::OffsetOutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        C::InvalidRequest
        | C::InvalidConfig
        | C::InvalidPartitions
        | C::InvalidGroupId
        | C::InvalidSessionTimeout
        | C::CorruptBatch
        | C::UnsupportedVersion
        | C::UnsupportedApi => StatusCode::BAD_REQUEST,
        C::Timeout => StatusCode::GATEWAY_TIMEOUT,
        C::Unknown | C::None | C::StorageError | C::CorruptData => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        let detail = e.to_string();
        match e {
            ClientError::Broker { code, .. } => ApiError::new(status_of(code), code, detail),
            ClientError::UnknownTopic(_) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownTopicOrPartition, detail)
            }
            ClientError::InvalidArgument(_) | ClientError::Address { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, detail)
            }
            ClientError::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout, detail)
            }
            ClientError::OffsetOutOfRange { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::OffsetOutOfRange,
                detail,
            ),
            // The broker cannot be reached or has no leader now: retry.
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unknown, detail),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        let status = match e {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => e.status(),
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, ErrorCode::InvalidRequest, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, detail = %self.detail, "HTTP request failed");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
