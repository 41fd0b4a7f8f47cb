//! The native `/v1` routes of DESIGN section 5, and `/healthz` and `/metrics`.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use roster_domain::{
    ApiKeyCommand, ApiKeyId, Command, EmailList, Event, InvitationStatus, Privilege,
    ResourceCommand, RoleDef, SchemaCommand, Scope,
};
use roster_projections::{AsOf, LinkRecord};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Json, Path, Query};
use super::middleware::IdempotencyKey;
use super::paging::{self, NamePage, NumberPage};
use super::rate_limit::ClientAddress;
use super::state::AppState;
use super::support::{
    self, authorize, code_access, code_attempt, code_error, email, execute, invitation_of, link_of,
    number, parse_resource, principal, refused, registered, resource_id, role, time,
    written_invitation, written_link,
};
use super::views::*;
use roster_engine::{CodeAccess, KeyRequest};

fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

fn ok<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// System.

/// Liveness and the log's last position.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health), (status = 503, body = Health, description = "a write to the log failed; the server reopens the log by itself once the data directory takes writes again")))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    if state.engine.store_failed() {
        // The log cannot take writes until it is reopened: say so. `serve`'s supervisor
        // reopens it once the cause (a full disk, say) is gone.
        let body = Health {
            status: "failing".into(),
            position: state.engine.head(),
            reason: Some("a write to the log failed".into()),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let reason = state.engine.store_cut_off();
    ok(Health {
        status: if reason.is_some() { "degraded" } else { "ok" }.into(),
        position: state.engine.head(),
        reason,
    })
}

/// Whether a load balancer should send this node traffic: not while its store cannot be
/// reached or a write to it failed, nor while its read models are more than
/// `--ready-lag-max` events behind what it has read of the log.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, body = Health), (status = 503, body = Health, description = "cut off from the store, a failed write, or too far behind")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (head, applied) = (state.engine.head(), state.engine.applied());
    let lag = head.saturating_sub(applied);
    let reason = if state.engine.store_failed() {
        Some("a write to the log failed".to_string())
    } else if let Some(cut_off) = state.engine.store_cut_off() {
        Some(cut_off)
    } else if lag > state.config.postgres.ready_lag_max {
        Some(format!("the read models are {lag} events behind"))
    } else {
        None
    };
    let body = Health {
        status: if reason.is_some() { "unready" } else { "ok" }.into(),
        position: head,
        reason,
    };
    let status = if body.reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .render(state.engine.head(), state.engine.applied());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

// API keys.

fn scopes(names: &[String]) -> ApiResult<BTreeSet<Scope>> {
    if names.is_empty() {
        return Err(ApiError::invalid(
            "scopes must name at least one of read, write, audit, admin",
        ));
    }
    names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown scope {name:?}: use read, write, audit or admin"
                ))
            })
        })
        .collect()
}

/// Issues an API key; the key is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "keys", request_body = IssueKeyBody,
    responses((status = 201, body = IssuedKeyView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem, description = "`email` is not a valid address (`invalid_email`)")),
    security(("bearer" = [])))]
pub async fn issue_key(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<IssueKeyBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let email = body.email.as_deref().map(email).transpose()?;
    let request = KeyRequest {
        principal: principal(&body.principal)?,
        scopes: scopes(&body.scopes)?,
        act_as: body.act_as,
        email,
        name: body.name,
    };
    let issued = state
        .engine
        .issue_api_key(caller.actor.clone(), request, idempotency.0)
        .await
        .map_err(|e| refused(&state, e.into()))?;
    let view = KeyView::from(issued.row);
    Ok(created(IssuedKeyView {
        id: view.id,
        key: issued.key,
        principal: view.principal,
        scopes: view.scopes,
        act_as: view.act_as,
        created_at: view.created_at,
    }))
}

/// Lists API keys (never their secrets), in id order, a page at a time.
#[utoipa::path(get, path = "/v1/api-keys", tag = "keys", params(("limit" = Option<usize>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = KeyList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<NamePage>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let limit = state.config.paging.limit(page.limit)?;
    let (rows, more) = state.engine.api_keys_page(page.after.as_deref(), limit)?;
    let next = paging::next(&rows, more, |k| k.key_id.to_string());
    Ok(ok(KeyList {
        items: rows.into_iter().map(KeyView::from).collect(),
        next,
    }))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let key_id = ApiKeyId::parse(&id).map_err(|e| ApiError::invalid(e.to_string()))?;
    execute(
        &state,
        &caller,
        Command::ApiKeys(ApiKeyCommand::RevokeApiKey { key_id }),
        None,
    )
    .await?;
    Ok(no_content())
}

