//! The `Engine`: Roster as a library. It takes commands, decides them against the newest
//! state inside the log's writer, waits until the read models reflect them, and answers
//! queries from the read models and, for past states, from the log itself.
//!
//! This crate is what a host embeds: it compiles no HTTP, command-line, allocator or terminal
//! crate (`tests/deps.rs` checks the tree), and nothing outside it reaches its store or read
//! models: what a caller needs is a method of the [`Engine`].

#![forbid(unsafe_code)]

mod cache;
mod catchup;
mod clock;
mod commands;
#[cfg(feature = "proptest")]
pub mod driver;
mod duplicates;
mod queries;
mod snapshot;

use std::path::Path;
use std::sync::{Arc, Mutex};

use roster_domain::{
    Actor, Command, DomainError, Email, Event, InvitationBatch, Limits, Membership, NumberSequence,
    Principal, ResourceId, RoleName, RoleSchema, Scope, ServerSecret, Timestamp,
};
use roster_eventstore::{EventStore, MemoryStore, SledOptions, SledStore, StoreError};
use roster_projections::{ApiKeyRow, ProjectionError, ReadModels, Snapshots};
use tokio::sync::watch;

use cache::StateCache;
pub use clock::{Clock, IdSource, ManualClock, RandomIds, SeededIds, SystemClock};

/// How the engine is set up. Time and ids are injected so a run can be made deterministic.
#[derive(Clone)]
pub struct EngineConfig {
    pub secret: ServerSecret,
    pub limits: Limits,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    /// Stream states kept in memory between commands.
    pub cached_streams_max: usize,
    /// The fewest events between two snapshots of a resource's state; the spacing grows with
    /// the state (an eighth of its members), so snapshots cost O(1) per event amortised.
    pub snapshot_events_min: u64,
}

impl EngineConfig {
    /// The system clock and random ids.
    pub fn new(secret: ServerSecret) -> EngineConfig {
        EngineConfig {
            secret,
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            cached_streams_max: 100_000,
            snapshot_events_min: 256,
        }
    }

    /// A manual clock and ids from `seed`: the same commands give the same log, byte for byte.
    pub fn deterministic(
        secret: ServerSecret,
        seed: u64,
        start: Timestamp,
    ) -> (EngineConfig, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(start));
        let config = EngineConfig {
            clock: clock.clone(),
            ids: Arc::new(SeededIds::new(seed)),
            ..EngineConfig::new(secret)
        };
        (config, clock)
    }
}

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A rule of the domain refused the command: the caller's error.
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The engine is stopping or cannot make progress; the command may be retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A command id (an `Idempotency-Key`) seen before came with another request: answering
    /// the first request's outcome would answer a question nobody asked this time.
    #[error("this idempotency key was first used for another request")]
    IdempotencyKeyReused,
    /// The command was made under a lease another holder has taken over since.
    #[error("the lease {0} was taken over: this holder must stop")]
    LeaseLost(String),
}

/// A caller's idempotency key, as the engine keeps it: the command id a repeat shares, and a
/// fingerprint of what the request was (a digest; what it covers is the caller's choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub command_id: String,
    pub fingerprint: Option<[u8; 32]>,
}

/// A command and who issues it.
#[derive(Debug, Clone)]
pub struct Request {
    pub actor: Actor,
    pub command: Command,
    /// Idempotency: the same id returns the first outcome and appends nothing.
    pub command_id: Option<String>,
    /// With a command id: what the request was. The same id with another fingerprint is
    /// refused (`EngineError::IdempotencyKeyReused`).
    pub fingerprint: Option<[u8; 32]>,
    pub correlation_id: Option<String>,
    /// Made under a lease (by a worker that must run on one node at a time): refused once
    /// the lease has changed hands (`EngineError::LeaseLost`).
    pub fence: Option<roster_eventstore::Fence>,
}

impl Request {
    pub fn new(actor: Actor, command: Command) -> Request {
        Request {
            actor,
            command,
            command_id: None,
            fingerprint: None,
            correlation_id: None,
            fence: None,
        }
    }

    pub fn fenced(mut self, fence: Option<roster_eventstore::Fence>) -> Request {
        self.fence = fence;
        self
    }

