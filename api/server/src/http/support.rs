//! Small pieces the handlers share: parsing path and body values into domain values with
//! clear errors, authorization on a resource, and running a command.

use roster_domain::{
    Command, DomainError, Email, Event, Kind, Principal, Privilege, ResourceId, RoleName, Scope,
    Timestamp,
};
use roster_projections::{InvitationRecord, InviteRecord, LinkRecord};

use super::auth::Caller;
use super::error::{ApiCode, ApiError, ApiResult};
use super::rate_limit::{ClientAddress, CodeAttempt, Key};
use super::state::AppState;
use roster_engine::{CodeAccess, Executed, Idempotency, Request};

pub fn resource_id(kind: &str, id: &str) -> ApiResult<ResourceId> {
    let kind = Kind::parse(kind).map_err(|e| ApiError::invalid(e.to_string()))?;
    ResourceId::new(kind, id).map_err(|e| ApiError::invalid(e.to_string()))
}

pub fn parse_resource(text: &str) -> ApiResult<ResourceId> {
    ResourceId::parse(text).map_err(|e| ApiError::invalid(e.to_string()))
}

pub fn principal(text: &str) -> ApiResult<Principal> {
    Principal::parse(text).map_err(|e| ApiError::invalid(e.to_string()))
}

pub fn role(text: &str) -> ApiResult<RoleName> {
    RoleName::parse(text)
        .map_err(|_| ApiError::new(ApiCode::UnknownRole, format!("no role is named {text:?}")))
}

/// An address given in a body or a query: 422 `invalid_email` when it is not one.
pub fn email(text: &str) -> ApiResult<Email> {
    Email::parse(text)
        .map_err(|e| ApiError::new(ApiCode::InvalidEmail, format!("{}: {}", e.email, e.error)))
}

pub fn time(field: &str, text: &str) -> ApiResult<Timestamp> {
    Timestamp::parse(text)
        .map_err(|_| ApiError::invalid(format!("{field}: {text:?} is not an RFC 3339 time")))
}

pub fn number(field: &str, text: &str) -> ApiResult<u64> {
    text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::invalid(format!("{field} must be a positive integer, not {text:?}"))
    })
}

/// The number of the link a command created.
fn created_link(events: &[Event]) -> ApiResult<u64> {
    events
        .iter()
        .find_map(|e| match e {
            Event::InviteLinkCreated { number, .. } => Some(*number),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("a link's creation appended no InviteLinkCreated"))
}

/// A link of this resource by number; any other number (an email invitation's, another
/// resource's link's, or none) is 404, so a path cannot reach across resources.
pub fn link_of(state: &AppState, resource: &ResourceId, number: u64) -> ApiResult<LinkRecord> {
    match state.engine.invite(number)? {
        Some(InviteRecord::Link(link)) if &link.resource == resource => Ok(link),
        _ => Err(DomainError::no_such_link(number).into()),
    }
}

/// An email invitation of this resource by number, as [`link_of`] finds a link.
pub fn invitation_of(
    state: &AppState,
    resource: &ResourceId,
    number: u64,
) -> ApiResult<InvitationRecord> {
    match state.engine.invite(number)? {
        Some(InviteRecord::Email(invitation)) if &invitation.resource == resource => Ok(invitation),
        _ => Err(DomainError::no_such_invitation(number).into()),
    }
}

/// The link a command just wrote: `execute` waits until the read models have applied it, so
/// its absence is the server's fault.
pub fn written_link(state: &AppState, number: u64) -> ApiResult<LinkRecord> {
    match state.engine.invite(number)? {
        Some(InviteRecord::Link(link)) => Ok(link),
        _ => Err(ApiError::internal(format_args!(
            "link {number} is not in the read model"
        ))),
    }
}

/// The email invitation a command just wrote, as [`written_link`] finds a link.
pub fn written_invitation(state: &AppState, number: u64) -> ApiResult<InvitationRecord> {
    match state.engine.invite(number)? {
        Some(InviteRecord::Email(invitation)) => Ok(invitation),
        _ => Err(ApiError::internal(format_args!(
            "invitation {number} is not in the read model"
        ))),
    }
}

/// Runs a `CreateInviteLink` for the caller and answers the link it made (the first
/// outcome's link for a repeated idempotency key).
pub async fn new_link(
    state: &AppState,
    caller: &Caller,
    command: roster_domain::ResourceCommand,
    idempotency: Option<Idempotency>,
) -> ApiResult<LinkRecord> {
    let executed = execute(state, caller, Command::Resource(command), idempotency).await?;
    written_link(state, created_link(&executed.events)?)
}

/// 404 unless the resource is registered.
pub fn registered(
    state: &AppState,
    resource: &ResourceId,
) -> ApiResult<roster_projections::ResourceRecord> {
    state
        .engine
        .resource(resource)?
        .ok_or_else(|| ApiError::not_found(format!("resource {resource} is not registered")))
}

/// The caller may read this resource with this privilege: the admin acting as nobody, or an
/// actor whose role grants it, or the `audit` scope for what an auditor reads.
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    resource: &ResourceId,
    privilege: Privilege,
) -> ApiResult<()> {
    // The `audit` scope reads any resource's members, links, invitations and history, now and
    // in the past, whatever the actor's role, even on a key without `read`: an auditor needs
    // the present as much as the past, and one rule for both keeps the paths agreeing (a
    // past `as_of` once showed what the present refused). It is shown no code: codes go
    // only to callers that may act (`code_access`).
    if matches!(privilege, Privilege::ViewHistory | Privilege::ViewMembers) && caller.audits() {
        registered(state, resource)?;
        return Ok(());
    }
    caller.require(Scope::Read)?;
    registered(state, resource)?;
    let Some(principal) = caller.principal() else {
        return Ok(());
    };
    let (allowed, _) = state.engine.check(principal, resource, privilege).await?;
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{principal} lacks {} on {resource}",
            privilege.name()
        )))
    }
}

