//! The engine's cache of stream states: each stream's state at a version, kept by the
//! decisions themselves so the writer can decide a command against the newest state without
//! reading the log.

use std::collections::{BTreeMap, HashMap};
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
    /// Folds one event into the state in place.
    pub fn apply(&mut self, event: &Event) {
        match self {
            StreamState::Resource(state) => state.apply(event),
            StreamState::Schema(state) => state.apply(event),
            StreamState::ApiKeys(state) => state.apply(event),
            StreamState::Webhooks(state) => state.apply(event),
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

/// Stream name → its cached state. Bounded: past the limit, the least recently used entries
/// that no decision holds are dropped (they are reloaded from the log when needed again), so a
/// burst of new streams evicts the coldest ones, not every idle one at once.
pub struct StateCache {
    inner: Mutex<Recency>,
    streams_max: usize,
}

/// The entries with the tick of their last use, and the same ticks in order: the oldest tick
/// names the least recently used stream.
#[derive(Default)]
struct Recency {
    entries: HashMap<String, (Entry, u64)>,
    by_use: BTreeMap<u64, String>,
    tick: u64,
}

impl Recency {
    /// Marks `stream` used now.
    fn touch(&mut self, stream: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, used)) = self.entries.get_mut(stream) {
            if let Some(name) = self.by_use.remove(used) {
                self.by_use.insert(tick, name);
            }
            *used = tick;
        }
    }

    fn remove(&mut self, stream: &str) -> Option<Entry> {
        let (entry, used) = self.entries.remove(stream)?;
        self.by_use.remove(&used);
        Some(entry)
    }

    /// Drops least recently used entries nobody holds until fewer than `max` remain (or only
    /// entries in use are left: one in use may have events in flight).
    fn evict_below(&mut self, max: usize) {
        let mut evictable = Vec::new();
        let mut excess = (self.entries.len() + 1).saturating_sub(max);
        for name in self.by_use.values() {
            if excess == 0 {
                break;
            }
            if self
                .entries
                .get(name)
                .is_some_and(|(entry, _)| Arc::strong_count(entry) == 1)
            {
                evictable.push(name.clone());
                excess -= 1;
            }
        }
        for name in evictable {
            self.remove(&name);
        }
    }
}

impl StateCache {
    pub fn new(streams_max: usize) -> StateCache {
        StateCache {
            inner: Mutex::new(Recency::default()),
            streams_max: streams_max.max(1),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Recency> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stream's entry, if cached. Every entry in the cache is valid: `invalidate` takes
    /// an entry out before it marks it, so no entry's own lock is taken here (a request would
    /// otherwise contend with the writer, which holds it while deciding).
    pub fn get(&self, stream: &str) -> Option<Entry> {
        let mut inner = self.inner();
        let entry = inner.entries.get(stream).map(|(e, _)| Arc::clone(e))?;
        inner.touch(stream);
        Some(entry)
    }

    /// Installs a freshly loaded state unless another caller installed one meanwhile (which
    /// may be newer: decisions advance it), and returns the one in force.
    pub fn install(&self, stream: &str, loaded: Cached) -> Entry {
        let mut inner = self.inner();
        if let Some((existing, _)) = inner.entries.get(stream) {
            let existing = Arc::clone(existing);
            inner.touch(stream);
            return existing;
        }
        if inner.entries.len() >= self.streams_max {
            inner.evict_below(self.streams_max);
        }
        inner.tick += 1;
        let tick = inner.tick;
        let entry = Arc::new(Mutex::new(loaded));
        inner
            .entries
            .insert(stream.to_string(), (Arc::clone(&entry), tick));
        inner.by_use.insert(tick, stream.to_string());
        entry
    }

    /// Forgets a stream whose state can no longer be trusted.
    pub fn invalidate(&self, stream: &str) {
        if let Some(entry) = self.inner().remove(stream) {
            lock(&entry).valid = false;
        }
    }

    /// The streams cached now (for tests).
    #[cfg(test)]
    fn streams(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner().entries.keys().cloned().collect();
        names.sort();
        names
    }
}

/// Locks an entry; a panic inside a decision cannot leave it half-changed (the state is
/// replaced whole), so a poisoned lock still guards a consistent state.
pub fn lock(entry: &Entry) -> std::sync::MutexGuard<'_, Cached> {
    entry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Cached {
        Cached {
            state: StreamState::Resource(ResourceState::default()),
            version: 0,
            latest_ms: i64::MIN,
            snapshot_version: 0,
            valid: true,
        }
    }

    #[test]
    fn the_least_recently_used_idle_stream_goes_first() {
        let cache = StateCache::new(3);
        for name in ["a", "b", "c"] {
            cache.install(name, fresh());
        }
        // "a" is used again, so "b" is now the coldest.
        assert!(cache.get("a").is_some());
        cache.install("d", fresh());
        assert_eq!(cache.streams(), ["a", "c", "d"]);
        cache.install("e", fresh());
        assert_eq!(cache.streams(), ["a", "d", "e"]);
    }

    #[test]
    fn a_stream_in_use_is_never_evicted() {
        let cache = StateCache::new(2);
        let held = cache.install("a", fresh());
        cache.install("b", fresh());
        cache.install("c", fresh());
        assert_eq!(cache.streams(), ["a", "c"]);
        drop(held);
        cache.install("d", fresh());
        assert_eq!(cache.streams(), ["c", "d"]);
    }

    #[test]
    fn an_invalidated_stream_is_loaded_again() {
        let cache = StateCache::new(2);
        let first = cache.install("a", fresh());
        cache.invalidate("a");
        assert!(!lock(&first).valid);
        assert!(cache.get("a").is_none());
        let second = cache.install("a", fresh());
        assert!(lock(&second).valid);
        assert_eq!(cache.streams(), ["a"]);
    }
}
