//! The projector: follows the log from the read models' checkpoint and applies each batch of
//! new events, announcing the position it reached so commands can wait for their own writes.

use std::sync::Arc;

use roster_eventstore::EventStore;
use tokio::sync::watch;

use crate::read_models::ReadModels;
use crate::ProjectionError;

/// Events applied in one batch at most: bounds the size of one write per read model.
const BATCH_EVENTS_MAX: usize = 1024;

/// Runs until the store closes or fails; `applied` carries the position every model reached.
pub async fn run_projector(
    store: Arc<dyn EventStore>,
    models: Arc<ReadModels>,
    applied: watch::Sender<u64>,
) -> Result<(), ProjectionError> {
    let mut tail = store.subscribe(models.checkpoint());
    loop {
        let batch = match tail.next_batch(BATCH_EVENTS_MAX).await {
            Ok(batch) => batch,
            Err(roster_eventstore::StoreError::Closed) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        // Applying is blocking work (sled writes): off the async workers, so requests keep
        // being served while a batch is written.
        let writer = Arc::clone(&models);
        tokio::task::spawn_blocking(move || writer.apply(&batch))
            .await
            .map_err(|e| ProjectionError::Io(format!("the projector's writer failed: {e}")))??;
        applied.send_replace(models.checkpoint());
    }
}
