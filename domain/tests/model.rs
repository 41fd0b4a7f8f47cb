//! Model-based property test: random command sequences from several actors on a few resources,
//! checked step by step against a plain reference model written apart from `decide`.
//!
//! After every step the test checks that `decide` answered as the model predicts (the same success
//! or the same error code), that the resource states agree, and the invariants: at least one holder
//! of the highest role; nobody granted a role above what its grantor held at the time; link uses
//! within their limit; each email invitation accepted at most once; folding the emitted events from
//! scratch (through their JSON envelope parts) gives the running state. Each accepted command is
//! also re-decided as `roster verify` does (`redecide`), and an acceptance edited to grant another
//! role, or logged twice, must be refused by it.
//!
//! Reproducing a failure: proptest prints the minimal failing sequence and appends its seed to
//! `domain/tests/model.proptest-regressions`, which every later run replays first (commit it to keep
//! the case). To rerun one generation from its RNG seed instead:
//! `PROPTEST_RNG_SEED=<seed> cargo test -p roster-domain --test model`; `PROPTEST_CASES=5000` runs longer.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use roster_domain::strategies::{self, ActorPick, Step};
use roster_domain::*;
use support::{code, t0};

const RESOURCES: usize = 2;
const PRINCIPALS: usize = 4;
/// The built-in `space` schema: owner, creator, editor, commenter, viewer.
const ROLES: usize = 5;
/// Small limits, so that sequences reach them.
const ACTIVE_LINKS_MAX: usize = 3;
const PENDING_INVITATIONS_MAX: usize = 2;
/// A number no link or invitation gets in a run.
const UNKNOWN_NUMBER: u64 = 9_000_000;

/// Members each run starts with besides the owners (resource, principal, rank), so that most
/// actors can act and grants can later be undone by demotions and removals.
const INITIAL_MEMBERS: [(usize, usize, usize); 4] = [(0, 1, 1), (0, 2, 2), (1, 2, 1), (1, 3, 2)];

fn principal_name(index: usize) -> String {
    format!("p{index}")
}

/// Principal `i` verified `p{i}@x.io`; index `PRINCIPALS` is a stranger nobody verified.
fn email_of(index: usize) -> String {
    if index < PRINCIPALS {
        format!("p{index}@x.io")
    } else {
        "stranger@x.io".to_owned()
    }
}

fn resource_name(index: usize) -> String {
    format!("space/r{index}")
}

// ---------------------------------------------------------------------------------------------
// The reference model: plain maps of indices and ranks (0 is the highest), the rules spelt out
// once more in the order DESIGN section 2 and the error table give them.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelLink {
    rank: usize,
    max_uses: Option<u32>,
    uses: u32,
    generation: u32,
    creator: Option<usize>,
    revoked: bool,
    expires_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Accepted,
    Declined,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelInvitation {
    email: usize,
    rank: usize,
    generation: u32,
    inviter: Option<usize>,
    closed: Option<Closed>,
    expires_at: i64,
    validity_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ModelResource {
    members: BTreeMap<usize, usize>,
    links: BTreeMap<u64, ModelLink>,
    invitations: BTreeMap<u64, ModelInvitation>,
}

/// `Ok(changed)` or the error code.
type Outcome = Result<bool, &'static str>;

#[derive(Debug, Clone)]
struct Model {
    now: i64,
    resources: Vec<ModelResource>,
    next_number: u64,
    outcome: Outcome,
}

fn manages_members(rank: usize) -> bool {
    rank <= 1
}

fn invites(rank: usize) -> bool {
    rank <= 2
}

fn manages_invitations(rank: usize) -> bool {
    rank <= 1
}

impl ModelLink {
    fn revoked(&self) -> bool {
        self.revoked
    }
    fn exhausted(&self) -> bool {
        matches!(self.max_uses, Some(max) if self.uses >= max)
    }
    fn expired(&self, now: i64) -> bool {
        matches!(self.expires_at, Some(at) if at <= now)
    }
    fn active(&self, now: i64) -> bool {
        !self.revoked() && !self.exhausted() && !self.expired(now)
    }
}

impl ModelInvitation {
    fn pending(&self, now: i64) -> bool {
        self.closed.is_none() && self.expires_at > now
    }
}

fn nth_number<T>(map: &BTreeMap<u64, T>, index: usize) -> u64 {
    if map.is_empty() {
        UNKNOWN_NUMBER
    } else {
        *map.keys()
            .nth(index % map.len())
            .expect("index within length")
    }
}

impl ModelResource {
    fn owners_other_than(&self, principal: usize) -> usize {
        self.members
            .iter()
            .filter(|(p, r)| **p != principal && **r == 0)
            .count()
    }

    /// `None` for the admin, `Some(rank)` for a member; anyone else is forbidden.
    fn standing(&self, actor: ActorPick) -> Result<Option<usize>, &'static str> {
        match actor {
            ActorPick::Admin => Ok(None),
            ActorPick::Principal(p) => self.members.get(&p).map(|r| Some(*r)).ok_or("forbidden"),
        }
    }

    /// The standing for a command on a link or invitation: one who is not a member learns
    /// nothing of the numbers, existing or not (every built-in role may view members).
    fn standing_on_invites(&self, actor: ActorPick) -> Result<Option<usize>, &'static str> {
        self.standing(actor).map_err(|_| "not_found")
    }

    fn may_manage(
        standing: Option<usize>,
        actor: ActorPick,
        creator: Option<usize>,
    ) -> Result<(), &'static str> {
        match (standing, actor) {
            (Some(rank), ActorPick::Principal(p)) => {
                if manages_invitations(rank) || (invites(rank) && creator == Some(p)) {
                    Ok(())
                } else {
                    Err("forbidden")
                }
            }
            _ => Ok(()),
        }
    }

    fn inviter_still_may(&self, inviter: Option<usize>, rank: usize) -> Result<(), &'static str> {
        match inviter {
            None => Ok(()),
            Some(i) => match self.members.get(&i) {
                Some(r) if *r <= rank && invites(*r) => Ok(()),
                _ => Err("inviter_lost_privilege"),
            },
        }
    }

    fn active_links(&self, now: i64) -> usize {
        self.links.values().filter(|l| l.active(now)).count()
    }

    fn pending_invitations(&self, now: i64) -> usize {
        self.invitations.values().filter(|i| i.pending(now)).count()
    }
}