/// What the caller is shown of the codes of `resource`'s links and invitations: the domain's
/// rule for its acting principal, and no code at all for a key that only reads.
pub async fn code_access(
    state: &AppState,
    caller: &Caller,
    resource: &ResourceId,
) -> ApiResult<CodeAccess> {
    Ok(state
        .engine
        .code_access(&caller.actor, resource, caller.has_scope(Scope::Write))
        .await?)
}

/// Runs a command for the caller, with the request's idempotency key as its command id.
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    command: Command,
    idempotency: Option<Idempotency>,
) -> ApiResult<Executed> {
    caller.require(Scope::Write)?;
    let request = Request::new(caller.actor.clone(), command).idempotent(idempotency);
    state
        .engine
        .execute(request)
        .await
        .map_err(|error| refused(state, error.into()))
}

/// Counts domain refusals for the metrics on their way out.
pub fn refused(state: &AppState, error: ApiError) -> ApiError {
    if error.status.is_client_error() {
        state.metrics.command_refused();
    }
    error
}

/// Before a code is looked at: 429 `rate_limited` (with `Retry-After`) when the client's
/// address or the acting principal has used up its failed checks; otherwise the keys a
/// failure of this check will spend. Every route that takes a code calls this first.
pub fn code_attempt(
    state: &AppState,
    family: &'static str,
    client: ClientAddress,
    caller: &Caller,
) -> ApiResult<CodeAttempt> {
    let mut keys = Vec::with_capacity(2);
    if let Some(ip) = client.0 {
        keys.push(Key::address(ip));
    }
    keys.push(Key::actor(&caller.actor));
    let attempt = CodeAttempt { keys };
    match state.code_failures.admit(&attempt) {
        Ok(()) => Ok(attempt),
        Err(limited) => {
            state.metrics.rate_limited(family, limited.scope);
            let seconds = limited.retry_after_s();
            let mut error = ApiError::new(
                ApiCode::RateLimited,
                format!("too many failed code checks; retry in {seconds} s"),
            );
            error.retry_after_s = Some(seconds);
            Err(error)
        }
    }
}

/// A code that opens nothing (unknown, malformed or forged: one error for all), counted for
/// the metrics and spent from the attempt's budgets. Codes that opened something but can no
/// longer be used (expired, revoked, used) are not failures of the check: their holder had
/// the code.
pub fn code_error(
    state: &AppState,
    family: &'static str,
    attempt: &CodeAttempt,
    error: roster_engine::EngineError,
) -> ApiError {
    if matches!(
        error,
        roster_engine::EngineError::Domain(DomainError::InvitationNotFound)
    ) {
        state.metrics.failed_code_check(family);
        state.code_failures.failed(attempt);
        state.metrics.rate_limit_keys(state.code_failures.tracked());
    }
    refused(state, error.into())
}
