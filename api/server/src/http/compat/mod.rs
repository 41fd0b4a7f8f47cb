//! The seed products' own routes (DESIGN section 7): Teable, Cal.com, Onehub and Onedata,
//! each with its request and response shapes as its document gives them, on the same engine
//! and commands as the native API. Each family can be switched off.
//!
//! Every handler here reads its body as raw bytes and authenticates inside, rather than
//! through the native extractors, so that a bad body, a missing key or a refused command is
//! answered in the family's own error shape and never as the native problem+json.
//! `docs/COMPATIBILITY.md` records each mapping choice the seed documents leave open.

pub(super) mod calcom;
pub(super) mod onedata;
pub(super) mod onehub;
pub(super) mod teable;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::Families;
use super::error::{ApiError, ApiResult};
use super::state::AppState;

/// The routes of the families switched on; a family switched off has no routes, so its
/// paths fall through to the server's 404.
pub fn router(families: Families) -> Router<AppState> {
    let mut router = Router::new();
    if families.teable {
        router = router.merge(teable::router());
    }
    if families.calcom {
        router = router.merge(calcom::router());
    }
    if families.onehub {
        router = router.merge(onehub::router());
    }
    if families.onedata {
        router = router.merge(onedata::router());
    }
    router
}

/// A refusal made before a seed route's handler ran (`min_position`, by the middleware), in
/// the shape of the family that route belongs to; the error back for a route of no family.
pub(in crate::http) fn family_error(template: &str, error: ApiError) -> Result<Response, ApiError> {
    if template.starts_with("/api/space/") || template.starts_with("/api/invitation/") {
        Ok(teable::error(error))
    } else if template.starts_with("/v2/teams/") {
        Ok(calcom::error(error))
    } else if template.starts_with("/api/v3/onezone/") {
        Ok(onedata::error(error))
    } else if ["/workspaces/", "/folders/", "/files/"]
        .iter()
        .any(|prefix| template.starts_with(prefix))
    {
        Ok(onehub::api_error(error))
    } else {
        Err(error)
    }
}

/// A request body as bytes: taken as a `Result` so that even an oversized body reaches the
/// handler, which answers it in its family's shape.
pub(super) type RawBody = Result<Bytes, BytesRejection>;

fn body_bytes(body: RawBody) -> ApiResult<Bytes> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::invalid("the body could not be read")
        }
    })
}

/// A required JSON body. The `Content-Type` is not insisted on: the seed documents' own
/// examples do not all send one, and the body is JSON or nothing on these routes.
pub(super) fn json_body<T: DeserializeOwned>(body: RawBody) -> ApiResult<T> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "the body is empty; a JSON object is required",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the body does not fit: {e}")))
}

/// A body the route does not read (Cal.com's and Onedata's token routes take none): only its
/// size is checked, so a client that sends `{}` or nothing is served the same.
pub(super) fn ignored_body(body: RawBody) -> ApiResult<()> {
    body_bytes(body).map(|_| ())
}

/// A JSON response with a status.
pub(super) fn json(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A JSON error response; the families' errors are plain JSON, not problem+json.
pub(super) fn error_json(status: StatusCode, body: Value, retry_after_s: Option<u64>) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// An integer id from a path, as Onehub's and Cal.com's documents type them: refused with a
/// clear 400 when it is not one, before anything else is looked at.
pub(super) fn integer_id(field: &str, text: &str) -> ApiResult<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(format!(
            "{field} must be an integer, not {text:?}"
        )));
    }
    text.parse::<u64>()
        .map_err(|_| ApiError::invalid(format!("{field} {text:?} is too large")))
}
