//! Teable's space invitation routes (`seeds/teable-space-invitation-link.md`): links with the
//! five space roles, their list, role change and deletion, email invitations, and accepting
//! with `{invitationId, invitationCode}`; errors as Teable writes them, `{message, status, code}`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use roster_domain::{
    Command, DomainError, Email, EmailList, InviteCode, Privilege, ResourceCommand, ResourceId,
};
use roster_projections::LinkRecord;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{json, json_body, RawBody};
use crate::http::auth::authenticate;
use crate::http::error::{ApiCode, ApiError, ApiResult};
use crate::http::middleware::IdempotencyKey;
use crate::http::rate_limit::ClientAddress;
use crate::http::state::AppState;
use crate::http::support::{
    authorize, code_access, code_attempt, code_error, execute, new_link, number, resource_id, role,
    written_link,
};

/// The roles Teable's request schema enumerates; anything else is Teable's validation error.
const ROLES: [&str; 5] = ["owner", "creator", "editor", "commenter", "viewer"];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/space/{spaceId}/invitation/link",
            post(create_link).get(list_links),
        )
        .route(
            "/api/space/{spaceId}/invitation/link/{invitationId}",
            patch(change_link).delete(delete_link),
        )
        .route(
            "/api/space/{spaceId}/invitation/email",
            post(email_invitations),
        )
        .route("/api/invitation/link/accept", post(accept_link))
}

/// `{role}`, one of the five space roles.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TeableRoleBody {
    /// `owner`, `creator`, `editor`, `commenter` or `viewer`.
    pub role: String,
}

/// An invitation link as Teable describes it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeableInvitationLink {
    /// The link's number, as a decimal string.
    pub invitation_id: String,
    pub role: String,
    /// `{public_url}/invite?invitationId=…&invitationCode=…`
    pub invite_url: String,
    /// The link's current code (base64url, 43 characters).
    pub invitation_code: String,
    /// The principal that made the link, or `admin`.
    pub created_by: String,
    /// RFC 3339, UTC.
    pub created_time: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeableLinkRole {
    pub invitation_id: String,
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TeableEmailBody {
    pub emails: Vec<String>,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeableEmailInvitation {
    /// The email invitation's number, as a decimal string.
    pub invitation_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeableAcceptBody {
    pub invitation_id: String,
    pub invitation_code: String,
}

/// What accepting a code joined: Teable names a space or a base, the other `null`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeableAccepted {
    pub space_id: Option<String>,
    pub base_id: Option<String>,
}

/// Teable's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeableError {
    pub message: String,
    pub status: u16,
    /// Teable's code for the status: `validation_error`, `unauthorized`, `restricted_resource`,
    /// `not_found`, `conflict`, `unprocessable_entity`, `too_many_requests`, `internal_server_error`.
    pub code: String,
    /// `{rosterCode}`: Roster's own, finer code (e.g. `invitation_expired`).
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A refused request in Teable's shape. Teable's codes are coarser than ours, so ours goes
/// along in `data` for a host that wants to tell an expired link from a deleted one.
pub(super) fn error(error: ApiError) -> Response {
    let code = match error.status.as_u16() {
        401 => "unauthorized",
        403 => "restricted_resource",
        // A link that is gone (revoked, expired, used up) is, to Teable, a link not found.
        404 | 410 => "not_found",
        409 => "conflict",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        500..=599 => "internal_server_error",
        _ => "validation_error",
    };
    let body = json!({
        "message": error.detail,
        "status": error.status.as_u16(),
        "code": code,
        "data": { "rosterCode": error.code.as_str() },
    });
    super::error_json(error.status, body, error.retry_after_s)
}

fn answer(result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(error)
}

fn space(space_id: &str) -> ApiResult<ResourceId> {
    resource_id("space", space_id)
}

fn teable_role(text: &str) -> ApiResult<roster_domain::RoleName> {
    if !ROLES.contains(&text) {
        return Err(ApiError::invalid(format!(
            "role must be one of {}, not {text:?}",
            ROLES.join(", ")
        )));
    }
    role(text)
}

fn link_body(state: &AppState, link: &LinkRecord) -> TeableInvitationLink {
    let code = state
        .engine
        .code(link.number, link.generation)
        .encode_base64();
    let id = link.number.to_string();
    TeableInvitationLink {
        invite_url: format!(
            "{}/invite?invitationId={id}&invitationCode={code}",
            state.config.public_url.trim_end_matches('/')
        ),
        invitation_id: id,
        role: link.role.to_string(),
        invitation_code: code,
        created_by: link
            .created_by
            .as_ref()
            .map_or_else(|| "admin".to_string(), ToString::to_string),
        created_time: link.created_at.to_string(),
    }
}

/// Creates a multi-use invitation link to the space with a role.
#[utoipa::path(post, path = "/api/space/{spaceId}/invitation/link", tag = "teable", params(("spaceId" = String, Path)), request_body = TeableRoleBody,
    responses((status = 201, body = TeableInvitationLink), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError), (status = 422, body = TeableError)),
    security(("bearer" = [])))]
