//! Onehub's invitations (`seeds/onehub-invitations.md`): email invitations to a workspace,
//! folder or file with `emails` as one comma-separated string and a `role_name` that falls
//! back to the kind's default role; a share object with per-email outcomes; 422 on an invalid
//! email or a reached limit; integer ids throughout.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use roster_domain::{Command, EmailList, InvitationBatch, ResourceCommand, RoleName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{integer_id, json, json_body, RawBody};
use crate::http::auth::authenticate;
use crate::http::error::{ApiError, ApiResult};
use crate::http::middleware::IdempotencyKey;
use crate::http::state::AppState;
use crate::http::support::{execute, resource_id};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/invitations", post(invite_to_workspace))
        .route("/folders/{id}/invitations", post(invite_to_folder))
        .route("/files/{id}/invitations", post(invite_to_file))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OnehubInvitation {
    /// The addresses, comma-delimited in one string (an array is taken too).
    #[schema(value_type = String)]
    pub emails: EmailList,
    /// The role, matched case-insensitively; the kind's default role when absent or unknown.
    pub role_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OnehubInvitationBody {
    pub invitation: OnehubInvitation,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnehubShare {
    /// The addresses of the request that were not invited, comma-delimited (`""` when all were).
    pub emails: String,
    /// One `{address: reason}` per address that is not a valid email.
    pub email_errors: Vec<BTreeMap<String, String>>,
    /// One `{address: reason}` per valid address that was not invited: a member already, or
    /// invited already (the reason names the pending invitation's id).
    pub join_errors: Vec<BTreeMap<String, String>>,
    /// One `{address: id}` per invitation made; the id is the invitation's number.
    pub invited_emails: Vec<BTreeMap<String, u64>>,
    /// Errors about the request as a whole, by field: `{}` on success.
    pub errors: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnehubShareBody {
    pub share: OnehubShare,
}

/// Onehub's error body; a refused invitation also carries the share with its per-email outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnehubError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<OnehubShare>,
}

/// A refused request, with the share when the refusal was the batch's (an invalid email, or a
/// limit reached).
struct Refusal {
    error: ApiError,
    share: Option<OnehubShare>,
}

/// A refusal of no share, in Onehub's shape (for the middleware's refusals).
pub(super) fn api_error(refused: ApiError) -> Response {
    error(Refusal::from(refused))
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal { error, share: None }
    }
}

fn error(refusal: Refusal) -> Response {
    let Refusal { error, share } = refusal;
    let body = OnehubError {
        error: error.detail,
        share,
    };
    let body = serde_json::to_value(body).unwrap_or(Value::Null);
    super::error_json(error.status, body, error.retry_after_s)
}

/// Invites emails to a workspace.
#[utoipa::path(post, path = "/workspaces/{id}/invitations", tag = "onehub", params(("id" = u64, Path)), request_body = OnehubInvitationBody,
    responses((status = 201, body = OnehubShareBody), (status = 400, body = OnehubError), (status = 401, body = OnehubError), (status = 403, body = OnehubError), (status = 404, body = OnehubError), (status = 422, body = OnehubError, description = "an invalid email, or a limit reached")),
    security(("bearer" = [])))]
pub async fn invite_to_workspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(id): Path<String>,
    body: RawBody,
) -> Response {
    invite(&state, &headers, idempotency, "workspace", &id, body)
        .await
        .unwrap_or_else(error)
}

/// Invites emails to a folder.
#[utoipa::path(post, path = "/folders/{id}/invitations", tag = "onehub", params(("id" = u64, Path)), request_body = OnehubInvitationBody,
    responses((status = 201, body = OnehubShareBody), (status = 400, body = OnehubError), (status = 401, body = OnehubError), (status = 403, body = OnehubError), (status = 404, body = OnehubError), (status = 422, body = OnehubError, description = "an invalid email, or a limit reached")),
    security(("bearer" = [])))]
pub async fn invite_to_folder(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(id): Path<String>,
    body: RawBody,
) -> Response {
    invite(&state, &headers, idempotency, "folder", &id, body)
        .await
        .unwrap_or_else(error)
}

