//! What runs around every request: [`around`] (its time limit, the position header, the
//! metrics and the log line), [`idempotency`] (`Idempotency-Key` on POST routes) and
//! [`query_check`] (unknown query parameters refused), [`min_position`] (reads after a
//! write made through another node).

mod idempotency;
mod min_position;
pub mod query_check;

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiCode, ApiError};
use super::state::AppState;
use super::POSITION_HEADER;

pub use idempotency::{idempotency, IdempotencyKey};
pub use min_position::min_position;

/// Around every request: a time limit, the read models' position in `X-Roster-Position`,
/// metrics, and one log line (with the route's template, never a body, so no code is logged).
pub async fn around(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The template, not the path: a path can hold a code, and templates are few, so they
    // bound the metrics' label values as well.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let limit = Duration::from_millis(state.config.request_timeout_ms);
    let mut response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(ApiCode::Timeout, "the request took longer than the server allows; a command may still complete, retry with the same Idempotency-Key").into_response(),
    };
    let position = state.engine.applied();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(position));
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.request(&route, &method, status, elapsed);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %route, status, elapsed_ms, "request failed");
    } else {
        tracing::info!(%method, %route, status, elapsed_ms, "request");
    }
    response
}
