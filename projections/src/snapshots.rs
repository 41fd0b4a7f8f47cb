//! Snapshots of resource states: a cache derived from the log, so that a cold load of a long
//! stream or a past rolemap folds only the events after the nearest snapshot.
//!
//! A snapshot is never a source of truth. It names the event it was taken after (stream
//! version, global position and that event's hash) and is used only when the log still holds
//! that very event; anything else (a format this code does not read, a log restored from an
//! export, a snapshot of a state whose events a crash took back) is skipped, and the state is
//! folded from further back. Losing the whole tree loses nothing but time.
//!
//! Layout: one directory per stream under `snapshots/` (named by the SHA-256 of the stream's
//! name, since names may hold any character), one file per snapshot, named
//! `version.position.latest_ms.hash` so that choosing one reads no state; the file holds a
//! format byte and the state as JSON. Files, not sled: sled 0.34 keeps values inside its tree
//! pages, and pages of states of megabytes are rewritten whole on every insert.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use roster_domain::ResourceState;
use roster_eventstore::{Envelope, EventStore, Hash};

use crate::as_of::AsOf;
use crate::ProjectionError;

/// A temporary file this old is left over from a save that never finished (the process
/// stopped between write and rename): removed when its stream is next saved. Younger ones may
/// belong to a save in progress.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Bumped whenever `ResourceState`'s serialised form changes, or what `evolve` makes of an event
/// does (a snapshot holds the old meaning, and the log's hash still backs it); older snapshots
/// are skipped.
const FORMAT: u8 = 2;

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

/// (stream, version) → what the name would say, and the file's bytes.
type MemoryFiles = BTreeMap<(String, u64), (IndexEntry, Vec<u8>)>;

enum Storage {
    Files(PathBuf),
    Memory(Mutex<MemoryFiles>),
}

/// Where snapshots are kept: files beside the log, or memory for the in-memory engine.
pub struct Snapshots {
    storage: Storage,
}

/// What a snapshot's name says: its event and time, without its state.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    version: u64,
    position: u64,
    latest_ms: i64,
    hash: Hash,
}

impl IndexEntry {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The hash of the event the snapshot was taken after.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Whether `event` (of the snapshot's stream) is the very event the snapshot was taken
    /// after: only then does the log back it, and may a fold start from it (and `roster
    /// verify` compare it with the log). Anything else is passed over.
    pub fn taken_after(&self, event: &Envelope) -> bool {
        event.version == self.version && event.position == self.position && event.hash == self.hash
    }

    fn file_name(&self) -> String {
        format!(
            "{:020}.{:020}.{}.{}",
            self.version, self.position, self.latest_ms, self.hash
        )
    }

    fn parse(name: &str) -> Option<IndexEntry> {
        let mut parts = name.split('.');
        let entry = IndexEntry {
            version: parts.next()?.parse().ok()?,
            position: parts.next()?.parse().ok()?,
            latest_ms: parts.next()?.parse().ok()?,
            hash: Hash::from_hex(parts.next()?)?,
        };
        parts.next().is_none().then_some(entry)
    }

    /// Whether a fold up to `as_of` may start from this snapshot: no event it holds is past
    /// that moment (its latest time stands for them all, since times are not in log order).
    fn covers(&self, as_of: AsOf) -> bool {
        as_of.includes(self.position, self.latest_ms)
    }
}

fn io_error(error: std::io::Error) -> ProjectionError {
    ProjectionError::Io(format!("snapshots: {error}"))
}

impl Snapshots {
    /// Snapshots in `dir` (created when the first is taken).
    pub fn in_dir(dir: &Path) -> Snapshots {
        Snapshots {
            storage: Storage::Files(dir.to_path_buf()),
        }
    }

    pub fn in_memory() -> Snapshots {
        Snapshots {
            storage: Storage::Memory(Mutex::new(BTreeMap::new())),
        }
    }

    fn stream_dir(root: &Path, stream: &str) -> PathBuf {
        root.join(hex::encode(Sha256::digest(stream.as_bytes())))
    }

