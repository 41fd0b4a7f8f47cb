//! Serving: [`serve`] prepares the data directory (its privacy, the server secret, the admin
//! token), opens the engine, and serves the listener until shutdown, with the supervisor
//! watching the engine beside it.

use std::future::{Future, IntoFuture};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::config::ServerConfig;
use super::config::StoreChoice;
use super::listener::{Capped, Dispatch, Timeouts};
use super::supervise::{open_engine, Current, Live, Serving};
use crate::data_dir::DataDirError;
use roster_engine::{EngineConfig, EngineError};

/// Why [`serve`] could not serve, or stopped serving before its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open {dir}: {source}")]
    Open {
        dir: std::path::PathBuf,
        source: EngineError,
    },
    #[error("the listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error(
        "a PostgreSQL store needs ROSTER_SECRET and ROSTER_ADMIN_TOKEN, the same on every node"
    )]
    SharedSecrets,
}

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
) -> Result<(), ServeError> {
    let dir = &config.data_dir;
    let shared_store = matches!(config.store, StoreChoice::Postgres(_));
    if shared_store && (config.secret.is_none() || config.admin_token.is_none()) {
        // A secret made here would differ on every node: codes made on one would fail on
        // the others. The store refuses a node with another secret; this says so sooner.
        return Err(ServeError::SharedSecrets);
    }
    // Looked at before anything is written there: a mistyped `--data` starts an empty log,
    // and the operator should be told so.
    let fresh = !shared_store && !crate::data_dir::holds_log(dir);
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
        .map_err(|source| ServeError::Open {
            dir: match &config.store {
                StoreChoice::Sled => config.data_dir.clone(),
                // Named without the URL, which may hold a password.
                StoreChoice::Postgres(_) => "the PostgreSQL store".into(),
            },
            source,
        })?;
    let live = Live::start(engine, &config, admin_digest);
    let current: Current = Arc::new(RwLock::new(live.router.clone()));
    let address = listener.local_addr()?;
    tracing::info!(%address, position = live.engine.head(), "roster is listening");
    // One stop signal for both the server and the supervisor.
    let (stop_tx, stop) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let connections_max = config.connections_max;
    let timeouts = Timeouts {
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
        Capped::new(listener, connections_max, timeouts),
        Dispatch::new(current),
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
    Ok(served?)
}
