//! The log over a backend: opening it, the writer handle, reads with their invariant checks,
//! and the live tail.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

use crate::append::{AppendRequest, Appended};
use crate::backend::{keys, Backend, MemoryBackend, SledBackend, SledOptions};
use crate::envelope::{Envelope, Hash, Timestamp};
use crate::error::{AppendError, StoreError};
use crate::stored;
use crate::subscription::{ReadAll, Subscription};
use crate::writer::{self, validate_name, Job};
use crate::EventStore;

/// Bounds on what the log accepts and on how much the writer takes at once.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Commands committed together in one group (one batch, one sync).
    pub group_commands_max: usize,
    /// Commands waiting for the writer; senders wait when it is full.
    pub queue_commands_max: usize,
    pub events_per_append_max: usize,
    pub event_bytes_max: usize,
    pub stream_bytes_max: usize,
    /// Events a read returns at most, whatever limit the caller asked for.
    pub read_events_max: usize,
    /// Stream versions the writer keeps in memory to skip an index lookup per command.
    pub stream_heads_cached_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            group_commands_max: 4096,
            queue_commands_max: 65_536,
            events_per_append_max: 1000,
            event_bytes_max: 1024 * 1024,
            stream_bytes_max: 512,
            read_events_max: 10_000,
            stream_heads_cached_max: 100_000,
        }
    }
}

/// The last event's position and hash, and the latest time the log holds: the writer never
/// stamps an event earlier than that, so times rise with positions. Only the position and the
/// hash are stored; the time is the last event's, read back at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainHead {
    pub position: u64,
    pub hash: Hash,
    pub latest: Timestamp,
}

impl ChainHead {
    /// The time the writer gives an append asked for at `requested`: never before the log's
    /// latest.
    pub fn stamp(&self, requested: Timestamp) -> Timestamp {
        requested.max(self.latest)
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut bytes = self.position.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.hash.0);
        bytes
    }

    pub fn load<B: Backend>(backend: &B) -> Result<ChainHead, StoreError> {
        let Some(bytes) = backend.get(keys::CHAIN_HEAD)? else {
            return Ok(ChainHead {
                position: 0,
                hash: Hash::GENESIS,
                latest: Timestamp(i64::MIN),
            });
        };
        let position = keys::decode_u64(&bytes)
            .ok_or_else(|| StoreError::corrupt(0, "the chain head record"))?;
        let hash = bytes
            .get(8..40)
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .ok_or_else(|| StoreError::corrupt(position, "the chain head record"))?;
        let latest = if position == 0 {
            Timestamp(i64::MIN)
        } else {
            crate::stored::read_event(backend, position)?.occurred_at
        };
        Ok(ChainHead {
            position,
            hash: Hash(hash),
            latest,
        })
    }
}

/// What the writer thread and the readers share.
pub(crate) struct Shared<B> {
    pub backend: B,
    pub limits: Limits,
    /// The last position acknowledged (durable as promised); reads never go past it, so a
    /// reader never sees an event that a crash could still take back.
    pub visible_head: AtomicU64,
    pub groups_committed: AtomicU64,
    pub appends_committed: AtomicU64,
    pub syncs_committed: AtomicU64,
    /// Whether the syncer is writing the backend's buffers out, which an apply would wait for.
    pub flushing: writer::FlushGate,
}

/// Counters of the writer's work, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Groups written, each one atomic batch.
    pub groups: u64,
    /// Appends that wrote events, over all groups.
    pub appends: u64,
    /// Syncs that made groups durable; one covers every group applied while the one before
    /// it ran.
    pub syncs: u64,
}

/// The event log: one writer, any number of readers. Generic over where the bytes live.
pub struct Log<B: Backend> {
    shared: Arc<Shared<B>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Kept only to hand out receivers; the writer holds the other sender, so once both are
    /// gone (closed) subscriptions end instead of waiting forever.
    tail: Mutex<Option<broadcast::Sender<Arc<[Envelope]>>>>,
}

/// The durable log on sled.
pub type SledStore = Log<SledBackend>;
/// The same log in memory, for tests.
pub type MemoryStore = Log<MemoryBackend>;

impl SledStore {
    /// Opens (or creates) the log in `path`, checking the chain head against the last event.
    pub fn open(path: &Path, options: SledOptions) -> Result<SledStore, StoreError> {
        Log::with_backend(SledBackend::open(path, &options)?, Limits::default())
    }

    /// Writes a verified sequence of envelopes (an export) into an empty log in `path`,
    /// keeping their positions and hashes. Refuses a log that holds events.
    pub fn import(
        path: &Path,
        options: SledOptions,
        envelopes: &mut dyn Iterator<Item = Result<Envelope, StoreError>>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        let backend = SledBackend::open(path, &options)?;
        crate::import::import_into(&backend, envelopes, progress)
    }

