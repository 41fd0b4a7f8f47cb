//! The storage primitives under the log: an ordered key-value space with atomic batches and
//! a durable sync, implemented on sled and in memory.
//!
//! Everything above this file (group commit, the chain, idempotency, subscriptions, verify)
//! is written once, so both stores behave the same by construction and the shared test
//! suite checks the primitives.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use crate::error::StoreError;

/// The key layout of the log, all in one keyspace so one batch is atomic over all of it.
/// Integers are big-endian so byte order is numeric order.
pub(crate) mod keys {
    /// `e ‖ position` → envelope JSON.
    pub const EVENT: u8 = b'e';
    /// `s ‖ stream ‖ 0 ‖ version` → position. Stream names never hold a NUL.
    pub const STREAM: u8 = b's';
    /// `c ‖ command id` → the first outcome of that command.
    pub const COMMAND: u8 = b'c';
    /// `m` → last position ‖ its hash: the head of the chain.
    pub const CHAIN_HEAD: &[u8] = b"m";

    pub fn event(position: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(9);
        key.push(EVENT);
        key.extend_from_slice(&position.to_be_bytes());
        key
    }

    pub fn stream_prefix(stream: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(stream.len() + 10);
        key.push(STREAM);
        key.extend_from_slice(stream.as_bytes());
        key.push(0);
        key
    }

    pub fn stream_version(stream: &str, version: u64) -> Vec<u8> {
        let mut key = stream_prefix(stream);
        key.extend_from_slice(&version.to_be_bytes());
        key
    }

    /// The version at the end of a stream index key.
    pub fn stream_version_of(key: &[u8]) -> Option<u64> {
        decode_u64(key.get(key.len().checked_sub(8)?..)?)
    }

    pub fn command(command_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(command_id.len() + 1);
        key.push(COMMAND);
        key.extend_from_slice(command_id.as_bytes());
        key
    }

    pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
    }
}

/// One entry read back: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The ordered key-value primitives the log needs.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `start <= key < end`, ascending (or descending when `reverse`), at most `limit`.
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError>;
    /// Writes every pair at once or none of them.
    fn apply(&self, batch: Vec<Entry>) -> Result<(), StoreError>;
    /// Makes everything applied so far survive a crash or a power cut, as the durability
    /// mode promises for an acknowledged append.
    fn sync(&self) -> Result<(), StoreError>;
    /// As `sync`, calling `written_out` as soon as an `apply` would no longer wait for the
    /// sync (for sled: once its log is written, before the `fdatasync`), so that the writer
    /// applies the next group during the rest of it.
    fn sync_phased(&self, written_out: &mut dyn FnMut()) -> Result<(), StoreError> {
        let synced = self.sync();
        written_out();
        synced
    }
    /// Makes everything durable whatever the mode: called when the store closes.
    fn close(&self) -> Result<(), StoreError> {
        self.sync()
    }
}

/// A backend shared with whoever else holds it: a log owns one handle while a test keeps
/// another, to read or edit the records the log wrote.
impl<B: Backend> Backend for std::sync::Arc<B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        B::get(self, key)
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        B::scan(self, start, end, limit, reverse)
    }

    fn apply(&self, batch: Vec<Entry>) -> Result<(), StoreError> {
        B::apply(self, batch)
    }

    fn sync(&self) -> Result<(), StoreError> {
        B::sync(self)
    }

    fn sync_phased(&self, written_out: &mut dyn FnMut()) -> Result<(), StoreError> {
        B::sync_phased(self, written_out)
    }

    fn close(&self) -> Result<(), StoreError> {
        B::close(self)
    }
}

/// A `BTreeMap` behind a lock: the in-memory store for tests and for hosts' own property tests.
#[derive(Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic elsewhere while holding the lock cannot leave a half-applied batch
        // (apply extends in one call), so a poisoned lock is still consistent.
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(key).cloned())
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let map = self.read();
        let range = map.range::<[u8], _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        ));
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse {
            range.rev().take(limit).map(clone).collect()
        } else {
            range.take(limit).map(clone).collect()
        })
    }

    fn apply(&self, batch: Vec<Entry>) -> Result<(), StoreError> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// How hard an acknowledged append is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged means on stable storage: sled's flush, then `fdatasync` of its files.
    #[default]
    Sync,
    /// Acknowledged once applied; sled's own flusher makes it durable every few milliseconds.
    /// A crash may lose the last moments, never corrupt the log.
    Relaxed,
}

/// The word `FromStr` reads, so that a default can be shown and read back (`roster serve
/// --help`).
impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Relaxed => "relaxed",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(text: &str) -> Result<Durability, String> {
        match text {
            "sync" => Ok(Durability::Sync),
            "relaxed" => Ok(Durability::Relaxed),
            other => Err(format!("durability is `sync` or `relaxed`, not `{other}`")),
        }
    }
}

/// Settings of the sled store.
#[derive(Debug, Clone)]
pub struct SledOptions {
    pub durability: Durability,
    /// How often sled's background thread flushes and fsyncs (the bound on loss in `relaxed`).
    pub flush_interval_ms: u64,
    /// sled's page cache; sled's default of 1 GiB is more than a small server should take.
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> SledOptions {
        SledOptions {
            durability: Durability::Sync,
            flush_interval_ms: 5,
            cache_capacity_bytes: 128 * 1024 * 1024,
        }
    }
}

