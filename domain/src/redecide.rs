//! Checking a log against the rules: every command the log records is decided again, from the
//! state before it, and must give exactly the events it appended.
//!
//! An event is the outcome of a decision, so the rules it obeyed are the ones `decide` applies:
//! rather than a second list of invariants that could drift from `decide`, the check infers the
//! command whose outcome the events are, runs the domain's own `decide` on it in the context the
//! log records (the time, the actor, the role schema, the numbers drawn), and compares. A log
//! edited so that a member joins as owner through an editor link, a one-use link is used twice
//! or the last owner leaves is refused here, chain intact or not. `roster verify` and
//! `roster import` both run it through [`LogCheck`].

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::codes::VerifiedCode;
use crate::context::{ADMIN_ACTOR_LABEL, LEGACY_ADMIN_ACTOR_LABEL};
use crate::ids::is_valid_number;
use crate::{
    Actor, Aggregate, ApiKeyCommand, ApiKeysState, Context, DeliveryOutcome, DomainError, Email,
    EmailList, Event, Kind, KindUsage, Limits, NumberSource, Principal, ResourceCommand,
    ResourceId, ResourceState, RoleSchema, SchemaCommand, SchemaState, StreamId, Timestamp, Via,
    WebhookCommand, WebhookOutcome, WebhooksState,
};

/// One command as the log records it: the consecutive events of one stream that carry the same
/// `command_id`, with what their envelopes say of it.
#[derive(Debug, Clone, Copy)]
pub struct LoggedCommand<'a> {
    pub stream: &'a StreamId,
    /// The envelopes' `actor`: a principal, or the admin's label.
    pub actor: &'a str,
    /// The envelopes' `occurred_at`: the command's `now`.
    pub occurred_at: Timestamp,
    pub events: &'a [Event],
}

/// Why the logged events are not what the rules decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The first of the command's events that is wrong (the count of its events when the rules
    /// give more than the log holds).
    pub index: usize,
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A stream's state that can tell which command a run of its events is the outcome of.
pub trait Redecide: Aggregate {
    /// The command whose outcome `events` are, on this state, and the verified email its actor
    /// must have had (accepting an email invitation needs one; the log keeps only the label).
    /// `Err` says why no command gives such events.
    fn infer(
        &self,
        stream: &StreamId,
        events: &[Event],
    ) -> Result<(Self::Command, Option<Email>), String>;
}

/// Decides again the command whose outcome `logged.events` are, from `state` (the stream just
/// before them), with the role schema in force then and the kind's usage then (consulted by
/// schema changes only), and requires the same events.
///
/// The context is what the log records: the time and the actor of the envelopes, and numbers
/// handed out exactly as the events carry them. Limits are unbounded, because they are the
/// server's configuration of the time, which the log does not hold; known emails beyond the
/// stream's own are not given, because the engine reads them from read models that may lag
/// the log, and they only decide whether an address is reported as already a member.
pub fn redecide<A>(
    state: &A,
    logged: &LoggedCommand<'_>,
    schema: &RoleSchema,
    kind_usage: &KindUsage,
) -> Result<(), Mismatch>
where
    A: Redecide,
    A::Command: Clone,
{
    if logged.events.is_empty() {
        // A command that appends nothing is never logged: there is nothing to check.
        return Ok(());
    }
    let (command, email) = state
        .infer(logged.stream, logged.events)
        .map_err(|why| Mismatch {
            index: 0,
            reason: format!(
                "the log says {}; no command gives that: {why}",
                describe_all(logged.events)
            ),
        })?;
    let numbers = numbers_carried(logged.events);
    let mut first = None;
    for actor in actors_of(logged.actor)? {
        let actor = match (actor, &email) {
            (Actor::Principal { principal, .. }, Some(email)) => Actor::Principal {
                principal,
                email: Some(email.clone()),
            },
            (actor, _) => actor,
        };
        let source = LoggedNumbers {
            numbers: numbers.clone(),
            next: Cell::new(0),
        };
        let ctx = Context::new(logged.occurred_at, actor, schema)
            .with_limits(&Limits::UNBOUNDED)
            .with_numbers(&source)
            .with_kind_usage(kind_usage);
        match compare(logged.events, state.decide(command.clone(), &ctx)) {
            Ok(()) => return Ok(()),
            Err(mismatch) => {
                first.get_or_insert(mismatch);
            }
        }
    }
    Err(first.unwrap_or_else(|| Mismatch {
        index: 0,
        reason: "no actor to decide as".into(),
    }))
}

