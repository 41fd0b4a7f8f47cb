//! Where a read model keeps its rows: one ordered tree per read model (a sled tree, or a map
//! in memory), written in atomic batches that carry the model's checkpoint with its changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::ProjectionError;

mod buffered;
mod paged;

pub use buffered::{Buffered, BUFFERED_ROWS_MAX};
pub use paged::{PagedTree, PAGE_BYTES_MAX};

/// A change to one row: `None` deletes it.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// A row read back: key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// The ordered rows of one read model.
pub trait Tree: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError>;
    /// Rows whose key starts with `prefix` and is at or after `from`, ascending, at most `limit`.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, ProjectionError>;
    /// Every change at once, or none.
    fn apply(&self, changes: Vec<Change>) -> Result<(), ProjectionError>;
    fn clear(&self) -> Result<(), ProjectionError>;
    /// Writes through whatever waits in memory (see `Buffered`); returns once it is written.
    fn flush(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}

impl Tree for sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(sled::Tree::get(self, key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        let mut rows = Vec::new();
        for row in self.range(start..).take(limit) {
            let (key, value) = row?;
            if !key.starts_with(prefix) {
                break;
            }
            rows.push((key.to_vec(), value.to_vec()));
        }
        Ok(rows)
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        Ok(self.apply_batch(batch)?)
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        Ok(sled::Tree::clear(self)?)
    }
}

/// A read model's rows in memory, for the in-memory engine.
#[derive(Default)]
pub struct MemoryTree {
    rows: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryTree {
    fn rows(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // Writers change the map in one call, so a poisoned lock still guards a whole state.
        self.rows
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Tree for MemoryTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(self.rows().get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, ProjectionError> {
        let start = if from > prefix {
            from.to_vec()
        } else {
            prefix.to_vec()
        };
        Ok(self
            .rows()
            .range(start..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), ProjectionError> {
        let mut rows = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, value) in changes {
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(&key),
            };
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        self.rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

/// The reserved rows of every read model: they sort after every data row (which start with
/// an ASCII letter).
pub(crate) const CHECKPOINT_KEY: &[u8] = b"\xffcheckpoint";
pub(crate) const VERSION_KEY: &[u8] = b"\xffversion";

/// A row written by a record type, kept as the value until the batch commits: a hot row
/// (a link's use count, a resource's member count) changed by every event of a batch is
/// then parsed once and serialized once per batch, not once per event.
trait Record: Send {
    fn to_bytes(&self) -> Vec<u8>;
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: serde::Serialize + Send + 'static> Record for T {
    fn to_bytes(&self) -> Vec<u8> {
        // The read models' records are plain structs of strings and numbers.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

enum Pending {
    Bytes(Option<Vec<u8>>),
    Typed(Box<dyn Record>),
}

/// The changes one call to `apply` makes to one read model, with an overlay so later events
/// in the same batch read what earlier ones wrote. Each key holds its last change only, so
/// the order changes are written in does not matter.
pub struct Batch<'t> {
    tree: &'t dyn Tree,
    overlay: HashMap<Vec<u8>, Pending>,
}

impl<'t> Batch<'t> {
    pub fn new(tree: &'t dyn Tree) -> Batch<'t> {
        Batch {
            tree,
            overlay: HashMap::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.overlay.get(key) {
            Some(Pending::Bytes(value)) => Ok(value.clone()),
            Some(Pending::Typed(record)) => Ok(Some(record.to_bytes())),
            None => self.tree.get(key),
        }
    }

    pub fn get_json<T: serde::de::DeserializeOwned + Clone + 'static>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, ProjectionError> {
        if let Some(Pending::Typed(record)) = self.overlay.get(key) {
            if let Some(value) = record.as_any().downcast_ref::<T>() {
                return Ok(Some(value.clone()));
            }
        }
        self.get(key)?.map(|bytes| decode(key, &bytes)).transpose()
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.record(key, Pending::Bytes(Some(value)));
    }

    pub fn put_json<T: serde::Serialize + Clone + Send + 'static>(
        &mut self,
        key: Vec<u8>,
        value: &T,
    ) {
        self.put_owned(key, value.clone());
    }

    /// `put_json` of a record made for this row, without a copy.
    pub fn put_owned<T: serde::Serialize + Send + 'static>(&mut self, key: Vec<u8>, value: T) {
        self.record(key, Pending::Typed(Box::new(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.record(key, Pending::Bytes(None));
    }

    fn record(&mut self, key: Vec<u8>, value: Pending) {
        self.overlay.insert(key, value);
    }

    /// Writes the changes and the checkpoint together.
    pub fn commit(self, checkpoint: u64) -> Result<(), ProjectionError> {
        let mut changes: Vec<Change> = Vec::with_capacity(self.overlay.len() + 1);
        for (key, pending) in self.overlay {
            let value = match pending {
                Pending::Bytes(value) => value,
                Pending::Typed(record) => Some(record.to_bytes()),
            };
            changes.push((key, value));
        }
        changes.push((
            CHECKPOINT_KEY.to_vec(),
            Some(checkpoint.to_be_bytes().to_vec()),
        ));
        self.tree.apply(changes)
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, ProjectionError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProjectionError::Corrupt(format!("row {}: {e}", String::from_utf8_lossy(key))))
}

/// A key of parts joined by NUL, which no resource, principal or email contains.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    key
}

/// `key(parts)` followed by the separator, to scan everything under it.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut prefix = key(parts);
    prefix.push(0);
    prefix
}
