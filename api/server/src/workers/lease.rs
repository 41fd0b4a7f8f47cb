//! The workers run on one node at a time: this node runs them only while it holds the
//! `workers` lease in the store, renewing it as it goes; every outcome they record carries the
//! lease's fencing token, which the store checks, so a holder that lost the lease (stopped,
//! cut off) cannot record once another node has taken over. A holder that cannot renew stops
//! its workers before the lease runs out, by its own monotonic clock (expiry is judged by the
//! store's). On sled, with one process, the lease is always this node's.

use std::time::Duration;

use roster_eventstore::Fence;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::WorkerError;
use roster_engine::Engine;

/// The lease's name in the store.
pub const WORKERS_LEASE: &str = "workers";

/// Workers started under a lease, stopped through the receiver they were given.
pub type Started = Vec<JoinHandle<Result<(), WorkerError>>>;

/// Until `stop`: takes the lease when it is free, runs the workers `start` starts while it is
/// held, and stops them when it cannot be renewed in time or one of them stops.
pub async fn lead(
    engine: Engine,
    ttl: Duration,
    start: impl Fn(Fence, watch::Receiver<bool>) -> Started + Send,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let holder = format!("node-{}", ulid::Ulid::new());
    // Renewed six times a lifetime; the workers stop a sixth of it before it runs out.
    let tick = ttl / 6;
    loop {
        let asked = Instant::now();
        match engine.lease(WORKERS_LEASE, &holder, ttl).await {
            Ok(Some(token)) => {
                let fence = Fence {
                    lease: WORKERS_LEASE.into(),
                    token,
                };
                tracing::info!(token, "this node holds the workers' lease");
                let (stop_workers, workers_stop) = watch::channel(false);
                let workers = start(fence, workers_stop);
                let stopped = hold(
                    &engine,
                    &holder,
                    token,
                    asked + ttl,
                    tick,
                    &workers,
                    &mut stop,
                )
                .await;
                let _ = stop_workers.send(true);
                super::join(workers).await;
                if stopped {
                    return Ok(());
                }
                tracing::warn!("this node let the workers' lease go: its workers stopped");
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "the workers' lease could not be asked for"),
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return Ok(()) },
            () = tokio::time::sleep(tick) => {}
        }
    }
}

/// Renews the lease every `tick` while the workers run; returns true when told to stop,
/// false when the lease is lost, cannot be renewed before `held_until` nears, or a worker
/// stopped on its own.
async fn hold(
    engine: &Engine,
    holder: &str,
    token: u64,
    mut held_until: Instant,
    tick: Duration,
    workers: &Started,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let ttl = tick * 6;
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return true },
            () = tokio::time::sleep(tick) => {}
        }
        if workers.iter().any(JoinHandle::is_finished) {
            return false;
        }
        let asked = Instant::now();
        let left = held_until.saturating_duration_since(asked);
        let renewed = tokio::time::timeout(left, engine.lease(WORKERS_LEASE, holder, ttl)).await;
        match renewed {
            Ok(Ok(Some(again))) if again == token => held_until = asked + ttl,
            // Another node has it, or this node took it afresh (a new token): let it go.
            Ok(Ok(_)) => return false,
            Ok(Err(error)) => tracing::warn!(%error, "the workers' lease could not be renewed"),
            Err(_) => {}
        }
        if Instant::now() + tick >= held_until {
            return false;
        }
    }
}
