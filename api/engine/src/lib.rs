//! The `Engine`: Roster as a library. It takes commands, decides them against the newest
//! state inside the log's writer, waits until the read models reflect them, and answers
//! queries from the read models and, for past states, from the log itself.
//!
//! This crate is what a host embeds: it compiles no HTTP, command-line, allocator or terminal
//! crate (`tests/deps.rs` checks the tree), and nothing outside it reaches its store or read
//! models: what a caller needs is a method of the [`Engine`].

#![forbid(unsafe_code)]

mod cache;
mod clock;
#[cfg(feature = "proptest")]
pub mod driver;
mod snapshot;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_domain::{
    create_invitations, preview, Actor, ApiKeyCommand, ApiKeyId, Command, DomainError, Email,
    Event, InvitationBatch, InviteCode, KeyDigest, KindUsage, KnownEmails, Limits, Membership,
    NumberSequence, Preview, Principal, Privilege, ResourceCommand, ResourceId, ResourceState,
    RoleName, RoleSchema, SchemaCommand, SchemaState, Scope, ServerSecret, StreamId, Timestamp,
    VerifiedCode,
};
use roster_eventstore::{
    AppendError, AppendRequest, EventStore, MemoryStore, NewEvent, Rejection, SledOptions,
    SledStore, StoreError, StreamView,
};
use roster_projections::{
    rolemap_as_of, state_as_of, ApiKeyRow, AsOf, HistoryEntry, InvitationRecord, InviteRecord,
    LinkRecord, MemberRecord, MembershipRecord, Page, ProjectionError, ReadModels, ResourceRecord,
    Snapshots,
};
use tokio::sync::watch;

use cache::{lock, Cached, Entry, StateCache, StreamState};
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
}

