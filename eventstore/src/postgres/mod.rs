//! The log on PostgreSQL, shared by any number of nodes (DESIGN section 10): the same
//! envelopes, bytes and chain as on sled, positions gap-free because one row (the chain's
//! head) is locked by every group commit, and a follower that feeds each node's subscribers
//! what any node appended (notifications wake it, polling by position is the truth).

mod follow;
mod schema;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{Client, NoTls};

use crate::append::{AppendRequest, Appended};
use crate::envelope::Envelope;
use crate::error::{AppendError, StoreError};
use crate::log::Limits;
use crate::stored;
use crate::subscription::{ReadAll, Subscription};
use crate::writer::{validate_name, Job};
use crate::{Catchup, EventStore};

pub use schema::{check_schema_name, Identity, FORMAT_LEVEL};

/// How a node reaches its PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A `postgres://` URL (or key=value connection string).
    pub url: String,
    /// The schema that holds the tables, `roster` by default.
    pub schema: String,
    /// Connections shared by reads (the writer and the follower have their own).
    pub pool_size: usize,
    /// How long a read waits for a pooled connection before it is refused as unavailable.
    pub pool_wait: Duration,
    /// How often the follower reads the log when no notification woke it.
    pub poll_interval: Duration,
    /// Whether the follower listens for notifications (off only to test polling alone).
    pub notifications: bool,
    /// The longest a group waits for the head's lock, and a connection for its server; also
    /// how long a session may stay idle inside a transaction before PostgreSQL ends it, so
    /// that a node stopped while holding the lock does not hold up the others.
    pub lock_timeout: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: "roster".into(),
            pool_size: 16,
            pool_wait: Duration::from_secs(2),
            poll_interval: Duration::from_millis(500),
            notifications: true,
            lock_timeout: Duration::from_secs(2),
        }
    }

    /// The driver's settings: the URL's, with the timeouts that cut off a stalled session
    /// (a node stopped while it holds the head's lock, a network that went silent).
    fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("the store's URL: {e}")))?;
        let ms = |d: Duration| d.as_millis().max(1);
        config
            .connect_timeout(self.lock_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .tcp_user_timeout(self.lock_timeout * 2)
            .options(format!(
                "-c lock_timeout={} -c idle_in_transaction_session_timeout={} -c synchronous_commit=on",
                ms(self.lock_timeout),
                ms(self.lock_timeout * 2)
            ));
        if config.get_application_name().is_none() {
            config.application_name("roster");
        }
        Ok(config)
    }
}

/// A PostgreSQL error as the store reports it: a connection that failed or closed is the
/// store being unavailable (it recovers by itself); anything else is the database refusing.
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    let Some(db) = error.as_db_error() else {
        // No answer from the server: the connection closed or failed (I/O, TLS, a timeout),
        // which passes; or the driver refused what it was given, which does not.
        let io = std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>());
        return if error.is_closed() || io {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Io(error.to_string())
        };
    };
    let detail = format!("{}: {}", db.code().code(), db.message());
    match db.code().code() {
        // Cannot connect now, shutting down, too many connections, lock or statement
        // timeout, idle session ended: all pass.
        c if c.starts_with("08") || c.starts_with("57") || c == "53300" || c == "55P03" => {
            StoreError::Unavailable(detail)
        }
        _ => StoreError::Io(detail),
    }
}

/// Opens one connection, its driver task spawned on the current runtime.
pub(crate) async fn connect(options: &PgOptions) -> Result<Client, StoreError> {
    let config = options.config()?;
    let (client, connection) =
        tokio::time::timeout(options.lock_timeout * 2, config.connect(NoTls))
            .await
            .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))?
            .map_err(db_error)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// What the writer, the follower and the readers share.
pub(crate) struct PgShared {
    pub options: PgOptions,
    pub limits: Limits,
    pub pool: deadpool_postgres::Pool,
    /// The highest position handed to subscribers (and to the catch-up): everything up to it
    /// is committed and read.
    pub known: AtomicU64,
    /// Serialises handing events over, so subscribers and the catch-up get them once each,
    /// in order, whether the writer or the follower read them.
    pub publishing: tokio::sync::Mutex<()>,
    pub tail: Mutex<Option<broadcast::Sender<Arc<[Envelope]>>>>,
    pub catchup: Mutex<Option<Arc<dyn Catchup>>>,
    /// Whether the last attempt to reach PostgreSQL failed, and why (for `/healthz`).
    pub cut_off: Mutex<Option<String>>,
    pub closed: AtomicBool,
    pub wake_follower: tokio::sync::Notify,
}

