//! A read model's tree whose newest changes wait in memory and reach the tree under it in
//! large batches, written by a thread of its own instead of the projector.
//!
//! Why: an accept changes six or so rows, and writing them to sled before the caller hears
//! back cost more than the rest of the accept (sled rewrites a whole ~4 KiB page per changed
//! row and logs it). Held here, the hot rows (a link's uses, a resource's member count, the
//! end of its history) are written once per batch instead of once per command, and the
//! writing happens beside the projector, not in front of the caller.
//!
//! Nothing is lost by a crash: a batch carries the model's checkpoint row with its changes
//! (they are changes like any other), so the tree under holds a prefix of the applied
//! batches, and the log holds what came after; opening catches up from there. Reads see the
//! changes waiting (`pending`), then the batch being written (`flushing`), then the tree.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::{Change, Row, Tree};
use crate::ProjectionError;

/// Changed rows held before they are handed to the writing thread. A batch of this size
/// takes sled some milliseconds; larger ones coalesce more but hold more memory.
pub const BUFFERED_ROWS_MAX: usize = 8192;

type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default)]
struct Layers {
    /// Changes applied since the last hand-over, the newest of each key.
    pending: Layer,
    /// The batch the writing thread is writing; readable until the tree under holds it.
    flushing: Option<Arc<Layer>>,
    /// Why the last write failed; every later call reports it (the projector then stops,
    /// as it would had it written the batch itself).
    failed: Option<String>,
    stopping: bool,
}

struct Shared {
    inner: Arc<dyn Tree>,
    layers: Mutex<Layers>,
    /// Signalled when a batch is handed over, when one has been written, and on stop.
    changed: Condvar,
}

impl Shared {
    fn layers(&self) -> MutexGuard<'_, Layers> {
        // Every change to the layers is made in one step under the lock.
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Layers>) -> MutexGuard<'a, Layers> {
        self.changed
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until no batch is being written; reports a failed one.
    fn idle<'a>(
        &self,
        mut layers: MutexGuard<'a, Layers>,
    ) -> Result<MutexGuard<'a, Layers>, ProjectionError> {
        while layers.flushing.is_some() {
            layers = self.wait(layers);
        }
        match &layers.failed {
            Some(error) => Err(ProjectionError::Io(error.clone())),
            None => Ok(layers),
        }
    }

    /// Hands the pending changes to the writing thread (once the one before is written).
    fn hand_over<'a>(
        &self,
        layers: MutexGuard<'a, Layers>,
    ) -> Result<MutexGuard<'a, Layers>, ProjectionError> {
        let mut layers = self.idle(layers)?;
        if !layers.pending.is_empty() {
            let batch = std::mem::take(&mut layers.pending);
            layers.flushing = Some(Arc::new(batch));
            self.changed.notify_all();
        }
        Ok(layers)
    }

    fn write_batches(&self) {
        let mut layers = self.layers();
        loop {
            if layers.stopping && layers.flushing.is_none() && !layers.pending.is_empty() {
                let batch = std::mem::take(&mut layers.pending);
                layers.flushing = Some(Arc::new(batch));
            }
            let Some(batch) = layers.flushing.clone() else {
                if layers.stopping {
                    return;
                }
                layers = self.wait(layers);
                continue;
            };
            drop(layers);
            // A map's order is the trait's: ascending, one change per key.
            let changes: Vec<Change<'_>> = batch
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            let written = self.inner.apply(&changes);
            layers = self.layers();
            if let Err(error) = written {
                tracing::error!(%error, "a read model's batch was not written");
                layers.failed = Some(error.to_string());
                // Nothing more is written: the tree keeps the prefix it has.
                layers.pending.clear();
                layers.stopping = true;
            }
            layers.flushing = None;
            self.changed.notify_all();
        }
    }
}

/// A `Tree` over another, writing to it in batches from a thread of its own.
pub struct Buffered {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    rows_max: usize,
}

impl Buffered {
    pub fn new(inner: Arc<dyn Tree>, rows_max: usize) -> Result<Buffered, ProjectionError> {
        let shared = Arc::new(Shared {
            inner,
            layers: Mutex::new(Layers::default()),
            changed: Condvar::new(),
        });
        let writing = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("roster-rm-write".into())
            .spawn(move || writing.write_batches())
            .map_err(|e| ProjectionError::Io(format!("cannot start a read model's writer: {e}")))?;
        Ok(Buffered {
            shared,
            writer: Some(writer),
            rows_max: rows_max.max(1),
        })
    }
}

