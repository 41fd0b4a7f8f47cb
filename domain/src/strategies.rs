//! Proptest strategies for commands and command sequences, for hosts that drive Roster in their own property tests.
//!
//! Enabled by the `proptest` feature. Two levels are offered: valid values and concrete
//! [`ResourceCommand`]s for one resource, and [`Step`]s, index-based descriptions of a session on a
//! few resources and principals that a test interprets against its own state (a step naming the
//! third link of a resource only makes sense once links exist, so steps name them by index).

use std::ops::Range;

use proptest::prelude::*;

use crate::{
    EmailList, Kind, Principal, ResourceCommand, ResourceId, RoleName, RoleSchema, Timestamp,
    DAY_MS,
};

/// Principals such as `p_3x`: valid, short, readable in shrunk output.
pub fn principal() -> impl Strategy<Value = Principal> {
    "[a-z][a-z0-9_]{0,11}".prop_filter_map("a valid principal", |s| Principal::parse(&s).ok())
}

pub fn kind() -> impl Strategy<Value = Kind> {
    "[a-z][a-z0-9_-]{0,7}".prop_filter_map("a valid kind", |s| Kind::parse(&s).ok())
}

pub fn resource_id() -> impl Strategy<Value = ResourceId> {
    (kind(), "[A-Za-z0-9._~-]{1,16}").prop_filter_map("a valid resource", |(kind, id)| {
        ResourceId::new(kind, &id).ok()
    })
}

/// Addresses that pass [`crate::Email::parse`], in mixed case to exercise normalisation.
pub fn email_text() -> impl Strategy<Value = String> {
    ("[a-zA-Z0-9._+-]{1,12}", "[a-zA-Z0-9-]{1,10}", "[a-z]{2,4}")
        .prop_map(|(local, domain, tld)| format!("{local}@{domain}.{tld}"))
}

/// Instants between 2000 and 2100.
pub fn timestamp() -> impl Strategy<Value = Timestamp> {
    (946_684_800_000i64..4_102_444_800_000)
        .prop_filter_map("in range", |ms| Timestamp::from_unix_ms(ms).ok())
}

/// One of the schema's roles.
pub fn role_in(schema: &RoleSchema) -> BoxedStrategy<RoleName> {
    let roles: Vec<RoleName> = schema.roles().iter().map(|r| r.name.clone()).collect();
    proptest::sample::select(roles).boxed()
}

/// Commands on `resource` that need no code: grants, removals, links, invitations, resends and
/// revocations, naming the given principals and the links or invitations numbered in `numbers`.
/// Expiries are between one hour and thirty days after `now`.
pub fn resource_command(
    resource: ResourceId,
    principals: Vec<Principal>,
    schema: &RoleSchema,
    numbers: Vec<u64>,
    now: Timestamp,
) -> BoxedStrategy<ResourceCommand> {
    let who = proptest::sample::select(principals);
    let role = role_in(schema);
    let number = if numbers.is_empty() {
        Just(1u64).boxed()
    } else {
        proptest::sample::select(numbers).boxed()
    };
    let expiry = proptest::option::of(
        (3_600_000i64..30 * DAY_MS).prop_map(move |ms| now.saturating_add_ms(ms)),
    );
    let r = resource;
    prop_oneof![
        (Just(r.clone()), who.clone(), role.clone()).prop_map(|(resource, principal, role)| {
            ResourceCommand::SetMemberRole {
                resource,
                principal,
                role,
            }
        }),
        (Just(r.clone()), who).prop_map(|(resource, principal)| ResourceCommand::RemoveMember {
            resource,
            principal
        }),
        (
            Just(r.clone()),
            proptest::option::of(role.clone()),
            expiry.clone(),
            proptest::option::of(1u32..5)
        )
            .prop_map(|(resource, role, expires_at, max_uses)| {
                ResourceCommand::CreateInviteLink {
                    resource,
                    role,
                    expires_at,
                    max_uses,
                }
            }),
        (
            Just(r.clone()),
            number.clone(),
            proptest::option::of(role.clone()),
            proptest::option::of(proptest::option::of(1u32..5))
        )
            .prop_map(|(resource, link, role, max_uses)| {
                ResourceCommand::ChangeInviteLink {
                    resource,
                    link,
                    role,
                    expires_at: None,
                    max_uses,
                }
            }),
        (Just(r.clone()), number.clone())
            .prop_map(|(resource, link)| ResourceCommand::RotateInviteLink { resource, link }),
        (Just(r.clone()), number.clone())
            .prop_map(|(resource, link)| ResourceCommand::RevokeInviteLink { resource, link }),
        (
            Just(r.clone()),
            proptest::collection::vec(email_text(), 1..4),
            proptest::option::of(role),
            expiry
        )
            .prop_map(|(resource, emails, role, expires_at)| {
                ResourceCommand::CreateInvitations {
                    resource,
                    emails: EmailList::Items(emails),
                    role,
                    expires_at,
                    message: None,
                }
            }),
        (Just(r.clone()), number.clone()).prop_map(|(resource, invitation)| {
            ResourceCommand::ResendInvitation {
                resource,
                invitation,
            }
        }),
        (Just(r), number).prop_map(|(resource, invitation)| ResourceCommand::RevokeInvitation {
            resource,
            invitation
        }),
    ]
    .boxed()
}

/// Who acts in a [`Step`]: the admin key without a principal, or the host's principal of that index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorPick {
    Admin,
    Principal(usize),
}

