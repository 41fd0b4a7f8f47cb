//! The engine's cache of stream states: each stream's state at a version, kept by the
//! decisions themselves so the writer can decide a command against the newest state without
//! reading the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roster_domain::{ApiKeysState, Event, ResourceState, SchemaState, WebhooksState};

/// The state of one stream, whichever kind it is.
#[derive(Debug, Clone)]
pub enum StreamState {
    Resource(ResourceState),
    Schema(SchemaState),
    ApiKeys(ApiKeysState),
    Webhooks(WebhooksState),
}

impl StreamState {
    pub fn evolve(self, event: &Event) -> StreamState {
        match self {
            StreamState::Resource(state) => StreamState::Resource(state.evolve(event)),
            StreamState::Schema(state) => StreamState::Schema(state.evolve(event)),
            StreamState::ApiKeys(state) => StreamState::ApiKeys(state.evolve(event)),
            StreamState::Webhooks(state) => StreamState::Webhooks(state.evolve(event)),
        }
    }
}

/// A stream's state at `version`, including events decided but not yet acknowledged.
#[derive(Debug)]
pub struct Cached {
    pub state: StreamState,
    pub version: u64,
    /// The latest `occurred_at` (Unix ms) of the events up to `version`.
    pub latest_ms: i64,
    /// The version of the newest snapshot taken (or being taken) of this state.
    pub snapshot_version: u64,
    /// False once an append that this state already reflects failed: the state may hold
    /// events the log does not, so nothing may be decided against it again.
    pub valid: bool,
}

pub type Entry = Arc<Mutex<Cached>>;

/// Stream name → its cached state. Bounded: past the limit, entries nobody is using are
/// dropped (they are reloaded from the log when needed again).
pub struct StateCache {
    entries: Mutex<HashMap<String, Entry>>,
    streams_max: usize,
}

impl StateCache {
    pub fn new(streams_max: usize) -> StateCache {
        StateCache {
            entries: Mutex::new(HashMap::new()),
            streams_max: streams_max.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, stream: &str) -> Option<Entry> {
        self.entries()
            .get(stream)
            .filter(|e| lock(e).valid)
            .cloned()
    }

    /// Installs a freshly loaded state unless another caller installed one meanwhile (which
    /// may be newer: decisions advance it), and returns the one in force.
    pub fn install(&self, stream: &str, loaded: Cached) -> Entry {
        let mut entries = self.entries();
        if let Some(existing) = entries.get(stream) {
            if lock(existing).valid {
                return Arc::clone(existing);
            }
        }
        if entries.len() >= self.streams_max {
            // Only entries no decision holds can go: one in use may have events in flight.
            entries.retain(|_, entry| Arc::strong_count(entry) > 1);
        }
        let entry = Arc::new(Mutex::new(loaded));
        entries.insert(stream.to_string(), Arc::clone(&entry));
        entry
    }

    /// Forgets a stream whose state can no longer be trusted.
    pub fn invalidate(&self, stream: &str) {
        if let Some(entry) = self.entries().remove(stream) {
            lock(&entry).valid = false;
        }
    }
}

/// Locks an entry; a panic inside a decision cannot leave it half-changed (the state is
/// replaced whole), so a poisoned lock still guards a consistent state.
pub fn lock(entry: &Entry) -> std::sync::MutexGuard<'_, Cached> {
    entry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
