//! Cal.com API v2's team invite (`seeds/calcom-team-invite.md`): a 64-hex token that makes a
//! new `member` of the team for 7 days, and the sign-up link that carries it; errors as
//! Cal.com v2 writes them, `{status: "error", error: {code, message}}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use roster_domain::ResourceCommand;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{ignored_body, integer_id, json, RawBody};
use crate::http::auth::authenticate;
use crate::http::error::{ApiError, ApiResult};
use crate::http::middleware::IdempotencyKey;
use crate::http::state::AppState;
use crate::http::support::{new_link, resource_id, role};

/// Cal.com's invite tokens last a week.
const TOKEN_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The role a Cal.com invite grants, in the built-in `team` schema.
const INVITED_ROLE: &str = "member";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v2/teams/{teamId}/invite", post(create_invite))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalcomInviteData {
    /// The invite link's code as 64 lowercase hex characters.
    pub token: String,
    /// `{public_url}/signup?token=…&callbackUrl=/getting-started`
    pub invite_link: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalcomInviteOutput {
    /// `success`
    pub status: String,
    pub data: CalcomInviteData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalcomErrorBody {
    /// Cal.com's exception name for the status, e.g. `NotFoundException`.
    pub code: String,
    pub message: String,
    /// `{code}`: Roster's own, finer code.
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalcomError {
    /// `error`
    pub status: String,
    pub error: CalcomErrorBody,
}

/// A refused request in Cal.com v2's shape, with its NestJS exception name as the code.
pub(super) fn error(error: ApiError) -> Response {
    let code = match error.status.as_u16() {
        400 => "BadRequestException",
        401 => "UnauthorizedException",
        403 => "ForbiddenException",
        404 => "NotFoundException",
        409 => "ConflictException",
        410 => "GoneException",
        413 => "PayloadTooLargeException",
        415 => "UnsupportedMediaTypeException",
        422 => "UnprocessableEntityException",
        429 => "ThrottlerException",
        503 => "ServiceUnavailableException",
        500..=599 => "InternalServerErrorException",
        _ => "HttpException",
    };
    let body = json!({
        "status": "error",
        "error": { "code": code, "message": error.detail, "details": { "code": error.code.as_str() } },
    });
    super::error_json(error.status, body, error.retry_after_s)
}

/// Creates a team invite: a link for `member`, unlimited uses, expiring in 7 days. Needs the
/// `write` scope (Cal.com's `TEAM_MEMBERSHIP_WRITE`) and the `invite` privilege on the team.
#[utoipa::path(post, path = "/v2/teams/{teamId}/invite", tag = "cal.com", params(("teamId" = u64, Path)),
    responses((status = 200, body = CalcomInviteOutput), (status = 400, body = CalcomError), (status = 401, body = CalcomError), (status = 403, body = CalcomError), (status = 404, body = CalcomError), (status = 422, body = CalcomError)),
    security(("bearer" = [])))]
pub async fn create_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(team_id): Path<String>,
    body: RawBody,
) -> Response {
    invite(&state, &headers, idempotency, &team_id, body)
        .await
        .unwrap_or_else(error)
}

async fn invite(
    state: &AppState,
    headers: &HeaderMap,
    idempotency: IdempotencyKey,
    team_id: &str,
    body: RawBody,
) -> ApiResult<Response> {
    let caller = authenticate(state, headers)?;
    let team = integer_id("teamId", team_id)?;
    ignored_body(body)?;
    let resource = resource_id("team", &team.to_string())?;
    let expires_at = state
        .engine
        .now()
        .checked_add_ms(TOKEN_VALIDITY_MS)
        .ok_or_else(|| ApiError::invalid("the expiry is past the year 9999"))?;
    let command = ResourceCommand::CreateInviteLink {
        resource,
        role: Some(role(INVITED_ROLE)?),
        expires_at: Some(expires_at),
        max_uses: None,
    };
    let link = new_link(state, &caller, command, idempotency.0).await?;
    let token = state.engine.code(link.number, link.generation).encode_hex();
    let invite_link = format!(
        "{}/signup?token={token}&callbackUrl=/getting-started",
        state.config.public_url.trim_end_matches('/')
    );
    Ok(json(
        StatusCode::OK,
        CalcomInviteOutput {
            status: "success".into(),
            data: CalcomInviteData { token, invite_link },
        },
    ))
}