pub async fn create_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(space_id): Path<String>,
    body: RawBody,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            let resource = space(&space_id)?;
            let body: TeableRoleBody = json_body(body)?;
            let command = ResourceCommand::CreateInviteLink {
                resource,
                role: Some(teable_role(&body.role)?),
                expires_at: None,
                max_uses: None,
            };
            let link = new_link(&state, &caller, command, idempotency.0).await?;
            Ok(json(StatusCode::CREATED, link_body(&state, &link)))
        }
        .await,
    )
}

/// The space's usable invitation links whose code the caller may see (revoked, expired and
/// used-up ones are left out, and so are links the caller could not have created itself:
/// every body of Teable's shape carries its code, and a code is a credential).
#[utoipa::path(get, path = "/api/space/{spaceId}/invitation/link", tag = "teable", params(("spaceId" = String, Path)),
    responses((status = 200, body = Vec<TeableInvitationLink>), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError)),
    security(("bearer" = [])))]
pub async fn list_links(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(space_id): Path<String>,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            let resource = space(&space_id)?;
            authorize(&state, &caller, &resource, Privilege::ViewMembers).await?;
            let access = code_access(&state, &caller, &resource).await?;
            let now = state.engine.now();
            let links: Vec<TeableInvitationLink> = state
                .engine
                .links(&resource)?
                .iter()
                .filter(|l| l.status(now) == roster_domain::LinkStatus::Active)
                .filter(|l| access.shows(l.created_by.as_ref(), &l.role))
                .map(|l| link_body(&state, l))
                .collect();
            Ok(json(StatusCode::OK, links))
        }
        .await,
    )
}

/// Changes a link's role.
#[utoipa::path(patch, path = "/api/space/{spaceId}/invitation/link/{invitationId}", tag = "teable", params(("spaceId" = String, Path), ("invitationId" = String, Path)), request_body = TeableRoleBody,
    responses((status = 200, body = TeableLinkRole), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError), (status = 410, body = TeableError, description = "the link was deleted; Teable's code `not_found`")),
    security(("bearer" = [])))]
pub async fn change_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((space_id, invitation_id)): Path<(String, String)>,
    body: RawBody,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            let resource = space(&space_id)?;
            let link = number("invitationId", &invitation_id)?;
            let body: TeableRoleBody = json_body(body)?;
            let command = ResourceCommand::ChangeInviteLink {
                resource,
                link,
                role: Some(teable_role(&body.role)?),
                expires_at: None,
                max_uses: None,
            };
            execute(&state, &caller, Command::Resource(command), None).await?;
            let changed = written_link(&state, link)?;
            Ok(json(
                StatusCode::OK,
                TeableLinkRole {
                    invitation_id: link.to_string(),
                    role: changed.role.to_string(),
                },
            ))
        }
        .await,
    )
}

/// Deletes (revokes) a link: its code stops working.
#[utoipa::path(delete, path = "/api/space/{spaceId}/invitation/link/{invitationId}", tag = "teable", params(("spaceId" = String, Path), ("invitationId" = String, Path)),
    responses((status = 200, description = "deleted; the body is empty"), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError)),
    security(("bearer" = [])))]
pub async fn delete_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((space_id, invitation_id)): Path<(String, String)>,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            let resource = space(&space_id)?;
            let link = number("invitationId", &invitation_id)?;
            execute(
                &state,
                &caller,
                Command::Resource(ResourceCommand::RevokeInviteLink { resource, link }),
                None,
            )
            .await?;
            Ok(StatusCode::OK.into_response())
        }
        .await,
    )
}

/// Invites email addresses to the space with a role: one invitation per address, keyed by it.
#[utoipa::path(post, path = "/api/space/{spaceId}/invitation/email", tag = "teable", params(("spaceId" = String, Path)), request_body = TeableEmailBody,
    responses((status = 201, body = BTreeMap<String, TeableEmailInvitation>), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError), (status = 422, body = TeableError)),
    security(("bearer" = [])))]
