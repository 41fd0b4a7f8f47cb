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
mod query_check;
mod rate_limit;
mod routes;
mod state;
mod support;
mod views;
mod webhook_routes;

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use config::{Families, ServerConfig};
pub use error::{ApiError, Problem};
pub use openapi::document as openapi_document;

use roster_engine::{Engine, EngineConfig, Idempotency};
use routes::IdempotencyKey;
use state::{AppState, Shared};

pub const POSITION_HEADER: &str = "x-roster-position";

/// Serves the API on `listener` until `shutdown` completes: then stops accepting, lets the
/// requests in flight finish, and closes the engine (which makes the log durable).
///
/// Meanwhile `Serving::supervise` watches the engine: once a write to the log has failed (a
/// full disk, an I/O error) it waits until the data directory takes writes again, then
/// reopens the log and swaps a new engine in behind the same listener.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let dir = &config.data_dir;
    // Looked at before anything is written there: a mistyped `--data` starts an empty log,
    // and the operator should be told so.
    let fresh = !crate::data_dir::holds_log(dir);
    match crate::data_dir::make_private(dir)? {
        crate::data_dir::Privacy::Tightened(mode) => tracing::warn!(
            "{} was mode {mode:o}: made it 0700, because its files hold invitees' email addresses",
            dir.display()
        ),
        crate::data_dir::Privacy::Created | crate::data_dir::Privacy::Kept => {}
    }
    if fresh {
        tracing::info!("no log in {}: starting a new one", dir.display());
    }
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
    let engine_config = EngineConfig {
        limits: config.limits.into(),
        ..EngineConfig::new(secret)
    };
    let engine = open_engine(&config, &engine_config)
        .await
        .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    let live = Live::start(engine, &config, admin_digest);
    let current: Current = Arc::new(RwLock::new(live.router.clone()));
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%address, position = live.engine.head(), "roster is listening");
    // One stop signal for both the server and the supervisor.
    let (stop_tx, stop) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let connections_max = config.connections_max;
    let timeouts = listener::Timeouts {
        header: Duration::from_millis(config.header_timeout_ms),
        idle: Duration::from_millis(config.idle_timeout_ms),
    };
    let mut serving = Serving {
        config,
        engine_config,
        admin_digest,
        current: Arc::clone(&current),
        live: Some(live),
    };
    let mut server_stop = stop.clone();
    let served = axum::serve(
        listener::Capped::new(listener, connections_max, timeouts),
        Dispatch { current },
    )
    .with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|stopped| *stopped).await;
    })
    .into_future();
    let (served, ()) = tokio::join!(served, serving.supervise(stop));
    signal.abort();
    if let Some(live) = serving.live.take() {
        live.stop().await;
    }
    tracing::info!("roster stopped");
    served.map_err(|e| e.to_string())
}

/// How often the supervisor looks at the engine for a failed write.
const FAILURE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The first and the longest wait between probes of the data directory (and reopen attempts).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often to look whether the last request on a closed engine has finished.
const RELEASE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// The probe file: big enough that sled can roll a segment (512 KiB) on reopen, so a disk
/// with a few bytes free does not count as writable.
const PROBE_FILE: &str = ".roster-write-probe";
const PROBE_BYTES: usize = 1024 * 1024;

async fn open_engine(
    config: &ServerConfig,
    engine_config: &EngineConfig,
) -> Result<Engine, roster_engine::EngineError> {
    let options = roster_eventstore::SledOptions {
        durability: config.durability,
        ..Default::default()
    };
    Engine::open(&config.data_dir, options, engine_config.clone()).await
}

/// The router requests go to: the live engine's, or `reopening_router` during a swap.
type Current = Arc<RwLock<Router>>;

/// What a reopen needs, and the engine in force.
struct Serving {
    config: ServerConfig,
    engine_config: EngineConfig,
    admin_digest: [u8; 32],
    current: Current,
    /// `None` only between closing a failed engine and opening its successor.
    live: Option<Live>,
}