impl Request {
    pub fn new(actor: Actor, command: Command) -> Request {
        Request {
            actor,
            command,
            command_id: None,
            fingerprint: None,
            correlation_id: None,
        }
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

/// What a decision inside the writer hands back besides its events.
struct Decided {
    events: Vec<Event>,
    invitations: Option<InvitationBatch>,
    actor_role: Option<RoleName>,
    member: Option<Membership>,
}

/// A decision met a cached state older than the log: reload and decide again.
#[derive(Debug, thiserror::Error)]
#[error("the cached state is stale")]
struct Stale;

/// Emails verified through keys or acceptances, as the identity read model knows them.
struct ModelEmails(Arc<ReadModels>);

impl KnownEmails for ModelEmails {
    fn principal_of(&self, email: &Email) -> Option<Principal> {
        self.0.known_principal(email).ok().flatten()
    }
}

/// Attempts at a command whose cached state turned out stale (only after a failed append).
const STALE_RETRIES_MAX: u32 = 20;

struct Inner {
    /// The log failed a write (disk full, I/O error): sled 0.34 keeps failing every later
    /// write once one failed, so only reopening the data directory recovers (`serve` does so
    /// once the directory takes writes again). Reported by `/healthz`.
    /// Set by a failed append, and by the projector when it stops on an error (a read
    /// model's write failed): either way this engine is done.
    store_failed: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<dyn EventStore>,
    close_store: Box<dyn Fn() + Send + Sync>,
    models: Arc<ReadModels>,
    snapshots: Arc<Snapshots>,
    applied: watch::Receiver<u64>,
    projector: Mutex<Option<tokio::task::JoinHandle<Result<(), ProjectionError>>>>,
    config: EngineConfig,
    numbers: Arc<NumberSequence>,
    cache: StateCache,
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
        let closer = Arc::clone(&store);
        let close = Box::new(move || closer.close());
        Engine::start(store, close, models, snapshots, config).await
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
        let closer = Arc::clone(&store);
        Engine::start(
            store,
            Box::new(move || closer.close()),
            models,
            Snapshots::in_memory(),
            config,
        )
        .await
    }

    async fn start(
        store: Arc<dyn EventStore>,
        close_store: Box<dyn Fn() + Send + Sync>,
        models: ReadModels,
        snapshots: Snapshots,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        models.catch_up(store.as_ref(), &mut |_| {}).await?;
        let models = Arc::new(models);
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
        let cache = StateCache::new(config.cached_streams_max);
        let inner = Inner {
            store_failed,
            store,
            close_store,
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
        (self.inner.close_store)();
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

    /// Whether another handle on this engine is alive (a request, a task): the data directory
    /// stays locked until the last handle is dropped, so a reopen waits for this to be false.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    pub fn read_models(&self) -> &Arc<ReadModels> {
        &self.inner.models
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

    // Commands.

    /// Decides and appends a command; returns once the read models reflect it.
    pub async fn execute(&self, request: Request) -> Result<Executed, EngineError> {
        let stream = request.command.stream();
        let name = stream.to_string();
        let command_id = match &request.command_id {
            Some(id) => id.clone(),
            None => self.inner.config.ids.ulid(self.now()),
        };
        for attempt in 0..STALE_RETRIES_MAX {
            let entry = self.entry(&stream).await?;
            match self
                .try_execute(&request, &name, &command_id, Arc::clone(&entry))
                .await
            {
                Err(Retry::Stale) => {
                    self.inner.cache.invalidate(&name);
                    // Only after a failed append: give the log a moment to make its last
                    // group visible, then load again.
                    tokio::time::sleep(Duration::from_millis(1 << attempt.min(6))).await;
                }
                Err(Retry::No(error)) => {
                    if matches!(error, EngineError::Store(_) | EngineError::Unavailable(_)) {
                        self.inner.cache.invalidate(&name);
                    }
                    return Err(error);
                }
                Ok(executed) => {
                    if !executed.duplicate {
                        self.snapshot_if_due(name, entry);
                    }
                    return Ok(executed);
                }
            }
        }
        Err(EngineError::Unavailable(format!(
            "stream {name} kept changing under a stale cache"
        )))
    }

    async fn try_execute(
        &self,
        request: &Request,
        stream: &str,
        command_id: &str,
        entry: Entry,
    ) -> Result<Executed, Retry> {
        let now = self.now();
        let inputs = self.inputs(&request.command).await.map_err(Retry::No)?;
        let slot: Arc<Mutex<Option<Decided>>> = Arc::new(Mutex::new(None));
        let decision = Decision {
            entry,
            command: request.command.clone(),
            actor: request.actor.clone(),
            now,
            inputs,
            limits: self.inner.config.limits.clone(),
            numbers: Arc::clone(&self.inner.numbers),
            emails: ModelEmails(Arc::clone(&self.inner.models)),
            ids: Arc::clone(&self.inner.config.ids),
            slot: Arc::clone(&slot),
        };
        let append = AppendRequest::decided(stream, move |view: StreamView<'_>| decision.run(view))
            .command_id(command_id)
            .fingerprint(request.fingerprint)
            .correlation_id(
                request
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| command_id.to_string()),
            )
            .actor(request.actor.label())
            .occurred_at(roster_eventstore::Timestamp::from_unix_ms(now.unix_ms()));
        let appended = match self.inner.store.append(append).await {
            Ok(appended) => appended,
            Err(AppendError::Rejected(reason)) => {
                return Err(match reason.downcast::<DomainError>() {
                    Ok(domain) => Retry::No(EngineError::Domain(*domain)),
                    Err(other) if other.is::<Stale>() => Retry::Stale,
                    Err(other) => Retry::No(EngineError::Unavailable(other.to_string())),
                });
            }
            Err(AppendError::Conflict { .. }) => return Err(Retry::Stale),
            Err(AppendError::Reused { .. }) => {
                return Err(Retry::No(EngineError::IdempotencyKeyReused))
            }
            Err(AppendError::Store(error)) => {
                if matches!(error, StoreError::Io(_)) {
                    self.inner
                        .store_failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(Retry::No(EngineError::Store(error)));
            }
        };
        self.wait_applied(appended.position)
            .await
            .map_err(Retry::No)?;
        let decided = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match decided {
            Some(decided) if !appended.duplicate => Ok(Executed {
                position: appended.position,
                events: decided.events,
                duplicate: false,
                invitations: decided.invitations,
                actor_role: decided.actor_role,
                member: decided.member,
            }),
            _ => {
                // The first outcome, rebuilt from the log: nothing kept for it holds a secret.
                let (events, occurred_ms) = self.events_at(&appended).await.map_err(Retry::No)?;
                let invitations = match (&request.command, occurred_ms) {
                    (
                        Command::Resource(
                            command @ ResourceCommand::CreateInvitations { resource, .. },
                        ),
                        Some(occurred_ms),
                    ) => Some(
                        self.first_invitation_batch(
                            &request.actor,
                            resource,
                            command,
                            (*appended.positions().start(), occurred_ms),
                            events.clone(),
                        )
                        .await
                        .map_err(Retry::No)?,
                    ),
                    _ => None,
                };
                Ok(Executed {
                    position: appended.position,
                    events,
                    duplicate: true,
                    invitations,
                    actor_role: None,
                    member: None,
                })
            }
        }
    }

    /// A command's events as the log holds them, and when the first occurred (Unix ms; `None`
    /// when it appended nothing).
    async fn events_at(
        &self,
        appended: &roster_eventstore::Appended,
    ) -> Result<(Vec<Event>, Option<i64>), EngineError> {
        if appended.events == 0 {
            return Ok((Vec::new(), None));
        }
        let first = *appended.positions().start();
        let envelopes = self
            .inner
            .store
            .read_all(
                first - 1,
                usize::try_from(appended.events).unwrap_or(usize::MAX),
            )
            .await?;
        let occurred_ms = envelopes.first().map(|e| e.occurred_at.0);
        let events = envelopes.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((events, occurred_ms))
    }

    /// What a decision needs from outside its stream, gathered before it is queued.
    async fn inputs(&self, command: &Command) -> Result<Inputs, EngineError> {
        let (schema, usage) = match command {
            Command::Resource(command) => (
                self.schema(command.resource().kind().as_str()).await?,
                KindUsage::default(),
            ),
            Command::Schema(SchemaCommand::DefineRoleSchema { kind, .. }) => (
                self.schema(kind.as_str()).await?,
                self.inner.models.kind_usage(kind.as_str())?,
            ),
            // API keys and webhooks have no kind; any schema serves, none is consulted, so
            // none is loaded from the log either.
            Command::ApiKeys(_) | Command::Webhooks(_) => (
                RoleSchema::builtin(&roster_domain::Kind::parse("space")?),
                KindUsage::default(),
            ),
        };
        Ok(Inputs { schema, usage })
    }

    /// The role schema in force for a kind.
    pub async fn schema(&self, kind: &str) -> Result<RoleSchema, EngineError> {
        let kind = roster_domain::Kind::parse(kind)?;
        let entry = self.entry(&StreamId::RoleSchema(kind.clone())).await?;
        let cached = lock(&entry);
        match &cached.state {
            StreamState::Schema(state) => Ok(state.in_force(&kind)),
            _ => Err(EngineError::Unavailable(
                "a schema stream holds another state".into(),
            )),
        }
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

    /// The cached state of a stream, loaded from the log when absent.
    async fn entry(&self, stream: &StreamId) -> Result<Entry, EngineError> {
        let name = stream.to_string();
        if let Some(entry) = self.inner.cache.get(&name) {
            return Ok(entry);
        }
        let snapshot = match stream {
            StreamId::Resource(_) => {
                let store = self.inner.store.as_ref();
                self.inner.snapshots.latest(store, &name, None).await?
            }
            _ => None,
        };
        let mut cached = match snapshot {
            Some(snapshot) => Cached {
                state: StreamState::Resource(snapshot.state),
                version: snapshot.version,
                latest_ms: snapshot.latest_ms,
                snapshot_version: snapshot.version,
                valid: true,
            },
            None => Cached {
                state: match stream {
                    StreamId::Resource(_) => StreamState::Resource(ResourceState::default()),
                    StreamId::RoleSchema(_) => StreamState::Schema(SchemaState::default()),
                    StreamId::ApiKeys => StreamState::ApiKeys(Default::default()),
                    StreamId::Webhooks => StreamState::Webhooks(Default::default()),
                },
                version: 0,
                latest_ms: i64::MIN,
                snapshot_version: 0,
                valid: true,
            },
        };
        loop {
            let page = self
                .inner
                .store
                .read_stream(&name, cached.version + 1, 4096)
                .await?;
            if page.is_empty() {
                break;
            }
            for envelope in &page {
                apply(&mut cached, &decode(envelope)?, envelope.occurred_at.0);
            }
        }
        Ok(self.inner.cache.install(&name, cached))
    }

    /// Accepts a link's or an invitation's code for the acting principal.
    pub async fn accept(
        &self,
        actor: Actor,
        code: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<Accepted, EngineError> {
        let principal = actor.principal().cloned().ok_or_else(|| {
            DomainError::InvalidRequest(
                "accepting needs a principal: name one with X-Roster-Actor".into(),
            )
        })?;
        let (resource, verified) = self.resolve(code)?;
        let command = ResourceCommand::AcceptInvitation {
            resource: resource.clone(),
            code: verified,
        };
        self.accept_command(actor, principal, command, idempotency)
            .await
    }

    /// Accepts a pending email invitation by its number for the acting principal, whose
    /// verified email must be the invited one (no code: the host vouches for the email).
    pub async fn accept_by_id(
        &self,
        actor: Actor,
        invitation: u64,
        idempotency: Option<Idempotency>,
    ) -> Result<Accepted, EngineError> {
        let principal = actor.principal().cloned().ok_or_else(|| {
            DomainError::InvalidRequest(
                "accepting needs a principal: name one with X-Roster-Actor".into(),
            )
        })?;
        let resource = match self.inner.models.invite(invitation)? {
            Some(InviteRecord::Email(record)) => record.resource,
            _ => {
                return Err(DomainError::NotFound(format!(
                    "invitation {invitation} for your email"
                ))
                .into())
            }
        };
        let command = ResourceCommand::AcceptInvitationById {
            resource,
            invitation,
        };
        self.accept_command(actor, principal, command, idempotency)
            .await
    }

    /// Runs an acceptance and says what it left: the principal's role, and whether it changed.
    async fn accept_command(
        &self,
        actor: Actor,
        principal: Principal,
        command: ResourceCommand,
        idempotency: Option<Idempotency>,
    ) -> Result<Accepted, EngineError> {
        let resource = command.resource().clone();
        let executed = self
            .execute(Request::new(actor, Command::Resource(command)).idempotent(idempotency))
            .await?;
        // The role the acceptance gave, from its own events (a repeated key's first outcome
        // included), else the role it left as it was; the read model is asked only when
        // neither is known, since a command decided since may have changed it.
        let granted = executed.events.iter().find_map(|e| match e {
            Event::MemberAdded { role, .. } | Event::MemberRoleChanged { role, .. } => {
                Some(role.clone())
            }
            _ => None,
        });
        let changed = granted.is_some();
        let role = match granted.or(executed.actor_role) {
            Some(role) => role,
            None => self
                .inner
                .models
                .member(&resource, &principal)?
                .map(|m| m.role)
                .ok_or(DomainError::InvitationNotFound)?,
        };
        Ok(Accepted {
            resource,
            principal,
            role,
            changed,
            position: executed.position,
        })
    }

    /// `create_invitations` against `state` as it stands, appending nothing.
    fn decide_invitations(
        &self,
        state: &ResourceState,
        command: &ResourceCommand,
        actor: Actor,
        now: Timestamp,
        inputs: &Inputs,
        scratch_numbers: &NumberSequence,
    ) -> Result<InvitationBatch, EngineError> {
        let emails = ModelEmails(Arc::clone(&self.inner.models));
        let ctx = roster_domain::Context::new(now, actor, &inputs.schema)
            .with_limits(&self.inner.config.limits)
            .with_numbers(scratch_numbers)
            .with_known_emails(&emails)
            .with_kind_usage(&inputs.usage);
        Ok(create_invitations(state, command, &ctx)?)
    }

    /// The batch a `CreateInvitations` answered when it was first decided, for the same command
    /// again (DESIGN section 5: the same key and body return the first response): the
    /// invitations it created, from its logged `events`, and the addresses it did not invite
    /// (members, pending, invalid), decided again against the resource as it stood just
    /// before the first of them, at the time it occurred (`first`: its position and Unix ms).
    /// The log keeps no response.
    async fn first_invitation_batch(
        &self,
        actor: &Actor,
        resource: &ResourceId,
        command: &ResourceCommand,
        (first_position, occurred_ms): (u64, i64),
        events: Vec<Event>,
    ) -> Result<InvitationBatch, EngineError> {
        // The resource just before the command's first event.
        let before = AsOf::Position(first_position - 1);
        let store = self.inner.store.as_ref();
        let (state, _) = state_as_of(store, Some(&self.inner.snapshots), resource, before).await?;
        let inputs = self.inputs(&Command::Resource(command.clone())).await?;
        let now = Timestamp::from_unix_ms(occurred_ms)?;
        let invited: Vec<(Email, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::InvitationCreated { number, email, .. } => Some((email.clone(), *number)),
                _ => None,
            })
            .collect();
        // The numbers drawn the first time, unused in the state before: none are kept.
        let first_number = invited.iter().map(|(_, n)| *n).min().unwrap_or(1);
        let numbers = NumberSequence::starting_at(first_number);
        let decided =
            self.decide_invitations(&state, command, actor.clone(), now, &inputs, &numbers)?;
        Ok(InvitationBatch {
            events,
            invited,
            ..decided
        })
    }

    /// Declines an email invitation (a link's decline records nothing).
    pub async fn decline(
        &self,
        actor: Actor,
        code: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<(ResourceId, Executed), EngineError> {
        let (resource, verified) = self.resolve(code)?;
        let command = Command::Resource(ResourceCommand::DeclineInvitation {
            resource: resource.clone(),
            code: verified,
        });
        let executed = self
            .execute(Request::new(actor, command).idempotent(idempotency))
            .await?;
        Ok((resource, executed))
    }

    /// What a code is for, without using it.
    pub async fn preview(&self, code: &str) -> Result<Preview, EngineError> {
        let (resource, verified) = self.resolve(code)?;
        let entry = self.entry(&resource.stream()).await?;
        let cached = lock(&entry);
        match &cached.state {
            StreamState::Resource(state) => Ok(preview(state, &verified, self.now())?),
            _ => Err(DomainError::InvitationNotFound.into()),
        }
    }

    /// A code's verified form and the resource it belongs to. Unknown, malformed and forged
    /// codes all answer the same `invitation_not_found`.
    fn resolve(&self, code: &str) -> Result<(ResourceId, VerifiedCode), EngineError> {
        let verified = VerifiedCode::from_text(&self.inner.config.secret, code)?;
        let record = self
            .inner
            .models
            .invite(verified.number())?
            .ok_or(DomainError::InvitationNotFound)?;
        Ok((record.resource().clone(), verified))
    }

    /// Who `actor` is on `resource` when it looks at links and invitations, for deciding which
    /// codes it is shown ([`CodeAccess::shows`]). `may_act` is false for a caller that only
    /// reads (no `write` scope): it is shown no code at all.
    pub async fn code_access(
        &self,
        actor: &Actor,
        resource: &ResourceId,
        may_act: bool,
    ) -> Result<CodeAccess, EngineError> {
        let role = match actor.principal() {
            Some(principal) => self
                .inner
                .models
                .member(resource, principal)?
                .map(|m| m.role),
            None => None,
        };
        Ok(CodeAccess {
            viewer: roster_domain::CodeViewer {
                principal: actor.principal().cloned(),
                role,
                may_act,
            },
            schema: self.schema(resource.kind().as_str()).await?,
        })
    }

    /// The code of a link or invitation number at a generation, in the native encoding.
    pub fn code(&self, number: u64, generation: u32) -> InviteCode {
        InviteCode::derive(&self.inner.config.secret, number, generation)
    }

    /// Issues an API key: the key is made here, shown once, and only its digest is logged.
    pub async fn issue_api_key(
        &self,
        actor: Actor,
        key: KeyRequest,
        idempotency: Option<Idempotency>,
    ) -> Result<IssuedKey, EngineError> {
        let now = self.now();
        let key_id = ApiKeyId::parse(&format!(
            "key_{}",
            self.inner.config.ids.ulid(now).to_lowercase()
        ))?;
        let secret = format!("rk_{}", hex::encode(self.inner.config.ids.secret_bytes()));
        let digest = KeyDigest::of_key(&secret);
        let KeyRequest {
            principal,
            scopes,
            act_as,
            email,
            name,
        } = key;
        let command = Command::ApiKeys(ApiKeyCommand::IssueApiKey {
            key_id: key_id.clone(),
            principal,
            scopes,
            act_as,
            email,
            name,
            digest,
        });
        let executed = self
            .execute(Request::new(actor, command).idempotent(idempotency))
            .await?;
        if executed.duplicate {
            return Err(DomainError::Conflict(
                "this idempotency key already issued a key, which is shown only once".into(),
            )
            .into());
        }
        let row = self
            .inner
            .models
            .api_key(key_id.as_str())?
            .ok_or_else(|| EngineError::Unavailable("the key was not projected".into()))?;
        Ok(IssuedKey {
            row,
            key: secret,
            position: executed.position,
        })
    }

    // Queries.

    pub fn resource(&self, resource: &ResourceId) -> Result<Option<ResourceRecord>, EngineError> {
        Ok(self.inner.models.resource(resource)?)
    }

    /// The holders of the resource's highest role now, in principal order, at most `limit`.
    pub fn owners(
        &self,
        resource: &ResourceId,
        limit: usize,
    ) -> Result<Vec<Principal>, EngineError> {
        Ok(self.inner.models.owners(resource, limit)?)
    }

    pub fn members(
        &self,
        resource: &ResourceId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<MemberRecord>, EngineError> {
        Ok(self.inner.models.members(resource, after, limit)?)
    }

    pub fn member(
        &self,
        resource: &ResourceId,
        principal: &Principal,
    ) -> Result<Option<MemberRecord>, EngineError> {
        Ok(self.inner.models.member(resource, principal)?)
    }

    /// The rolemap at a past position or time, rebuilt from the resource's stream.
    pub async fn members_as_of(
        &self,
        resource: &ResourceId,
        as_of: AsOf,
    ) -> Result<Option<(Vec<MemberRecord>, u64)>, EngineError> {
        let snapshots = Some(self.inner.snapshots.as_ref());
        Ok(rolemap_as_of(self.inner.store.as_ref(), snapshots, resource, as_of).await?)
    }

    pub fn memberships(&self, principal: &Principal) -> Result<Vec<MembershipRecord>, EngineError> {
        Ok(self.inner.models.memberships(principal)?)
    }

    /// A resource's links in number order after `after`, at most `limit`; more to come?
    pub fn links_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<LinkRecord>, bool), EngineError> {
        Ok(self.inner.models.links_page(resource, after, limit)?)
    }

    /// A resource's email invitations that `keep` wants, in number order after `after`, at
    /// most `limit`; more to come?
    pub fn invitations_page(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
        keep: impl FnMut(&InvitationRecord) -> bool,
    ) -> Result<(Vec<InvitationRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .invitations_page(resource, after, limit, keep)?)
    }

    /// A principal's memberships in resource order after `after`, at most `limit`.
    pub fn memberships_page(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<MembershipRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .memberships_page(principal, after, limit)?)
    }

    /// Registered resources in name order, of a kind and under a parent when given.
    pub fn resources_page(
        &self,
        kind: Option<&str>,
        parent: Option<&ResourceId>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ResourceRecord>, bool), EngineError> {
        Ok(self
            .inner
            .models
            .resources_page(kind, parent, after, limit)?)
    }

    /// API keys in id order after `after`, at most `limit` (digests only, never keys).
    pub fn api_keys_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ApiKeyRow>, bool), EngineError> {
        Ok(self.inner.models.api_keys_page(after, limit)?)
    }

    /// Webhook subscriptions in id order after `after`, at most `limit`.
    pub fn webhooks_page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<roster_projections::WebhookRow>, bool), EngineError> {
        Ok(self.inner.models.webhooks_page(after, limit)?)
    }

    pub fn links(&self, resource: &ResourceId) -> Result<Vec<LinkRecord>, EngineError> {
        Ok(self.inner.models.links(resource)?)
    }

    pub fn invitations(&self, resource: &ResourceId) -> Result<Vec<InvitationRecord>, EngineError> {
        Ok(self.inner.models.invitations(resource)?)
    }

    pub fn invite(&self, number: u64) -> Result<Option<InviteRecord>, EngineError> {
        Ok(self.inner.models.invite(number)?)
    }

    /// Pending invitations for an email, for sign-up flows.
    pub fn pending_invitations(&self, email: &Email) -> Result<Vec<InvitationRecord>, EngineError> {
        let now = self.now();
        Ok(self
            .inner
            .models
            .open_invitations_for(email)?
            .into_iter()
            .filter(|i| i.status(now) == roster_domain::InvitationStatus::Pending)
            .collect())
    }

    pub fn history(
        &self,
        resource: &ResourceId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.inner.models.history(resource, after, limit)?)
    }

    pub fn principal_history(
        &self,
        principal: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self
            .inner
            .models
            .principal_history(principal, after, limit)?)
    }