impl PgShared {
    fn catchup(&self) -> Option<Arc<dyn Catchup>> {
        self.catchup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Hands events read from the log (by the writer under its lock, or by the follower) to
    /// the catch-up and the subscribers: each once, in order. Events at or below what was
    /// handed over are skipped; a batch that would leave a gap is left to the follower.
    pub async fn publish(&self, events: Vec<Envelope>) {
        let _turn = self.publishing.lock().await;
        let known = self.known.load(Ordering::Acquire);
        let fresh: Vec<Envelope> = events.into_iter().filter(|e| e.position > known).collect();
        let Some(first) = fresh.first() else {
            return;
        };
        if first.position != known + 1 {
            self.wake_follower.notify_one();
            return;
        }
        if let Some(catchup) = self.catchup() {
            catchup.appended(&fresh);
        }
        let last = fresh.last().map_or(known, |e| e.position);
        self.known.store(last, Ordering::Release);
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(tail) = tail {
            // Nobody listening is not an error: subscribers catch up from the store.
            let _ = tail.send(Arc::from(fresh));
        }
    }

    pub fn set_cut_off(&self, reason: Option<String>) {
        *self
            .cut_off
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(error) => db_error(error),
            other => StoreError::Unavailable(format!("no connection to PostgreSQL: {other}")),
        })
    }

    /// The events after `after`, at most `limit`, checked gap-free and linked.
    pub async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let rows = self.read_stored(after, limit).await?;
        let mut events: Vec<Envelope> = Vec::with_capacity(rows.len());
        for (position, bytes) in &rows {
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

    async fn read_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let limit = limit.min(self.limits.read_events_max);
        if limit == 0 || i64::try_from(after).is_err() {
            return Ok(Vec::new());
        }
        let client = self.reader().await?;
        let schema = &self.options.schema;
        let statement = client
            .prepare_cached(&format!(
                "SELECT position, envelope FROM {schema}.events WHERE position > $1 \
                 ORDER BY position LIMIT $2"
            ))
            .await
            .map_err(db_error)?;
        // Positions and counts past PostgreSQL's bigint find nothing, as on sled.
        let rows = client
            .query(
                &statement,
                &[&saturating_i64(after), &saturating_i64(limit as u64)],
            )
            .await
            .map_err(db_error)?;
        let mut entries = Vec::with_capacity(rows.len());
        for (expected, row) in (after + 1..).zip(&rows) {
            let position = from_i64(row.get(0))?;
            if position != expected {
                return Err(StoreError::corrupt(expected, "missing event"));
            }
            entries.push((position, row.get::<_, Vec<u8>>(1)));
        }
        Ok(entries)
    }
}

pub(crate) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{n} is out of PostgreSQL's range")))
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn from_i64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::corrupt(0, format!("a negative number {n}")))
}

#[async_trait]
impl ReadAll for PgShared {
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        PgShared::read_after(self, after, limit).await
    }
}