impl Model {
    fn new() -> Model {
        let owned_by = |owner: usize| ModelResource {
            members: BTreeMap::from([(owner, 0)]),
            ..ModelResource::default()
        };
        let mut resources: Vec<ModelResource> = (0..RESOURCES).map(owned_by).collect();
        for (resource, principal, rank) in INITIAL_MEMBERS {
            resources[resource].members.insert(principal, rank);
        }
        Model {
            now: t0().unix_ms(),
            resources,
            next_number: 1,
            outcome: Ok(true),
        }
    }

    fn take_number(&mut self) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        number
    }

    /// Applies a step to a copy of the resource; only a success is kept.
    fn run(&mut self, step: &Step) -> Outcome {
        let now = self.now;
        let (index, mut r) = match step {
            Step::AdvanceTime { ms } => {
                self.now += ms;
                return Ok(false);
            }
            Step::SetMemberRole { resource, .. }
            | Step::RemoveMember { resource, .. }
            | Step::CreateInviteLink { resource, .. }
            | Step::ChangeInviteLink { resource, .. }
            | Step::RotateInviteLink { resource, .. }
            | Step::RevokeInviteLink { resource, .. }
            | Step::UseInviteLink { resource, .. }
            | Step::CreateInvitation { resource, .. }
            | Step::AcceptInvitation { resource, .. }
            | Step::DeclineInvitation { resource, .. }
            | Step::ResendInvitation { resource, .. }
            | Step::RevokeInvitation { resource, .. } => {
                let index = resource % RESOURCES;
                (index, self.resources[index].clone())
            }
        };
        let outcome = self.run_on(&mut r, step, now);
        if outcome.is_ok() {
            self.resources[index] = r;
        }
        outcome
    }

    fn run_on(&mut self, r: &mut ModelResource, step: &Step, now: i64) -> Outcome {
        match *step {
            Step::AdvanceTime { .. } => Ok(false),
            Step::SetMemberRole {
                actor,
                member,
                role,
                ..
            } => {
                let (member, role) = (member % PRINCIPALS, role % ROLES);
                let standing = r.standing(actor)?;
                if let Some(rank) = standing {
                    if !manages_members(rank) {
                        return Err("forbidden");
                    }
                    if rank > role {
                        return Err("role_not_grantable");
                    }
                }
                if let Some(&current) = r.members.get(&member) {
                    if standing.is_some_and(|rank| rank > current) {
                        return Err("forbidden");
                    }
                    if current == role {
                        return Ok(false);
                    }
                    if current == 0 && r.owners_other_than(member) == 0 {
                        return Err("last_owner");
                    }
                }
                r.members.insert(member, role);
                Ok(true)
            }
            Step::RemoveMember { actor, member, .. } => {
                let member = member % PRINCIPALS;
                if actor != ActorPick::Principal(member) {
                    if let Some(rank) = r.standing(actor)? {
                        if !manages_members(rank) {
                            return Err("forbidden");
                        }
                        if r.members.get(&member).is_some_and(|target| rank > *target) {
                            return Err("forbidden");
                        }
                    }
                }
                let current = *r.members.get(&member).ok_or("not_found")?;
                if current == 0 && r.owners_other_than(member) == 0 {
                    return Err("last_owner");
                }
                r.members.remove(&member);
                Ok(true)
            }
            Step::CreateInviteLink {
                actor,
                role,
                max_uses,
                expires_in_ms,
                ..
            } => {
                let role = role % ROLES;
                if let Some(rank) = r.standing(actor)? {
                    if !invites(rank) {
                        return Err("forbidden");
                    }
                    if rank > role {
                        return Err("role_not_grantable");
                    }
                }
                if max_uses == Some(0) {
                    return Err("invalid_request");
                }
                if r.active_links(now) >= ACTIVE_LINKS_MAX {
                    return Err("limit_reached");
                }
                let number = self.take_number();
                let creator = match actor {
                    ActorPick::Admin => None,
                    ActorPick::Principal(p) => Some(p),
                };
                r.links.insert(
                    number,
                    ModelLink {
                        rank: role,
                        max_uses,
                        uses: 0,
                        generation: 1,
                        creator,
                        revoked: false,
                        expires_at: expires_in_ms.map(|ms| now + ms),
                    },
                );
                Ok(true)
            }
            Step::ChangeInviteLink {
                actor,
                link,
                role,
                max_uses,
                ..
            } => {
                let standing = r.standing_on_invites(actor)?;
                let number = nth_number(&r.links, link);
                let current = r.links.get(&number).ok_or("not_found")?.clone();
                ModelResource::may_manage(standing, actor, current.creator)?;
                if current.revoked {
                    return Err("invitation_revoked");
                }
                let next_rank = role.map_or(current.rank, |role| role % ROLES);
                if standing.is_some_and(|rank| rank > current.rank || rank > next_rank) {
                    return Err("role_not_grantable");
                }
                let next_max = max_uses.unwrap_or(current.max_uses);
                if matches!(next_max, Some(max) if max == 0 || max < current.uses) {
                    return Err("invalid_request");
                }
                let next = ModelLink {
                    rank: next_rank,
                    max_uses: next_max,
                    ..current.clone()
                };
                if next == current {
                    return Ok(false);
                }
                if !current.active(now)
                    && next.active(now)
                    && r.active_links(now) >= ACTIVE_LINKS_MAX
                {
                    return Err("limit_reached");
                }
                r.links.insert(number, next);
                Ok(true)
            }
            Step::RotateInviteLink { actor, link, .. } => {
                let standing = r.standing_on_invites(actor)?;
                let number = nth_number(&r.links, link);
                let l = r.links.get_mut(&number).ok_or("not_found")?;
                ModelResource::may_manage(standing, actor, l.creator)?;
                if l.revoked {
                    return Err("invitation_revoked");
                }
                if standing.is_some_and(|rank| rank > l.rank) {
                    return Err("role_not_grantable");
                }
                l.generation += 1;
                Ok(true)
            }
            Step::RevokeInviteLink { actor, link, .. } => {
                let standing = r.standing_on_invites(actor)?;
                let number = nth_number(&r.links, link);
                let l = r.links.get_mut(&number).ok_or("not_found")?;
                ModelResource::may_manage(standing, actor, l.creator)?;
                if l.revoked {
                    return Ok(false);
                }
                l.revoked = true;
                Ok(true)
            }
            Step::UseInviteLink {
                actor,
                link,
                generations_back,
                ..
            } => {
                let ActorPick::Principal(me) = actor else {
                    return Err("invalid_request");
                };
                let number = nth_number(&r.links, link);
                let l = r.links.get(&number).ok_or("invitation_not_found")?.clone();
                if l.revoked() || l.generation.saturating_sub(generations_back) != l.generation {
                    return Err("invitation_revoked");
                }
                if l.exhausted() {
                    return Err("invitation_exhausted");
                }
                if l.expired(now) {
                    return Err("invitation_expired");
                }
                if r.members.get(&me).is_some_and(|rank| *rank <= l.rank) {
                    return Ok(false);
                }
                r.inviter_still_may(l.creator, l.rank)?;
                r.links.insert(
                    number,
                    ModelLink {
                        uses: l.uses + 1,
                        ..l.clone()
                    },
                );
                r.members.insert(me, l.rank);
                Ok(true)
            }
            Step::CreateInvitation {
                actor, email, role, ..
            } => {
                let (email, role) = (email % (PRINCIPALS + 1), role % ROLES);
                if let Some(rank) = r.standing(actor)? {
                    if !invites(rank) {
                        return Err("forbidden");
                    }
                    if rank > role {
                        return Err("role_not_grantable");
                    }
                }
                let member = email < PRINCIPALS && r.members.contains_key(&email);
                let invited = r
                    .invitations
                    .values()
                    .any(|i| i.email == email && i.pending(now));
                if member || invited {
                    return Err("invalid_email");
                }
                if r.pending_invitations(now) + 1 > PENDING_INVITATIONS_MAX {
                    return Err("limit_reached");
                }
                let number = self.take_number();
                let validity_ms = INVITATION_VALIDITY_DEFAULT_MS;
                let inviter = match actor {
                    ActorPick::Admin => None,
                    ActorPick::Principal(p) => Some(p),
                };
                r.invitations.insert(
                    number,
                    ModelInvitation {
                        email,
                        rank: role,
                        generation: 1,
                        inviter,
                        closed: None,
                        expires_at: now + validity_ms,
                        validity_ms,
                    },
                );
                Ok(true)
            }
            Step::AcceptInvitation {
                actor,
                invitation,
                generations_back,
                as_invitee,
                ..
            } => {
                let number = nth_number(&r.invitations, invitation);
                let invitee = r.invitations.get(&number).map(|i| i.email);
                let actor = match invitee {
                    Some(email) if as_invitee && email < PRINCIPALS => ActorPick::Principal(email),
                    _ => actor,
                };
                let ActorPick::Principal(me) = actor else {
                    return Err("invalid_request");
                };
                let i = r
                    .invitations
                    .get(&number)
                    .ok_or("invitation_not_found")?
                    .clone();
                Self::open(&i, generations_back, now)?;
                if i.email != me {
                    return Err("invitation_email_mismatch");
                }
                if r.members.get(&me).is_some_and(|rank| *rank <= i.rank) {
                    return Ok(false);
                }
                r.inviter_still_may(i.inviter, i.rank)?;
                r.invitations.insert(
                    number,
                    ModelInvitation {
                        closed: Some(Closed::Accepted),
                        ..i.clone()
                    },
                );
                r.members.insert(me, i.rank);
                Ok(true)
            }
            Step::DeclineInvitation { invitation, .. } => {
                let number = nth_number(&r.invitations, invitation);
                let i = r
                    .invitations
                    .get_mut(&number)
                    .ok_or("invitation_not_found")?;
                Self::open(i, 0, now)?;
                i.closed = Some(Closed::Declined);
                Ok(true)
            }
            Step::ResendInvitation {
                actor, invitation, ..
            } => {
                let standing = r.standing_on_invites(actor)?;
                let number = nth_number(&r.invitations, invitation);
                let pending = r.pending_invitations(now);
                let i = r.invitations.get_mut(&number).ok_or("not_found")?;
                ModelResource::may_manage(standing, actor, i.inviter)?;
                match i.closed {
                    Some(Closed::Accepted) => return Err("invitation_used"),
                    Some(Closed::Declined) => return Err("invitation_declined"),
                    Some(Closed::Revoked) => return Err("invitation_revoked"),
                    None => {}
                }
                if standing.is_some_and(|rank| rank > i.rank) {
                    return Err("role_not_grantable");
                }
                if i.expires_at <= now && pending >= PENDING_INVITATIONS_MAX {
                    return Err("limit_reached");
                }
                i.generation += 1;
                i.expires_at = now + i.validity_ms;
                Ok(true)
            }
            Step::RevokeInvitation {
                actor, invitation, ..
            } => {
                let standing = r.standing_on_invites(actor)?;
                let number = nth_number(&r.invitations, invitation);
                let i = r.invitations.get_mut(&number).ok_or("not_found")?;
                ModelResource::may_manage(standing, actor, i.inviter)?;
                match i.closed {
                    Some(Closed::Revoked) => Ok(false),
                    Some(Closed::Accepted) => Err("invitation_used"),
                    Some(Closed::Declined) => Err("invitation_declined"),
                    None => {
                        i.closed = Some(Closed::Revoked);
                        Ok(true)
                    }
                }
            }
        }
    }

    /// Rule 6 for an email invitation presented `generations_back` generations old.
    fn open(i: &ModelInvitation, generations_back: u32, now: i64) -> Result<(), &'static str> {
        match i.closed {
            Some(Closed::Revoked) => Err("invitation_revoked"),
            Some(Closed::Accepted) => Err("invitation_used"),
            Some(Closed::Declined) => Err("invitation_declined"),
            None if generations_back > 0 => Err("invitation_revoked"),
            None if i.expires_at <= now => Err("invitation_expired"),
            None => Ok(()),
        }
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        strategies::step(RESOURCES, PRINCIPALS, ROLES)
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        model.outcome = model.run(step);
        model
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test: `decide` and `evolve` on real states.
// ---------------------------------------------------------------------------------------------