    /// Keeps a snapshot: written to a temporary name and renamed, not synced (a snapshot is a
    /// cache): after a crash its file may be missing, empty or torn, which does not parse and
    /// is passed over.
    pub fn save(&self, stream: &str, snapshot: &Snapshot) -> Result<(), ProjectionError> {
        let entry = IndexEntry {
            version: snapshot.version,
            position: snapshot.position,
            latest_ms: snapshot.latest_ms,
            hash: snapshot.hash,
        };
        let mut data = vec![FORMAT];
        serde_json::to_writer(&mut data, &snapshot.state)
            .map_err(|e| ProjectionError::Io(format!("a snapshot could not be written: {e}")))?;
        match &self.storage {
            Storage::Files(root) => {
                let dir = Snapshots::stream_dir(root, stream);
                std::fs::create_dir_all(&dir).map_err(io_error)?;
                let temporary = dir.join(format!(".{}.tmp", snapshot.version));
                std::fs::write(&temporary, &data).map_err(io_error)?;
                std::fs::rename(&temporary, dir.join(entry.file_name())).map_err(io_error)?;
                remove_stale_temporaries(&dir)?;
            }
            Storage::Memory(map) => {
                map.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((stream.to_string(), snapshot.version), (entry, data));
            }
        }
        Ok(())
    }

    /// The snapshots of a stream, newest first.
    fn index(&self, stream: &str) -> Result<Vec<IndexEntry>, ProjectionError> {
        let mut entries = match &self.storage {
            Storage::Files(root) => {
                let dir = match std::fs::read_dir(Snapshots::stream_dir(root, stream)) {
                    Ok(dir) => dir,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_error(e)),
                };
                let mut entries = Vec::new();
                for file in dir {
                    let name = file.map_err(io_error)?.file_name();
                    entries.extend(name.to_str().and_then(IndexEntry::parse));
                }
                entries
            }
            Storage::Memory(map) => map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .range((stream.to_string(), 0)..=(stream.to_string(), u64::MAX))
                .map(|(_, (entry, _))| entry.clone())
                .collect(),
        };
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.version));
        Ok(entries)
    }

    fn data(&self, stream: &str, entry: &IndexEntry) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(match &self.storage {
            Storage::Files(root) => {
                read_file(&Snapshots::stream_dir(root, stream).join(entry.file_name()))?
            }
            Storage::Memory(map) => map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&(stream.to_string(), entry.version))
                .map(|(_, data)| data.clone()),
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
            if !logged.first().is_some_and(|e| entry.taken_after(e)) {
                continue;
            }
            if let Some(snapshot) = self.read_off_runtime(stream, entry).await? {
                return Ok(Some(snapshot));
            }
        }
        Ok(None)
    }

    /// What every snapshot of `stream` names, oldest first, whether or not the log backs it:
    /// for `roster verify`, which reads those whose event the log holds (`read_named`) and
    /// compares each with the state folded from the log.
    pub fn names(&self, stream: &str) -> Result<Vec<IndexEntry>, ProjectionError> {
        let mut entries = self.index(stream)?;
        entries.reverse();
        Ok(entries)
    }

    /// The snapshot `entry` names; `None` when its file is gone, torn, or in a format this
    /// code does not read.
    pub fn read_named(
        &self,
        stream: &str,
        entry: &IndexEntry,
    ) -> Result<Option<Snapshot>, ProjectionError> {
        self.read(stream, entry)
    }

    /// The snapshot an index entry names; `None` when its file is gone, torn, or in a format
    /// this code does not read.
    fn read(&self, stream: &str, entry: &IndexEntry) -> Result<Option<Snapshot>, ProjectionError> {
        let data = self.data(stream, entry)?;
        Ok(data.and_then(|data| parse(&data, entry)))
    }

    /// `read` on a blocking thread: a snapshot of a large resource is megabytes to read and
    /// parse, which must not hold up the runtime's workers (they serve the HTTP requests).
    async fn read_off_runtime(
        &self,
        stream: &str,
        entry: IndexEntry,
    ) -> Result<Option<Snapshot>, ProjectionError> {
        let Storage::Files(root) = &self.storage else {
            return self.read(stream, &entry);
        };
        let path = Snapshots::stream_dir(root, stream).join(entry.file_name());
        tokio::task::spawn_blocking(move || Ok(read_file(&path)?.and_then(|d| parse(&d, &entry))))
            .await
            .map_err(|e| ProjectionError::Io(format!("snapshots: {e}")))?
    }
}