/// The actors a label may stand for: one, except the legacy admin label, which a principal
/// named `admin` wrote too. Trying both can only accept more, never refuse a sound log.
fn actors_of(label: &str) -> Result<Vec<Actor>, Mismatch> {
    let actor = Actor::from_label(label).map_err(|_| Mismatch {
        index: 0,
        reason: format!("the actor {label:?} is neither {ADMIN_ACTOR_LABEL:?} nor a principal"),
    })?;
    let mut actors = vec![actor];
    if label == LEGACY_ADMIN_ACTOR_LABEL {
        if let Ok(principal) = Principal::parse(label) {
            actors.push(Actor::Principal {
                principal,
                email: None,
            });
        }
    }
    Ok(actors)
}

/// The logged events against the decision: the same events, in the same order.
fn compare(logged: &[Event], decided: Result<Vec<Event>, DomainError>) -> Result<(), Mismatch> {
    let decided = match decided {
        Ok(decided) => decided,
        Err(error) => {
            return Err(Mismatch {
                index: 0,
                reason: format!(
                    "the log says {}; the rules refuse it: {} ({error})",
                    describe_all(logged),
                    error.code()
                ),
            })
        }
    };
    let Some(index) =
        (0..logged.len().max(decided.len())).find(|i| logged.get(*i) != decided.get(*i))
    else {
        return Ok(());
    };
    let differ = match (logged.get(index), decided.get(index)) {
        (Some(a), Some(b)) if a.event_type() == b.event_type() => {
            format!(" (they differ in {})", differing_fields(a, b).join(", "))
        }
        _ => String::new(),
    };
    let decided = if decided.is_empty() {
        "nothing".to_owned()
    } else {
        describe_all(&decided)
    };
    Err(Mismatch {
        index,
        reason: format!(
            "the log says {}; the rules decide: {decided}{differ}",
            describe_all(logged)
        ),
    })
}

/// The names of the fields two events of one type differ in: names only, so an email never
/// reaches the message.
fn differing_fields(a: &Event, b: &Event) -> Vec<String> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (a.to_data(), b.to_data())
    else {
        return vec!["data".into()];
    };
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|name| a.get(*name) != b.get(*name))
        .cloned()
        .collect()
}

/// Hands out the numbers the logged events carry, in their order, and nothing else.
struct LoggedNumbers {
    numbers: Vec<u64>,
    next: Cell<usize>,
}

impl NumberSource for LoggedNumbers {
    fn next_number(&self) -> Result<u64, DomainError> {
        let index = self.next.get();
        let number = self.numbers.get(index).copied().ok_or_else(|| {
            DomainError::LimitReached("the log carries no further number for this command".into())
        })?;
        self.next.set(index + 1);
        if is_valid_number(number) {
            Ok(number)
        } else {
            Err(DomainError::InvalidRequest(format!(
                "number {number} is not below 2^53"
            )))
        }
    }
}

/// The new numbers a command's events carry, in order.
fn numbers_carried(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(Event::new_number).collect()
}