    /// The sled database, for the read models that keep their trees beside the log.
    pub fn db(&self) -> &sled::Db {
        self.shared.backend.db()
    }

    /// Opens and closes the closed log in `path` once, so the next start is quick.
    ///
    /// sled 0.34 writes the snapshot of its page table only while opening: it reads the last
    /// snapshot, scans every log segment written since, and saves the result. A server that
    /// ran for long leaves all it wrote to be scanned by the next start (3.5 s after 1,000,000
    /// events); settling after a clean stop moves that scan to the stop.
    pub fn settle(path: &Path) -> Result<(), StoreError> {
        let store = SledStore::open(path, SledOptions::default())?;
        store.close();
        Ok(())
    }
}

impl MemoryStore {
    pub fn in_memory() -> MemoryStore {
        // The in-memory backend cannot fail to open.
        match Log::with_backend(MemoryBackend::default(), Limits::default()) {
            Ok(store) => store,
            Err(error) => unreachable!("an empty in-memory log is consistent: {error}"),
        }
    }
}

impl<B: Backend> Log<B> {
    pub fn with_backend(backend: B, limits: Limits) -> Result<Log<B>, StoreError> {
        let chain = ChainHead::load(&backend)?;
        check_head(&backend, chain)?;
        let (jobs, receiver) = mpsc::channel(limits.queue_commands_max.max(1));
        let (tail, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            backend,
            limits,
            visible_head: AtomicU64::new(chain.position),
            groups_committed: AtomicU64::new(0),
            appends_committed: AtomicU64::new(0),
            syncs_committed: AtomicU64::new(0),
            flushing: writer::FlushGate::default(),
        });
        let writer_shared = Arc::clone(&shared);
        let writer_tail = tail.clone();
        let writer = std::thread::Builder::new()
            .name("roster-log-writer".into())
            .spawn(move || writer::run(writer_shared, receiver, writer_tail, chain))?;
        Ok(Log {
            shared,
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(writer)),
            tail: Mutex::new(Some(tail)),
        })
    }

    /// Stops the writer after the commands already queued, and makes the log durable.
    /// Appends after this answer `Closed`.
    pub fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        drop(
            self.tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            if writer.join().is_err() {
                tracing::error!("the log writer panicked");
            }
        }
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            groups: self.shared.groups_committed.load(Ordering::Relaxed),
            appends: self.shared.appends_committed.load(Ordering::Relaxed),
            syncs: self.shared.syncs_committed.load(Ordering::Relaxed),
        }
    }

    /// Hands the stored JSON of every event in the store to `visit`, in log order, parsing
    /// nothing and checking nothing: the raw scan that `roster bench replay` measures replay
    /// against. Returns the events visited.
    pub fn scan_stored_json(
        &self,
        visit: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        const PAGE_ENTRIES: usize = 1024;
        let mut start = keys::event(0);
        let mut visited = 0u64;
        loop {
            let page = self
                .shared
                .backend
                .scan(&start, &[keys::EVENT + 1], PAGE_ENTRIES, false)?;
            for (key, value) in &page {
                for (_, bytes) in stored::unpack(key, value)? {
                    visit(bytes)?;
                    visited += 1;
                }
            }
            match page.last() {
                Some((key, _)) if page.len() == PAGE_ENTRIES => {
                    start = key.clone();
                    start.push(0);
                }
                _ => return Ok(visited),
            }
        }
    }

    fn head_position(&self) -> u64 {
        self.shared.visible_head.load(Ordering::Acquire)
    }

    fn read_events(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        read_all(&self.shared, after, limit)
    }

    fn read_stream_events(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        validate_name("stream", stream, self.shared.limits.stream_bytes_max)?;
        let limit = limit.min(self.shared.limits.read_events_max);
        let visible = self.head_position();
        let start = keys::stream_version(stream, from_version.max(1));
        let end = keys::stream_version(stream, u64::MAX);
        let mut events = Vec::new();
        let mut reader = stored::EventReader::default();
        for (key, value) in self.shared.backend.scan(&start, &end, limit, false)? {
            let position = keys::decode_u64(&value)
                .ok_or_else(|| StoreError::corrupt(0, "a stream index entry"))?;
            if position > visible {
                break;
            }
            let version = keys::stream_version_of(&key)
                .ok_or_else(|| StoreError::corrupt(position, "a stream index key"))?;
            let envelope = reader.read(&self.shared.backend, position)?;
            let expected_version = events
                .last()
                .map_or(from_version.max(1), |e: &Envelope| e.version + 1);
            if envelope.stream != stream
                || envelope.version != version
                || version != expected_version
            {
                return Err(StoreError::corrupt(
                    position,
                    format!(
                        "stream {stream} expected version {expected_version}, found {} of {}",
                        envelope.version, envelope.stream
                    ),
                ));
            }
            events.push(envelope);
        }
        Ok(events)
    }

    fn stream_head_version(&self, stream: &str) -> Result<u64, StoreError> {
        validate_name("stream", stream, self.shared.limits.stream_bytes_max)?;
        let visible = self.head_position();
        let start = keys::stream_prefix(stream);
        let end = keys::stream_version(stream, u64::MAX);
        // The newest index entries may belong to a group still syncing: skip those.
        let mut upper = end;
        loop {
            let entries = self.shared.backend.scan(&start, &upper, 64, true)?;
            let Some((last_key, _)) = entries.last() else {
                return Ok(0);
            };
            for (key, value) in &entries {
                let position = keys::decode_u64(value)
                    .ok_or_else(|| StoreError::corrupt(0, "a stream index entry"))?;
                if position <= visible {
                    return keys::stream_version_of(key)
                        .ok_or_else(|| StoreError::corrupt(position, "a stream index key"));
                }
            }
            upper = last_key.clone();
        }
    }
}

