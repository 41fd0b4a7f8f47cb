//! A read model's rows packed into pages in a sled tree: sled's cost is per key (every insert
//! clones and relinks a node), so a rebuild that wrote each row as its own key spent most of
//! its time in sled; pages of a few KiB write the same rows with a tenth of the keys.
//!
//! Layout: each sled key is the first row key of its page, and its value is the page's rows in
//! key order, each `key length ‖ key ‖ value length ‖ value`, the lengths as LEB128 varints
//! (a byte or two: rows are small). Pages hold disjoint, ascending ranges, so the page of a
//! row is the last page whose key is at or before it. The empty sled key holds the layout
//! marker, so a tree of an earlier layout (one row per key, or 32-bit lengths) is recognised
//! (and emptied, to be rebuilt from the log) on open.

use std::ops::Bound;

use super::{Change, Row, Tree};
use crate::ProjectionError;

/// The sled key of the layout marker: empty, so it sorts before every page.
const LAYOUT_KEY: &[u8] = b"";
/// `paged-1` framed each part with a 32-bit length: six bytes more per row than varints.
const LAYOUT: &[u8] = b"paged-2";

/// A page is closed once its rows reach this many bytes: small enough that a read decodes
/// little and a live write rewrites little, large enough that a rebuild writes few keys.
pub const PAGE_BYTES_MAX: usize = 4096;

/// The rows of one read model, in pages of one sled tree. One writer per tree (the projector,
/// or a rebuild): `apply` reads the pages it changes, then writes them in one atomic batch.
pub struct PagedTree {
    tree: sled::Tree,
    page_bytes_max: usize,
}

impl PagedTree {
    /// Opens `tree` as a paged tree; a tree of the earlier layout is emptied.
    pub fn open(tree: sled::Tree, page_bytes_max: usize) -> Result<PagedTree, ProjectionError> {
        if tree.get(LAYOUT_KEY)?.as_deref() != Some(LAYOUT) {
            if !tree.is_empty() {
                tracing::info!("read model in an earlier layout: emptied to rebuild");
            }
            tree.clear()?;
            tree.insert(LAYOUT_KEY, LAYOUT)?;
        }
        Ok(PagedTree {
            tree,
            page_bytes_max: page_bytes_max.max(1),
        })
    }

    /// The page whose range holds `key`: the last page at or before it.
    fn page_at(&self, key: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>, ProjectionError> {
        match self.tree.range(..=key).next_back().transpose()? {
            Some((page_key, _)) if page_key.as_ref() == LAYOUT_KEY => Ok(None),
            found => Ok(found),
        }
    }

    /// Whether no page precedes the one at `page_key`.
    fn is_first(&self, page_key: &[u8]) -> Result<bool, ProjectionError> {
        let before = (Bound::Excluded(LAYOUT_KEY), Bound::Excluded(page_key));
        Ok(self
            .tree
            .range::<&[u8], _>(before)
            .next()
            .transpose()?
            .is_none())
    }

    /// The first page after `key`, or the first page of all with `None`.
    fn page_after(
        &self,
        key: Option<&[u8]>,
    ) -> Result<Option<(sled::IVec, sled::IVec)>, ProjectionError> {
        let start = match key {
            Some(key) => Bound::Excluded(key),
            None => Bound::Excluded(LAYOUT_KEY),
        };
        Ok(self
            .tree
            .range::<&[u8], _>((start, Bound::Unbounded))
            .next()
            .transpose()?)
    }
}

/// A row borrowed from a page: key and value.
type RowRef<'p> = (&'p [u8], &'p [u8]);

/// The rows of a page, in order, borrowed from its bytes.
fn rows_of<'p>(page_key: &[u8], page: &'p [u8]) -> Result<Vec<RowRef<'p>>, ProjectionError> {
    let corrupt = || {
        ProjectionError::Corrupt(format!(
            "read model page {} is cut short",
            String::from_utf8_lossy(page_key)
        ))
    };
    let mut rows = Vec::new();
    let mut rest = page;
    let take = |rest: &mut &'p [u8]| -> Result<&'p [u8], ProjectionError> {
        let mut length = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let (byte, tail) = rest.split_first().ok_or_else(corrupt)?;
            *rest = tail;
            length |= usize::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or_else(corrupt)?;
            if byte & 0x80 == 0 {
                if rest.len() < length {
                    return Err(corrupt());
                }
                let (part, tail) = rest.split_at(length);
                *rest = tail;
                return Ok(part);
            }
        }
        Err(corrupt())
    };
    while !rest.is_empty() {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        rows.push((key, value));
    }
    // Paired with `encode`: rows are written ascending, and the page's key is its first row's.
    debug_assert!(rows.windows(2).all(|pair| pair[0].0 < pair[1].0));
    debug_assert!(rows.first().is_none_or(|row| row.0 == page_key));
    Ok(rows)
}