struct Roster {
    now: Timestamp,
    schema: RoleSchema,
    states: Vec<ResourceState>,
    logs: Vec<Vec<Event>>,
    next_number: u64,
    known_emails: BTreeMap<Email, Principal>,
}

fn actor_of(pick: ActorPick) -> Actor {
    match pick {
        ActorPick::Admin => Actor::Admin,
        ActorPick::Principal(i) => Actor::Principal {
            principal: Principal::parse(&principal_name(i % PRINCIPALS)).unwrap(),
            email: Some(Email::parse(&email_of(i % PRINCIPALS)).unwrap()),
        },
    }
}

impl Roster {
    fn role(&self, rank: usize) -> RoleName {
        self.schema.roles()[rank % ROLES].name.clone()
    }

    fn principal(index: usize) -> Principal {
        Principal::parse(&principal_name(index % PRINCIPALS)).unwrap()
    }

    /// The command a step stands for, interpreted against the current state, with its actor.
    fn command(&self, step: &Step) -> Option<(usize, ResourceCommand, ActorPick)> {
        let of = |resource: usize| ResourceId::parse(&resource_name(resource % RESOURCES)).unwrap();
        let state = |resource: usize| &self.states[resource % RESOURCES];
        let link_number = |resource: usize, link: usize| nth_number(state(resource).links(), link);
        let invitation_number =
            |resource: usize, i: usize| nth_number(state(resource).invitations(), i);
        let command = match *step {
            Step::AdvanceTime { .. } => return None,
            Step::SetMemberRole {
                resource,
                actor,
                member,
                role,
            } => (
                resource,
                actor,
                ResourceCommand::SetMemberRole {
                    resource: of(resource),
                    principal: Self::principal(member),
                    role: self.role(role),
                },
            ),
            Step::RemoveMember {
                resource,
                actor,
                member,
            } => (
                resource,
                actor,
                ResourceCommand::RemoveMember {
                    resource: of(resource),
                    principal: Self::principal(member),
                },
            ),
            Step::CreateInviteLink {
                resource,
                actor,
                role,
                max_uses,
                expires_in_ms,
            } => (
                resource,
                actor,
                ResourceCommand::CreateInviteLink {
                    resource: of(resource),
                    role: Some(self.role(role)),
                    expires_at: expires_in_ms.map(|ms| self.now.checked_add_ms(ms).unwrap()),
                    max_uses,
                },
            ),
            Step::ChangeInviteLink {
                resource,
                actor,
                link,
                role,
                max_uses,
            } => (
                resource,
                actor,
                ResourceCommand::ChangeInviteLink {
                    resource: of(resource),
                    link: link_number(resource, link),
                    role: role.map(|r| self.role(r)),
                    expires_at: None,
                    max_uses,
                },
            ),
            Step::RotateInviteLink {
                resource,
                actor,
                link,
            } => (
                resource,
                actor,
                ResourceCommand::RotateInviteLink {
                    resource: of(resource),
                    link: link_number(resource, link),
                },
            ),
            Step::RevokeInviteLink {
                resource,
                actor,
                link,
            } => (
                resource,
                actor,
                ResourceCommand::RevokeInviteLink {
                    resource: of(resource),
                    link: link_number(resource, link),
                },
            ),
            Step::UseInviteLink {
                resource,
                actor,
                link,
                generations_back,
            } => {
                let number = link_number(resource, link);
                let generation = state(resource)
                    .link(number)
                    .map_or(1, |l| l.generation.saturating_sub(generations_back));
                (
                    resource,
                    actor,
                    ResourceCommand::AcceptInvitation {
                        resource: of(resource),
                        code: code(number, generation),
                    },
                )
            }
            Step::CreateInvitation {
                resource,
                actor,
                email,
                role,
            } => (
                resource,
                actor,
                ResourceCommand::CreateInvitations {
                    resource: of(resource),
                    emails: EmailList::Items(vec![
                        email_of(email % (PRINCIPALS + 1)).to_uppercase()
                    ]),
                    role: Some(self.role(role)),
                    expires_at: None,
                    message: None,
                },
            ),
            Step::AcceptInvitation {
                resource,
                actor,
                invitation,
                generations_back,
                as_invitee,
            } => {
                let number = invitation_number(resource, invitation);
                let generation = state(resource)
                    .invitation(number)
                    .map_or(1, |i| i.generation.saturating_sub(generations_back));
                let invitee = state(resource)
                    .invitation(number)
                    .and_then(|i| (0..PRINCIPALS).find(|p| email_of(*p) == i.email.normal()));
                let actor = match invitee {
                    Some(principal) if as_invitee => ActorPick::Principal(principal),
                    _ => actor,
                };
                (
                    resource,
                    actor,
                    ResourceCommand::AcceptInvitation {
                        resource: of(resource),
                        code: code(number, generation),
                    },
                )
            }
            Step::DeclineInvitation {
                resource,
                actor,
                invitation,
            } => {
                let number = invitation_number(resource, invitation);
                let generation = state(resource)
                    .invitation(number)
                    .map_or(1, |i| i.generation);
                (
                    resource,
                    actor,
                    ResourceCommand::DeclineInvitation {
                        resource: of(resource),
                        code: code(number, generation),
                    },
                )
            }
            Step::ResendInvitation {
                resource,
                actor,
                invitation,
            } => (
                resource,
                actor,
                ResourceCommand::ResendInvitation {
                    resource: of(resource),
                    invitation: invitation_number(resource, invitation),
                },
            ),
            Step::RevokeInvitation {
                resource,
                actor,
                invitation,
            } => (
                resource,
                actor,
                ResourceCommand::RevokeInvitation {
                    resource: of(resource),
                    invitation: invitation_number(resource, invitation),
                },
            ),
        };
        let (resource, actor, command) = command;
        Some((resource % RESOURCES, command, actor))
    }