// Role schemas.

/// Defines or changes a kind's role schema.
#[utoipa::path(put, path = "/v1/role-schemas/{kind}", tag = "role schemas", params(("kind" = String, Path)), request_body = RoleSchemaBody,
    responses((status = 200, body = RoleSchemaView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn put_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
    Json(body): Json<RoleSchemaBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let kind = roster_domain::Kind::parse(&kind).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut roles = Vec::new();
    for r in body.roles {
        let privileges = r
            .privileges
            .iter()
            .map(|p| {
                Privilege::parse(p)
                    .ok_or_else(|| ApiError::invalid(format!("unknown privilege {p:?}")))
            })
            .collect::<ApiResult<BTreeSet<Privilege>>>()?;
        roles.push(RoleDef {
            name: role(&r.name)?,
            privileges,
        });
    }
    let command = SchemaCommand::DefineRoleSchema {
        kind: kind.clone(),
        roles,
        default_role: role(&body.default_role)?,
    };
    execute(&state, &caller, Command::Schema(command), None).await?;
    let schema = state.engine.schema(kind.as_str()).await?;
    Ok(ok(RoleSchemaView::from(&schema)))
}

/// The role schema in force for a kind (a built-in one when none was defined).
#[utoipa::path(get, path = "/v1/role-schemas/{kind}", tag = "role schemas", params(("kind" = String, Path)),
    responses((status = 200, body = RoleSchemaView), (status = 400, body = Problem), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn get_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(kind): Path<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    roster_domain::Kind::parse(&kind).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(ok(RoleSchemaView::from(&state.engine.schema(&kind).await?)))
}

// Resources.

/// Registers a resource with its owner holding the highest role.
#[utoipa::path(post, path = "/v1/resources", tag = "resources", request_body = RegisterBody,
    responses((status = 201, body = ResourceView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<RegisterBody>,
) -> ApiResult<Response> {
    let resource = parse_resource(&body.resource)?;
    let owner = principal(&body.owner)?;
    caller.may_speak_for(&owner)?;
    let parent = body.parent.as_deref().map(parse_resource).transpose()?;
    let command = ResourceCommand::RegisterResource {
        resource: resource.clone(),
        owner,
        parent,
    };
    execute(&state, &caller, Command::Resource(command), idempotency.0).await?;
    Ok(created(resource_view(&state, &resource)?))
}

#[derive(Debug, Deserialize)]
pub struct ResourcesQuery {
    kind: Option<String>,
    parent: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Registered resources in name order (`kind/id`), of one kind or under one parent, a page at
/// a time. For the admin, `audit` keys and service keys: a user key lists its own through its
/// memberships, and learns nothing of other resources here.
#[utoipa::path(get, path = "/v1/resources", tag = "resources",
    params(("kind" = Option<String>, Query), ("parent" = Option<String>, Query, description = "`kind/id`"), ("after" = Option<String>, Query, description = "`kind/id`"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = ResourceList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ResourcesQuery>,
) -> ApiResult<Response> {
    if !caller.has_scope(Scope::Audit) {
        caller.require(Scope::Read)?;
        if !caller.may_name_anyone() {
            return Err(ApiError::forbidden(
                "a user key lists its own resources at /v1/principals/{principal}/memberships",
            ));
        }
    }
    let limit = state.config.paging.limit(query.limit)?;
    let kind = query
        .kind
        .as_deref()
        .map(|k| roster_domain::Kind::parse(k).map_err(|e| ApiError::invalid(e.to_string())))
        .transpose()?;
    let parent = query.parent.as_deref().map(parse_resource).transpose()?;
    let (records, more) = state.engine.resources_page(
        kind.as_ref().map(roster_domain::Kind::as_str),
        parent.as_ref(),
        query.after.as_deref(),
        limit,
    )?;
    let next = paging::next(&records, more, |r| r.resource.to_string());
    let items = records
        .into_iter()
        .map(|record| {
            let owners = state.engine.owners(&record.resource, OWNERS_SHOWN_MAX)?;
            Ok(ResourceView::of(record, owners))
        })
        .collect::<ApiResult<_>>()?;
    Ok(ok(ResourceList { items, next }))
}

fn resource_view(
    state: &AppState,
    resource: &roster_domain::ResourceId,
) -> ApiResult<ResourceView> {
    let record = registered(state, resource)?;
    let owners = state.engine.owners(resource, OWNERS_SHOWN_MAX)?;
    Ok(ResourceView::of(record, owners))
}

/// A resource: its current owners and its member count.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}", tag = "resources", params(("kind" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ResourceView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_resource(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    authorize(&state, &caller, &resource, Privilege::ViewMembers).await?;
    Ok(ok(resource_view(&state, &resource)?))
}

// Invite links.

fn link_view(state: &AppState, access: &CodeAccess, link: &LinkRecord) -> LinkView {
    LinkView::of(link, &state.engine, access, &state.config.public_url)
}

/// Creates an invite link.
#[utoipa::path(post, path = "/v1/resources/{kind}/{id}/invite-links", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path)), request_body = CreateLinkBody,
    responses((status = 201, body = LinkView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path((kind, id)): Path<(String, String)>,
    Json(body): Json<CreateLinkBody>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let command = ResourceCommand::CreateInviteLink {
        resource: resource.clone(),
        role: body.role.as_deref().map(role).transpose()?,
        expires_at: body
            .expires_at
            .as_deref()
            .map(|t| time("expires_at", t))
            .transpose()?,
        max_uses: body.max_uses,
    };
    let link = support::new_link(&state, &caller, command, idempotency.0).await?;
    let access = code_access(&state, &caller, &resource).await?;
    Ok(created(link_view(&state, &access, &link)))
}

/// The resource's invite links in id order, a page at a time; codes only for those who may
/// see them.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/invite-links", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path), ("limit" = Option<usize>, Query), ("after" = Option<u64>, Query)),
    responses((status = 200, body = LinkList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    Query(page): Query<NumberPage>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let limit = state.config.paging.limit(page.limit)?;
    authorize(&state, &caller, &resource, Privilege::ViewMembers).await?;
    let access = code_access(&state, &caller, &resource).await?;
    let (links, more) = state
        .engine
        .links_page(&resource, page.after.unwrap_or(0), limit)?;
    let next = paging::next(&links, more, |l| l.number);
    let items = links
        .iter()
        .map(|l| link_view(&state, &access, l))
        .collect();
    Ok(ok(LinkList { items, next }))
}

/// 404 unless the caller may see the resource's links and invitations: a stranger learns
/// nothing of which numbers exist (the domain answers its commands the same way).
async fn visible(
    state: &AppState,
    caller: &Caller,
    resource: &roster_domain::ResourceId,
    missing: roster_domain::DomainError,
) -> ApiResult<()> {
    if !caller.has_scope(Scope::Audit) {
        caller.require(Scope::Read)?;
    }
    match authorize(state, caller, resource, Privilege::ViewMembers).await {
        Err(error) if matches!(error.status.as_u16(), 403 | 404) => Err(missing.into()),
        other => other,
    }
}

/// One invite link; its code only for those who may see it.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/invite-links/{link_id}", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path), ("link_id" = u64, Path)),
    responses((status = 200, body = LinkView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_link(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, link_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let number = number("link_id", &link_id)?;
    visible(
        &state,
        &caller,
        &resource,
        roster_domain::DomainError::no_such_link(number),
    )
    .await?;
    let link = link_of(&state, &resource, number)?;
    let access = code_access(&state, &caller, &resource).await?;
    Ok(ok(link_view(&state, &access, &link)))
}

/// Changes a link's role, expiry or use limit (`null` clears the last two).
#[utoipa::path(patch, path = "/v1/resources/{kind}/{id}/invite-links/{link_id}", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path), ("link_id" = u64, Path)), request_body = ChangeLinkBody,
    responses((status = 200, body = LinkView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem, description = "the link was revoked"), (status = 422, body = Problem, description = "a limit was reached (`limit_reached`)")), security(("bearer" = [])))]
pub async fn change_link(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, link_id)): Path<(String, String, String)>,
    Json(body): Json<ChangeLinkBody>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let link = number("link_id", &link_id)?;
    let expires_at = match body.expires_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(time("expires_at", &text)?)),
    };
    let command = ResourceCommand::ChangeInviteLink {
        resource: resource.clone(),
        link,
        role: body.role.as_deref().map(role).transpose()?,
        expires_at,
        max_uses: body.max_uses,
    };
    execute(&state, &caller, Command::Resource(command), None).await?;
    let access = code_access(&state, &caller, &resource).await?;
    Ok(ok(link_view(&state, &access, &written_link(&state, link)?)))
}

/// A new code for the link; every older code stops working.
#[utoipa::path(post, path = "/v1/resources/{kind}/{id}/invite-links/{link_id}/rotate", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path), ("link_id" = u64, Path)),
    responses((status = 200, body = LinkView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem, description = "the link was revoked"), (status = 422, body = Problem, description = "the link was rotated too often (`limit_reached`)")), security(("bearer" = [])))]