    /// Whether the principal holds the privilege on the resource, and its role.
    pub async fn check(
        &self,
        principal: &Principal,
        resource: &ResourceId,
        privilege: Privilege,
    ) -> Result<(bool, Option<RoleName>), EngineError> {
        let Some(member) = self.inner.models.member(resource, principal)? else {
            return Ok((false, None));
        };
        let schema = self.schema(resource.kind().as_str()).await?;
        Ok((schema.allows(&member.role, privilege), Some(member.role)))
    }

    pub fn api_key_by_digest(&self, digest: &KeyDigest) -> Result<Option<ApiKeyRow>, EngineError> {
        Ok(self.inner.models.api_key_by_digest(&digest.to_hex())?)
    }

    pub fn api_keys(&self) -> Result<Vec<ApiKeyRow>, EngineError> {
        Ok(self.inner.models.api_keys()?)
    }
}

enum Retry {
    Stale,
    No(EngineError),
}

struct Inputs {
    schema: RoleSchema,
    usage: KindUsage,
}

/// A command's decision, run by the log's writer against the stream's newest state.
struct Decision {
    entry: Entry,
    command: Command,
    actor: Actor,
    now: Timestamp,
    inputs: Inputs,
    limits: Limits,
    numbers: Arc<NumberSequence>,
    emails: ModelEmails,
    ids: Arc<dyn IdSource>,
    slot: Arc<Mutex<Option<Decided>>>,
}

