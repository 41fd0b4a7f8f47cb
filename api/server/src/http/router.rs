//! The router: every route of the native API, the seed products' and the system's, with the
//! layers around them (outermost last): unknown query parameters, idempotency keys, the
//! request's time limit with its position header, metrics and log line, the body limit, CORS,
//! and a panic turned into a 500.

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use super::error::{ApiCode, ApiError};
use super::middleware::{around, idempotency, min_position, query_check};
use super::state::AppState;
use super::{auth, compat, openapi, webhook_routes, POSITION_HEADER};

/// Every route, with the middleware around them.
pub fn router(state: AppState) -> Router {
    use super::routes::*;
    let body_bytes_max = state.config.body_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/api-keys", post(issue_key).get(list_keys))
        .route("/v1/api-keys/{id}", delete(revoke_key))
        .route("/v1/role-schemas/{kind}", put(put_schema).get(get_schema))
        .route("/v1/resources", post(register).get(list_resources))
        .route("/v1/resources/{kind}/{id}", get(get_resource))
        .route(
            "/v1/resources/{kind}/{id}/invite-links",
            post(create_link).get(list_links),
        )
        .route(
            "/v1/resources/{kind}/{id}/invite-links/{link_id}",
            get(get_link).patch(change_link).delete(revoke_link),
        )
        .route(
            "/v1/resources/{kind}/{id}/invite-links/{link_id}/rotate",
            post(rotate_link),
        )
        .route(
            "/v1/resources/{kind}/{id}/invitations",
            post(create_invitations).get(list_invitations),
        )
        .route(
            "/v1/resources/{kind}/{id}/invitations/{invitation_id}",
            get(get_invitation).delete(revoke_invitation),
        )
        .route(
            "/v1/resources/{kind}/{id}/invitations/{invitation_id}/resend",
            post(resend_invitation),
        )
        .route("/v1/invitations", get(pending_for_email))
        .route("/v1/invitations/preview", post(preview))
        .route("/v1/invitations/accept", post(accept))
        .route("/v1/invitations/{invitation_id}/accept", post(accept_by_id))
        .route("/v1/invitations/decline", post(decline))
        .route("/v1/resources/{kind}/{id}/members", get(list_members))
        .route(
            "/v1/resources/{kind}/{id}/members/{principal}",
            put(set_member).delete(remove_member),
        )
        .route("/v1/principals/{principal}/memberships", get(memberships))
        .route("/v1/principals/{principal}/history", get(principal_history))
        .route("/v1/check", get(check))
        .route("/v1/resources/{kind}/{id}/history", get(resource_history))
        .route("/v1/events", get(events))
        .route(
            "/v1/webhooks",
            post(webhook_routes::create_webhook).get(webhook_routes::list_webhooks),
        )
        .route("/v1/webhooks/{id}", delete(webhook_routes::delete_webhook))
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhook_routes::webhook_deliveries),
        )
        .merge(compat::router(state.config.families))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), min_position))
        .layer(middleware::from_fn(query_check::refuse_unknown_query))
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(tower::util::option_layer(cors(&state.config.cors_origins)))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                ApiError::internal(format_args!("a handler panicked: {message}")).into_response()
            },
        ))
        .with_state(state)
}

/// Cross-origin requests from the listed origins only; with none listed (the default) no
/// CORS header is sent and browsers keep other origins out. A preflight is answered here,
/// outside the routes, so it needs no key.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static(auth::ACTOR_HEADER),
            header::HeaderName::from_static(auth::ACTOR_EMAIL_HEADER),
        ])
        .expose_headers([
            header::HeaderName::from_static(POSITION_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600));
    Some(layer)
}

/// This document, so that it lists itself as DESIGN section 5 lists it.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ApiCode::MethodNotAllowed,
        "this route does not take this method",
    )
}