/// Invites emails to a file.
#[utoipa::path(post, path = "/files/{id}/invitations", tag = "onehub", params(("id" = u64, Path)), request_body = OnehubInvitationBody,
    responses((status = 201, body = OnehubShareBody), (status = 400, body = OnehubError), (status = 401, body = OnehubError), (status = 403, body = OnehubError), (status = 404, body = OnehubError), (status = 422, body = OnehubError, description = "an invalid email, or a limit reached")),
    security(("bearer" = [])))]
pub async fn invite_to_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    idempotency: IdempotencyKey,
    Path(id): Path<String>,
    body: RawBody,
) -> Response {
    invite(&state, &headers, idempotency, "file", &id, body)
        .await
        .unwrap_or_else(error)
}

/// The role asked for if the kind's schema has it; otherwise none, which the domain resolves
/// to the kind's default role, as Onehub's document says.
async fn role_or_default(
    state: &AppState,
    kind: &str,
    role_name: Option<&str>,
) -> ApiResult<Option<RoleName>> {
    let Some(role) = role_name.and_then(|text| RoleName::parse(text).ok()) else {
        return Ok(None);
    };
    let schema = state.engine.schema(kind).await?;
    Ok(schema.rank(&role).is_some().then_some(role))
}

async fn invite(
    state: &AppState,
    headers: &HeaderMap,
    idempotency: IdempotencyKey,
    kind: &str,
    id: &str,
    body: RawBody,
) -> Result<Response, Refusal> {
    let caller = authenticate(state, headers)?;
    let number = integer_id("id", id)?;
    let resource = resource_id(kind, &number.to_string())?;
    let body: OnehubInvitationBody = json_body(body)?;
    let role = role_or_default(state, kind, body.invitation.role_name.as_deref()).await?;
    let requested: Vec<String> = body
        .invitation
        .emails
        .items()
        .into_iter()
        .map(str::to_string)
        .collect();
    let command = ResourceCommand::CreateInvitations {
        resource,
        emails: body.invitation.emails,
        role,
        expires_at: None,
        message: None,
    };
    match execute(state, &caller, Command::Resource(command), idempotency.0).await {
        Ok(executed) => {
            // A repeated Idempotency-Key gets the first batch too, rebuilt by the engine.
            let share = share_of(&executed.invitations.unwrap_or_default(), &requested);
            Ok(json(StatusCode::CREATED, OnehubShareBody { share }))
        }
        Err(mut error) if error.status == StatusCode::UNPROCESSABLE_ENTITY => {
            // Nobody was invited (every address invalid, a member or invited already: the
            // refusal carries each address's outcome) or a limit was reached (nothing per
            // address to say): a 422 whose body says why, per address where it can.
            let batch = error.refused_batch.take();
            let field = if batch.is_some() { "emails" } else { "base" };
            let mut share = share_of(&batch.unwrap_or_default(), &requested);
            share
                .errors
                .insert(field.to_string(), vec![error.detail.clone()]);
            Err(Refusal {
                error,
                share: Some(share),
            })
        }
        Err(error) => Err(error.into()),
    }
}

fn share_of(batch: &InvitationBatch, requested: &[String]) -> OnehubShare {
    let one = |key: String, value: String| BTreeMap::from([(key, value)]);
    let invited_emails: Vec<BTreeMap<String, u64>> = batch
        .invited
        .iter()
        .map(|(email, n)| BTreeMap::from([(email.to_string(), *n)]))
        .collect();
    let email_errors: Vec<BTreeMap<String, String>> = batch
        .email_errors
        .iter()
        .map(|e| one(e.email.clone(), e.error.clone()))
        .collect();
    let join_errors: Vec<BTreeMap<String, String>> =
        batch
            .already_members
            .iter()
            .map(|email| one(email.to_string(), "is already a member".into()))
            .chain(batch.already_invited.iter().map(|(email, n)| {
                one(email.to_string(), format!("has a pending invitation ({n})"))
            }))
            .collect();
    // What was not invited, as the request spelled it, so a form can offer it again.
    let invited: std::collections::BTreeSet<String> = batch
        .invited
        .iter()
        .map(|(email, _)| email.to_string())
        .collect();
    let left: Vec<&str> = requested
        .iter()
        .filter(|text| {
            roster_domain::Email::parse(text)
                .map_or(true, |email| !invited.contains(email.normal()))
        })
        .map(String::as_str)
        .collect();
    OnehubShare {
        emails: left.join(", "),
        email_errors,
        join_errors,
        invited_emails,
        errors: BTreeMap::new(),
    }
}