impl Tree for Buffered {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        {
            let layers = self.shared.layers();
            if let Some(value) = layers.pending.get(key) {
                return Ok(value.clone());
            }
            if let Some(value) = layers.flushing.as_ref().and_then(|f| f.get(key)) {
                return Ok(value.clone());
            }
        }
        // Not waiting: the tree under already holds the newest value (a batch leaves
        // `flushing` only once written).
        self.shared.inner.get(key)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        let waiting: Layer = {
            let layers = self.shared.layers();
            let in_range = |layer: &Layer| {
                layer
                    .range(start.to_vec()..)
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            let mut waiting: Layer = layers
                .flushing
                .as_deref()
                .map(|f| in_range(f).into_iter().collect())
                .unwrap_or_default();
            waiting.extend(in_range(&layers.pending));
            waiting
        };
        if waiting.is_empty() {
            return self.shared.inner.scan_prefix(prefix, from, limit);
        }
        // Each waiting change hides at most one row below, so `limit` more than that many
        // rows below hold the first `limit` rows of the merged view.
        let below =
            self.shared
                .inner
                .scan_prefix(prefix, from, limit.saturating_add(waiting.len()))?;
        let mut merged: Layer = below.into_iter().map(|(k, v)| (k, Some(v))).collect();
        merged.extend(waiting);
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .take(limit)
            .collect())
    }

    fn apply(&self, changes: &[Change<'_>]) -> Result<(), ProjectionError> {
        let mut layers = self.shared.layers();
        if let Some(error) = &layers.failed {
            return Err(ProjectionError::Io(error.clone()));
        }
        if changes.len() >= self.rows_max {
            // A catch-up's chunk: already one large batch. Write what waits, then this,
            // directly (readers see the tree's older rows until it is written, as they would
            // without this layer).
            layers = self.shared.hand_over(layers)?;
            drop(self.shared.idle(layers)?);
            return self.shared.inner.apply(changes);
        }
        for (key, value) in changes {
            layers
                .pending
                .insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
        if layers.pending.len() >= self.rows_max {
            drop(self.shared.hand_over(layers)?);
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        let mut layers = self.shared.idle(self.shared.layers())?;
        layers.pending.clear();
        drop(layers);
        self.shared.inner.clear()
    }

    fn flush(&self) -> Result<(), ProjectionError> {
        let layers = self.shared.hand_over(self.shared.layers())?;
        drop(self.shared.idle(layers)?);
        self.shared.inner.flush()
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        // Write what waits, so a clean stop leaves the tree current and the next open has
        // nothing to catch up.
        self.shared.layers().stopping = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use proptest::prelude::*;

    use super::*;
    use crate::kv::MemoryTree;

    type Owned = (Vec<u8>, Option<Vec<u8>>);

    /// Changes as the trait takes them: ascending, the last change of a key winning.
    fn apply_owned(tree: &dyn Tree, changes: &[Owned]) -> Result<(), ProjectionError> {
        let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for (key, value) in changes {
            last.insert(key, value.as_deref());
        }
        let changes: Vec<Change<'_>> = last.into_iter().collect();
        tree.apply(&changes)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Apply(Vec<Owned>),
        Get(Vec<u8>),
        Scan(Vec<u8>, Vec<u8>, usize),
        Flush,
        /// Drop the buffered tree (which writes what waits) and put a new one over the same
        /// tree: what a clean stop and a start do.
        Reopen,
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        (prop::sample::select(vec![b'a', b'b']), 0u8..12).prop_map(|(tag, n)| vec![tag, b'0' + n])
    }

    fn op() -> impl Strategy<Value = Op> {
        let change = (
            key(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..4)),
        );
        prop_oneof![
            4 => prop::collection::vec(change, 0..6).prop_map(Op::Apply),
            2 => key().prop_map(Op::Get),
            2 => (
                prop::sample::select(vec![b"".to_vec(), b"a".to_vec(), b"b".to_vec()]),
                key(),
                0usize..8
            )
                .prop_map(|(prefix, from, limit)| Op::Scan(prefix, from, limit)),
            1 => Just(Op::Flush),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        /// Whatever waits, is being written or is written, a buffered tree reads as a plain
        /// map with every change applied, and the tree under holds it all after a flush or
        /// a drop.
        #[test]
        fn a_buffered_tree_reads_as_a_map_with_every_change_applied(
            ops in prop::collection::vec(op(), 1..60),
            rows_max in 1usize..6,
        ) {
            let under: Arc<MemoryTree> = Arc::new(MemoryTree::default());
            let model = MemoryTree::default();
            let mut tree = Buffered::new(Arc::clone(&under) as Arc<dyn Tree>, rows_max).unwrap();
            for op in ops {
                match op {
                    Op::Apply(changes) => {
                        apply_owned(&model, &changes).unwrap();
                        apply_owned(&tree, &changes).unwrap();
                    }
                    Op::Get(key) => prop_assert_eq!(tree.get(&key).unwrap(), model.get(&key).unwrap()),
                    Op::Scan(prefix, from, limit) => prop_assert_eq!(
                        tree.scan_prefix(&prefix, &from, limit).unwrap(),
                        model.scan_prefix(&prefix, &from, limit).unwrap()
                    ),
                    Op::Flush => {
                        tree.flush().unwrap();
                        prop_assert_eq!(under.rows().clone(), model.rows().clone());
                    }
                    Op::Reopen => {
                        drop(tree);
                        prop_assert_eq!(under.rows().clone(), model.rows().clone());
                        tree = Buffered::new(Arc::clone(&under) as Arc<dyn Tree>, rows_max).unwrap();
                    }
                }
            }
        }
    }

    /// A reader beside the writer never sees a row go back in time: a batch stays readable
    /// in memory until the tree under holds it.
    #[test]
    fn a_row_read_while_batches_are_written_never_goes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("opens");
        let paged =
            crate::kv::PagedTree::open(db.open_tree("t").expect("tree"), 256).expect("paged");
        let tree = Arc::new(Buffered::new(Arc::new(paged), 3).expect("buffered"));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (tree, done) = (Arc::clone(&tree), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let value = tree.get(b"counter").expect("reads");
                    let now =
                        value.map_or(0, |v| u64::from_be_bytes(v.try_into().expect("8 bytes")));
                    assert!(now >= seen, "read {now} after {seen}");
                    let rows = tree.scan_prefix(b"r", b"", usize::MAX).expect("scans");
                    assert!(
                        rows.len() as u64 >= seen.min(500),
                        "{} rows after {seen}",
                        rows.len()
                    );
                    seen = now;
                    reads += 1;
                }
                reads
            })
        };
        for n in 1..=2000u64 {
            let row = format!("r{:05}", n % 500).into_bytes();
            apply_owned(
                tree.as_ref(),
                &[
                    (b"counter".to_vec(), Some(n.to_be_bytes().to_vec())),
                    (row, Some(vec![0; 40])),
                ],
            )
            .expect("applies");
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("the reader") > 0);
    }

    /// A tree whose writes fail, like sled on a full disk.
    struct Failing;

    impl Tree for Failing {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
            Ok(None)
        }
        fn scan_prefix(&self, _: &[u8], _: &[u8], _: usize) -> Result<Vec<Row>, ProjectionError> {
            Ok(Vec::new())
        }
        fn apply(&self, _: &[Change<'_>]) -> Result<(), ProjectionError> {
            Err(ProjectionError::Io("No space left on device".into()))
        }
        fn clear(&self) -> Result<(), ProjectionError> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_reported_to_the_next_caller() {
        let tree = Buffered::new(Arc::new(Failing), 2).expect("buffered");
        tree.apply(&[(b"a", Some(&[1]))]).expect("waits in memory");
        // The second change hands the batch over; its failure reaches the flush, and every
        // later apply.
        let _ = tree.apply(&[(b"b", Some(&[2]))]);
        let flushed = tree.flush();
        assert!(matches!(flushed, Err(ProjectionError::Io(ref e)) if e.contains("No space")));
        assert!(tree.apply(&[(b"c", None)]).is_err());
    }
}