pub async fn email_invitations(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(space_id): Path<String>,
    body: RawBody,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            let resource = space(&space_id)?;
            let body: TeableEmailBody = json_body(body)?;
            if body.emails.is_empty() {
                return Err(ApiError::invalid("emails must list at least one address"));
            }
            // Teable validates every address before inviting any: one bad address refuses
            // the request, where the native route would invite the others.
            let bad: Vec<String> = body
                .emails
                .iter()
                .filter_map(|e| {
                    Email::parse(e)
                        .err()
                        .map(|e| format!("{}: {}", e.email, e.error))
                })
                .collect();
            if !bad.is_empty() {
                return Err(ApiError::invalid(format!(
                    "invalid email addresses: {}",
                    bad.join("; ")
                )));
            }
            let command = ResourceCommand::CreateInvitations {
                resource,
                emails: EmailList::Items(body.emails),
                role: Some(teable_role(&body.role)?),
                expires_at: None,
                message: None,
            };
            // A repeated key gets the first batch, rebuilt by the engine.
            let batch = match execute(&state, &caller, Command::Resource(command), idempotency.0)
                .await
            {
                Ok(executed) => executed.invitations.unwrap_or_default(),
                Err(mut refusal) => match refusal.refused_batch.take() {
                    // Nobody new was invited: every address was a member already or invited
                    // already. The refusal says which.
                    Some(batch) if batch.already_invited.is_empty() => {
                        let members: Vec<String> = batch
                            .already_members
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        return Err(ApiError::new(
                            ApiCode::AlreadyExists,
                            format!("already collaborators of the space: {}", members.join(", ")),
                        )
                        .with_status(StatusCode::BAD_REQUEST));
                    }
                    Some(batch) => *batch,
                    None => return Err(refusal),
                },
            };
            // An address with a pending invitation keeps it: answering with that invitation
            // makes a repeated request harmless.
            let out: BTreeMap<String, TeableEmailInvitation> = batch
                .invited
                .iter()
                .chain(&batch.already_invited)
                .map(|(email, number)| {
                    let invitation_id = number.to_string();
                    (email.to_string(), TeableEmailInvitation { invitation_id })
                })
                .collect();
            Ok(json(StatusCode::CREATED, out))
        }
        .await,
    )
}

/// Accepts a link's (or an email invitation's) code for the acting principal.
#[utoipa::path(post, path = "/api/invitation/link/accept", tag = "teable", request_body = TeableAcceptBody,
    responses((status = 201, body = TeableAccepted), (status = 400, body = TeableError), (status = 401, body = TeableError), (status = 403, body = TeableError), (status = 404, body = TeableError), (status = 410, body = TeableError), (status = 429, body = TeableError, description = "too many failed code checks from this address or principal; see `Retry-After`")),
    security(("bearer" = [])))]
pub async fn accept_link(
    State(state): State<AppState>,
    client: ClientAddress,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    body: RawBody,
) -> Response {
    answer(
        async {
            let caller = authenticate(&state, &headers)?;
            caller.require(roster_domain::Scope::Write)?;
            let attempt = code_attempt(&state, "teable", client, &caller)?;
            let body: TeableAcceptBody = json_body(body)?;
            // The code names its own link; an `invitationId` that is not that link's number
            // answers exactly as a wrong code does, so the pair tells a guesser nothing more.
            let claimed = InviteCode::parse(&body.invitation_code)
                .map(|c| c.claimed_number())
                .ok();
            if claimed.is_none()
                || claimed.map(|n| n.to_string()).as_deref() != Some(body.invitation_id.trim())
            {
                return Err(code_error(
                    &state,
                    "teable",
                    &attempt,
                    DomainError::InvitationNotFound.into(),
                ));
            }
            let accepted = state
                .engine
                .accept(caller.actor.clone(), &body.invitation_code, idempotency.0)
                .await
                .map_err(|e| code_error(&state, "teable", &attempt, e))?;
            let id = accepted.resource.id().to_string();
            let body = match accepted.resource.kind().as_str() {
                "space" => TeableAccepted {
                    space_id: Some(id),
                    base_id: None,
                },
                "base" => TeableAccepted {
                    space_id: None,
                    base_id: Some(id),
                },
                _ => TeableAccepted {
                    space_id: None,
                    base_id: None,
                },
            };
            Ok(json(StatusCode::CREATED, body))
        }
        .await,
    )
}