pub async fn rotate_link(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path((kind, id, link_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let link = number("link_id", &link_id)?;
    let executed = execute(
        &state,
        &caller,
        Command::Resource(ResourceCommand::RotateInviteLink {
            resource: resource.clone(),
            link,
        }),
        idempotency.0,
    )
    .await?;
    let access = code_access(&state, &caller, &resource).await?;
    let mut record = written_link(&state, link)?;
    // The code this rotation made, even when another rotation came right after it or the
    // response is rebuilt for a repeated `Idempotency-Key`.
    if let Some(generation) = executed.events.iter().find_map(|e| match e {
        Event::InviteLinkRotated { generation, .. } => Some(*generation),
        _ => None,
    }) {
        record.generation = generation;
    }
    Ok(ok(link_view(&state, &access, &record)))
}

/// Revokes a link.
#[utoipa::path(delete, path = "/v1/resources/{kind}/{id}/invite-links/{link_id}", tag = "invite links", params(("kind" = String, Path), ("id" = String, Path), ("link_id" = u64, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn revoke_link(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, link_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let link = number("link_id", &link_id)?;
    execute(
        &state,
        &caller,
        Command::Resource(ResourceCommand::RevokeInviteLink { resource, link }),
        None,
    )
    .await?;
    Ok(no_content())
}

// Email invitations.

fn email_list(value: serde_json::Value) -> ApiResult<EmailList> {
    serde_json::from_value(value).map_err(|_| {
        ApiError::invalid("emails is an array of addresses or one comma-separated string")
    })
}

/// The mail worker's attempt limit, when it runs.
fn delivery_configured(state: &AppState) -> Option<u32> {
    (state.config.smtp_url.is_some() && state.config.mail_from.is_some())
        .then_some(state.config.retry.delivery.attempts_max)
}

/// Invites one or more emails; each gets its own outcome.
#[utoipa::path(post, path = "/v1/resources/{kind}/{id}/invitations", tag = "invitations", params(("kind" = String, Path), ("id" = String, Path)), request_body = CreateInvitationsBody,
    responses((status = 201, body = InvitationsCreated), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem, description = "nobody was invited: the problem carries already_members, already_invited and email_errors")), security(("bearer" = [])))]