impl Serving {
    /// Until `stop`: waits for the engine to report a failed write, probes the data directory
    /// until it takes writes again, then closes the failed engine (sled 0.34 keeps failing
    /// every write once one failed, so only a reopen recovers), reopens the log from the data
    /// directory (sled recovers its last durable state and the log's open checks its chain
    /// head) and swaps the new engine in. Each transition is logged once.
    async fn supervise(&mut self, mut stop: watch::Receiver<bool>) {
        loop {
            while !self.live.as_ref().is_some_and(|l| l.engine.store_failed()) {
                if stopped(&mut stop, FAILURE_CHECK_INTERVAL).await {
                    return;
                }
            }
            tracing::error!(
                "a write to the log failed: commands answer 503 until the data directory takes writes again"
            );
            if !self.wait_until_writable(&mut stop).await {
                return;
            }
            tracing::info!("the data directory takes writes again: reopening the log");
            // From here no new request reaches the failed engine.
            let position = self.live.as_ref().map_or(0, |l| l.engine.applied());
            *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                reopening_router(position);
            if let Some(live) = self.live.take() {
                let engine = live.stop().await;
                // sled's lock on the data directory goes with the last handle on its
                // database: wait for the requests that still hold the old router.
                while engine.is_shared() {
                    if stopped(&mut stop, RELEASE_CHECK_INTERVAL).await {
                        return;
                    }
                }
            }
            let Some(engine) = self.reopen(&mut stop).await else {
                return;
            };
            let live = Live::start(engine, &self.config, self.admin_digest);
            tracing::info!(
                position = live.engine.head(),
                "the log is open again: taking commands"
            );
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = live.router.clone();
            self.live = Some(live);
        }
    }