/// One step of a generated session. Indices are taken modulo what exists when the step runs:
/// `resource` among the host's resources, `member` among its principals, `role` among the schema's
/// roles (0 is the highest), `link` and `invitation` among the resource's links or invitations in
/// number order (a resource without any gets a number that names nothing). `generations_back`
/// presents an older code (1) or the current one (0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    SetMemberRole {
        resource: usize,
        actor: ActorPick,
        member: usize,
        role: usize,
    },
    RemoveMember {
        resource: usize,
        actor: ActorPick,
        member: usize,
    },
    CreateInviteLink {
        resource: usize,
        actor: ActorPick,
        role: usize,
        max_uses: Option<u32>,
        expires_in_ms: Option<i64>,
    },
    ChangeInviteLink {
        resource: usize,
        actor: ActorPick,
        link: usize,
        role: Option<usize>,
        max_uses: Option<Option<u32>>,
    },
    RotateInviteLink {
        resource: usize,
        actor: ActorPick,
        link: usize,
    },
    RevokeInviteLink {
        resource: usize,
        actor: ActorPick,
        link: usize,
    },
    UseInviteLink {
        resource: usize,
        actor: ActorPick,
        link: usize,
        generations_back: u32,
    },
    /// `email` names a principal's verified email by index; one past the principals is a stranger's.
    CreateInvitation {
        resource: usize,
        actor: ActorPick,
        email: usize,
        role: usize,
    },
    /// With `as_invitee`, the actor is the principal whose email was invited, when there is one.
    AcceptInvitation {
        resource: usize,
        actor: ActorPick,
        invitation: usize,
        generations_back: u32,
        as_invitee: bool,
    },
    DeclineInvitation {
        resource: usize,
        actor: ActorPick,
        invitation: usize,
    },
    ResendInvitation {
        resource: usize,
        actor: ActorPick,
        invitation: usize,
    },
    RevokeInvitation {
        resource: usize,
        actor: ActorPick,
        invitation: usize,
    },
    AdvanceTime {
        ms: i64,
    },
}

fn actor_pick(principals: usize) -> BoxedStrategy<ActorPick> {
    prop_oneof![
        1 => Just(ActorPick::Admin),
        6 => (0..principals.max(1)).prop_map(ActorPick::Principal),
    ]
    .boxed()
}

/// One step on `resources` resources, `principals` principals and a schema of `roles` roles.
/// Counts of zero are treated as one.
pub fn step(resources: usize, principals: usize, roles: usize) -> BoxedStrategy<Step> {
    let resource = 0..resources.max(1);
    let actor = actor_pick(principals);
    let member = 0..principals.max(1);
    let role = 0..roles.max(1);
    let index = 0usize..8;
    let back = prop_oneof![4 => Just(0u32), 1 => Just(1u32)];
    prop_oneof![
        3 => (resource.clone(), actor.clone(), member.clone(), role.clone())
            .prop_map(|(resource, actor, member, role)| Step::SetMemberRole { resource, actor, member, role }),
        2 => (resource.clone(), actor.clone(), member.clone())
            .prop_map(|(resource, actor, member)| Step::RemoveMember { resource, actor, member }),
        3 => (resource.clone(), actor.clone(), role.clone(), proptest::option::of(0u32..4), proptest::option::of(1i64..3 * DAY_MS))
            .prop_map(|(resource, actor, role, max_uses, expires_in_ms)| Step::CreateInviteLink { resource, actor, role, max_uses, expires_in_ms }),
        1 => (resource.clone(), actor.clone(), index.clone(), proptest::option::of(role.clone()), proptest::option::of(proptest::option::of(0u32..4)))
            .prop_map(|(resource, actor, link, role, max_uses)| Step::ChangeInviteLink { resource, actor, link, role, max_uses }),
        1 => (resource.clone(), actor.clone(), index.clone())
            .prop_map(|(resource, actor, link)| Step::RotateInviteLink { resource, actor, link }),
        1 => (resource.clone(), actor.clone(), index.clone())
            .prop_map(|(resource, actor, link)| Step::RevokeInviteLink { resource, actor, link }),
        4 => (resource.clone(), actor.clone(), index.clone(), back.clone())
            .prop_map(|(resource, actor, link, generations_back)| Step::UseInviteLink { resource, actor, link, generations_back }),
        3 => (resource.clone(), actor.clone(), 0..principals.max(1) + 1, role)
            .prop_map(|(resource, actor, email, role)| Step::CreateInvitation { resource, actor, email, role }),
        4 => (resource.clone(), actor.clone(), index.clone(), back, proptest::bool::weighted(0.6))
            .prop_map(|(resource, actor, invitation, generations_back, as_invitee)| Step::AcceptInvitation { resource, actor, invitation, generations_back, as_invitee }),
        1 => (resource.clone(), actor.clone(), index.clone())
            .prop_map(|(resource, actor, invitation)| Step::DeclineInvitation { resource, actor, invitation }),
        1 => (resource.clone(), actor.clone(), index.clone())
            .prop_map(|(resource, actor, invitation)| Step::ResendInvitation { resource, actor, invitation }),
        1 => (resource, actor, index)
            .prop_map(|(resource, actor, invitation)| Step::RevokeInvitation { resource, actor, invitation }),
        // Mostly short waits; sometimes past a link's expiry or an invitation's 7 days.
        2 => prop_oneof![3 => 1i64..DAY_MS, 1 => DAY_MS..8 * DAY_MS].prop_map(|ms| Step::AdvanceTime { ms }),
    ]
    .boxed()
}

/// A session of steps, its length in `len`.
pub fn steps(
    resources: usize,
    principals: usize,
    roles: usize,
    len: Range<usize>,
) -> BoxedStrategy<Vec<Step>> {
    proptest::collection::vec(step(resources, principals, roles), len).boxed()
}