pub async fn create_invitations(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path((kind, id)): Path<(String, String)>,
    Json(body): Json<CreateInvitationsBody>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let command = ResourceCommand::CreateInvitations {
        resource,
        emails: email_list(body.emails)?,
        role: body.role.as_deref().map(role).transpose()?,
        expires_at: body
            .expires_at
            .as_deref()
            .map(|t| time("expires_at", t))
            .transpose()?,
        message: body.message,
    };
    // A batch that invited nobody is refused with each address's outcome in the problem.
    let executed = execute(&state, &caller, Command::Resource(command), idempotency.0).await?;
    // The engine answers a repeated key with the first batch too, rebuilt from the log.
    let batch = executed.invitations.unwrap_or_default();
    let NotInvited {
        already_members,
        already_invited,
        email_errors,
    } = NotInvited::from(&batch);
    let mut view = InvitationsCreated {
        invited: Vec::with_capacity(batch.invited.len()),
        already_members,
        already_invited,
        email_errors,
    };
    for (_, number) in &batch.invited {
        let record = written_invitation(&state, *number)?;
        let invitation = InvitationView::of(&record, &state.engine, delivery_configured(&state))
            .with_code(&record, &state.engine, &state.config.public_url);
        view.invited.push(Invited {
            email: record.email.to_string(),
            invitation,
        });
    }
    Ok(created(view))
}