/// The log on PostgreSQL: a writer task (its own connection) group-commits this node's
/// appends under the head's lock; a follower task (its own connection, listening) reads what
/// every node appended; reads share a pool.
pub struct PgStore {
    shared: Arc<PgShared>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl PgStore {
    /// Connects, runs the migrations this build has and the store lacks, and starts the
    /// writer and the follower at the store's head.
    pub async fn open(options: PgOptions) -> Result<PgStore, StoreError> {
        PgStore::open_with(options, Limits::default()).await
    }

    pub async fn open_with(options: PgOptions, limits: Limits) -> Result<PgStore, StoreError> {
        check_schema_name(&options.schema)?;
        let mut client = connect(&options).await?;
        schema::migrate(&mut client, &options.schema).await?;
        let head = writer::load_head(&client, &options.schema).await?;
        drop(client);
        let manager = deadpool_postgres::Manager::from_config(
            options.config()?,
            NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.pool_wait))
            .create_timeout(Some(options.lock_timeout * 2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Invalid(format!("the connection pool: {e}")))?;
        let (tail, _) = broadcast::channel(1024);
        let shared = Arc::new(PgShared {
            options,
            limits,
            pool,
            known: AtomicU64::new(head.position),
            publishing: tokio::sync::Mutex::new(()),
            tail: Mutex::new(Some(tail)),
            catchup: Mutex::new(None),
            cut_off: Mutex::new(None),
            closed: AtomicBool::new(false),
            wake_follower: tokio::sync::Notify::new(),
        });
        let (jobs, receiver) = mpsc::channel(shared.limits.queue_commands_max.max(1));
        let tasks = vec![
            tokio::spawn(writer::run(Arc::clone(&shared), receiver)),
            tokio::spawn(follow::run(Arc::clone(&shared))),
        ];
        Ok(PgStore {
            shared,
            jobs: Mutex::new(Some(jobs)),
            tasks: Mutex::new(tasks),
        })
    }

    /// Runs the migrations alone (`roster migrate`); returns the versions applied.
    pub async fn migrate(options: &PgOptions) -> Result<Vec<i32>, StoreError> {
        let mut client = connect(options).await?;
        schema::migrate(&mut client, &options.schema).await
    }

    /// Records this node's identity in a new store, or checks it against the recorded one;
    /// the store's id.
    pub async fn claim_identity(&self, identity: &Identity) -> Result<String, StoreError> {
        let client = self.shared.reader().await?;
        schema::claim_identity(&client, &self.shared.options.schema, identity).await
    }

    /// The store's head as PostgreSQL has it now (a node's `head()` is what it has read).
    pub async fn store_head(&self) -> Result<u64, StoreError> {
        let client = self.shared.reader().await?;
        Ok(writer::load_head(&client, &self.shared.options.schema)
            .await?
            .position)
    }

    /// Writes a verified sequence of envelopes (an export) into an empty store, keeping their
    /// positions and hashes, in one transaction. Refuses a store that holds events.
    pub async fn import(
        options: &PgOptions,
        envelopes: &mut (dyn Iterator<Item = Result<Envelope, StoreError>> + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, StoreError> {
        let mut client = connect(options).await?;
        schema::migrate(&mut client, &options.schema).await?;
        writer::import(&mut client, &options.schema, envelopes, progress).await
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.close();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        crate::writer::submit(&self.jobs, request).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        validate_name("stream", stream, self.shared.limits.stream_bytes_max)?;
        let limit = limit.min(self.shared.limits.read_events_max);
        let from_version = from_version.max(1);
        let client = self.shared.reader().await?;
        let schema = &self.shared.options.schema;
        let statement = client
            .prepare_cached(&format!(
                "SELECT position, envelope FROM {schema}.events \
                 WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ))
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &stream,
                    &saturating_i64(from_version),
                    &saturating_i64(limit as u64),
                ],
            )
            .await
            .map_err(db_error)?;
        let mut events = Vec::with_capacity(rows.len());
        for (expected, row) in (from_version..).zip(&rows) {
            let position = from_i64(row.get(0))?;
            let envelope = stored::decode(position, row.get::<_, &[u8]>(1))?;
            if envelope.stream != stream || envelope.version != expected {
                return Err(StoreError::corrupt(
                    position,
                    format!(
                        "stream {stream} expected version {expected}, found {} of {}",
                        envelope.version, envelope.stream
                    ),
                ));
            }
            events.push(envelope);
        }
        Ok(events)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        self.shared.read_after(after, limit).await
    }

    async fn read_all_stored(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.shared.read_stored(after, limit).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        validate_name("stream", stream, self.shared.limits.stream_bytes_max)?;
        let client = self.shared.reader().await?;
        let schema = &self.shared.options.schema;
        let statement = client
            .prepare_cached(&format!(
                "SELECT coalesce(max(version), 0) FROM {schema}.events WHERE stream = $1"
            ))
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(&statement, &[&stream])
            .await
            .map_err(db_error)?;
        from_i64(row.get(0))
    }

    fn head(&self) -> u64 {
        self.shared.known.load(Ordering::Acquire)
    }

    async fn catch_up(&self) -> Result<u64, StoreError> {
        follow::read_new(&self.shared).await?;
        Ok(self.shared.known.load(Ordering::Acquire))
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let client = self.shared.reader().await?;
        let schema = &self.shared.options.schema;
        // Taken when free or run out, renewed by its holder; the token moves on whenever the
        // lease changes hands or its holder took it again after it ran out. Expiry is judged
        // by PostgreSQL's clock, the one all nodes share.
        let statement = client
            .prepare_cached(&format!(
                "INSERT INTO {schema}.leases AS l (name, holder, token, expires_at) \
                 VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET \
                   token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp() \
                                THEN l.token ELSE l.token + 1 END, \
                   holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() \
                 RETURNING token"
            ))
            .await
            .map_err(db_error)?;
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&name, &holder, &ttl_ms])
            .await
            .map_err(db_error)?;
        rows.first().map(|row| from_i64(row.get(0))).transpose()
    }

    fn subscribe(&self, after: u64) -> Subscription {
        let reader: Arc<dyn ReadAll> = self.shared.clone();
        let live = match &*self
            .shared
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(tail) => tail.subscribe(),
            None => broadcast::channel(1).1,
        };
        Subscription::new(reader, live, after)
    }

    fn close(&self) {
        // Appends already queued are still decided and committed; new ones are refused.
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake_follower.notify_one();
        drop(
            self.shared
                .tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    fn cut_off(&self) -> Option<String> {
        self.shared
            .cut_off
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_catchup(&self, catchup: Arc<dyn Catchup>) {
        *self
            .shared
            .catchup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(catchup);
    }
}
