//! Taking snapshots of resource states from the engine's cache, off the command's path.
//!
//! The cache already holds every hot resource's state; a snapshot is a copy of it written
//! beside the log, so that a cold load or an `as_of` folds only the events after it. It is
//! taken after a command succeeded, in the background, and only once the log acknowledges the
//! event the copied state ends with.

use std::sync::Arc;

use roster_projections::Snapshot;

use super::cache::{lock, Entry, StreamState};
use super::Engine;

impl Engine {
    /// Starts a snapshot of `stream`'s cached state if enough events have passed since the
    /// last one: `snapshot_events_min`, or an eighth of the members, whichever is more, so the
    /// bytes written stay proportional to the events.
    pub(super) fn snapshot_if_due(&self, stream: String, entry: Entry) {
        {
            let mut cached = lock(&entry);
            let StreamState::Resource(state) = &cached.state else {
                return;
            };
            let members = u64::try_from(state.members().len()).unwrap_or(u64::MAX);
            let spacing = self.inner.config.snapshot_events_min.max(members / 8);
            if !cached.valid || cached.version < cached.snapshot_version.saturating_add(spacing) {
                return;
            }
            // Claimed now, so concurrent commands do not all copy the same state.
            cached.snapshot_version = cached.version;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.take_snapshot(&stream, entry).await {
                // A snapshot only saves time; the next one is due after the same spacing.
                tracing::warn!(%error, "a snapshot could not be taken");
            }
        });
    }

    async fn take_snapshot(&self, stream: &str, entry: Entry) -> Result<(), super::EngineError> {
        // Copying a state of 100,000 members takes milliseconds: not on a runtime thread.
        let copied = Arc::clone(&entry);
        let (state, version, latest_ms) = tokio::task::spawn_blocking(move || {
            let cached = lock(&copied);
            match &cached.state {
                StreamState::Resource(state) => {
                    Some((state.clone(), cached.version, cached.latest_ms))
                }
                _ => None,
            }
        })
        .await
        .map_err(|e| super::EngineError::Unavailable(e.to_string()))?
        .ok_or_else(|| super::EngineError::Unavailable("not a resource stream".into()))?;
        // The copy may end with events still being made durable: wait until the log shows the
        // last of them. If their append fails instead, the entry is invalidated (and the log
        // may later hold another event at that version), so the copy is dropped.
        let mut applied = self.inner.applied.clone();
        let logged = loop {
            let page = self.inner.store.read_stream(stream, version, 1).await?;
            if !lock(&entry).valid {
                return Ok(());
            }
            if let Some(logged) = page.into_iter().next() {
                break logged;
            }
            if applied.changed().await.is_err() {
                return Ok(());
            }
        };
        let snapshot = Snapshot {
            version,
            position: logged.position,
            latest_ms,
            hash: logged.hash,
            state,
        };
        let snapshots = Arc::clone(&self.inner.snapshots);
        let stream = stream.to_string();
        tokio::task::spawn_blocking(move || snapshots.save(&stream, &snapshot))
            .await
            .map_err(|e| super::EngineError::Unavailable(e.to_string()))??;
        Ok(())
    }
}