#[derive(Debug, Deserialize)]
pub struct InvitationsQuery {
    status: Option<String>,
    email: Option<String>,
    limit: Option<usize>,
    after: Option<u64>,
}

/// The resource's email invitations in id order, optionally of one status or to one address,
/// a page at a time.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/invitations", tag = "invitations",
    params(("kind" = String, Path), ("id" = String, Path), ("status" = Option<String>, Query, description = "pending, accepted, declined, revoked or expired"), ("email" = Option<String>, Query, description = "compared in normal form"), ("limit" = Option<usize>, Query), ("after" = Option<u64>, Query)),
    responses((status = 200, body = InvitationList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem, description = "`email` is not a valid address (`invalid_email`)")), security(("bearer" = [])))]
pub async fn list_invitations(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<InvitationsQuery>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let status = query
        .status
        .as_deref()
        .map(|text| {
            InvitationStatus::parse(text).ok_or_else(|| {
                let names: Vec<&str> = InvitationStatus::ALL.iter().map(|s| s.name()).collect();
                ApiError::invalid(format!("status {text:?} is none of {}", names.join(", ")))
            })
        })
        .transpose()?;
    let email = query.email.as_deref().map(email).transpose()?;
    let limit = state.config.paging.limit(query.limit)?;
    authorize(&state, &caller, &resource, Privilege::ViewMembers).await?;
    let now = state.engine.now();
    let (invitations, more) =
        state
            .engine
            .invitations_page(&resource, query.after.unwrap_or(0), limit, |i| {
                email.as_ref().is_none_or(|e| &i.email == e)
                    && status.is_none_or(|s| i.status(now) == s)
            })?;
    let next = paging::next(&invitations, more, |i| i.number);
    let items = invitations
        .iter()
        .map(|i| InvitationView::of(i, &state.engine, delivery_configured(&state)))
        .collect();
    Ok(ok(InvitationList { items, next }))
}

/// One email invitation (its code is shown only where it is made or resent).
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/invitations/{invitation_id}", tag = "invitations", params(("kind" = String, Path), ("id" = String, Path), ("invitation_id" = u64, Path)),
    responses((status = 200, body = InvitationView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, invitation_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let number = number("invitation_id", &invitation_id)?;
    visible(
        &state,
        &caller,
        &resource,
        roster_domain::DomainError::no_such_invitation(number),
    )
    .await?;
    let record = invitation_of(&state, &resource, number)?;
    Ok(ok(InvitationView::of(
        &record,
        &state.engine,
        delivery_configured(&state),
    )))
}

/// A new code and expiry for an invitation; the old code stops working.
#[utoipa::path(post, path = "/v1/resources/{kind}/{id}/invitations/{invitation_id}/resend", tag = "invitations", params(("kind" = String, Path), ("id" = String, Path), ("invitation_id" = u64, Path)),
    responses((status = 200, body = InvitationView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem, description = "the invitation was accepted, declined or revoked"), (status = 422, body = Problem, description = "a limit was reached (`limit_reached`)")), security(("bearer" = [])))]
pub async fn resend_invitation(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path((kind, id, invitation_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let invitation = number("invitation_id", &invitation_id)?;
    let executed = execute(
        &state,
        &caller,
        Command::Resource(ResourceCommand::ResendInvitation {
            resource,
            invitation,
        }),
        idempotency.0,
    )
    .await?;
    let mut record = written_invitation(&state, invitation)?;
    // The code this resend made, not whatever generation a later resend left in the read
    // model (as a rotation does).
    if let Some((generation, expires_at)) = executed.events.iter().find_map(|e| match e {
        Event::InvitationResent {
            generation,
            expires_at,
            ..
        } => Some((*generation, *expires_at)),
        _ => None,
    }) {
        record.generation = generation;
        record.expires_at = expires_at;
    }
    Ok(ok(InvitationView::of(
        &record,
        &state.engine,
        delivery_configured(&state),
    )
    .with_code(&record, &state.engine, &state.config.public_url)))
}

/// Revokes an invitation.
#[utoipa::path(delete, path = "/v1/resources/{kind}/{id}/invitations/{invitation_id}", tag = "invitations", params(("kind" = String, Path), ("id" = String, Path), ("invitation_id" = u64, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem, description = "the invitation was accepted or declined")), security(("bearer" = [])))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, invitation_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let invitation = number("invitation_id", &invitation_id)?;
    execute(
        &state,
        &caller,
        Command::Resource(ResourceCommand::RevokeInvitation {
            resource,
            invitation,
        }),
        None,
    )
    .await?;
    Ok(no_content())
}

// Codes.

/// What a code is for, without using it.
#[utoipa::path(post, path = "/v1/invitations/preview", tag = "codes", request_body = CodeBody,
    responses((status = 200, body = PreviewView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem, description = "too many failed code checks from this address or principal; see `Retry-After`")), security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    client: ClientAddress,
    caller: Caller,
    Json(body): Json<CodeBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let attempt = code_attempt(&state, "native", client, &caller)?;
    let preview = state
        .engine
        .preview(&body.code)
        .await
        .map_err(|e| code_error(&state, "native", &attempt, e))?;
    Ok(ok(PreviewView {
        resource: preview.resource.to_string(),
        role: preview.role.to_string(),
        kind: preview.kind,
        status: preview.status,
        expires_at: preview.expires_at.map(|t| t.to_string()),
        inviter: preview.inviter.map(|p| p.to_string()),
        email: preview.email.map(|e| e.to_string()),
    }))
}