/// Removes the temporary files in a stream's directory that saves cut off between write and
/// rename left behind. Snapshots themselves are all kept: see "Snapshots" in
/// docs/ARCHITECTURE.md for why.
fn remove_stale_temporaries(dir: &Path) -> Result<(), ProjectionError> {
    for file in std::fs::read_dir(dir).map_err(io_error)? {
        let file = file.map_err(io_error)?;
        if !file
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".tmp"))
        {
            continue;
        }
        // Only temporary files are looked at: a stream's snapshots are not stat'ed per save.
        let age = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if age.is_some_and(|age| age > STALE_TEMPORARY) {
            match std::fs::remove_file(file.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A snapshot file's bytes; `None` when it is gone.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, ProjectionError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// A snapshot file's bytes as the snapshot its name describes; `None` when torn or in a
/// format this code does not read.
fn parse(data: &[u8], entry: &IndexEntry) -> Option<Snapshot> {
    let state = match data.split_first() {
        Some((&FORMAT, json)) => serde_json::from_slice::<ResourceState>(json).ok(),
        _ => None,
    };
    state.map(|state| Snapshot {
        version: entry.version,
        position: entry.position,
        latest_ms: entry.latest_ms,
        hash: entry.hash,
        state,
    })
}

/// Snapshots checked against the log (`roster verify`): fed each event of a resource with
/// the state the log gives after it, it compares every snapshot taken at that version with
/// that state, as `as_of` would read it. A snapshot the log does not back (of an event a crash
/// took back, or of an older chain) is passed over when read, so it is passed over here too.
pub struct SnapshotCheck<'s> {
    snapshots: &'s Snapshots,
    streams: std::collections::HashMap<String, SnapshotCursor>,
}

/// A stream's snapshots still ahead of the check, and the latest time of its events so far
/// (a snapshot records it, for `as_of` by time).
struct SnapshotCursor {
    latest_ms: i64,
    ahead: std::collections::VecDeque<IndexEntry>,
}

impl<'s> SnapshotCheck<'s> {
    pub fn new(snapshots: &'s Snapshots) -> SnapshotCheck<'s> {
        SnapshotCheck {
            snapshots,
            streams: std::collections::HashMap::new(),
        }
    }

    /// After `envelope`, the resource is `state`: every snapshot of its stream taken at its
    /// version must equal it. `Err` says which differs.
    pub fn after(&mut self, envelope: &Envelope, state: &ResourceState) -> Result<(), String> {
        let cursor = match self.streams.entry(envelope.stream.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(SnapshotCursor {
                latest_ms: i64::MIN,
                ahead: self
                    .snapshots
                    .names(&envelope.stream)
                    .map_err(|e| e.to_string())?
                    .into(),
            }),
        };
        cursor.latest_ms = cursor.latest_ms.max(envelope.occurred_at.0);
        while cursor
            .ahead
            .front()
            .is_some_and(|name| name.version() <= envelope.version)
        {
            let name = cursor.ahead.pop_front();
            let Some(name) = name.filter(|n| n.taken_after(envelope)) else {
                continue;
            };
            let Some(snapshot) = self
                .snapshots
                .read_named(&envelope.stream, &name)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let from_the_log = Snapshot {
                version: envelope.version,
                position: envelope.position,
                latest_ms: cursor.latest_ms,
                hash: envelope.hash,
                state: state.clone(),
            };
            if snapshot != from_the_log {
                let resource = envelope.stream.trim_start_matches("resource:");
                return Err(format!(
                    "the snapshot of {resource} at version {} differs from the log (remove the \
                     data directory's snapshots/ to have it taken again)",
                    name.version()
                ));
            }
        }
        Ok(())
    }
}
