//! The HTTP server over the engine: routes, auth, problem+json errors, limits, idempotency,
//! logs and metrics, and a graceful shutdown.

mod auth;
mod compat;
pub mod config;
mod error;
mod extract;
mod listener;
mod metrics;
mod openapi;
mod rate_limit;
mod routes;
mod state;
mod support;
mod views;
mod webhook_routes;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub use config::{Families, ServerConfig};
pub use error::{ApiError, Problem};
pub use openapi::document as openapi_document;

use crate::engine::{Engine, EngineConfig};
use routes::IdempotencyKey;
use state::{AppState, Shared};

pub const POSITION_HEADER: &str = "x-roster-position";

/// Serves the API on `listener` until `shutdown` completes: then stops accepting, lets the
/// requests in flight finish, and closes the engine (which makes the log durable).
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let secret = crate::data_dir::server_secret(&config.data_dir, config.secret.as_deref())?;
    let (token, created) =
        crate::data_dir::admin_token(&config.data_dir, config.admin_token.as_deref())?;
    if created {
        // Shown once, on the terminal, not through the logs.
        eprintln!(
            "roster: made an admin token; it is shown only now and kept in {}: {token}",
            config.data_dir.join("admin-token").display()
        );
    }
    let admin_digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    drop(token);
    let options = roster_eventstore::SledOptions {
        durability: config.durability,
        ..Default::default()
    };
    let engine_config = EngineConfig {
        limits: config.limits.clone(),
        ..EngineConfig::new(secret)
    };
    let engine = Engine::open(&config.data_dir, options, engine_config)
        .await
        .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
    let workers = start_workers(&engine, &config, &workers_stop);
    let connections_max = config.connections_max;
    let code_failures = rate_limit::FailureLimiter::new(rate_limit::FailureLimits {
        per_address_max: config.code_failures_per_address_max,
        per_principal_max: config.code_failures_per_principal_max,
        window_ms: config.code_failures_window_ms,
        keys_max: config.rate_limit_keys_max,
    });
    let state = AppState(Arc::new(Shared {
        engine: engine.clone(),
        config,
        admin_digest,
        metrics: Default::default(),
        code_failures,
    }));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, position = engine.head(), "roster is listening");
    // Peer addresses go to the handlers, for the limits on failed code checks.
    let served = axum::serve(
        listener::Capped::new(listener, connections_max),
        router(state).into_make_service_with_connect_info::<listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    let _ = stop_workers.send(true);
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "a delivery worker stopped"),
            Err(error) => tracing::error!(%error, "a delivery worker failed"),
        }
    }
    engine.close().await;
    tracing::info!("roster stopped");
    served.map_err(|e| e.to_string())
}

/// The mail worker (when SMTP is configured) and the webhook worker.
fn start_workers(
    engine: &Engine,
    config: &ServerConfig,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<(), String>>> {
    use crate::workers::{mail, webhooks};
    let mut workers = Vec::new();
    if let (Some(smtp_url), Some(from)) = (&config.smtp_url, &config.mail_from) {
        let mail = mail::MailConfig {
            smtp_url: smtp_url.clone(),
            from: from.clone(),
            public_url: config.public_url.clone(),
            retry: config.delivery_retry,
        };
        workers.push(tokio::spawn(mail::run(engine.clone(), mail, stop.clone())));
    }
    let hooks = webhooks::WebhookConfig {
        retry: config.webhook_retry,
        timeout_ms: config.webhook_timeout_ms,
    };
    workers.push(tokio::spawn(webhooks::run(
        engine.clone(),
        hooks,
        stop.clone(),
    )));
    workers
}

/// Every route, with the middleware around them.
pub fn router(state: AppState) -> Router {
    use routes::*;
    let body_bytes_max = state.config.body_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/api-keys", post(issue_key).get(list_keys))
        .route("/v1/api-keys/{id}", axum::routing::delete(revoke_key))
        .route("/v1/role-schemas/{kind}", put(put_schema).get(get_schema))
        .route("/v1/resources", post(register))
        .route("/v1/resources/{kind}/{id}", get(get_resource))
        .route(
            "/v1/resources/{kind}/{id}/invite-links",
            post(create_link).get(list_links),
        )
        .route(
            "/v1/resources/{kind}/{id}/invite-links/{link_id}",
            axum::routing::patch(change_link).delete(revoke_link),
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
            axum::routing::delete(revoke_invitation),
        )
        .route(
            "/v1/resources/{kind}/{id}/invitations/{invitation_id}/resend",
            post(resend_invitation),
        )
        .route("/v1/invitations", get(pending_for_email))
        .route("/v1/invitations/preview", post(preview))
        .route("/v1/invitations/accept", post(accept))
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
        .route(
            "/v1/webhooks/{id}",
            axum::routing::delete(webhook_routes::delete_webhook),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhook_routes::webhook_deliveries),
        )
        .merge(compat::router(state.config.families))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), idempotency))
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .with_state(state)
}

/// This document, so that it lists itself as DESIGN section 5 lists it.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
async fn openapi_json() -> Response {
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
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method",
    )
}

/// Around every request: a time limit, the read models' position in `X-Roster-Position`,
/// metrics, and one log line (with the route's template, never a body, so no code is logged).
async fn around(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let limit = Duration::from_millis(state.config.request_timeout_ms);
    let mut response = match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took longer than the server allows; a command may still complete, retry with the same Idempotency-Key").into_response(),
    };
    let position = state.engine.read_models().checkpoint();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(position));
    let status = response.status().as_u16();
    state.metrics.request(&route, status);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %route, status, elapsed_ms, "request failed");
    } else {
        tracing::info!(%method, %route, status, elapsed_ms, "request");
    }
    response
}

/// `Idempotency-Key` on POST routes: the command id becomes a digest of the caller's
/// credentials, the acting principal, the route, the key and the body, so the same request
/// again returns the first outcome and appends nothing.
async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(key) = request.headers().get("idempotency-key") else {
        return Ok(next.run(request).await);
    };
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| ApiError::invalid("Idempotency-Key must be 1 to 255 visible characters"))?
        .to_string();
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.body_bytes_max)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than the server accepts",
            )
        })?;
    let mut digest = Sha256::new();
    for part in [
        parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
        parts
            .headers
            .get(auth::ACTOR_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
        parts.uri.path().as_bytes(),
        key.as_bytes(),
        &bytes,
    ] {
        digest.update(Sha256::digest(part));
    }
    parts.extensions.insert(IdempotencyKey(Some(format!(
        "idem-{}",
        hex::encode(digest.finalize())
    ))));
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