/// Accepts a code for the acting principal.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "codes", request_body = CodeBody,
    responses((status = 200, body = AcceptedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem), (status = 429, body = Problem, description = "too many failed code checks from this address or principal; see `Retry-After`")), security(("bearer" = [])))]
pub async fn accept(
    State(state): State<AppState>,
    client: ClientAddress,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<CodeBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let attempt = code_attempt(&state, "native", client, &caller)?;
    let accepted = state
        .engine
        .accept(caller.actor.clone(), &body.code, idempotency.0)
        .await
        .map_err(|e| code_error(&state, "native", &attempt, e))?;
    Ok(ok(AcceptedView {
        resource: accepted.resource.to_string(),
        principal: accepted.principal.to_string(),
        role: accepted.role.to_string(),
        changed: accepted.changed,
    }))
}

/// Accepts a pending email invitation by its id, without its code, for the acting principal
/// whose verified email is the invited one (a key's `email`, or `X-Roster-Actor-Email` from
/// a service key): for a host that shows a signed-in user "you have 2 invitations". An
/// invitation to another address answers 404, as a missing one does.
#[utoipa::path(post, path = "/v1/invitations/{invitation_id}/accept", tag = "codes", params(("invitation_id" = u64, Path)),
    responses((status = 200, body = AcceptedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem)), security(("bearer" = [])))]
pub async fn accept_by_id(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Path(invitation_id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let number = number("invitation_id", &invitation_id)?;
    let accepted = state
        .engine
        .accept_by_id(caller.actor.clone(), number, idempotency.0)
        .await
        .map_err(|e| refused(&state, e.into()))?;
    Ok(ok(AcceptedView {
        resource: accepted.resource.to_string(),
        principal: accepted.principal.to_string(),
        role: accepted.role.to_string(),
        changed: accepted.changed,
    }))
}

/// Declines an email invitation (a link's decline records nothing).
#[utoipa::path(post, path = "/v1/invitations/decline", tag = "codes", request_body = CodeBody,
    responses((status = 200, body = DeclinedView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 410, body = Problem), (status = 429, body = Problem, description = "too many failed code checks from this address or principal; see `Retry-After`")), security(("bearer" = [])))]
pub async fn decline(
    State(state): State<AppState>,
    client: ClientAddress,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<CodeBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Write)?;
    let attempt = code_attempt(&state, "native", client, &caller)?;
    // The resource comes back with the outcome: the code is resolved once, not again.
    let (resource, executed) = state
        .engine
        .decline(caller.actor.clone(), &body.code, idempotency.0)
        .await
        .map_err(|e| code_error(&state, "native", &attempt, e))?;
    let resource = resource.to_string();
    let declined = executed
        .events
        .iter()
        .any(|e| matches!(e, Event::InvitationDeclined { .. }));
    Ok(ok(DeclinedView { resource, declined }))
}

#[derive(Debug, Deserialize)]
pub struct EmailQuery {
    email: Option<String>,
}

/// Pending invitations for an email, for sign-up flows.
#[utoipa::path(get, path = "/v1/invitations", tag = "codes", params(("email" = String, Query)),
    responses((status = 200, body = InvitationList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem, description = "`email` is not a valid address (`invalid_email`)")), security(("bearer" = [])))]
