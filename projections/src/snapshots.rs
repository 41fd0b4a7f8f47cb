//! Snapshots of resource states: a cache derived from the log, so that a cold load of a long
//! stream or a past rolemap folds only the events after the nearest snapshot.
//!
//! A snapshot is never a source of truth. It names the event it was taken after (stream
//! version, global position and that event's hash) and is used only when the log still holds
//! that very event; anything else (a format this code does not read, a log restored from an
//! export, a snapshot of a state whose events a crash took back) is skipped, and the state is
//! folded from further back. Losing the whole tree loses nothing but time.
//!
//! Layout, in its own tree (`snapshots`), keys big-endian:
//! - `i ‖ stream ‖ 0 ‖ version` → `position ‖ latest occurred_at (ms) ‖ hash`: a small index
//!   entry, so finding the snapshot for a moment reads no state;
//! - `d ‖ stream ‖ 0 ‖ version` → `FORMAT ‖ the state as JSON`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use roster_domain::ResourceState;
use roster_eventstore::{EventStore, Hash};

use crate::as_of::AsOf;
use crate::ProjectionError;

/// Bumped whenever `ResourceState`'s serialised form changes; older snapshots are skipped.
const FORMAT: u8 = 1;

/// A resource's state after the event at `version` of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    /// The global position of the event at `version`.
    pub position: u64,
    /// The latest `occurred_at` (Unix ms) of the stream's events up to `version`: events are
    /// not in time order across writers, so a moment `t` may use this snapshot only when no
    /// event it holds occurred after `t`.
    pub latest_ms: i64,
    /// The hash of the event at `version`, which the log must still hold.
    pub hash: Hash,
    pub state: ResourceState,
}

enum Storage {
    Sled(sled::Tree),
    Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>),
}

/// Where snapshots are kept: a sled tree beside the log, or memory for the in-memory engine.
pub struct Snapshots {
    storage: Storage,
}

const INDEX_VALUE_LEN: usize = 8 + 8 + 32;

fn key(tag: u8, stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(tag);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

/// An index entry: the snapshot's event and time, without its state.
struct IndexEntry {
    version: u64,
    position: u64,
    latest_ms: i64,
    hash: Hash,
}

impl IndexEntry {
    fn decode(key: &[u8], value: &[u8]) -> Option<IndexEntry> {
        if value.len() != INDEX_VALUE_LEN || key.len() < 8 {
            return None;
        }
        let mut hash = [0; 32];
        hash.copy_from_slice(&value[16..]);
        Some(IndexEntry {
            version: be_u64(&key[key.len() - 8..]),
            position: be_u64(value),
            latest_ms: i64::from_be_bytes(value[8..16].try_into().ok()?),
            hash: Hash(hash),
        })
    }

    fn covers(&self, as_of: AsOf) -> bool {
        match as_of {
            AsOf::Position(position) => self.position <= position,
            AsOf::Time(time) => self.latest_ms <= time.unix_ms(),
        }
    }
}

impl Snapshots {
    pub fn open_sled(db: &sled::Db) -> Result<Snapshots, ProjectionError> {
        Ok(Snapshots {
            storage: Storage::Sled(db.open_tree("snapshots")?),
        })
    }

    pub fn in_memory() -> Snapshots {
        Snapshots {
            storage: Storage::Memory(Mutex::new(BTreeMap::new())),
        }
    }

    /// Keeps a snapshot; the index entry and the state are written in one batch.
    pub fn save(&self, stream: &str, snapshot: &Snapshot) -> Result<(), ProjectionError> {
        let mut index = Vec::with_capacity(INDEX_VALUE_LEN);
        index.extend_from_slice(&snapshot.position.to_be_bytes());
        index.extend_from_slice(&snapshot.latest_ms.to_be_bytes());
        index.extend_from_slice(&snapshot.hash.0);
        let mut data = vec![FORMAT];
        serde_json::to_writer(&mut data, &snapshot.state)
            .map_err(|e| ProjectionError::Io(format!("a snapshot could not be written: {e}")))?;
        let index_key = key(b'i', stream, snapshot.version);
        let data_key = key(b'd', stream, snapshot.version);
        match &self.storage {
            Storage::Sled(tree) => {
                let mut batch = sled::Batch::default();
                batch.insert(data_key, data);
                batch.insert(index_key, index);
                tree.apply_batch(batch)?;
            }
            Storage::Memory(map) => {
                let mut map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.insert(data_key, data);
                map.insert(index_key, index);
            }
        }
        Ok(())
    }

    /// The index entries of a stream, newest first.
    fn index(&self, stream: &str) -> Result<Vec<IndexEntry>, ProjectionError> {
        let start = key(b'i', stream, 0);
        let end = key(b'i', stream, u64::MAX);
        let mut entries = Vec::new();
        match &self.storage {
            Storage::Sled(tree) => {
                for row in tree.range(start..=end).rev() {
                    let (key, value) = row?;
                    entries.extend(IndexEntry::decode(&key, &value));
                }
            }
            Storage::Memory(map) => {
                let map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (key, value) in map.range(start..=end).rev() {
                    entries.extend(IndexEntry::decode(key, value));
                }
            }
        }
        Ok(entries)
    }

    fn data(&self, stream: &str, version: u64) -> Result<Option<Vec<u8>>, ProjectionError> {
        let key = key(b'd', stream, version);
        Ok(match &self.storage {
            Storage::Sled(tree) => tree.get(key)?.map(|v| v.to_vec()),
            Storage::Memory(map) => map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .cloned(),
        })
    }

    /// The newest snapshot of `stream` that `as_of` may start from (any, for `None`) and whose
    /// event the log still holds; `None` when there is none, and the stream must be folded
    /// from its start.
    pub async fn latest(
        &self,
        store: &dyn EventStore,
        stream: &str,
        as_of: Option<AsOf>,
    ) -> Result<Option<Snapshot>, ProjectionError> {
        for entry in self.index(stream)? {
            if as_of.is_some_and(|as_of| !entry.covers(as_of)) {
                continue;
            }
            let logged = store.read_stream(stream, entry.version, 1).await?;
            let holds_it = logged.first().is_some_and(|e| {
                e.version == entry.version && e.position == entry.position && e.hash == entry.hash
            });
            if !holds_it {
                continue;
            }
            let Some(data) = self.data(stream, entry.version)? else {
                continue;
            };
            let state = match data.split_first() {
                Some((&FORMAT, json)) => serde_json::from_slice::<ResourceState>(json).ok(),
                _ => None,
            };
            if let Some(state) = state {
                return Ok(Some(Snapshot {
                    version: entry.version,
                    position: entry.position,
                    latest_ms: entry.latest_ms,
                    hash: entry.hash,
                    state,
                }));
            }
        }
        Ok(None)
    }
}