fn push_part(page: &mut Vec<u8>, part: &[u8]) {
    crate::codec::put_varint(page, u64::try_from(part.len()).unwrap_or(u64::MAX));
    page.extend_from_slice(part);
}

/// Writes `rows` (ascending) into pages of about `page_bytes_max` bytes, into `batch`.
fn write_pages<'r>(
    batch: &mut sled::Batch,
    rows: impl Iterator<Item = RowRef<'r>>,
    page_bytes_max: usize,
) {
    // One buffer for every page: sled copies each into a value of its own anyway.
    let mut page: Vec<u8> = Vec::with_capacity(page_bytes_max + 512);
    let mut first: Option<&[u8]> = None;
    for (key, value) in rows {
        first.get_or_insert(key);
        push_part(&mut page, key);
        push_part(&mut page, value);
        if page.len() >= page_bytes_max {
            if let Some(first) = first.take() {
                batch.insert(first, page.as_slice());
                page.clear();
            }
        }
    }
    if let Some(first) = first {
        batch.insert(first, page.as_slice());
    }
}

impl Tree for PagedTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        let Some((page_key, page)) = self.page_at(key)? else {
            return Ok(None);
        };
        let rows = rows_of(&page_key, &page)?;
        Ok(rows
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|index| rows[index].1.to_vec()))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Row>, ProjectionError> {
        let start = if from > prefix { from } else { prefix };
        let mut rows: Vec<Row> = Vec::new();
        if limit == 0 {
            return Ok(rows);
        }
        // Only the tree's first page can move below its key (a row before every page joins
        // it): a scan started at that key while such a write lands would miss the page, so
        // a scan that begins in the first page starts before every page instead.
        let first_page = match self.page_at(start)? {
            Some((page_key, _)) if !self.is_first(&page_key)? => Bound::Included(page_key),
            _ => Bound::Excluded(sled::IVec::from(LAYOUT_KEY)),
        };
        for page in self
            .tree
            .range::<sled::IVec, _>((first_page, Bound::Unbounded))
        {
            let (page_key, page) = page?;
            // A page split by a concurrent write can show rows already returned: skip them,
            // so a scan is ascending without repeats, as sled's own scans are.
            for (key, value) in rows_of(&page_key, &page)? {
                if key < start || rows.last().is_some_and(|(last, _)| key <= last.as_slice()) {
                    continue;
                }
                // At or after `start` (itself at or after `prefix`) and without the prefix:
                // past every key that has it.
                if !key.starts_with(prefix) {
                    return Ok(rows);
                }
                rows.push((key.to_vec(), value.to_vec()));
                if rows.len() >= limit {
                    return Ok(rows);
                }
            }
        }
        Ok(rows)
    }

    fn apply(&self, changes: &[Change<'_>]) -> Result<(), ProjectionError> {
        // Paired with `Batch::commit`, which hands over one change per key, ascending.
        debug_assert!(changes.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let mut batch = sled::Batch::default();
        let mut pending = changes.iter().peekable();
        while let Some((key, _)) = pending.peek() {
            // The page the next change falls in (the first page when it precedes them all),
            // and where the next page starts: every change before that goes into this one.
            let page = match self.page_at(key)? {
                Some(page) => Some(page),
                None => self.page_after(None)?,
            };
            let next = match &page {
                Some((page_key, _)) => self.page_after(Some(page_key))?.map(|(k, _)| k),
                None => None,
            };
            let old_rows = match &page {
                Some((page_key, bytes)) => {
                    batch.remove(page_key.clone());
                    rows_of(page_key, bytes)?
                }
                None => Vec::new(),
            };
            let mut mine = Vec::new();
            while let Some(change) =
                pending.next_if(|(k, _)| next.as_ref().is_none_or(|n| *k < n.as_ref()))
            {
                mine.push(*change);
            }
            // Merge the page's rows with its changes, both ascending.
            let mut merged: Vec<RowRef<'_>> = Vec::with_capacity(old_rows.len() + mine.len());
            let (mut old, mut new) = (old_rows.into_iter().peekable(), mine.into_iter().peekable());
            loop {
                match (old.peek(), new.peek()) {
                    (Some(o), Some(n)) if o.0 < n.0 => merged.extend(old.next()),
                    (Some(o), Some(n)) if o.0 == n.0 => {
                        old.next();
                    }
                    (_, Some(_)) => {
                        if let Some((k, Some(v))) = new.next() {
                            merged.push((k, v));
                        }
                    }
                    (Some(_), None) => merged.extend(old.next()),
                    (None, None) => break,
                }
            }
            write_pages(&mut batch, merged.into_iter(), self.page_bytes_max);
        }
        Ok(self.tree.apply_batch(batch)?)
    }

    fn clear(&self) -> Result<(), ProjectionError> {
        // Not atomic, and need not be: an empty tree without the marker is emptied and marked
        // again on open, and an emptied model has no version, so it is rebuilt.
        self.tree.clear()?;
        self.tree.insert(LAYOUT_KEY, LAYOUT)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A small xorshift generator: the cases are the same on every run.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound.max(1)
        }
    }

    fn key(random: &mut Random) -> Vec<u8> {
        // Few distinct keys, sharing prefixes, so pages are hit, split, emptied and rekeyed.
        let tag = [b"a", b"b", b"p"][usize::try_from(random.below(3)).unwrap_or(0)];
        let mut key = tag.to_vec();
        key.push(0);
        key.extend_from_slice(format!("{:03}", random.below(150)).as_bytes());
        key
    }

    /// Changes as `Batch::commit` hands them over: ascending, the last change of a key only.
    fn sorted(changes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<Change<'_>> {
        let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for (key, value) in changes {
            last.insert(key, value.as_deref());
        }
        last.into_iter().collect()
    }

    fn temporary() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("opens");
        (dir, db)
    }

    #[test]
    fn a_paged_tree_reads_as_the_same_rows_in_a_map() {
        let (_dir, db) = temporary();
        for page_bytes_max in [1, 40, 300, PAGE_BYTES_MAX] {
            let tree = db.open_tree(format!("t{page_bytes_max}")).expect("tree");
            let paged = PagedTree::open(tree, page_bytes_max).expect("opens");
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut random =
                Random(0x2545_f491_4f6c_dd1d ^ u64::try_from(page_bytes_max).unwrap_or(0));
            for round in 0..300 {
                let mut changes = Vec::new();
                for _ in 0..random.below(if round % 50 == 0 { 400 } else { 12 }) {
                    let key = key(&mut random);
                    let value = (random.below(4) > 0)
                        .then(|| vec![b'v'; usize::try_from(random.below(90)).unwrap_or(0)]);
                    changes.push((key, value));
                }
                for (key, value) in changes.clone() {
                    match value {
                        Some(value) => model.insert(key, value),
                        None => model.remove(&key),
                    };
                }
                paged.apply(&sorted(&changes)).expect("applies");
                let probe = key(&mut random);
                assert_eq!(paged.get(&probe).expect("gets"), model.get(&probe).cloned());
                for prefix in [&b""[..], b"a\0", b"b\0", b"p\0", b"p\x0001", b"q"] {
                    let from = key(&mut random);
                    let limit = usize::try_from(random.below(40)).unwrap_or(0);
                    let start = if from.as_slice() > prefix {
                        from.clone()
                    } else {
                        prefix.to_vec()
                    };
                    let expected: Vec<Row> = model
                        .range(start..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .take(limit)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    assert_eq!(
                        paged.scan_prefix(prefix, &from, limit).expect("scans"),
                        expected,
                        "round {round}, prefix {prefix:?}, from {from:?}, limit {limit}"
                    );
                }
            }
            let all: Vec<Row> = model.into_iter().collect();
            assert_eq!(paged.scan_prefix(b"", b"", usize::MAX).expect("scans"), all);
            // Reopened, the pages are read as they were left.
            let reopened = PagedTree::open(paged.tree.clone(), page_bytes_max).expect("opens");
            assert_eq!(
                reopened.scan_prefix(b"", b"", usize::MAX).expect("scans"),
                all
            );
            reopened.clear().expect("clears");
            assert_eq!(
                reopened.scan_prefix(b"", b"", usize::MAX).expect("scans"),
                Vec::new()
            );
        }
    }

    #[test]
    fn a_tree_of_the_row_per_key_layout_is_emptied_on_open() {
        let (_dir, db) = temporary();
        let tree = db.open_tree("old").expect("tree");
        tree.insert(b"r\0space/a", b"{}".to_vec()).expect("inserts");
        tree.insert(b"\xffversion", 1u32.to_be_bytes().to_vec())
            .expect("inserts");
        let paged = PagedTree::open(tree.clone(), PAGE_BYTES_MAX).expect("opens");
        assert_eq!(paged.get(b"\xffversion").expect("gets"), None);
        assert_eq!(tree.len(), 1, "only the layout marker is left");
        paged
            .apply(&[(&b"r\0space/a"[..], Some(&b"{}"[..]))])
            .expect("applies");
        assert_eq!(
            paged.get(b"r\0space/a").expect("gets"),
            Some(b"{}".to_vec())
        );
    }

    #[test]
    fn a_tree_of_32_bit_lengths_is_emptied_on_open() {
        let (_dir, db) = temporary();
        let tree = db.open_tree("paged-1").expect("tree");
        tree.insert(LAYOUT_KEY, b"paged-1".to_vec())
            .expect("inserts");
        let mut page = 1u32.to_be_bytes().to_vec();
        page.extend_from_slice(b"k");
        page.extend_from_slice(&1u32.to_be_bytes());
        page.extend_from_slice(b"v");
        tree.insert(b"k", page).expect("inserts");
        let paged = PagedTree::open(tree.clone(), PAGE_BYTES_MAX).expect("opens");
        assert_eq!(paged.get(b"k").expect("gets"), None);
        assert_eq!(tree.len(), 1, "only the layout marker is left");
    }

    #[test]
    fn a_cut_page_is_an_error() {
        let (_dir, db) = temporary();
        let tree = db.open_tree("cut").expect("tree");
        let paged = PagedTree::open(tree.clone(), PAGE_BYTES_MAX).expect("opens");
        paged
            .apply(&[(&b"k"[..], Some(&b"value"[..]))])
            .expect("applies");
        let page = tree.get(b"k").expect("reads").expect("a page");
        tree.insert(b"k", &page[..page.len() - 1]).expect("inserts");
        assert!(matches!(paged.get(b"k"), Err(ProjectionError::Corrupt(_))));
    }
}