pub async fn pending_for_email(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<EmailQuery>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let text = query
        .email
        .ok_or_else(|| ApiError::invalid("the email query parameter is required"))?;
    let email = email(&text)?;
    caller.may_read_email(&email)?;
    let items = state
        .engine
        .pending_invitations(&email)?
        .iter()
        .map(|i| InvitationView::of(i, &state.engine, delivery_configured(&state)))
        .collect();
    Ok(ok(InvitationList { items, next: None }))
}

// Members.

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    as_of: Option<String>,
    at_position: Option<u64>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The resource's members, now or at a past time or position.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/members", tag = "members",
    params(("kind" = String, Path), ("id" = String, Path), ("as_of" = Option<String>, Query), ("at_position" = Option<u64>, Query), ("limit" = Option<usize>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = MemberList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<MembersQuery>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let limit = state.config.paging.limit(query.limit)?;
    let past = match (&query.as_of, query.at_position) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give as_of or at_position, not both")),
        (Some(text), None) => {
            let at = time("as_of", text)?;
            // The future has no rolemap yet: answering today's would be a guess.
            if at > state.engine.now() {
                return Err(ApiError::invalid(format!(
                    "as_of {at} is in the future; leave it out for the members now"
                )));
            }
            Some(AsOf::Time(at))
        }
        (None, Some(position)) => {
            let head = state.engine.head();
            if position > head {
                return Err(ApiError::invalid(format!(
                    "at_position {position} is past the log's head, {head}"
                )));
            }
            Some(AsOf::Position(position))
        }
        (None, None) => None,
    };
    let privilege = if past.is_some() {
        Privilege::ViewHistory
    } else {
        Privilege::ViewMembers
    };
    authorize(&state, &caller, &resource, privilege).await?;
    let Some(as_of) = past else {
        let page = state
            .engine
            .members(&resource, query.after.as_deref(), limit)?;
        return Ok(ok(MemberList {
            items: page.items.iter().map(MemberView::from).collect(),
            next: page.next,
        }));
    };
    let members = state
        .engine
        .members_as_of(&resource, as_of)
        .await?
        .map(|(m, _)| m)
        .unwrap_or_default();
    let fetched: Vec<MemberView> = members
        .iter()
        .filter(|m| {
            query
                .after
                .as_ref()
                .is_none_or(|after| m.principal.as_str() > after.as_str())
        })
        .take(limit + 1)
        .map(MemberView::from)
        .collect();
    let (items, more) = paging::one_over(fetched, limit);
    let next = paging::next(&items, more, |m| m.principal.clone());
    Ok(ok(MemberList { items, next }))
}

/// Adds a member directly, or changes a member's role.
#[utoipa::path(put, path = "/v1/resources/{kind}/{id}/members/{principal}", tag = "members", params(("kind" = String, Path), ("id" = String, Path), ("principal" = String, Path)), request_body = SetRoleBody,
    responses((status = 200, body = MemberView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, who)): Path<(String, String, String)>,
    Json(body): Json<SetRoleBody>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let member = principal(&who)?;
    let command = ResourceCommand::SetMemberRole {
        resource: resource.clone(),
        principal: member.clone(),
        role: role(&body.role)?,
    };
    let executed = execute(&state, &caller, Command::Resource(command), None).await?;
    // The member as this command left it: the read model may already show a removal decided
    // right after (rule 9: an appended change answers its success).
    let after = executed.member.ok_or_else(|| {
        ApiError::internal(format_args!(
            "SetMemberRole on {resource} left no member {member}"
        ))
    })?;
    Ok(ok(MemberView {
        principal: member.to_string(),
        role: after.role.to_string(),
        since: after.since.to_string(),
        granted_by: after.granted_by.map(|p| p.to_string()),
    }))
}

/// Removes a member, or leaves when the member is the actor.
#[utoipa::path(delete, path = "/v1/resources/{kind}/{id}/members/{principal}", tag = "members", params(("kind" = String, Path), ("id" = String, Path), ("principal" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id, who)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let command = ResourceCommand::RemoveMember {
        resource,
        principal: principal(&who)?,
    };
    execute(&state, &caller, Command::Resource(command), None).await?;
    Ok(no_content())
}

