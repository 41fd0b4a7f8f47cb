//! Commands: a request decided inside the log's writer against the newest state of its stream,
//! appended, and answered once the read models reflect it; acceptance and declining by code,
//! and API keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_domain::{
    create_invitations, Actor, ApiKeyCommand, ApiKeyId, Command, DomainError, Email, Event,
    InvitationBatch, KeyDigest, Kind, KindUsage, KnownEmails, Limits, Membership, NumberSequence,
    Principal, ResourceCommand, ResourceId, ResourceState, RoleName, RoleSchema, SchemaCommand,
    SchemaState, StreamId, Timestamp, VerifiedCode,
};
use roster_eventstore::{AppendError, AppendRequest, NewEvent, Rejection, StoreError, StreamView};
use roster_projections::{InviteRecord, ReadModels};

use crate::cache::{lock, Cached, Entry, StreamState};
use crate::clock::IdSource;
use crate::{
    decode, Accepted, Engine, EngineError, Executed, Idempotency, IssuedKey, KeyRequest, Request,
};

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
pub(crate) struct ModelEmails(pub(crate) Arc<ReadModels>);

impl KnownEmails for ModelEmails {
    fn principal_of(&self, email: &Email) -> Option<Principal> {
        self.0.known_principal(email).ok().flatten()
    }
}

/// Attempts at a command whose cached state turned out stale (only after a failed append).
const STALE_RETRIES_MAX: u32 = 20;

impl Engine {
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