    /// The real state in the model's terms, to compare the two.
    fn as_model(&self, index: usize) -> ModelResource {
        let state = &self.states[index];
        let principal_index = |p: &Principal| -> usize { p.as_str()[1..].parse().unwrap() };
        let email_index = |e: &Email| {
            (0..=PRINCIPALS)
                .find(|i| email_of(*i) == e.normal())
                .unwrap()
        };
        let rank = |role: &RoleName| self.schema.rank(role).unwrap();
        ModelResource {
            members: state
                .members()
                .iter()
                .map(|(p, m)| (principal_index(p), rank(&m.role)))
                .collect(),
            links: state
                .links()
                .iter()
                .map(|(n, l)| {
                    (
                        *n,
                        ModelLink {
                            rank: rank(&l.role),
                            max_uses: l.max_uses,
                            uses: l.uses,
                            generation: l.generation,
                            creator: l.created_by.as_ref().map(principal_index),
                            revoked: l.revoked,
                            expires_at: l.expires_at.map(Timestamp::unix_ms),
                        },
                    )
                })
                .collect(),
            invitations: state
                .invitations()
                .iter()
                .map(|(n, i)| {
                    (
                        *n,
                        ModelInvitation {
                            email: email_index(&i.email),
                            rank: rank(&i.role),
                            generation: i.generation,
                            inviter: i.invited_by.as_ref().map(principal_index),
                            closed: i.closure.as_ref().map(|c| match c {
                                InvitationClosure::Accepted { .. } => Closed::Accepted,
                                InvitationClosure::Declined => Closed::Declined,
                                InvitationClosure::Revoked => Closed::Revoked,
                            }),
                            expires_at: i.expires_at.unix_ms(),
                            validity_ms: i.validity_ms,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Nobody is granted a role above what its grantor held just before the grant (the admin is exempt).
fn assert_grantors_ranked_high_enough(
    before: &ResourceState,
    events: &[Event],
    schema: &RoleSchema,
) {
    for event in events {
        let (role, grantor) = match event {
            Event::MemberAdded {
                role,
                granted_by: Some(g),
                ..
            } => (role, g),
            Event::MemberRoleChanged {
                role,
                changed_by: Some(g),
                ..
            } => (role, g),
            _ => continue,
        };
        let grantor_rank = before.member(grantor).and_then(|m| schema.rank(&m.role));
        let granted_rank = schema.rank(role).unwrap();
        assert!(
            grantor_rank.is_some_and(|r| r <= granted_rank),
            "{grantor} (rank {grantor_rank:?}) granted {role}: {event:?}"
        );
    }
}

/// A decided command as the log would record it, for the re-decide check (what `roster verify`
/// and `roster import` run): every command `decide` accepted must be accepted again from the
/// state before it, and a log edited so that a use grants another role than its link's or
/// invitation's, or so that a use happens twice, must be refused.
struct Logged<'e> {
    stream: StreamId,
    label: String,
    now: Timestamp,
    events: &'e [Event],
}

impl<'e> Logged<'e> {
    fn new(index: usize, actor: ActorPick, now: Timestamp, events: &'e [Event]) -> Logged<'e> {
        Logged {
            stream: StreamId::Resource(ResourceId::parse(&resource_name(index)).unwrap()),
            // The envelope keeps the label only, not the actor's verified email.
            label: actor_of(actor).label(),
            now,
            events,
        }
    }

    fn check(
        &self,
        state: &ResourceState,
        schema: &RoleSchema,
        events: &[Event],
    ) -> Result<(), Mismatch> {
        let logged = LoggedCommand {
            stream: &self.stream,
            actor: &self.label,
            occurred_at: self.now,
            events,
        };
        redecide(state, &logged, schema, &KindUsage::default())
    }

    fn assert_redecided(&self, before: &ResourceState, schema: &RoleSchema) {
        if let Err(mismatch) = self.check(before, schema, self.events) {
            panic!("a decided command is refused on re-deciding: {mismatch}");
        }
    }

    /// Is this an acceptance: a use of a link or invitation, then the grant it gave?
    fn is_a_use(&self) -> bool {
        matches!(
            self.events.first(),
            Some(Event::InviteLinkUsed { .. } | Event::InvitationAccepted { .. })
        )
    }

    fn assert_a_changed_grant_is_caught(&self, before: &ResourceState, schema: &RoleSchema) {
        if !self.is_a_use() {
            return;
        }
        let mut edited = self.events.to_vec();
        let other = |role: &RoleName| {
            let roles = schema.roles();
            let index = roles.iter().position(|r| &r.name == role).unwrap();
            roles[(index + 1) % roles.len()].name.clone()
        };
        match &mut edited[1] {
            Event::MemberAdded { role, .. } | Event::MemberRoleChanged { role, .. } => {
                *role = other(role);
            }
            grant => panic!("an acceptance granted with {grant:?}"),
        }
        assert!(
            self.check(before, schema, &edited).is_err(),
            "a use granting another role than its own passed: {edited:?}"
        );
    }

    fn assert_a_second_use_is_caught(&self, after: &ResourceState, schema: &RoleSchema) {
        if self.is_a_use() {
            assert!(
                self.check(after, schema, self.events).is_err(),
                "the same use twice passed: {:?}",
                self.events
            );
        }
    }
}

fn fold_onto(state: ResourceState, events: &[Event]) -> ResourceState {
    events.iter().fold(state, evolve)
}

struct RosterTest;

impl StateMachineTest for RosterTest {
    type SystemUnderTest = Roster;
    type Reference = Reference;

    fn init_test(_: &Model) -> Roster {
        let schema = RoleSchema::builtin(&Kind::parse("space").unwrap());
        let mut roster = Roster {
            now: t0(),
            states: vec![],
            logs: vec![],
            next_number: 1,
            known_emails: (0..PRINCIPALS)
                .map(|i| (Email::parse(&email_of(i)).unwrap(), Roster::principal(i)))
                .collect(),
            schema,
        };
        for index in 0..RESOURCES {
            let command = ResourceCommand::RegisterResource {
                resource: ResourceId::parse(&resource_name(index)).unwrap(),
                owner: Roster::principal(index),
                parent: None,
            };
            let ctx = Context::new(roster.now, Actor::Admin, &roster.schema);
            let events = decide(&ResourceState::default(), command, &ctx).unwrap();
            roster.states.push(fold(&events));
            roster.logs.push(events);
        }
        for (index, principal, rank) in INITIAL_MEMBERS {
            let command = ResourceCommand::SetMemberRole {
                resource: ResourceId::parse(&resource_name(index)).unwrap(),
                principal: Roster::principal(principal),
                role: roster.role(rank),
            };
            let ctx = Context::new(roster.now, Actor::Admin, &roster.schema);
            let events = decide(&roster.states[index], command, &ctx).unwrap();
            let state = std::mem::take(&mut roster.states[index]);
            roster.states[index] = fold_onto(state, &events);
            roster.logs[index].extend(events);
        }
        roster
    }

    fn apply(mut roster: Roster, model: &Model, step: Step) -> Roster {
        if let Step::AdvanceTime { ms } = step {
            roster.now = roster.now.checked_add_ms(ms).unwrap();
        }
        let outcome: Outcome = match roster.command(&step) {
            None => Ok(false),
            Some((index, command, actor)) => {
                let limits = Limits {
                    active_links_max: ACTIVE_LINKS_MAX,
                    pending_invitations_max: PENDING_INVITATIONS_MAX,
                    ..Limits::default()
                };
                let numbers = NumberSequence::starting_at(roster.next_number);
                let ctx = Context::new(roster.now, actor_of(actor), &roster.schema)
                    .with_limits(&limits)
                    .with_numbers(&numbers)
                    .with_known_emails(&roster.known_emails);
                match decide(&roster.states[index], command, &ctx) {
                    Err(error) => Err(error.code()),
                    Ok(events) => {
                        assert_grantors_ranked_high_enough(
                            &roster.states[index],
                            &events,
                            &roster.schema,
                        );
                        let logged = Logged::new(index, actor, roster.now, &events);
                        logged.assert_redecided(&roster.states[index], &roster.schema);
                        logged.assert_a_changed_grant_is_caught(
                            &roster.states[index],
                            &roster.schema,
                        );
                        for event in &events {
                            if let Event::InviteLinkCreated { number, .. }
                            | Event::InvitationCreated { number, .. } = event
                            {
                                roster.next_number = roster.next_number.max(number + 1);
                            }
                            let state = std::mem::take(&mut roster.states[index]);
                            roster.states[index] = evolve(state, event);
                        }
                        roster.logs[index].extend(events.iter().cloned());
                        logged.assert_a_second_use_is_caught(&roster.states[index], &roster.schema);
                        Ok(!events.is_empty())
                    }
                }
            }
        };
        assert_eq!(
            outcome, model.outcome,
            "decide and the model disagree on {step:?}"
        );
        assert_eq!(roster.now.unix_ms(), model.now);
        assert_eq!(roster.next_number, model.next_number, "numbers handed out");
        for index in 0..RESOURCES {
            assert_eq!(
                roster.as_model(index),
                model.resources[index],
                "resource {index} after {step:?}"
            );
        }
        roster
    }

    fn check_invariants(roster: &Roster, _: &Model) {
        for (state, log) in roster.states.iter().zip(&roster.logs) {
            let highest = roster.schema.highest();
            assert!(
                state.members().values().any(|m| &m.role == highest),
                "nobody holds {highest}"
            );

            for link in state.links().values() {
                assert!(
                    link.max_uses.is_none_or(|max| link.uses <= max),
                    "link over its limit: {link:?}"
                );
            }

            let mut acceptances = BTreeMap::<u64, usize>::new();
            for event in log {
                if let Event::InvitationAccepted { number, .. } = event {
                    *acceptances.entry(*number).or_default() += 1;
                }
            }
            assert!(
                acceptances.values().all(|n| *n <= 1),
                "an invitation accepted twice: {acceptances:?}"
            );

            // What the store would keep: type, schema version and JSON data, read back and folded.
            let replayed: Vec<Event> = log
                .iter()
                .map(|e| Event::from_parts(e.event_type(), e.schema(), e.to_data()).unwrap())
                .collect();
            assert_eq!(
                &fold::<ResourceState>(&replayed),
                state,
                "folding the log from scratch differs"
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        .. Config::default()
    })]

    #[test]
    fn roster_agrees_with_its_reference_model(sequential 1..40 => RosterTest);
}