/// Every resource and role of a principal, in resource order, a page at a time.
#[utoipa::path(get, path = "/v1/principals/{principal}/memberships", tag = "members", params(("principal" = String, Path), ("limit" = Option<usize>, Query), ("after" = Option<String>, Query, description = "`kind/id`")),
    responses((status = 200, body = MembershipList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn memberships(
    State(state): State<AppState>,
    caller: Caller,
    Path(who): Path<String>,
    Query(page): Query<NamePage>,
) -> ApiResult<Response> {
    let member = principal(&who)?;
    caller.may_read_principal(&member)?;
    let limit = state.config.paging.limit(page.limit)?;
    let (rows, more) = state
        .engine
        .memberships_page(&member, page.after.as_deref(), limit)?;
    Ok(ok(MembershipList {
        next: paging::next(&rows, more, |m| m.resource.to_string()),
        items: rows.iter().map(MembershipView::from).collect(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct CheckQuery {
    principal: Option<String>,
    resource: Option<String>,
    privilege: Option<String>,
}

/// Whether a principal holds a privilege on a resource.
#[utoipa::path(get, path = "/v1/check", tag = "members", params(("principal" = String, Query), ("resource" = String, Query), ("privilege" = String, Query)),
    responses((status = 200, body = CheckView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CheckQuery>,
) -> ApiResult<Response> {
    caller.require(Scope::Read)?;
    let (Some(who), Some(resource), Some(privilege)) =
        (query.principal, query.resource, query.privilege)
    else {
        return Err(ApiError::invalid(
            "principal, resource and privilege are all required",
        ));
    };
    let member = principal(&who)?;
    caller.may_speak_for(&member)?;
    let resource = parse_resource(&resource)?;
    let privilege = Privilege::parse(&privilege)
        .ok_or_else(|| ApiError::invalid(format!("unknown privilege {privilege:?}")))?;
    let (allowed, role) = state.engine.check(&member, &resource, privilege).await?;
    Ok(ok(CheckView {
        allowed,
        role: role.map(|r| r.to_string()),
    }))
}

// History.

/// A page of history from entries read one past `limit`.
fn history_page(entries: Vec<roster_projections::HistoryEntry>, limit: usize) -> HistoryList {
    let (entries, more) = paging::one_over(entries, limit);
    HistoryList {
        next: paging::next(&entries, more, |h| h.position),
        items: entries.iter().map(HistoryView::from).collect(),
    }
}

/// The resource's events, each with a one-line summary.
#[utoipa::path(get, path = "/v1/resources/{kind}/{id}/history", tag = "history", params(("kind" = String, Path), ("id" = String, Path), ("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = HistoryList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn resource_history(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, id)): Path<(String, String)>,
    Query(query): Query<NumberPage>,
) -> ApiResult<Response> {
    let resource = resource_id(&kind, &id)?;
    let limit = state.config.paging.limit(query.limit)?;
    authorize(&state, &caller, &resource, Privilege::ViewHistory).await?;
    Ok(ok(history_page(
        state
            .engine
            .history(&resource, query.after.unwrap_or(0), limit + 1)?,
        limit,
    )))
}

/// The principal's membership events everywhere.
#[utoipa::path(get, path = "/v1/principals/{principal}/history", tag = "history", params(("principal" = String, Path), ("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = HistoryList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn principal_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(who): Path<String>,
    Query(query): Query<NumberPage>,
) -> ApiResult<Response> {
    let member = principal(&who)?;
    caller.may_read_principal(&member)?;
    let limit = state.config.paging.limit(query.limit)?;
    Ok(ok(history_page(
        state
            .engine
            .principal_history(&member, query.after.unwrap_or(0), limit + 1)?,
        limit,
    )))
}

/// The global log, for audit and replication.
#[utoipa::path(get, path = "/v1/events", tag = "history", params(("after" = Option<u64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = EventList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<NumberPage>,
) -> ApiResult<Response> {
    caller.require(Scope::Audit)?;
    let limit = state.config.paging.limit(query.limit)?;
    let envelopes = state.engine.events(query.after.unwrap_or(0), limit).await?;
    // A next page only when the log holds more than this one.
    let head = state.engine.head();
    let more = envelopes.last().is_some_and(|e| e.position < head);
    let next = paging::next(&envelopes, more, |e| e.position);
    let items = envelopes
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    Ok(ok(EventList { items, next }))
}