/// The log's keyspace as one sled tree, and what it takes to make sled's writes truly durable.
///
/// sled 0.34 writes its log buffers with `pwrite` and then `sync_file_range(WAIT_BEFORE |
/// WRITE | WAIT_AFTER)` on the written range: that pushes the pages to the device but neither
/// persists the file's metadata (its grown size) nor flushes the device's volatile write
/// cache, and large values go to files under `blobs/` with no sync at all. Its background
/// thread does call `fsync`, but only every `flush_every_ms`. So `sync` here adds an
/// `fdatasync` of the `db` file after each group's flush, and of any blob file written since
/// the last group (see docs/ARCHITECTURE.md).
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    durability: Durability,
    data_file: File,
    blobs_dir: PathBuf,
    blobs_synced_at: Mutex<Option<SystemTime>>,
}

/// How long an open waits for a lock that is held, before it says so: enough for sled's I/O
/// threads to let go of a database this process closed, short for an operator to wait.
const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// sled's settings file in a data directory.
const CONFIG_FILE: &str = "conf";

/// Removes sled's `conf` when a power cut tore it (its last four bytes are not the CRC-32 of
/// the rest): sled would refuse to open with "corrupted data", while the file only repeats
/// settings sled writes again when it is absent, and Roster always opens with the same ones.
/// An empty or short `conf` (a cut before any of it was synced) sled already treats as absent.
fn remove_torn_config(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    if bytes.len() <= 8 {
        return Ok(());
    }
    let (settings, crc) = bytes.split_at(bytes.len() - 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(settings);
    if hasher.finalize().to_le_bytes() != crc {
        tracing::warn!(path = %path.display(), "sled's settings file was torn (a power cut before it was synced): writing it again");
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

impl SledBackend {
    pub fn open(path: &Path, options: &SledOptions) -> Result<SledBackend, StoreError> {
        std::fs::create_dir_all(path)?;
        remove_torn_config(path)?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(Some(options.flush_interval_ms.max(1)))
            .mode(sled::Mode::HighThroughput);
        // sled reports a held lock as an I/O error whose text names it.
        let locked = |error: &sled::Error| matches!(error, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
        // A database this process has just dropped can stay locked a moment: sled 0.34's
        // I/O pool threads hold its file until their last write task returns, after the drop
        // has already flushed. Reopening it (a close then an open, a test's engine then the
        // `roster` binary) waits that out, a bounded time, before calling the lock another's.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        let db = loop {
            match config.open() {
                Err(error) if locked(&error) && started.elapsed() < LOCK_WAIT_MAX => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(error) if locked(&error) => {
                    return Err(StoreError::Io(format!(
                        "the data directory {} is locked by another process",
                        path.display()
                    )))
                }
                opened => break opened?,
            }
        };
        let tree = db.open_tree("log")?;
        let data_file = File::open(path.join("db"))?;
        // sled writes its `conf` once and never syncs it: sync it, so a power cut cannot tear
        // it later (one cut before this sync is mended by `remove_torn_config` next time).
        File::open(path.join(CONFIG_FILE))?.sync_all()?;
        // The directory entries of sled's files must survive too: sync the directory once,
        // and its parent, which holds the directory's own entry when this open made it.
        File::open(path)?.sync_all()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(SledBackend {
            db,
            tree,
            durability: options.durability,
            data_file,
            blobs_dir: path.join("blobs"),
            blobs_synced_at: Mutex::new(None),
        })
    }

    /// The whole sled database, for the read models that live in trees beside the log.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        // One stat per group in the common case: only look inside when the directory changed.
        let changed_at = std::fs::metadata(&self.blobs_dir)?.modified()?;
        let mut synced_at = self
            .blobs_synced_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if synced_at.is_some_and(|at| at >= changed_at) {
            return Ok(());
        }
        for entry in std::fs::read_dir(&self.blobs_dir)?.flatten() {
            // sled deletes blobs as it rewrites them: one gone between the listing and the
            // look at it needs no sync.
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if synced_at.is_none_or(|at| modified >= at) {
                if let Ok(file) = File::open(entry.path()) {
                    file.sync_data()?;
                }
            }
        }
        File::open(&self.blobs_dir)?.sync_all()?;
        *synced_at = Some(changed_at);
        Ok(())
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let range = self.tree.range(start..end);
        let entries: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if reverse {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut out = Vec::new();
        for entry in entries.take(limit) {
            let (key, value) = entry?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: Vec<Entry>) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch {
            sled_batch.insert(key, value);
        }
        Ok(self.tree.apply_batch(sled_batch)?)
    }

    fn sync(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::Relaxed => Ok(()),
            Durability::Sync => self.close(),
        }
    }

    fn sync_phased(&self, written_out: &mut dyn FnMut()) -> Result<(), StoreError> {
        if self.durability == Durability::Relaxed {
            written_out();
            return Ok(());
        }
        // sled 0.34 holds a process-wide lock shared for the whole of a flush (its log
        // written and `sync_file_range` waited for) that `apply_batch` takes exclusively:
        // the `fdatasync` after it is where an apply can run beside the sync.
        let flushed = self.db.flush();
        written_out();
        flushed?;
        self.data_file.sync_data()?;
        self.sync_new_blobs()
    }

    fn close(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        self.sync_new_blobs()
    }
}
