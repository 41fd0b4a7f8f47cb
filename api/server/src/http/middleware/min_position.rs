//! `min_position` (or `X-Roster-Min-Position`) on every route: a client that wrote through one
//! node and reads through another names the position its write answered with, and this node
//! answers only once its read models reflect it (reading the shared log for it at once), or
//! 503 `unavailable` with `Retry-After` after `--min-position-wait-ms`. A position past the
//! log's head (which no write answered) is a 400.

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The header a client may send instead of the query parameter.
const MIN_POSITION_HEADER: &str = "x-roster-min-position";

/// The position asked for, from the query or the header; a malformed one is a 400.
fn asked(request: &Request) -> Result<Option<u64>, ApiError> {
    let from_query = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "min_position")
            .map(|(_, value)| value.into_owned())
    });
    let mut headers = request.headers().get_all(MIN_POSITION_HEADER).iter();
    let from_header = match (headers.next(), headers.next()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "X-Roster-Min-Position is given more than once",
            ))
        }
        (Some(value), None) => Some(value.to_str().unwrap_or("").to_string()),
        _ => None,
    };
    let Some(text) = from_query.or(from_header) else {
        return Ok(None);
    };
    text.trim().parse::<u64>().map(Some).map_err(|_| {
        ApiError::invalid(format!(
            "min_position {text:?} is not a position (a whole number from 0)"
        ))
    })
}

/// The middleware: waits for the position, or answers 400 or 503, in the shape of the
/// route's family on the seed products' routes.
pub async fn min_position(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let reached = match asked(&request) {
        Ok(Some(position)) => reach(&state, position).await,
        Ok(None) => Ok(()),
        Err(refused) => Err(refused),
    };
    match reached {
        Ok(()) => next.run(request).await,
        Err(refused) => crate::http::compat::family_error(&template, refused)
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// Waits until this node has applied `position`.
async fn reach(state: &AppState, position: u64) -> Result<(), ApiError> {
    let wait = Duration::from_millis(state.config.postgres.min_position_wait_ms);
    state
        .engine
        .reach(position, wait)
        .await
        .map_err(|error| match error {
            roster_engine::EngineError::Domain(refused) => ApiError::from(refused),
            _ => ApiError::unavailable(format!(
                "this node has not reached position {position} yet; retry, or ask another node"
            )),
        })
}
