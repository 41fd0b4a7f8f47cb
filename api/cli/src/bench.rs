//! `roster bench`: the performance scenarios of DESIGN section 9, each measured beside its
//! baseline in the same run, because on a shared 2-core machine only ratios are stable.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roster_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, SledOptions, SledStore, RUN_BYTES_MAX,
};
use serde::Serialize;
use serde_json::json;

/// Why a benchmark could not run; one line each. Most are the failure of what it drives,
/// passed on as that says it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] roster_eventstore::StoreError),
    #[error(transparent)]
    Append(#[from] roster_eventstore::AppendError),
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Engine(#[from] roster_engine::EngineError),
    #[error(transparent)]
    Domain(#[from] roster_domain::DomainError),
    #[error(transparent)]
    Projection(#[from] roster_projections::ProjectionError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    /// The server under load stopped with this reason.
    #[error(transparent)]
    Server(#[from] roster_server::ServeError),
    #[error("registering {resource}: {status}")]
    Register {
        resource: String,
        status: reqwest::StatusCode,
    },
    #[error("a link without a code")]
    LinkWithoutCode,
    /// `roster probe` failed; what it wrote to standard error.
    #[error("{0}")]
    Probe(String),
}

/// Durable append throughput with this many concurrent writers, beside raw sled.
#[derive(Debug, Clone, Serialize)]
pub struct AppendFigure {
    pub writers: usize,
    pub appends_per_s: f64,
    /// Appends applied in one atomic batch, on average.
    pub appends_per_group: f64,
    /// Appends made durable by one sync (one sled flush and one `fdatasync`), on average: a
    /// sync covers every group applied while the one before it ran.
    pub appends_per_sync: f64,
    /// Raw sled: batches of as many events as one of Roster's syncs covers, each
    /// `apply_batch` then `flush`.
    pub raw_sled_per_s: f64,
    /// Raw sled as above plus the `fdatasync` that makes it as durable as Roster's `sync`.
    pub raw_sled_fdatasync_per_s: f64,
    /// Raw sled writing exactly the key-value pairs Roster writes (per append its stream index
    /// entry and its command's outcome; per batch its events in runs and the chain head),
    /// in batches of the same size, each followed by a flush: what sled itself costs for
    /// Roster's layout, with nothing of Roster's own work.
    pub raw_sled_roster_keys_per_s: f64,
    /// The same plus the `fdatasync`: Roster's layout at Roster's durability.
    pub raw_sled_roster_keys_fdatasync_per_s: f64,
}

impl AppendFigure {
    pub fn versus_raw(&self) -> f64 {
        self.appends_per_s / self.raw_sled_per_s
    }

    pub fn versus_raw_fdatasync(&self) -> f64 {
        self.appends_per_s / self.raw_sled_fdatasync_per_s
    }

    pub fn versus_raw_roster_keys(&self) -> f64 {
        self.appends_per_s / self.raw_sled_roster_keys_per_s
    }

    pub fn versus_raw_roster_keys_fdatasync(&self) -> f64 {
        self.appends_per_s / self.raw_sled_roster_keys_fdatasync_per_s
    }
}

fn sample_event(writer: usize, n: u64) -> NewEvent {
    // About the size of a real membership event.
    NewEvent {
        event_id: ulid::Ulid::new().to_string(),
        event_type: "MemberAdded".into(),
        schema: 1,
        data: json!({
            "principal": format!("user-{writer}-{n}"),
            "role": "editor",
            "granted_by": "owner-1",
            "via": {"link": 1_234_567, "generation": 1},
        }),
    }
}

/// Runs the durable-append scenario for each writer count, `seconds` each, in `scratch`.
pub fn append_scenario(
    scratch: &Path,
    writer_counts: &[usize],
    seconds: f64,
) -> Result<Vec<AppendFigure>, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_secs_f64(seconds);
    let mut figures = Vec::new();
    for &writers in writer_counts {
        let dir = tempfile::tempdir_in(scratch)?;
        let store = Arc::new(SledStore::open(dir.path(), SledOptions::default())?);
        let (appends, elapsed) =
            runtime.block_on(drive_appends(Arc::clone(&store), writers, duration))?;
        let stats = store.stats();
        let envelope_bytes = runtime
            .block_on(store.read_all(0, 1))
            .ok()
            .and_then(|page| page.first().map(|e| e.to_json_line().len()))
            .unwrap_or(400);
        drop(store);
        let appends_per_group = if stats.groups == 0 {
            1.0
        } else {
            to_f64(stats.appends) / to_f64(stats.groups)
        };
        let appends_per_sync = if stats.syncs == 0 {
            1.0
        } else {
            to_f64(stats.appends) / to_f64(stats.syncs)
        };
        // A raw batch stands for what Roster makes durable with one flush: a sync's appends.
        let batch = appends_per_sync.round().max(1.0);
        let raw = raw_sled(
            scratch,
            batch,
            envelope_bytes,
            duration,
            Layout::OneKey,
            false,
        )?;
        let raw_synced = raw_sled(
            scratch,
            batch,
            envelope_bytes,
            duration,
            Layout::OneKey,
            true,
        )?;
        let roster_keys = Layout::RosterKeys { streams: writers };
        let raw_roster_keys =
            raw_sled(scratch, batch, envelope_bytes, duration, roster_keys, false)?;
        let raw_roster_keys_synced =
            raw_sled(scratch, batch, envelope_bytes, duration, roster_keys, true)?;
        figures.push(AppendFigure {
            writers,
            appends_per_s: to_f64(appends) / elapsed.as_secs_f64(),
            appends_per_group,
            appends_per_sync,
            raw_sled_per_s: raw,
            raw_sled_fdatasync_per_s: raw_synced,
            raw_sled_roster_keys_per_s: raw_roster_keys,
            raw_sled_roster_keys_fdatasync_per_s: raw_roster_keys_synced,
        });
    }
    Ok(figures)
}

async fn drive_appends(
    store: Arc<SledStore>,
    writers: usize,
    duration: Duration,
) -> Result<(u64, Duration), BenchError> {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (store, done, count) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&count));
            tokio::spawn(async move {
                let stream = format!("resource:space/bench-{writer}");
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    let request = AppendRequest::new(
                        stream.as_str(),
                        ExpectedVersion::Any,
                        vec![sample_event(writer, n)],
                    );
                    store.append(request).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok::<(), BenchError>(())
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok((count.load(Ordering::Relaxed), started.elapsed()))
}

/// What the raw baseline writes per event.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// One value under a sequential key: sled at its simplest.
    OneKey,
    /// Roster's keys (see `roster_eventstore`'s key layout): `e ‖ position` → a run of the
    /// batch's envelopes of at most `RUN_BYTES_MAX` bytes,
    /// `s ‖ stream ‖ 0 ‖ version` → the position, over `streams` streams in turn,
    /// `c ‖ command id` → a 21-byte outcome, and `m` → the chain head once per batch.
    RosterKeys { streams: usize },
}

/// Events per second that sled itself reaches writing batches of `batch` events of
/// `value_bytes` in `layout`, each batch followed by a flush (and an `fdatasync` when asked).
fn raw_sled(
    scratch: &Path,
    batch: f64,
    value_bytes: usize,
    duration: Duration,
    layout: Layout,
    fdatasync: bool,
) -> Result<f64, BenchError> {
    let dir = tempfile::tempdir_in(scratch)?;
    let defaults = SledOptions::default();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(defaults.cache_capacity_bytes)
        .flush_every_ms(Some(defaults.flush_interval_ms))
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let tree = db.open_tree("log")?;
    let data_file = std::fs::File::open(dir.path().join("db"))?;
    let value = vec![b'x'; value_bytes];
    let per_batch = batch_size(batch);
    // As many events as Roster puts in one run, and a run's bytes (its header, a length per
    // event, the events) to cut values from.
    let run_events = u64::try_from((RUN_BYTES_MAX / value_bytes.max(1)).max(1)).unwrap_or(1);
    let run = vec![b'x'; usize::try_from(run_events).unwrap_or(1) * (value_bytes + 4) + 5];
    let mut key = 0u64;
    let started = Instant::now();
    while started.elapsed() < duration {
        let mut writes = sled::Batch::default();
        let first_key = key + 1;
        for _ in 0..per_batch {
            key += 1;
            match layout {
                Layout::OneKey => writes.insert(&key.to_be_bytes(), value.as_slice()),
                Layout::RosterKeys { streams } => {
                    // A batch's events go in as runs under the first one's position.
                    if (key - first_key).is_multiple_of(run_events) {
                        let mut event = vec![b'e'];
                        event.extend_from_slice(&key.to_be_bytes());
                        let in_run = run_events.min(first_key + per_batch - key);
                        let run_len = usize::try_from(in_run).unwrap_or(1);
                        writes.insert(event, &run[..run_len * (value_bytes + 4) + 5]);
                    }
                    let streams = u64::try_from(streams.max(1)).unwrap_or(1);
                    let mut index = format!("sresource:space/bench-{}", key % streams).into_bytes();
                    index.push(0);
                    index.extend_from_slice(&(key / streams + 1).to_be_bytes());
                    writes.insert(index, &key.to_be_bytes());
                    let mut command = vec![b'c'];
                    command.extend_from_slice(ulid::Ulid::new().to_string().as_bytes());
                    writes.insert(command, &[1u8; 21][..]);
                }
            }
        }
        if let Layout::RosterKeys { .. } = layout {
            writes.insert(b"m", &[0u8; 40][..]);
        }
        tree.apply_batch(writes)?;
        db.flush()?;
        if fdatasync {
            data_file.sync_data()?;
        }
    }
    Ok(to_f64(key) / started.elapsed().as_secs_f64())
}

fn batch_size(batch: f64) -> u64 {
    // A rounded, positive average group size: small enough for an exact conversion.
    let mut size = 1u64;
    while to_f64(size) < batch {
        size += 1;
    }
    size
}

/// Counts to floats for rates; exact below 2^53, which any count here is.
pub(crate) fn to_f64(count: u64) -> f64 {
    let high = u32::try_from(count >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(count & 0xffff_ffff).unwrap_or(u32::MAX);
    f64::from(high) * 4_294_967_296.0 + f64::from(low)
}

/// The append figures as the table `roster bench` prints.
pub fn append_table(figures: &[AppendFigure]) -> String {
    let mut out = String::from(
        "durable append (sync)\n\
         writers  appends/s  per group  per sync  raw sled/s  ratio  raw sled+fdatasync/s  ratio  \
         raw sled, roster keys/s  ratio  raw sled, roster keys+fdatasync/s  ratio\n",
    );
    let single = figures
        .iter()
        .find(|f| f.writers == 1)
        .map(|f| f.appends_per_s);
    for f in figures {
        out.push_str(&format!(
            "{:>7}  {:>9.0}  {:>9.1}  {:>8.1}  {:>10.0}  {:>5.2}  {:>20.0}  {:>5.2}  {:>23.0}  {:>5.2}  {:>33.0}  {:>5.2}\n",
            f.writers,
            f.appends_per_s,
            f.appends_per_group,
            f.appends_per_sync,
            f.raw_sled_per_s,
            f.versus_raw(),
            f.raw_sled_fdatasync_per_s,
            f.versus_raw_fdatasync(),
            f.raw_sled_roster_keys_per_s,
            f.versus_raw_roster_keys(),
            f.raw_sled_roster_keys_fdatasync_per_s,
            f.versus_raw_roster_keys_fdatasync()
        ));
    }
    if let (Some(single), Some(most)) = (single, figures.iter().max_by_key(|f| f.writers)) {
        out.push_str(&format!(
            "{} writers reach {:.1}x the 1-writer rate\n",
            most.writers,
            most.appends_per_s / single
        ));
    }
    out
}