impl Redecide for ResourceState {
    fn infer(
        &self,
        stream: &StreamId,
        events: &[Event],
    ) -> Result<(ResourceCommand, Option<Email>), String> {
        let StreamId::Resource(resource) = stream else {
            return Err(format!("{stream} is not a resource's stream"));
        };
        // Every command is built for the stream's resource, so an event naming another one
        // (a registration moved between streams) differs from the decision.
        let resource = resource.clone();
        let code = |number: u64, generation: u32| VerifiedCode::for_check(number, generation);
        let command = match &events[0] {
            Event::ResourceRegistered { owner, parent, .. } => ResourceCommand::RegisterResource {
                resource,
                owner: owner.clone(),
                parent: parent.clone(),
            },
            Event::MemberAdded {
                principal,
                role,
                via: Via::Direct,
                ..
            }
            | Event::MemberRoleChanged {
                principal,
                role,
                via: Via::Direct,
                ..
            } => ResourceCommand::SetMemberRole {
                resource,
                principal: principal.clone(),
                role: role.clone(),
            },
            Event::MemberRemoved { principal, .. } => ResourceCommand::RemoveMember {
                resource,
                principal: principal.clone(),
            },
            Event::InviteLinkCreated {
                role,
                expires_at,
                max_uses,
                ..
            } => ResourceCommand::CreateInviteLink {
                resource,
                role: Some(role.clone()),
                expires_at: *expires_at,
                max_uses: *max_uses,
            },
            Event::InviteLinkChanged {
                number,
                role,
                expires_at,
                max_uses,
                ..
            } => {
                // Only what changed is named: a patch that kept an expiry already past, or a
                // role the schema dropped since, is one the rules accept as it was sent.
                let link = self.link(*number);
                ResourceCommand::ChangeInviteLink {
                    resource,
                    link: *number,
                    role: Some(role.clone()).filter(|r| link.is_none_or(|l| &l.role != r)),
                    expires_at: Some(*expires_at)
                        .filter(|at| link.is_none_or(|l| &l.expires_at != at)),
                    max_uses: Some(*max_uses).filter(|max| link.is_none_or(|l| &l.max_uses != max)),
                }
            }
            Event::InviteLinkRotated { number, .. } => ResourceCommand::RotateInviteLink {
                resource,
                link: *number,
            },
            Event::InviteLinkRevoked { number, .. } => ResourceCommand::RevokeInviteLink {
                resource,
                link: *number,
            },
            Event::InviteLinkUsed {
                number, generation, ..
            } => ResourceCommand::AcceptInvitation {
                resource,
                code: code(*number, *generation),
            },
            Event::InvitationCreated {
                role,
                expires_at,
                message,
                ..
            } => {
                let emails = events
                    .iter()
                    .map(|event| match event {
                        Event::InvitationCreated { email, .. } => Ok(email.written().to_owned()),
                        other => Err(format!(
                            "{} among the invitations of one request",
                            other.event_type()
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ResourceCommand::CreateInvitations {
                    resource,
                    emails: EmailList::Items(emails),
                    role: Some(role.clone()),
                    expires_at: Some(*expires_at),
                    message: message.clone(),
                }
            }
            Event::InvitationResent { number, .. } => ResourceCommand::ResendInvitation {
                resource,
                invitation: *number,
            },
            Event::InvitationRevoked { number, .. } => ResourceCommand::RevokeInvitation {
                resource,
                invitation: *number,
            },
            Event::InvitationDeclined { number, .. } => {
                // Only a code of the current generation declines; any other is refused.
                let generation = self.invitation(*number).map_or(1, |i| i.generation);
                ResourceCommand::DeclineInvitation {
                    resource,
                    code: code(*number, generation),
                }
            }
            Event::InvitationAccepted {
                number,
                generation,
                email,
                ..
            } => {
                let command = ResourceCommand::AcceptInvitation {
                    resource,
                    code: code(*number, *generation),
                };
                return Ok((command, Some(email.clone())));
            }
            Event::InvitationDelivered {
                number,
                generation,
                attempt,
            } => ResourceCommand::RecordDelivery {
                resource,
                invitation: *number,
                generation: *generation,
                attempt: *attempt,
                outcome: DeliveryOutcome::Delivered,
            },
            Event::InvitationDeliveryFailed {
                number,
                generation,
                attempt,
                error,
            } => ResourceCommand::RecordDelivery {
                resource,
                invitation: *number,
                generation: *generation,
                attempt: *attempt,
                outcome: DeliveryOutcome::Failed {
                    error: error.clone(),
                },
            },
            other => {
                return Err(format!(
                    "no command on a resource begins with {}",
                    describe(other)
                ))
            }
        };
        Ok((command, None))
    }
}

impl Redecide for SchemaState {
    fn infer(
        &self,
        stream: &StreamId,
        events: &[Event],
    ) -> Result<(SchemaCommand, Option<Email>), String> {
        let StreamId::RoleSchema(kind) = stream else {
            return Err(format!("{stream} is not a role schema's stream"));
        };
        match &events[0] {
            Event::RoleSchemaDefined {
                roles,
                default_role,
                ..
            } => Ok((
                SchemaCommand::DefineRoleSchema {
                    kind: kind.clone(),
                    roles: roles.clone(),
                    default_role: default_role.clone(),
                },
                None,
            )),
            other => Err(format!(
                "no command on a role schema begins with {}",
                describe(other)
            )),
        }
    }
}

impl Redecide for ApiKeysState {
    fn infer(
        &self,
        stream: &StreamId,
        events: &[Event],
    ) -> Result<(ApiKeyCommand, Option<Email>), String> {
        if stream != &StreamId::ApiKeys {
            return Err(format!("{stream} is not the API keys' stream"));
        }
        match &events[0] {
            Event::ApiKeyIssued {
                key_id,
                principal,
                scopes,
                act_as,
                email,
                name,
                digest,
            } => Ok((
                ApiKeyCommand::IssueApiKey {
                    key_id: key_id.clone(),
                    principal: principal.clone(),
                    scopes: scopes.clone(),
                    act_as: *act_as,
                    email: email.clone(),
                    name: name.clone(),
                    digest: *digest,
                },
                None,
            )),
            Event::ApiKeyRevoked { key_id } => Ok((
                ApiKeyCommand::RevokeApiKey {
                    key_id: key_id.clone(),
                },
                None,
            )),
            other => Err(format!(
                "no command on the API keys begins with {}",
                describe(other)
            )),
        }
    }
}

impl Redecide for WebhooksState {
    fn infer(
        &self,
        stream: &StreamId,
        events: &[Event],
    ) -> Result<(WebhookCommand, Option<Email>), String> {
        if stream != &StreamId::Webhooks {
            return Err(format!("{stream} is not the webhooks' stream"));
        }
        let command = match &events[0] {
            Event::WebhookSubscribed { url, events, .. } => WebhookCommand::Subscribe {
                url: url.clone(),
                events: events.clone(),
            },
            Event::WebhookRemoved { webhook } => WebhookCommand::Remove { webhook: *webhook },
            Event::WebhookDelivered {
                webhook,
                position,
                attempt,
                status,
            } => WebhookCommand::RecordDelivery {
                webhook: *webhook,
                position: *position,
                attempt: *attempt,
                outcome: WebhookOutcome::Delivered { status: *status },
            },
            Event::WebhookDeliveryFailed {
                webhook,
                position,
                attempt,
                status,
                error,
                gave_up,
            } => WebhookCommand::RecordDelivery {
                webhook: *webhook,
                position: *position,
                attempt: *attempt,
                outcome: WebhookOutcome::Failed {
                    status: *status,
                    error: error.clone(),
                    gave_up: *gave_up,
                },
            },
            other => {
                return Err(format!(
                    "no command on the webhooks begins with {}",
                    describe(other)
                ))
            }
        };
        Ok((command, None))
    }
}

/// A log's streams as far as it has been checked, and the check of its next command: each
/// command re-decided (see [`redecide`]) with the role schema and kind usage in force at its
/// position, the numbers it draws never drawn before, and every resource keeping a holder of
/// its highest role.
#[derive(Debug, Default)]
pub struct LogCheck {
    schemas: HashMap<Kind, SchemaState>,
    /// Each kind's schema in force, as `schemas` gives it: built once per change, not once
    /// per command.
    in_force: HashMap<Kind, RoleSchema>,
    resources: HashMap<ResourceId, ResourceState>,
    api_keys: ApiKeysState,
    webhooks: WebhooksState,
    /// Link and invitation numbers so far: one number names one code's link or invitation,
    /// whatever the resource, because a code is routed to its resource by its number alone.
    invite_numbers: std::collections::HashSet<u64>,
    webhook_numbers: std::collections::HashSet<u64>,
}

impl LogCheck {
    pub fn new() -> LogCheck {
        LogCheck::default()
    }

    /// Checks the next command of the log and folds its events in. `after_each` is handed a
    /// resource's state after each of its events (`roster verify` compares snapshots with it).
    pub fn command(
        &mut self,
        logged: &LoggedCommand<'_>,
        after_each: &mut dyn FnMut(usize, &ResourceState),
    ) -> Result<(), Mismatch> {
        self.numbers_are_new(logged.events)?;
        match logged.stream {
            StreamId::Resource(resource) => {
                let kind = resource.kind();
                if !self.in_force.contains_key(kind) {
                    let schema = self.schemas.get(kind).cloned().unwrap_or_default();
                    self.in_force.insert(kind.clone(), schema.in_force(kind));
                }
                let schema = &self.in_force[kind];
                let state = self.resources.entry(resource.clone()).or_default();
                // Decide, then fold regardless, so that a command both refused and leaving no
                // owner is reported with both.
                let decided = redecide(state, logged, schema, &KindUsage::UNUSED);
                let stranded = fold_resource(state, resource, schema, logged.events, after_each);
                match (stranded, decided) {
                    (None, decided) => decided,
                    (Some(stranded), Ok(())) => Err(stranded),
                    (Some(stranded), Err(refused)) => Err(Mismatch {
                        index: stranded.index.min(refused.index),
                        reason: format!("{}; {}", stranded.reason, refused.reason),
                    }),
                }
            }
            StreamId::RoleSchema(kind) => {
                let usage = self.kind_usage(kind);
                let state = self.schemas.entry(kind.clone()).or_default();
                redecide(state, logged, &state.in_force(kind), &usage)?;
                *state = logged
                    .events
                    .iter()
                    .fold(std::mem::take(state), SchemaState::evolve);
                self.in_force.insert(kind.clone(), state.in_force(kind));
                Ok(())
            }
            StreamId::ApiKeys => {
                redecide(&self.api_keys, logged, &any_schema(), &KindUsage::UNUSED)?;
                self.api_keys = logged
                    .events
                    .iter()
                    .fold(std::mem::take(&mut self.api_keys), |s, e| s.evolve(e));
                Ok(())
            }
            StreamId::Webhooks => {
                redecide(&self.webhooks, logged, &any_schema(), &KindUsage::UNUSED)?;
                self.webhooks = logged
                    .events
                    .iter()
                    .fold(std::mem::take(&mut self.webhooks), |s, e| s.evolve(e));
                Ok(())
            }
        }
    }

    /// Resources (streams of them) seen so far.
    /// Once the whole log is read: every resource's final state against the invariants of
    /// [`ResourceState::check_invariants`], under its kind's schema in force. The first that
    /// fails, in resource order, with the reason.
    pub fn finish(&self) -> Result<(), (ResourceId, String)> {
        let mut resources: Vec<&ResourceId> = self.resources.keys().collect();
        resources.sort();
        for resource in resources {
            let kind = resource.kind();
            let schema = match self.in_force.get(kind) {
                Some(schema) => schema.clone(),
                None => self
                    .schemas
                    .get(kind)
                    .cloned()
                    .unwrap_or_default()
                    .in_force(kind),
            };
            self.resources[resource]
                .check_invariants(&schema)
                .map_err(|reason| (resource.clone(), reason))?;
        }
        Ok(())
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// The kind's usage at this point of the log, as a schema change is decided against it.
    fn kind_usage(&self, kind: &Kind) -> KindUsage {
        let mut usage = KindUsage::default();
        for (resource, state) in &self.resources {
            if resource.kind() == kind && state.registered().is_some() {
                usage.has_resources = true;
                usage
                    .roles_held
                    .extend(state.members().values().map(|m| m.role.clone()));
            }
        }
        usage
    }

    fn numbers_are_new(&mut self, events: &[Event]) -> Result<(), Mismatch> {
        for (index, event) in events.iter().enumerate() {
            let (seen, number) = match event {
                Event::InviteLinkCreated { number, .. }
                | Event::InvitationCreated { number, .. } => (&mut self.invite_numbers, *number),
                Event::WebhookSubscribed { webhook, .. } => (&mut self.webhook_numbers, *webhook),
                _ => continue,
            };
            if !seen.insert(number) {
                return Err(Mismatch {
                    index,
                    reason: format!(
                        "the log says {}, but number {number} was handed out before",
                        describe(event)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A schema for streams that have no kind: API keys and webhooks consult none.
fn any_schema() -> RoleSchema {
    let kind = Kind::parse("space").unwrap_or_else(|_| unreachable!("`space` is a valid kind"));
    RoleSchema::builtin(&kind)
}

/// Folds a resource command's events into its state; the first event after which the resource
/// is registered but nobody holds its highest role, if any (rule 3). Only a registration, or a
/// holder of the highest role losing it, can bring that about, so only then are members scanned.
fn fold_resource(
    state: &mut ResourceState,
    resource: &ResourceId,
    schema: &RoleSchema,
    events: &[Event],
    after_each: &mut dyn FnMut(usize, &ResourceState),
) -> Option<Mismatch> {
    let highest = schema.highest();
    let mut stranded = None;
    for (index, event) in events.iter().enumerate() {
        let touched = match event {
            Event::MemberAdded { principal, .. }
            | Event::MemberRoleChanged { principal, .. }
            | Event::MemberRemoved { principal, .. } => Some(principal),
            _ => None,
        };
        let holds_highest =
            |s: &ResourceState| touched.and_then(|p| s.member(p)).map(|m| &m.role) == Some(highest);
        let held = holds_highest(state);
        state.apply(event);
        let registered = matches!(event, Event::ResourceRegistered { .. });
        if stranded.is_none()
            && state.registered().is_some()
            && (registered || (held && !holds_highest(state)))
            && !state.members().values().any(|m| &m.role == highest)
        {
            stranded = Some(Mismatch {
                index,
                reason: format!("{resource} has no {highest} left"),
            });
        }
        after_each(index, state);
    }
    stranded
}

/// The events, each in a few words, without an email or a message.
pub fn describe_all(events: &[Event]) -> String {
    events.iter().map(describe).collect::<Vec<_>>().join(", ")
}

/// One event in a few words, without an email or a message (DESIGN section 13 keeps both out
/// of every output).
pub fn describe(event: &Event) -> String {
    let via = |via: &Via| match via {
        Via::Direct => "directly".to_owned(),
        Via::Link { number } => format!("via link {number}"),
        Via::Invitation { number } => format!("via invitation {number}"),
    };
    let kind = event.event_type();
    match event {
        Event::RoleSchemaDefined {
            kind: of,
            roles,
            default_role,
        } => {
            let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
            format!(
                "{kind} of {of} with roles {} (default {default_role})",
                names.join(", ")
            )
        }
        Event::ResourceRegistered {
            resource,
            owner,
            role,
            ..
        } => format!("{kind} of {resource} with {owner} as {role}"),
        Event::MemberAdded {
            principal,
            role,
            via: by,
            ..
        } => format!("{kind} of {principal} as {role} {}", via(by)),
        Event::MemberRoleChanged {
            principal,
            from_role,
            role,
            via: by,
            ..
        } => format!(
            "{kind} of {principal} from {from_role} to {role} {}",
            via(by)
        ),
        Event::MemberRemoved {
            principal,
            role,
            left,
            ..
        } => {
            let how = if *left { "left" } else { "removed" };
            format!("{kind} of {principal} ({role}, {how})")
        }
        Event::InviteLinkCreated { number, role, .. } => {
            format!("{kind} of link {number} for {role}")
        }
        Event::InviteLinkChanged { number, role, .. } => {
            format!("{kind} of link {number} to {role}")
        }
        Event::InviteLinkRotated {
            number, generation, ..
        } => format!("{kind} of link {number} to generation {generation}"),
        Event::InviteLinkRevoked { number, .. } => format!("{kind} of link {number}"),
        Event::InviteLinkUsed {
            number,
            used_by,
            uses,
            ..
        } => format!("{kind} of link {number} by {used_by} (use {uses})"),
        Event::InvitationCreated { number, role, .. } => {
            format!("{kind} of invitation {number} for {role}")
        }
        Event::InvitationResent {
            number, generation, ..
        } => format!("{kind} of invitation {number} (generation {generation})"),
        Event::InvitationAccepted {
            number,
            accepted_by,
            ..
        } => format!("{kind} of invitation {number} by {accepted_by}"),
        Event::InvitationDeclined { number, .. } | Event::InvitationRevoked { number, .. } => {
            format!("{kind} of invitation {number}")
        }
        Event::InvitationDelivered {
            number, attempt, ..
        }
        | Event::InvitationDeliveryFailed {
            number, attempt, ..
        } => format!("{kind} of invitation {number} (attempt {attempt})"),
        Event::ApiKeyIssued {
            key_id, principal, ..
        } => format!("{kind} of {key_id} for {principal}"),
        Event::ApiKeyRevoked { key_id } => format!("{kind} of {key_id}"),
        Event::WebhookSubscribed { webhook, .. } | Event::WebhookRemoved { webhook } => {
            format!("{kind} of webhook {webhook}")
        }
        Event::WebhookDelivered {
            webhook,
            position,
            attempt,
            ..
        }
        | Event::WebhookDeliveryFailed {
            webhook,
            position,
            attempt,
            ..
        } => format!("{kind} of position {position} to webhook {webhook} (attempt {attempt})"),
    }
}
