//! Where a read model keeps its rows: one ordered tree per read model (a sled tree, or a map
//! in memory), written in atomic batches that carry the model's checkpoint with its changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use crate::codec::Record;
use crate::ProjectionError;

mod buffered;
mod paged;

pub use buffered::{Buffered, BUFFERED_ROWS_MAX};
pub use paged::{PagedTree, PAGE_BYTES_MAX};

/// A change to one row, borrowed: `None` deletes it.
pub type Change<'c> = (&'c [u8], Option<&'c [u8]>);

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
    /// Every change at once, or none. The changes are in ascending key order, one per key.
    fn apply(&self, changes: &[Change<'_>]) -> Result<(), ProjectionError>;
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

    fn apply(&self, changes: &[Change<'_>]) -> Result<(), ProjectionError> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(*key, *value),
                None => batch.remove(*key),
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

    fn apply(&self, changes: &[Change<'_>]) -> Result<(), ProjectionError> {
        let mut rows = self
            .rows
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, value) in changes {
            match value {
                Some(value) => rows.insert(key.to_vec(), value.to_vec()),
                None => rows.remove(*key),
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

/// A row kept typed until the batch commits: a hot row (a link's use count, a resource's
/// member count) changed by every event of a batch is then decoded once and encoded once per
/// batch, not once per event.
trait Typed: Send {
    fn encode(&self, out: &mut Vec<u8>);
    fn as_any(&self) -> &dyn std::any::Any;
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: Record> Typed for T {
    fn encode(&self, out: &mut Vec<u8>) {
        Record::encode(self, out);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

enum Pending {
    Bytes(Option<Vec<u8>>),
    Typed(Box<dyn Typed>),
}

/// Rows written without being read back in the same batch (histories, the rolemap), encoded
/// as they are written into one buffer: a row costs no allocation of its own, no hashing, and
/// no typed copy held until the commit. Later changes of a key win.
#[derive(Default)]
struct Written {
    bytes: Vec<u8>,
    rows: Vec<Span>,
}

/// How many bytes of a key a `Span` holds itself: the keys of the busy rows (a resource and a
/// position or a principal) mostly differ within them, so sorting compares spans without
/// reaching into the buffer, which for 100,000 rows costs a cache miss per comparison.
const INLINE_KEY_BYTES: usize = 32;

/// Where one change's key and value lie in `Written::bytes`, with the start of the key.
struct Span {
    /// The key's first bytes, padded with zeros: ordered as the keys are, except that keys
    /// equal here may still differ after (or in length).
    head: [u8; INLINE_KEY_BYTES],
    start: usize,
    key_end: usize,
    /// The value's end, or `None` for a deletion.
    end: Option<usize>,
}

impl Span {
    fn new(bytes: &[u8], start: usize, end: Option<usize>, key_end: usize) -> Span {
        let key = &bytes[start..key_end];
        let mut head = [0; INLINE_KEY_BYTES];
        let inline = key.len().min(INLINE_KEY_BYTES);
        head[..inline].copy_from_slice(&key[..inline]);
        Span {
            head,
            start,
            key_end,
            end,
        }
    }
}

impl Written {
    fn put(&mut self, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        value(&mut self.bytes);
        let span = Span::new(&self.bytes, start, Some(self.bytes.len()), key_end);
        self.rows.push(span);
    }

    fn delete(&mut self, key: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let span = Span::new(&self.bytes, start, None, self.bytes.len());
        self.rows.push(span);
    }

    /// The changes in key order, the last of each key only.
    fn sorted(&mut self) -> Vec<Change<'_>> {
        let bytes = &self.bytes;
        // Stable, so changes of one key stay in the order they were made.
        self.rows.sort_by(|a, b| {
            a.head
                .cmp(&b.head)
                .then_with(|| bytes[a.start..a.key_end].cmp(&bytes[b.start..b.key_end]))
        });
        let mut changes: Vec<Change<'_>> = Vec::with_capacity(self.rows.len());
        for span in &self.rows {
            let change = (
                &bytes[span.start..span.key_end],
                span.end.map(|end| &bytes[span.key_end..end]),
            );
            match changes.last_mut() {
                Some(last) if last.0 == change.0 => *last = change,
                _ => changes.push(change),
            }
        }
        changes
    }
}

/// The changes one call to `apply` makes to one read model. Rows a projection reads while
/// folding (counts, links) go through an overlay, so later events in the same batch read
/// what earlier ones wrote; rows it only writes go through `write`. Each key holds its last
/// change only, so the order changes are written in does not matter; a key is changed through
/// one of the two ways only.
pub struct Batch<'t> {
    tree: &'t dyn Tree,
    overlay: HashMap<Vec<u8>, Pending>,
    written: Written,
}

impl<'t> Batch<'t> {
    pub fn new(tree: &'t dyn Tree) -> Batch<'t> {
        Batch {
            tree,
            overlay: HashMap::new(),
            written: Written::default(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.overlay.get(key) {
            Some(Pending::Bytes(value)) => Ok(value.clone()),
            Some(Pending::Typed(record)) => {
                let mut bytes = Vec::new();
                record.encode(&mut bytes);
                Ok(Some(bytes))
            }
            None => self.tree.get(key),
        }
    }

    pub(crate) fn get_record<T: Record + Clone>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, ProjectionError> {
        if let Some(Pending::Typed(record)) = self.overlay.get(key) {
            if let Some(value) = record.as_any().downcast_ref::<T>() {
                return Ok(Some(value.clone()));
            }
        }
        self.get(key)?
            .map(|bytes| T::decode(key, &bytes))
            .transpose()
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key, Pending::Bytes(Some(value)));
    }

    pub(crate) fn put_record<T: Record>(&mut self, key: Vec<u8>, value: T) {
        self.overlay.insert(key, Pending::Typed(Box::new(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, Pending::Bytes(None));
    }

    /// Writes a row this batch will not read back (`get` does not see it), its value written
    /// by `value` in place.
    pub(crate) fn write(&mut self, key: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
        self.written.put(key, value);
    }

    /// Changes the typed row at `key` in place (read from the tree the first time), if it
    /// exists: a row changed by every event of a batch (a link's uses, a resource's member
    /// count) is neither copied nor boxed again per event.
    pub(crate) fn update<T: Record + Clone>(
        &mut self,
        key: &[u8],
        change: impl FnOnce(&mut T) -> Result<(), ProjectionError>,
    ) -> Result<bool, ProjectionError> {
        if let Some(Pending::Typed(record)) = self.overlay.get_mut(key) {
            if let Some(record) = record.as_any_mut().downcast_mut::<T>() {
                change(record)?;
                return Ok(true);
            }
        }
        let Some(mut record) = self.get_record::<T>(key)? else {
            return Ok(false);
        };
        change(&mut record)?;
        self.put_record(key.to_vec(), record);
        Ok(true)
    }

    /// Deletes a row written with `write`.
    pub(crate) fn erase(&mut self, key: &[u8]) {
        self.written.delete(key);
    }

    /// Writes the changes and the checkpoint together.
    pub fn commit(self, checkpoint: u64) -> Result<(), ProjectionError> {
        let Batch {
            tree,
            overlay,
            mut written,
        } = self;
        for (key, pending) in overlay {
            match pending {
                Pending::Bytes(Some(value)) => {
                    written.put(&key, |out| out.extend_from_slice(&value))
                }
                Pending::Bytes(None) => written.delete(&key),
                Pending::Typed(record) => written.put(&key, |out| record.encode(out)),
            }
        }
        written.put(CHECKPOINT_KEY, |out| {
            out.extend_from_slice(&checkpoint.to_be_bytes());
        });
        tree.apply(&written.sorted())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_writes_the_last_change_of_each_key_in_key_order() {
        let tree = MemoryTree::default();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for round in 0..20u8 {
            let mut batch = Batch::new(&tree);
            for _ in 0..500 {
                // Keys shorter and longer than what a span holds inline, many alike there.
                let mut key = vec![b'r'; usize::try_from(next(40)).unwrap_or(0)];
                key.push(u8::try_from(next(3)).unwrap_or(0));
                key.extend(std::iter::repeat_n(
                    0,
                    usize::try_from(next(3)).unwrap_or(0),
                ));
                if next(4) == 0 {
                    batch.erase(&key);
                    model.remove(&key);
                } else {
                    let value = vec![round; usize::try_from(next(5)).unwrap_or(0)];
                    batch.write(&key, |out| out.extend_from_slice(&value));
                    model.insert(key, value);
                }
            }
            batch.commit(u64::from(round)).expect("commits");
            let mut expected: Vec<Row> = model.clone().into_iter().collect();
            expected.push((
                CHECKPOINT_KEY.to_vec(),
                u64::from(round).to_be_bytes().to_vec(),
            ));
            assert_eq!(
                tree.scan_prefix(b"", b"", usize::MAX).expect("scans"),
                expected
            );
        }
    }
}