impl<B: Backend> Drop for Log<B> {
    fn drop(&mut self) {
        self.close();
    }
}

/// On open: the stored chain head must name the last event, and nothing may follow it.
fn check_head<B: Backend>(backend: &B, chain: ChainHead) -> Result<(), StoreError> {
    let last = stored::last_event(backend)?;
    let last_position = last.as_ref().map_or(0, |e| e.position);
    if last_position > chain.position {
        return Err(StoreError::corrupt(
            chain.position + 1,
            "an event after the chain head",
        ));
    }
    if chain.position > 0 {
        let Some(last) = last.filter(|e| e.position == chain.position) else {
            return Err(StoreError::corrupt(chain.position, "missing event"));
        };
        if last.hash != chain.hash {
            return Err(StoreError::corrupt(
                chain.position,
                "the chain head's hash differs from the last event's",
            ));
        }
    }
    Ok(())
}

/// Reads events after `after`, checking on the way that positions are gap-free and each
/// event links to the one before it.
/// The stored JSON of the events after `after`, at most `limit` (and the store's own limit),
/// never past the acknowledged head, with their positions checked gap-free.
fn read_all_stored<B: Backend>(
    shared: &Shared<B>,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let visible = shared.visible_head.load(Ordering::Acquire);
    let limit = limit.min(shared.limits.read_events_max);
    let last = visible.min(after.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)));
    if last <= after {
        return Ok(Vec::new());
    }
    let entries = stored::scan_events(&shared.backend, after + 1, last)?;
    for (expected, (position, _)) in (after + 1..).zip(&entries) {
        if *position != expected {
            return Err(StoreError::corrupt(expected, "missing event"));
        }
    }
    if u64::try_from(entries.len()).unwrap_or(u64::MAX) != last - after {
        return Err(StoreError::corrupt(
            after + 1 + u64::try_from(entries.len()).unwrap_or(0),
            "missing event",
        ));
    }
    Ok(entries)
}

fn read_all<B: Backend>(
    shared: &Shared<B>,
    after: u64,
    limit: usize,
) -> Result<Vec<Envelope>, StoreError> {
    let entries = read_all_stored(shared, after, limit)?;
    let mut events: Vec<Envelope> = Vec::with_capacity(entries.len());
    for (position, bytes) in &entries {
        let envelope = stored::decode(*position, bytes)?;
        if let Some(previous) = events.last() {
            if envelope.prev_hash != previous.hash {
                return Err(StoreError::corrupt(
                    *position,
                    "prev_hash does not match the previous event's hash",
                ));
            }
        }
        events.push(envelope);
    }
    Ok(events)
}

#[async_trait]
impl<B: Backend> ReadAll for Shared<B> {
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        read_all(self, after, limit)
    }
}

#[async_trait]
impl<B: Backend> EventStore for Log<B> {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        crate::writer::submit(&self.jobs, request).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        self.read_stream_events(stream, from_version, limit)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        self.read_events(after, limit)
    }

    async fn read_all_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_all_stored(&self.shared, after, limit)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        self.stream_head_version(stream)
    }

    fn head(&self) -> u64 {
        self.head_position()
    }

    fn close(&self) {
        Log::close(self);
    }

    fn subscribe(&self, after: u64) -> Subscription {
        let reader: Arc<dyn ReadAll> = self.shared.clone();
        let live = match &*self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(tail) => tail.subscribe(),
            // Closed: a receiver whose sender is gone reads the store, then ends.
            None => broadcast::channel(1).1,
        };
        Subscription::new(reader, live, after)
    }
}