    pub fn command_id(mut self, command_id: impl Into<String>) -> Request {
        self.command_id = Some(command_id.into());
        self
    }

    /// The command id and fingerprint of an idempotency key, if the caller gave one.
    pub fn idempotent(mut self, idempotency: Option<Idempotency>) -> Request {
        if let Some(idempotency) = idempotency {
            self.command_id = Some(idempotency.command_id);
            self.fingerprint = idempotency.fingerprint;
        }
        self
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The read models reflect at least this position when the call returns.
    pub position: u64,
    /// The events appended (the first outcome's, for a repeated command id).
    pub events: Vec<Event>,
    pub duplicate: bool,
    /// For `CreateInvitations` decided now: the per-email outcome.
    pub invitations: Option<InvitationBatch>,
    /// For a resource command: the acting principal's role right after it, if a member.
    pub actor_role: Option<RoleName>,
    /// For a command that names a member (`SetMemberRole`): that member right after it, as
    /// decided. A handler answers from this, not from the read model, which a command
    /// decided just after (the member leaving) may already have changed.
    pub member: Option<Membership>,
}

/// The outcome of accepting a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub resource: ResourceId,
    pub principal: Principal,
    pub role: RoleName,
    pub changed: bool,
    pub position: u64,
}

/// A caller's standing for seeing codes on one resource: see [`Engine::code_access`].
#[derive(Debug, Clone)]
pub struct CodeAccess {
    viewer: roster_domain::CodeViewer,
    schema: RoleSchema,
}

impl CodeAccess {
    /// Whether the code of a link or invitation made by `creator` for `role` may be shown
    /// (the domain's rule, `roster_domain::may_see_code`).
    pub fn shows(&self, creator: Option<&Principal>, role: &RoleName) -> bool {
        roster_domain::may_see_code(&self.schema, &self.viewer, creator, role)
    }
}

/// What an API key is issued for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub principal: Principal,
    pub scopes: std::collections::BTreeSet<Scope>,
    /// A service key, which acts for the principal it names per request.
    pub act_as: bool,
    /// The principal's verified email.
    pub email: Option<Email>,
    pub name: Option<String>,
}

/// A newly issued API key; `key` exists only here.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub row: ApiKeyRow,
    pub key: String,
    pub position: u64,
}

struct Inner {
    /// The log failed a write (disk full, I/O error): sled 0.34 keeps failing every later
    /// write once one failed, so only reopening the data directory recovers (`serve` does so
    /// once the directory takes writes again). Reported by `/healthz`.
    /// Set by a failed append, and by the projector when it stops on an error (a read
    /// model's write failed): either way this engine is done.
    store_failed: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<dyn EventStore>,
    models: Arc<ReadModels>,
    snapshots: Arc<Snapshots>,
    applied: watch::Receiver<u64>,
    projector: Mutex<Option<tokio::task::JoinHandle<Result<(), ProjectionError>>>>,
    config: EngineConfig,
    numbers: Arc<NumberSequence>,
    cache: Arc<StateCache>,
}