    pub(crate) async fn try_execute(
        &self,
        request: &Request,
        stream: &str,
        command_id: &str,
        entry: Entry,
    ) -> Result<Executed, Retry> {
        let now = self.now();
        let reads = self.reads(&request.command).await.map_err(Retry::No)?;
        let slot: Arc<Mutex<Option<Decided>>> = Arc::new(Mutex::new(None));
        let decision = Decision {
            entry,
            command: request.command.clone(),
            actor: request.actor.clone(),
            reads,
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
            .fence(request.fence.clone())
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
            Err(AppendError::Fenced { lease }) => {
                return Err(Retry::No(EngineError::LeaseLost(lease)))
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

    /// What a decision reads beyond its own stream: handles gathered before it is queued,
    /// read inside the writer at the moment of deciding (see [`Reads`]).
    pub(crate) async fn reads(&self, command: &Command) -> Result<Reads, EngineError> {
        Ok(match command {
            Command::Resource(command) => {
                let kind = command.resource().kind();
                let entry = self.entry(&StreamId::RoleSchema(kind.clone())).await?;
                Reads {
                    schema: SchemaRead::Stream {
                        entry,
                        builtin: RoleSchema::builtin(kind),
                    },
                    usage: KindUsage::default(),
                }
            }
            Command::Schema(SchemaCommand::DefineRoleSchema { kind, .. }) => Reads {
                schema: SchemaRead::Own {
                    builtin: RoleSchema::builtin(kind),
                },
                usage: self.inner.models.kind_usage(kind.as_str())?,
            },
            // API keys and webhooks have no kind: no schema is consulted.
            Command::ApiKeys(_) | Command::Webhooks(_) => Reads {
                schema: SchemaRead::Builtin(builtin_schema()),
                usage: KindUsage::default(),
            },
        })
    }

    /// The cached state of a stream, loaded from the log when absent.
    pub(crate) async fn entry(&self, stream: &StreamId) -> Result<Entry, EngineError> {
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
        let principal = accepting_principal(&actor)?;
        let (resource, verified) = self.resolve(code).await?;
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
        let principal = accepting_principal(&actor)?;
        let mut found = self.inner.models.invite(invitation)?;
        if found.is_none() {
            // Perhaps made on another node a moment ago.
            self.reach_store_head().await?;
            found = self.inner.models.invite(invitation)?;
        }
        let resource = match found {
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
    pub(crate) async fn accept_command(
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

    /// Declines an email invitation (a link's decline records nothing).
    pub async fn decline(
        &self,
        actor: Actor,
        code: &str,
        idempotency: Option<Idempotency>,
    ) -> Result<(ResourceId, Executed), EngineError> {
        let (resource, verified) = self.resolve(code).await?;
        let command = Command::Resource(ResourceCommand::DeclineInvitation {
            resource: resource.clone(),
            code: verified,
        });
        let executed = self
            .execute(Request::new(actor, command).idempotent(idempotency))
            .await?;
        Ok((resource, executed))
    }

    /// A code's verified form and the resource it belongs to. Unknown, malformed and forged
    /// codes all answer the same `invitation_not_found`. A genuine code whose number this node
    /// does not know yet (made on another node a moment ago) makes it read the shared log up
    /// to its head first; a forged one never gets that far.
    pub(crate) async fn resolve(
        &self,
        code: &str,
    ) -> Result<(ResourceId, VerifiedCode), EngineError> {
        let verified = VerifiedCode::from_text(&self.inner.config.secret, code)?;
        let record = match self.inner.models.invite(verified.number())? {
            Some(record) => record,
            None => {
                self.reach_store_head().await?;
                self.inner
                    .models
                    .invite(verified.number())?
                    .ok_or(DomainError::InvitationNotFound)?
            }
        };
        Ok((record.resource().clone(), verified))
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
}

/// Who accepts: the acting principal (the admin acting as nobody cannot join anything).
fn accepting_principal(actor: &Actor) -> Result<Principal, DomainError> {
    actor.principal().cloned().ok_or_else(|| {
        DomainError::InvalidRequest(
            "accepting needs a principal: name one with X-Roster-Actor".into(),
        )
    })
}

pub(crate) enum Retry {
    Stale,
    No(EngineError),
}

/// What a decision reads beyond its own stream, resolved by the writer when it decides, not
/// by the caller when it queues: a role schema defined meanwhile (even earlier in the same
/// group) is the one the decision obeys. The writer supplies the time too
/// ([`StreamView::occurred_at`]), and new link and invitation numbers are drawn while deciding.
/// On one machine the writer is one thread; a store shared by many nodes runs the same
/// decision under its lock, after catching up.
pub(crate) struct Reads {
    schema: SchemaRead,
    /// Usage counts of a kind, for redefining its schema: the read models' as of queueing (a
    /// shared store reads them under its lock).
    usage: KindUsage,
}

/// Where a decision finds the role schema in force: the one defined for its kind, else the
/// kind's built-in schema. The built-in one is made when the command is queued (it never
/// changes), so the writer only borrows: it builds and clones no schema while deciding.
enum SchemaRead {
    /// The kind's schema stream, through its cached state: whatever the writer has decided
    /// on it by now. Holding the entry keeps the cache from evicting it.
    Stream { entry: Entry, builtin: RoleSchema },
    /// The decision's own stream is the schema stream (redefining it).
    Own { builtin: RoleSchema },
    /// The command concerns no kind.
    Builtin(RoleSchema),
}

/// The schema handed to decisions that consult none.
fn builtin_schema() -> RoleSchema {
    RoleSchema::builtin(&Kind::parse("space").expect("\"space\" is a valid kind"))
}

/// A command's decision, run by the log's writer against the stream's newest state.
struct Decision {
    entry: Entry,
    command: Command,
    actor: Actor,
    reads: Reads,
    limits: Limits,
    numbers: Arc<NumberSequence>,
    emails: ModelEmails,
    ids: Arc<dyn IdSource>,
    slot: Arc<Mutex<Option<Decided>>>,
}

impl Decision {
    pub(crate) fn run(self, view: StreamView<'_>) -> Result<Vec<NewEvent>, Rejection> {
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
        // The writer's time: never before the log's latest, so times rise with positions.
        let now = Timestamp::from_unix_ms(view.occurred_at.unix_ms())
            .map_err(|e| Box::new(e) as Rejection)?;
        // Held while deciding: the schema in force is borrowed from it.
        let schema_stream = match &self.reads.schema {
            SchemaRead::Stream { entry, .. } => Some(lock(entry)),
            _ => None,
        };
        let schema = match &self.reads.schema {
            SchemaRead::Stream { builtin, .. } => match schema_stream.as_deref() {
                Some(Cached {
                    state: StreamState::Schema(state),
                    valid: true,
                    ..
                }) => state.defined().unwrap_or(builtin),
                _ => return Err(Box::new(Stale)),
            },
            SchemaRead::Own { builtin } => match &cached.state {
                StreamState::Schema(state) => state.defined().unwrap_or(builtin),
                _ => return Err(Box::new(Stale)),
            },
            SchemaRead::Builtin(schema) => schema,
        };
        let ctx = roster_domain::Context::new(now, self.actor.clone(), schema)
            .with_limits(&self.limits)
            .with_numbers(self.numbers.as_ref())
            .with_known_emails(&self.emails)
            .with_kind_usage(&self.reads.usage);
        let (events, invitations) =
            decide(&cached.state, self.command, &ctx).map_err(|e| Box::new(e) as Rejection)?;
        for event in &events {
            apply(&mut cached, event, now.unix_ms());
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
                event_id: self.ids.ulid(now),
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
    cached.state.apply(event);
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