impl Decision {
    fn run(self, view: StreamView<'_>) -> Result<Vec<NewEvent>, Rejection> {
        let mut cached = lock(&self.entry);
        if !cached.valid {
            return Err(Box::new(Stale));
        }
        // Events of this stream decided earlier in the same group are already in the cache
        // (their decisions put them there); only foreign ones would need folding here.
        for envelope in view.uncommitted {
            if envelope.version == cached.version + 1 {
                let event = decode(envelope).map_err(|e| Box::new(e) as Rejection)?;
                apply(&mut cached, &event, envelope.occurred_at.0);
            }
        }
        if cached.version != view.version {
            return Err(Box::new(Stale));
        }
        let named_member = match &self.command {
            Command::Resource(ResourceCommand::SetMemberRole { principal, .. }) => {
                Some(principal.clone())
            }
            _ => None,
        };
        let ctx = roster_domain::Context::new(self.now, self.actor.clone(), &self.inputs.schema)
            .with_limits(&self.limits)
            .with_numbers(self.numbers.as_ref())
            .with_known_emails(&self.emails)
            .with_kind_usage(&self.inputs.usage);
        let (events, invitations) =
            decide(&cached.state, self.command, &ctx).map_err(|e| Box::new(e) as Rejection)?;
        for event in &events {
            apply(&mut cached, event, self.now.unix_ms());
        }
        let (actor_role, member) = match &cached.state {
            StreamState::Resource(state) => (
                self.actor
                    .principal()
                    .and_then(|p| state.member(p))
                    .map(|m| m.role.clone()),
                named_member.and_then(|p| state.member(&p).cloned()),
            ),
            _ => (None, None),
        };
        let new_events = events
            .iter()
            .map(|event| NewEvent {
                event_id: self.ids.ulid(self.now),
                event_type: event.event_type().to_string(),
                schema: event.schema(),
                data: event.to_data(),
            })
            .collect();
        *self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Decided {
            events,
            invitations,
            actor_role,
            member,
        });
        Ok(new_events)
    }
}

