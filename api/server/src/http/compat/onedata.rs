//! Onedata Onezone's space invite token (`seeds/onedata-space-invite-token.md`) and joining a
//! space with it: the token is an invite link for the kind's default role, without expiry or
//! use limit; errors are `{error}` with the statuses the document lists.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use roster_domain::ResourceCommand;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{ignored_body, json, json_body, RawBody};
use crate::http::auth::authenticate;
use crate::http::error::{ApiError, ApiResult};
use crate::http::middleware::IdempotencyKey;
use crate::http::rate_limit::ClientAddress;
use crate::http::state::AppState;
use crate::http::support::{code_attempt, code_error, new_link, resource_id};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v3/onezone/spaces/{id}/users/token",
            post(create_token),
        )
        .route("/api/v3/onezone/user/spaces/join", post(join_space))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnedataSpaceInviteToken {
    /// The invite link's code (base64url, 43 characters).
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OnedataJoinBody {
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnedataJoined {
    pub space_id: String,
}

/// Onedata's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnedataError {
    pub error: String,
}

/// A refused request as `{error}`. The document lists 400, 401, 403, 404 and 500 only, so a
/// host coded against it is never handed another status: a token that can no longer be used
/// (revoked, expired, used up: our 410), a conflict, or a refused body is an invalid request.
/// The one exception is 429 with `Retry-After` after too many failed token checks: calling
/// it a bad request would invite the client to retry at once, which is what it must not do.
pub(super) fn error(error: ApiError) -> Response {
    let status = match error.status.as_u16() {
        401 => StatusCode::UNAUTHORIZED,
        403 => StatusCode::FORBIDDEN,
        404 => StatusCode::NOT_FOUND,
        429 => StatusCode::TOO_MANY_REQUESTS,
        500..=599 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    super::error_json(
        status,
        json!({ "error": error.detail }),
        error.retry_after_s,
    )
}

/// Creates a token that lets a new user join the space, with the space kind's default role.
/// Needs the `write` scope and the `invite` privilege (Onedata's `space_invite_user`).
#[utoipa::path(post, path = "/api/v3/onezone/spaces/{id}/users/token", tag = "onedata", params(("id" = String, Path, description = "Space ID.")),
    responses((status = 200, body = OnedataSpaceInviteToken), (status = 400, body = OnedataError), (status = 401, body = OnedataError), (status = 403, body = OnedataError), (status = 404, body = OnedataError), (status = 500, body = OnedataError)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(id): Path<String>,
    body: RawBody,
) -> Response {
    token(&state, &headers, idempotency, &id, body)
        .await
        .unwrap_or_else(error)
}

async fn token(
    state: &AppState,
    headers: &HeaderMap,
    idempotency: IdempotencyKey,
    id: &str,
    body: RawBody,
) -> ApiResult<Response> {
    let caller = authenticate(state, headers)?;
    let resource = resource_id("space", id)?;
    ignored_body(body)?;
    let command = ResourceCommand::CreateInviteLink {
        resource,
        role: None,
        expires_at: None,
        max_uses: None,
    };
    let link = new_link(state, &caller, command, idempotency.0).await?;
    Ok(json(
        StatusCode::OK,
        OnedataSpaceInviteToken {
            token: state
                .engine
                .code(link.number, link.generation)
                .encode_base64(),
        },
    ))
}

/// Joins the space a token is for, as the acting principal.
#[utoipa::path(post, path = "/api/v3/onezone/user/spaces/join", tag = "onedata", request_body = OnedataJoinBody,
    responses((status = 201, body = OnedataJoined, description = "joined (or a member already); `Location` names the space"), (status = 400, body = OnedataError), (status = 401, body = OnedataError), (status = 403, body = OnedataError), (status = 404, body = OnedataError), (status = 500, body = OnedataError), (status = 429, body = OnedataError, description = "too many failed token checks from this address or principal; see `Retry-After`")),
    security(("basic" = []), ("bearer" = [])))]
pub async fn join_space(
    State(state): State<AppState>,
    client: ClientAddress,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    body: RawBody,
) -> Response {
    join(&state, client, &headers, idempotency, body)
        .await
        .unwrap_or_else(error)
}

async fn join(
    state: &AppState,
    client: ClientAddress,
    headers: &HeaderMap,
    idempotency: IdempotencyKey,
    body: RawBody,
) -> ApiResult<Response> {
    let caller = authenticate(state, headers)?;
    caller.require(roster_domain::Scope::Write)?;
    let attempt = code_attempt(state, "onedata", client, &caller)?;
    let body: OnedataJoinBody = json_body(body)?;
    // This route joins spaces: a code for another kind of resource is refused before it is
    // used, rather than joining something the caller did not ask for.
    let preview = state
        .engine
        .preview(&body.token)
        .await
        .map_err(|e| code_error(state, "onedata", &attempt, e))?;
    if preview.resource.kind().as_str() != "space" {
        return Err(ApiError::invalid(format!(
            "this token is for {}, not a space",
            preview.resource
        )));
    }
    let accepted = state
        .engine
        .accept(caller.actor.clone(), &body.token, idempotency.0)
        .await
        .map_err(|e| code_error(state, "onedata", &attempt, e))?;
    let space_id = accepted.resource.id().to_string();
    let mut response = json(
        StatusCode::CREATED,
        OnedataJoined {
            space_id: space_id.clone(),
        },
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v3/onezone/user/spaces/{space_id}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}