    /// Probes the data directory with a back-off until it takes writes; false on `stop`.
    async fn wait_until_writable(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut delay = RETRY_FIRST;
        let mut said = false;
        loop {
            if stopped(stop, delay).await {
                return false;
            }
            let dir = self.config.data_dir.clone();
            let probed = tokio::task::spawn_blocking(move || probe(&dir))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match probed {
                Ok(()) => return true,
                Err(error) if !said => {
                    tracing::warn!(%error, "the data directory does not take writes yet; probing with a back-off");
                    said = true;
                }
                Err(_) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Opens the log again, with a back-off while it cannot; `None` on `stop`.
    async fn reopen(&self, stop: &mut watch::Receiver<bool>) -> Option<Engine> {
        let mut delay = RETRY_FIRST;
        let mut said = false;
        loop {
            match open_engine(&self.config, &self.engine_config).await {
                Ok(engine) => return Some(engine),
                Err(error) if !said => {
                    tracing::error!(%error, "cannot reopen the log yet; retrying with a back-off");
                    said = true;
                }
                Err(_) => {}
            }
            if stopped(stop, delay).await {
                return None;
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}

/// Waits `delay`; true when `stop` turned true first.
async fn stopped(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        // A dropped sender means nobody can stop the server any more: treat it as a stop.
        _ = stop.wait_for(|stopped| *stopped) => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Writes, syncs and removes a probe file in the data directory.
fn probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0; PROBE_BYTES])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written.and(removed)
}

/// While the failed engine closes and the log reopens, every request answers 503
/// `unavailable` and `/healthz` 503 `failing`, so none reaches an engine that is closing.
fn reopening_router(position: u64) -> Router {
    let health = move || async move {
        let body = views::Health {
            status: "failing".into(),
            position,
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
    };
    Router::new()
        .route("/healthz", get(health))
        .fallback(|| async {
            ApiError::unavailable("the server is reopening its data directory; retry shortly")
        })
        .layer(middleware::map_response(
            move |mut response: Response| async move {
                response
                    .headers_mut()
                    .insert(POSITION_HEADER, HeaderValue::from(position));
                response
            },
        ))
}

/// One open engine with its delivery workers and its router.
struct Live {
    engine: Engine,
    router: Router,
    stop_workers: watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Live {
    fn start(engine: Engine, config: &ServerConfig, admin_digest: [u8; 32]) -> Live {
        let (stop_workers, workers_stop) = watch::channel(false);
        let workers = start_workers(&engine, config, &workers_stop);
        // A reopen starts these afresh, as a restart would.
        let code_failures = rate_limit::FailureLimiter::new(rate_limit::FailureLimits {
            per_address_max: config.code_failures_per_address_max,
            per_principal_max: config.code_failures_per_principal_max,
            window_ms: config.code_failures_window_ms,
            keys_max: config.rate_limit_keys_max,
        });
        let state = AppState(Arc::new(Shared {
            engine: engine.clone(),
            config: config.clone(),
            admin_digest,
            metrics: Default::default(),
            code_failures,
        }));
        Live {
            engine,
            router: router(state),
            stop_workers,
            workers,
        }
    }

    /// Stops the workers and closes the engine (making the log durable); returns the closed
    /// engine, whose last handle releases the data directory when dropped.
    async fn stop(self) -> Engine {
        let Live {
            engine,
            router,
            stop_workers,
            workers,
        } = self;
        drop(router);
        let _ = stop_workers.send(true);
        for worker in workers {
            match worker.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "a delivery worker stopped"),
                Err(error) => tracing::error!(%error, "a delivery worker failed"),
            }
        }
        engine.close().await;
        engine
    }
}

/// Per connection: the peer's address, for the limits on failed code checks, and what the
/// connection is doing, for its time limits.
#[derive(Clone)]
struct Dispatch {
    current: Current,
}

impl tower::Service<axum::serve::IncomingStream<'_, listener::Capped>> for Dispatch {
    type Response = Connection;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Connection, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(
        &mut self,
        incoming: axum::serve::IncomingStream<'_, listener::Capped>,
    ) -> Self::Future {
        std::future::ready(Ok(Connection {
            peer: listener::Peer(*incoming.remote_addr()),
            activity: Arc::clone(incoming.io().activity()),
            current: Arc::clone(&self.current),
        }))
    }
}

/// Per request: the router in force when it arrives. A request keeps that router to its
/// end, so a swap never cuts one off half-way.
#[derive(Clone)]
struct Connection {
    peer: listener::Peer,
    activity: Arc<listener::Activity>,
    current: Current,
}

impl tower::Service<Request> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // hyper calls this once the request's head is complete: from here until the
        // response's body is written, the connection's header and idle limits do not apply.
        let in_flight = self.activity.begin_request();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let router = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| {
                Body::new(Answering {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response's body that holds its request in flight until hyper drops it, having written
/// it all (or lost the connection).
struct Answering {
    body: Body,
    _in_flight: listener::InFlight,
}

impl http_body::Body for Answering {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    // Passed on so that hyper still sends a `Content-Length` rather than chunks.
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
            retry: config.retry.delivery,
        };
        workers.push(tokio::spawn(mail::run(engine.clone(), mail, stop.clone())));
    }
    let hooks = webhooks::WebhookConfig {
        retry: config.retry.webhook,
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
    let position = state.engine.applied();
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

/// `Idempotency-Key` on POST routes. The command id is a digest of the caller's credentials,
/// the acting principal, the route and the key, so only the same caller repeating itself on
/// the same route shares an outcome. The request's fingerprint is a keyed digest of its body
/// in canonical form (RFC 8785 for JSON, so spacing and member order do not count), kept with
/// the first outcome: the same key with another body is refused, 422
/// `idempotency_key_reused`, instead of running as a new command or answering the first.
/// The key is the server secret's, so the fingerprint of a body with an address in it tells
/// a copy of the log nothing.
async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let mut keys = request.headers().get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(next.run(request).await);
    };
    if keys.next().is_some() {
        return Err(ApiError::invalid(
            "the Idempotency-Key header is sent more than once",
        ));
    }
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
    ] {
        digest.update(Sha256::digest(part));
    }
    let canonical = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) => roster_eventstore::canonical::to_canonical_vec(&value),
        Err(_) => bytes.to_vec(),
    };
    let mut fingerprint = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(
        &state
            .engine
            .secret()
            .derive_key("idempotency-fingerprint", 0),
    )
    .map_err(|e| ApiError::internal(format_args!("the fingerprint key: {e}")))?;
    hmac::Mac::update(&mut fingerprint, &canonical);
    parts.extensions.insert(IdempotencyKey(Some(Idempotency {
        command_id: format!("idem-{}", hex::encode(digest.finalize())),
        fingerprint: Some(hmac::Mac::finalize(fingerprint).into_bytes().into()),
    })));
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