/// Folds one event of the stream, which occurred at `occurred_ms`, into its cached state.
fn apply(cached: &mut Cached, event: &Event, occurred_ms: i64) {
    let state = std::mem::replace(&mut cached.state, StreamState::ApiKeys(Default::default()));
    cached.state = state.evolve(event);
    cached.version += 1;
    cached.latest_ms = cached.latest_ms.max(occurred_ms);
}

/// Routes a command to its stream's `decide`.
fn decide(
    state: &StreamState,
    command: Command,
    ctx: &roster_domain::Context<'_>,
) -> Result<(Vec<Event>, Option<InvitationBatch>), DomainError> {
    match (state, command) {
        (
            StreamState::Resource(state),
            Command::Resource(command @ ResourceCommand::CreateInvitations { .. }),
        ) => {
            let batch = create_invitations(state, &command, ctx)?;
            if batch.invited.is_empty() {
                // Decided through `decide` too, so the refusal is the domain's own.
                roster_domain::decide(state, command, ctx)?;
            }
            Ok((batch.events.clone(), Some(batch)))
        }
        (StreamState::Resource(state), Command::Resource(command)) => {
            Ok((roster_domain::decide(state, command, ctx)?, None))
        }
        (StreamState::Schema(state), Command::Schema(command)) => {
            Ok((roster_domain::decide(state, command, ctx)?, None))
        }
        (StreamState::ApiKeys(state), Command::ApiKeys(command)) => {
            Ok((roster_domain::decide(state, command, ctx)?, None))
        }
        (StreamState::Webhooks(state), Command::Webhooks(command)) => {
            Ok((roster_domain::decide(state, command, ctx)?, None))
        }
        _ => Err(DomainError::InvalidRequest(
            "a command reached another kind of stream".into(),
        )),
    }
}

fn decode(envelope: &roster_eventstore::Envelope) -> Result<Event, EngineError> {
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
