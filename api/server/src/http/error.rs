//! Every error the HTTP API answers, as `application/problem+json` (RFC 9457) with a stable
//! `code`. A 5xx says only that something went wrong; its cause goes to the log, once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use roster_domain::DomainError;
use serde::Serialize;
use serde_json::{Map, Value};

use roster_engine::EngineError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `https://roster.dev/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable, machine-readable error code.
    pub code: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extension members of the problem (the per-email outcome of a refused invitation batch).
    pub extensions: Map<String, Value>,
    /// Seconds to wait, for a 429.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after_s: None,
        }
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    /// A 500: the body says only that something went wrong; `cause` goes to the log, here, once.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "answered 500");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn with(mut self, name: &str, value: Value) -> ApiError {
        self.extensions.insert(name.to_string(), value);
        self
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let detail = match &error {
            // The same words for every code that opens nothing, so an error tells a guesser
            // nothing about which invitations exist.
            DomainError::InvitationNotFound => "no invitation or link has this code".to_string(),
            other => other.to_string(),
        };
        ApiError::new(status, error.code(), detail)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Domain(domain) => domain.into(),
            EngineError::Unavailable(reason) => {
                tracing::warn!(%reason, "engine unavailable");
                ApiError::unavailable("the server cannot take commands right now; retry later")
            }
            EngineError::Store(error) => {
                tracing::error!(%error, "the event store failed");
                ApiError::unavailable("the event store failed; retry later")
            }
            EngineError::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was first used with another body; use a new key for a new request",
            ),
            EngineError::Projection(error) => {
                ApiError::internal(format_args!("a read model failed: {error}"))
            }
        }
    }
}

impl From<roster_projections::ProjectionError> for ApiError {
    fn from(error: roster_projections::ProjectionError) -> ApiError {
        EngineError::Projection(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::from(format!("https://roster.dev/problems/{}", self.code)),
        );
        body.insert("title".into(), Value::from(self.title()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        body.insert("detail".into(), Value::from(self.detail));
        body.insert("code".into(), Value::from(self.code));
        body.extend(self.extensions);
        let mut response = (self.status, Value::Object(body).to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
