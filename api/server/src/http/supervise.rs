//! Supervision: [`Live`], one open engine with its workers and its router, and [`Serving`],
//! the supervisor that notices a failed write to the log, waits until the data directory takes
//! writes again, reopens the log and swaps a new `Live` in behind the same listener.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use super::config::ServerConfig;
use super::error::ApiError;
use super::metrics::Metrics;
use super::rate_limit;
use super::state::{AppState, Shared};
use super::{views, POSITION_HEADER};
use crate::workers::WorkerError;
use roster_engine::{Engine, EngineConfig};

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

pub async fn open_engine(
    config: &ServerConfig,
    engine_config: &EngineConfig,
) -> Result<Engine, roster_engine::EngineError> {
    match &config.store {
        super::config::StoreChoice::Sled => {
            let options = roster_eventstore::SledOptions {
                durability: config.durability,
                ..Default::default()
            };
            Engine::open(&config.data_dir, options, engine_config.clone()).await
        }
        super::config::StoreChoice::Postgres(url) => {
            let options = config.postgres.options(url);
            Engine::open_postgres(&config.data_dir, options, engine_config.clone()).await
        }
    }
}

/// The router requests go to: the live engine's, or `reopening_router` during a swap. Each
/// request reads it once, when it arrives (`listener::Connection`).
pub type Current = Arc<RwLock<Router>>;

/// What a reopen needs, and the engine in force.
pub struct Serving {
    pub config: ServerConfig,
    pub engine_config: EngineConfig,
    pub admin_digest: [u8; 32],
    pub current: Current,
    /// `None` only between closing a failed engine and opening its successor.
    pub live: Option<Live>,
}

impl Serving {
    /// Until `stop`: waits for the engine to report a failed write, probes the data directory
    /// until it takes writes again, then closes the failed engine (sled 0.34 keeps failing
    /// every write once one failed, so only a reopen recovers), reopens the log from the data
    /// directory (sled recovers its last durable state and the log's open checks its chain
    /// head) and swaps the new engine in. Each transition is logged once.
    pub async fn supervise(&mut self, mut stop: watch::Receiver<bool>) {
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
            reason: Some("the log is being reopened".into()),
        };
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
    };
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(health))
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
pub struct Live {
    pub engine: Engine,
    pub router: Router,
    stop_workers: watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<Result<(), WorkerError>>>,
}

impl Live {
    pub fn start(engine: Engine, config: &ServerConfig, admin_digest: [u8; 32]) -> Live {
        let (stop_workers, workers_stop) = watch::channel(false);
        let mut workers = start_workers(&engine, config, &workers_stop);
        // A reopen starts these afresh, as a restart would.
        let code_failures = rate_limit::FailureLimiter::new(rate_limit::FailureLimits {
            per_address_max: config.code_failures_per_address_max,
            per_principal_max: config.code_failures_per_principal_max,
            window_ms: config.code_failures_window_ms,
            keys_max: config.rate_limit_keys_max,
        });
        let metrics = Metrics::new();
        workers.push(tokio::spawn(metrics.clone().upkeep(workers_stop)));
        let state = AppState(Arc::new(Shared {
            engine: engine.clone(),
            config: config.clone(),
            admin_digest,
            metrics,
            code_failures,
        }));
        Live {
            engine,
            router: super::router::router(state),
            stop_workers,
            workers,
        }
    }

    /// Stops the workers and closes the engine (making the log durable); returns the closed
    /// engine, whose last handle releases the data directory when dropped.
    pub async fn stop(self) -> Engine {
        let Live {
            engine,
            router,
            stop_workers,
            workers,
        } = self;
        drop(router);
        let _ = stop_workers.send(true);
        crate::workers::join(workers).await;
        engine.close().await;
        engine
    }
}

/// The mail worker (when SMTP is configured) and the webhook worker, run while this node
/// holds the workers' lease (always, on sled): a shared store has them run on one node.
fn start_workers(
    engine: &Engine,
    config: &ServerConfig,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<(), WorkerError>>> {
    use crate::workers::{lease, mail, webhooks};
    let ttl = Duration::from_millis(config.postgres.worker_lease_ms.max(60));
    let config = config.clone();
    let workers_engine = engine.clone();
    let start = move |fence: roster_eventstore::Fence, stop: watch::Receiver<bool>| {
        let mut workers = Vec::new();
        if let (Some(smtp_url), Some(from)) = (&config.smtp_url, &config.mail_from) {
            let mail = mail::MailConfig {
                smtp_url: smtp_url.clone(),
                from: from.clone(),
                public_url: config.public_url.clone(),
                retry: config.retry.delivery,
                fence: Some(fence.clone()),
            };
            workers.push(tokio::spawn(mail::run(
                workers_engine.clone(),
                mail,
                stop.clone(),
            )));
        }
        let hooks = webhooks::WebhookConfig {
            retry: config.retry.webhook,
            timeout_ms: config.webhook_timeout_ms,
            fence: Some(fence),
        };
        workers.push(tokio::spawn(webhooks::run(
            workers_engine.clone(),
            hooks,
            stop,
        )));
        workers
    };
    vec![tokio::spawn(lease::lead(
        engine.clone(),
        ttl,
        start,
        stop.clone(),
    ))]
}
