//! `/v1/webhooks`: subscriptions (admin), their secrets shown once, and every delivery attempt.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_domain::{Command, Event, Scope, WebhookCommand};
use roster_projections::{WebhookDeliveryRow, WebhookRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Json, Path, Query};
use super::middleware::IdempotencyKey;
use super::paging::{self, NumberPage};
use super::state::AppState;
use super::support::{execute, number};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where events are POSTed: `http://` or `https://`.
    pub url: String,
    /// Event types wanted (for example `MemberAdded`); every type when empty or absent.
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: u64,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    pub removed: bool,
    /// The signing secret: only in the response that creates the subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<WebhookRow> for WebhookView {
    fn from(row: WebhookRow) -> WebhookView {
        // A subscription made before credentials were refused in URLs keeps working, but its
        // password is never shown again.
        let url = match roster_domain::url_userinfo(&row.url) {
            Some(userinfo) => row.url.replacen(&format!("{userinfo}@"), "***@", 1),
            None => row.url,
        };
        WebhookView {
            id: row.id,
            url,
            events: row.events,
            created_at: row.created_at.to_string(),
            removed: row.removed,
            secret: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttemptView {
    /// The position of the event delivered.
    pub position: u64,
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    pub gave_up: bool,
    pub at: String,
}

impl From<WebhookDeliveryRow> for DeliveryAttemptView {
    fn from(row: WebhookDeliveryRow) -> DeliveryAttemptView {
        DeliveryAttemptView {
            position: row.position,
            attempt: row.attempt,
            status: row.status,
            error: row.error,
            delivered: row.delivered,
            gave_up: row.gave_up,
            at: row.at.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttemptList {
    pub items: Vec<DeliveryAttemptView>,
    pub next: Option<u64>,
}

/// Subscribes a URL to events; the signing secret is in this response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookBody,
    responses((status = 201, body = WebhookView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    Json(body): Json<WebhookBody>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let command = WebhookCommand::Subscribe {
        url: body.url,
        events: body.events,
    };
    let executed = execute(&state, &caller, Command::Webhooks(command), idempotency.0).await?;
    let id = executed
        .events
        .iter()
        .find_map(|e| match e {
            Event::WebhookSubscribed { webhook, .. } => Some(*webhook),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("a subscription appended no WebhookSubscribed"))?;
    let row = state
        .engine
        .webhook(id)?
        .ok_or_else(|| ApiError::internal(format_args!("webhook {id} is not in the read model")))?;
    let mut view = WebhookView::from(row);
    view.secret = Some(crate::workers::webhooks::secret(&state.engine, id));
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// The subscriptions (no secrets), in id order, a page at a time.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(("limit" = Option<usize>, Query), ("after" = Option<u64>, Query)),
    responses((status = 200, body = WebhookList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<NumberPage>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let limit = state.config.paging.limit(page.limit)?;
    let (rows, more) = state.engine.webhooks_page(page.after.unwrap_or(0), limit)?;
    let next = paging::next(&rows, more, |w| w.id);
    let items = rows.into_iter().map(WebhookView::from).collect();
    Ok(axum::Json(WebhookList { items, next }).into_response())
}

fn webhook_of(state: &AppState, id: &str) -> ApiResult<u64> {
    let id = number("id", id)?;
    state
        .engine
        .webhook(id)?
        .map(|_| id)
        .ok_or_else(|| ApiError::not_found(format!("webhook {id}")))
}

/// Removes a subscription; nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = u64, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let webhook = webhook_of(&state, &id)?;
    execute(
        &state,
        &caller,
        Command::Webhooks(WebhookCommand::Remove { webhook }),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every delivery attempt to a subscription, by event position then attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = u64, Path), ("after" = Option<u64>, Query, description = "an event position"), ("limit" = Option<usize>, Query)),
    responses((status = 200, body = DeliveryAttemptList), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn webhook_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<NumberPage>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let webhook = webhook_of(&state, &id)?;
    let limit = state.config.paging.limit(query.limit)?;
    let fetched = state
        .engine
        .webhook_deliveries(webhook, query.after.unwrap_or(0), limit + 1)?;
    let (rows, more) = paging::one_over(fetched, limit);
    let next = paging::next(&rows, more, |r| r.position);
    Ok(axum::Json(DeliveryAttemptList {
        items: rows.into_iter().map(DeliveryAttemptView::from).collect(),
        next,
    })
    .into_response())
}