/// Roster's engine: commands in, events in the log, read models out.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// The durable engine on the sled log in `dir`, its read models beside it, brought up to
    /// date before this returns.
    pub async fn open(
        dir: &Path,
        options: SledOptions,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let store = Arc::new(SledStore::open(dir, options)?);
        let models = ReadModels::open_sled(store.db(), "rm.")?;
        let snapshots = Snapshots::in_dir(&dir.join("snapshots"));
        Engine::start_with(store, Arc::new(models), snapshots, config).await
    }

    /// A node on a PostgreSQL store shared with other nodes: the log there, this node's read
    /// models and snapshots in `dir` (rebuildable from the log at any time, and rebuilt when
    /// they were made from another store). Refuses a store whose other nodes use another
    /// secret or other decision settings.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(
        dir: &Path,
        options: roster_eventstore::PgOptions,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let store = roster_eventstore::PgStore::open(options).await?;
        let store_id = store.claim_identity(&identity(&config)).await?;
        let db = sled::Config::new()
            .path(dir.join("node"))
            .open()
            .map_err(StoreError::from)?;
        let node = db.open_tree("node").map_err(StoreError::from)?;
        let recorded = node.get("store").map_err(StoreError::from)?;
        let models = ReadModels::open_sled(&db, "rm.")?;
        if recorded.as_deref() != Some(store_id.as_bytes()) {
            if recorded.is_some() {
                tracing::warn!("the read models here were made from another store: rebuilding");
            }
            off_the_runtime(models.rebuild(&store, &mut |_| {})).await?;
            node.insert("store", store_id.as_bytes())
                .map_err(StoreError::from)?;
            node.flush_async().await.map_err(StoreError::from)?;
        }
        let snapshots = Snapshots::in_dir(&dir.join("snapshots"));
        Engine::start_with(Arc::new(store), Arc::new(models), snapshots, config).await
    }

    /// The engine in memory: the same code paths, nothing on disk.
    pub async fn in_memory(config: EngineConfig) -> Result<Engine, EngineError> {
        Engine::in_memory_with(ReadModels::in_memory(), config).await
    }

    /// The engine on an in-memory log with read models of the host's (see
    /// `ReadModels::open`): for storage of its own, and for tests that make a model fail.
    pub async fn in_memory_with(
        models: ReadModels,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let store = Arc::new(MemoryStore::in_memory());
        Engine::start_with(store, Arc::new(models), Snapshots::in_memory(), config).await
    }

    /// The engine on a store, read models and snapshots of the host's, brought up to date
    /// before this returns. The host may keep handles on them (a test compares the read models
    /// with a rebuild from the store); the engine alone writes to them while it runs.
    pub async fn start_with(
        store: Arc<dyn EventStore>,
        models: Arc<ReadModels>,
        snapshots: Snapshots,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        off_the_runtime(models.catch_up(store.as_ref(), &mut |_| {})).await?;
        // Links, invitations and webhooks draw from one sequence: resume past all of them.
        let highest_webhook = models.webhooks()?.iter().map(|w| w.id).max().unwrap_or(0);
        let highest = models.highest_number()?.max(highest_webhook);
        let numbers = Arc::new(NumberSequence::starting_at(highest + 1));
        let (applied_tx, applied) = watch::channel(models.checkpoint());
        let store_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let projecting =
            roster_projections::run_projector(Arc::clone(&store), Arc::clone(&models), applied_tx);
        let failed = Arc::clone(&store_failed);
        let projector = tokio::spawn(async move {
            let stopped = projecting.await;
            if stopped.is_err() {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            stopped
        });
        let cache = Arc::new(StateCache::new(config.cached_streams_max));
        // A store shared with other nodes tells the cache and the numbers what they append.
        store.set_catchup(Arc::new(catchup::EngineCatchup {
            cache: Arc::clone(&cache),
            numbers: Arc::clone(&numbers),
        }));
        let inner = Inner {
            store_failed,
            store,
            models,
            snapshots: Arc::new(snapshots),
            applied,
            projector: Mutex::new(Some(projector)),
            config,
            numbers,
            cache,
        };
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    /// Stops taking commands, lets the ones in flight finish, makes the log durable and
    /// waits for the projector to stop.
    pub async fn close(&self) {
        self.inner.store.close();
        let projector = self
            .inner
            .projector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(projector) = projector {
            match projector.await {
                Ok(Ok(())) => {
                    // The rows still waiting in memory, so the next open has nothing to do.
                    let models = Arc::clone(&self.inner.models);
                    match tokio::task::spawn_blocking(move || models.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::error!(%error, "the read models were not written")
                        }
                        Err(error) => tracing::error!(%error, "the read models' writer failed"),
                    }
                }
                Ok(Err(error)) => tracing::error!(%error, "the projector stopped with an error"),
                Err(error) => tracing::error!(%error, "the projector task failed"),
            }
        }
    }

    /// Whether a write to the log or to the read models has failed since open: this engine
    /// takes no commands again; once the cause (a full disk, say) is gone, a new engine must
    /// be opened on the data directory (`roster serve` does that itself).
    pub fn store_failed(&self) -> bool {
        self.inner
            .store_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the store (a shared one) cannot be reached now, if it cannot: commands answer
    /// `Unavailable` meanwhile, reads go on from the read models.
    pub fn store_cut_off(&self) -> Option<String> {
        self.inner.store.cut_off()
    }

    /// Whether another handle on this engine is alive (a request, a task): the data directory
    /// stays locked until the last handle is dropped, so a reopen waits for this to be false.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    pub fn now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    pub fn secret(&self) -> &ServerSecret {
        &self.inner.config.secret
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// The log's last acknowledged position.
    pub fn head(&self) -> u64 {
        self.inner.store.head()
    }

    /// Waits until this node's read models reflect `position` of a log that other nodes may
    /// write too (`min_position`), reading the store for it rather than waiting for its
    /// notification or poll: at most `wait`, then `Unavailable`. A position past the store's
    /// head is no write's answer: refused at once.
    pub async fn reach(&self, position: u64, wait: std::time::Duration) -> Result<(), EngineError> {
        if self.applied() >= position {
            return Ok(());
        }
        let reached = async {
            let head = self.inner.store.catch_up().await?;
            if position > head {
                return Err(EngineError::Domain(DomainError::InvalidRequest(format!(
                    "position {position} is past the log's head, {head}"
                ))));
            }
            self.wait_applied(position).await
        };
        tokio::time::timeout(wait, reached).await.map_err(|_| {
            EngineError::Unavailable(format!("this node has not reached position {position} yet"))
        })?
    }

    /// Brings this node's read models to the store's head as it is now: for a lookup that
    /// found nothing, which another node may have just made.
    pub(crate) async fn reach_store_head(&self) -> Result<(), EngineError> {
        let head = self.inner.store.catch_up().await?;
        if head > self.applied() {
            self.wait_applied(head).await?;
        }
        Ok(())
    }

    /// Takes or renews the lease `name` for `holder` (see `EventStore::lease`): its fencing
    /// token while held, `None` while another node holds it.
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<u64>, EngineError> {
        Ok(self.inner.store.lease(name, holder, ttl).await?)
    }

    /// Waits until the read models reflect `position`.
    pub async fn wait_applied(&self, position: u64) -> Result<(), EngineError> {
        let mut applied = self.inner.applied.clone();
        applied
            .wait_for(|p| *p >= position)
            .await
            .map(|_| ())
            .map_err(|_| {
                EngineError::Unavailable("the read models stopped following the log".into())
            })
    }
}

/// What every node on one shared store must agree on: the secret (by an HMAC of a fixed
/// label, never the secret) and the settings that change decisions.
#[cfg(feature = "postgres")]
fn identity(config: &EngineConfig) -> roster_eventstore::Identity {
    let limits = &config.limits;
    roster_eventstore::Identity {
        secret_fingerprint: hex::encode(config.secret.derive_key("roster store identity", 0)),
        settings: serde_json::json!({
            "emails_per_request_max": limits.emails_per_request_max,
            "pending_invitations_max": limits.pending_invitations_max,
            "active_links_max": limits.active_links_max,
            "message_chars_max": limits.message_chars_max,
            "key_name_chars_max": limits.key_name_chars_max,
        }),
    }
}

/// Runs a catch-up of the read models, which blocks its thread while its reader threads
/// drive the store's reads on this runtime: on a worker of a multi-threaded runtime, after
/// handing that worker's other tasks on (a PostgreSQL store's connections are such tasks,
/// and would otherwise wait for the catch-up that waits for them).
async fn off_the_runtime<T>(catch_up: impl std::future::Future<Output = T>) -> T {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(catch_up))
    } else {
        catch_up.await
    }
}

pub(crate) fn decode(envelope: &roster_eventstore::Envelope) -> Result<Event, EngineError> {
    Event::from_parts(&envelope.event_type, envelope.schema, envelope.data.clone()).map_err(|e| {
        EngineError::Projection(ProjectionError::Corrupt(format!(
            "position {}: {e}",
            envelope.position
        )))
    })
}

/// Strategies for commands and sessions, for hosts' own property tests (feature `proptest`).
#[cfg(feature = "proptest")]
pub use roster_domain::strategies;

/// `docs/EMBEDDING.md`, whose example runs as a doctest so the document stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/EMBEDDING.md")]
pub struct EmbeddingDocument;
