//! `decide`: every business rule of DESIGN section 2, turning a command and a state into events or a refusal.

use std::collections::BTreeSet;

use crate::codes::VerifiedCode;
use crate::command::{ApiKeyCommand, DeliveryOutcome, ResourceCommand, SchemaCommand};
use crate::ids::is_valid_number;
use crate::query::{resolve_code, Resolved};
use crate::state::{
    ApiKeysState, InvitationState, InvitationStatus, LinkState, LinkStatus, ResourceState,
    SchemaState,
};
use crate::time::DAY_MS;
use crate::{
    Context, DomainError, Email, EmailError, Event, Principal, Privilege, RoleName, RoleSchema,
    Timestamp, Via,
};

/// An email invitation's validity when the command names no expiry (DESIGN section 2).
pub const INVITATION_VALIDITY_DEFAULT_MS: i64 = 7 * DAY_MS;

/// A stream's state, with its commands: `decide` holds all the logic, `evolve` none.
pub trait Aggregate: Default + Clone {
    type Command;

    /// The events the command produces, or why it is refused. Pure: time, actor and new numbers come from `ctx`.
    fn decide(&self, command: Self::Command, ctx: &Context<'_>) -> Result<Vec<Event>, DomainError>;

    /// The state after one event.
    fn evolve(self, event: &Event) -> Self;
}

/// See [`Aggregate::decide`].
pub fn decide<A: Aggregate>(
    state: &A,
    command: A::Command,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, DomainError> {
    state.decide(command, ctx)
}

/// See [`Aggregate::evolve`].
pub fn evolve<A: Aggregate>(state: A, event: &Event) -> A {
    state.evolve(event)
}

/// The state after all the events, from scratch.
pub fn fold<'e, A: Aggregate>(events: impl IntoIterator<Item = &'e Event>) -> A {
    events.into_iter().fold(A::default(), A::evolve)
}

impl Aggregate for ResourceState {
    type Command = ResourceCommand;

    fn decide(
        &self,
        command: ResourceCommand,
        ctx: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        decide_resource(self, command, ctx)
    }

    fn evolve(self, event: &Event) -> Self {
        ResourceState::evolve(self, event)
    }
}

impl Aggregate for SchemaState {
    type Command = SchemaCommand;

    fn decide(&self, command: SchemaCommand, ctx: &Context<'_>) -> Result<Vec<Event>, DomainError> {
        let SchemaCommand::DefineRoleSchema {
            kind,
            roles,
            default_role,
        } = command;
        let next = RoleSchema::new(kind.clone(), roles, default_role)?;
        if self.defined() == Some(&next) {
            return Ok(vec![]);
        }
        // A kind's first definition is checked against the built-in schema its resources used until now.
        self.in_force(&kind)
            .check_change_to(&next, ctx.kind_usage)?;
        Ok(vec![Event::RoleSchemaDefined {
            kind,
            roles: next.roles().to_vec(),
            default_role: next.default_role().clone(),
        }])
    }

    fn evolve(self, event: &Event) -> Self {
        SchemaState::evolve(self, event)
    }
}

impl Aggregate for ApiKeysState {
    type Command = ApiKeyCommand;

    /// Who may issue keys is a matter of scopes (`admin`), checked where keys are presented, not here.
    fn decide(&self, command: ApiKeyCommand, ctx: &Context<'_>) -> Result<Vec<Event>, DomainError> {
        match command {
            ApiKeyCommand::IssueApiKey {
                key_id,
                principal,
                scopes,
                act_as,
                email,
                name,
                digest,
            } => {
                if scopes.is_empty() {
                    return Err(DomainError::InvalidRequest(
                        "an API key needs at least one scope".into(),
                    ));
                }
                if name
                    .as_ref()
                    .is_some_and(|n| n.chars().count() > ctx.limits.key_name_chars_max)
                {
                    return Err(DomainError::InvalidRequest(format!(
                        "an API key's name has at most {} characters",
                        ctx.limits.key_name_chars_max
                    )));
                }
                if self.key(&key_id).is_some() {
                    return Err(DomainError::AlreadyExists(format!("API key {key_id}")));
                }
                if self.keys().values().any(|k| k.digest == digest) {
                    return Err(DomainError::Conflict(
                        "an API key with this digest exists".into(),
                    ));
                }
                Ok(vec![Event::ApiKeyIssued {
                    key_id,
                    principal,
                    scopes,
                    act_as,
                    email,
                    name,
                    digest,
                }])
            }
            ApiKeyCommand::RevokeApiKey { key_id } => match self.key(&key_id) {
                None => Err(DomainError::NotFound(format!("API key {key_id}"))),
                Some(key) if key.revoked => Ok(vec![]),
                Some(_) => Ok(vec![Event::ApiKeyRevoked { key_id }]),
            },
        }
    }

    fn evolve(self, event: &Event) -> Self {
        ApiKeysState::evolve(self, event)
    }
}

/// The per-email outcome of creating invitations, beside the events: the response body of DESIGN section 5.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvitationBatch {
    pub events: Vec<Event>,
    /// Each invited email with its new invitation's number.
    pub invited: Vec<(Email, u64)>,
    /// Emails whose known principal is a member already.
    pub already_members: Vec<Email>,
    /// Emails with a pending invitation, and its number.
    pub already_invited: Vec<(Email, u64)>,
    pub email_errors: Vec<EmailError>,
}

/// Where the actor stands on the resource.
#[derive(Debug, Clone)]
enum Standing {
    /// The admin key without a principal: outside the rolemap (rule 8).
    Admin,
    Member {
        principal: Principal,
        rank: usize,
        role: RoleName,
    },
}

/// The rules of DESIGN section 2, over one resource's state and one context.
struct Rules<'a> {
    state: &'a ResourceState,
    schema: &'a RoleSchema,
    ctx: &'a Context<'a>,
}

impl Rules<'_> {
    /// A role the schema no longer lists ranks below every listed one, so it outranks nobody.
    fn rank_of_role(&self, role: &RoleName) -> usize {
        self.schema.rank(role).unwrap_or(self.schema.roles().len())
    }

    fn member_rank(&self, principal: &Principal) -> Option<usize> {
        self.state
            .member(principal)
            .map(|m| self.rank_of_role(&m.role))
    }

    /// The actor must be the admin or a member.
    fn standing(&self) -> Result<Standing, DomainError> {
        let Some(principal) = self.ctx.actor.principal() else {
            return Ok(Standing::Admin);
        };
        match self.state.member(principal) {
            Some(member) => Ok(Standing::Member {
                principal: principal.clone(),
                rank: self.rank_of_role(&member.role),
                role: member.role.clone(),
            }),
            None => Err(DomainError::Forbidden(format!(
                "{principal} is not a member"
            ))),
        }
    }

    fn allows(&self, standing: &Standing, privilege: Privilege) -> bool {
        match standing {
            Standing::Admin => true,
            Standing::Member { role, .. } => self.schema.allows(role, privilege),
        }
    }

    fn require(&self, standing: &Standing, any_of: &[Privilege]) -> Result<(), DomainError> {
        if any_of.iter().any(|p| self.allows(standing, *p)) {
            Ok(())
        } else {
            let names: Vec<&str> = any_of.iter().map(|p| p.name()).collect();
            Err(DomainError::Forbidden(format!(
                "the actor lacks {}",
                names.join(" or ")
            )))
        }
    }

    /// Rule 1: grant only a role ranked at or below one's own.
    fn require_grantable(&self, standing: &Standing, role: &RoleName) -> Result<(), DomainError> {
        match standing {
            Standing::Member { rank, .. } if *rank > self.rank_of_role(role) => {
                Err(DomainError::RoleNotGrantable(role.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Rule 2: act only on members ranked at or below oneself.
    fn require_outranks(&self, standing: &Standing, target: &Principal) -> Result<(), DomainError> {
        match (standing, self.member_rank(target)) {
            (Standing::Member { rank, .. }, Some(target_rank)) if *rank > target_rank => Err(
                DomainError::Forbidden(format!("{target} ranks above the actor")),
            ),
            _ => Ok(()),
        }
    }

    /// Rule 3: some member keeps the highest role. `new_role` is `None` for a removal.
    fn require_owner_left(
        &self,
        target: &Principal,
        new_role: Option<&RoleName>,
    ) -> Result<(), DomainError> {
        let highest = self.schema.highest();
        let loses_highest = self
            .state
            .member(target)
            .is_some_and(|m| &m.role == highest)
            && new_role != Some(highest);
        // Only a demotion or removal of a holder of the highest role needs the scan: most
        // role changes on a resource with 100,000 members are not one.
        let others_hold_it = || {
            self.state
                .members()
                .iter()
                .any(|(p, m)| p != target && &m.role == highest)
        };
        if loses_highest && !others_hold_it() {
            Err(DomainError::LastOwner(highest.to_string()))
        } else {
            Ok(())
        }
    }

    /// Who may change, rotate, resend or revoke a link or invitation: `manage_invitations`, or `invite` for one's own.
    fn require_may_manage(
        &self,
        standing: &Standing,
        creator: Option<&Principal>,
    ) -> Result<(), DomainError> {
        match standing {
            Standing::Admin => Ok(()),
            Standing::Member { principal, .. } => {
                let own = creator == Some(principal) && self.allows(standing, Privilege::Invite);
                if own || self.allows(standing, Privilege::ManageInvitations) {
                    Ok(())
                } else {
                    Err(DomainError::Forbidden(
                        "managing this needs manage_invitations, or invite for one's own".into(),
                    ))
                }
            }
        }
    }

    /// Rule 4: at use time the inviter is still a member who may invite and ranks at or above the role.
    /// An invitation made by the admin without a principal is exempt (rule 8).
    fn require_inviter_still_may(
        &self,
        inviter: Option<&Principal>,
        role: &RoleName,
    ) -> Result<(), DomainError> {
        let Some(inviter) = inviter else {
            return Ok(());
        };
        let still_may = self.state.member(inviter).is_some_and(|m| {
            self.rank_of_role(&m.role) <= self.rank_of_role(role)
                && (self.schema.allows(&m.role, Privilege::Invite)
                    || self.schema.allows(&m.role, Privilege::ManageInvitations))
        });
        if still_may {
            Ok(())
        } else {
            Err(DomainError::InviterLostPrivilege)
        }
    }

    /// Rule 5: a member at or above the role keeps what it has.
    fn already_at_or_above(&self, principal: &Principal, role: &RoleName) -> bool {
        self.member_rank(principal)
            .is_some_and(|rank| rank <= self.rank_of_role(role))
    }

    fn new_number(&self, taken: &BTreeSet<u64>) -> Result<u64, DomainError> {
        let number = self.ctx.numbers.next_number()?;
        let unused = !self.state.links().contains_key(&number)
            && !self.state.invitations().contains_key(&number)
            && !taken.contains(&number);
        if is_valid_number(number) && unused {
            Ok(number)
        } else {
            Err(DomainError::Conflict(format!(
                "number {number} is not a new number below 2^53"
            )))
        }
    }

    fn require_future(&self, expires_at: Option<Timestamp>) -> Result<(), DomainError> {
        match expires_at {
            Some(at) if at <= self.ctx.now => Err(DomainError::InvalidRequest(format!(
                "expires_at {at} is not in the future"
            ))),
            _ => Ok(()),
        }
    }

    /// The event giving `principal` the role: added if new, changed otherwise.
    fn grant(
        &self,
        principal: Principal,
        role: RoleName,
        granted_by: Option<Principal>,
        via: Via,
    ) -> Event {
        match self.state.member(&principal) {
            None => Event::MemberAdded {
                principal,
                role,
                granted_by,
                via,
                at: self.ctx.now,
            },
            Some(member) => Event::MemberRoleChanged {
                principal,
                from_role: member.role.clone(),
                role,
                changed_by: granted_by,
                via,
                at: self.ctx.now,
            },
        }
    }

    fn actor_principal(&self) -> Option<Principal> {
        self.ctx.actor.principal().cloned()
    }

    fn link(&self, number: u64) -> Result<&LinkState, DomainError> {
        self.state
            .link(number)
            .ok_or_else(|| DomainError::no_such_link(number))
    }

    fn invitation(&self, number: u64) -> Result<&InvitationState, DomainError> {
        self.state
            .invitation(number)
            .ok_or_else(|| DomainError::no_such_invitation(number))
    }

    /// The actor's standing for a command on one of the resource's links or invitations. One
    /// who cannot see them (not a member, or a role without `view_members`, `invite` or
    /// `manage_invitations`) is told `not_found` whether the number exists or not, so a
    /// stranger cannot learn which numbers are a resource's by the 403 an existing one got.
    fn standing_on_invites(
        &self,
        not_found: impl Fn() -> DomainError,
    ) -> Result<Standing, DomainError> {
        let sees = |standing: &Standing| {
            [
                Privilege::ViewMembers,
                Privilege::Invite,
                Privilege::ManageInvitations,
            ]
            .iter()
            .any(|p| self.allows(standing, *p))
        };
        match self.standing() {
            Ok(standing) if sees(&standing) => Ok(standing),
            _ => Err(not_found()),
        }
    }

    fn managed_link(&self, number: u64) -> Result<(Standing, &LinkState), DomainError> {
        let standing = self.standing_on_invites(|| DomainError::no_such_link(number))?;
        Ok((standing, self.link(number)?))
    }

    fn managed_invitation(&self, number: u64) -> Result<(Standing, &InvitationState), DomainError> {
        let standing = self.standing_on_invites(|| DomainError::no_such_invitation(number))?;
        Ok((standing, self.invitation(number)?))
    }
}

/// Rule 6 for a link, with a presented code: refused if revoked, of an older generation, exhausted or expired.
fn require_link_usable(
    link: &LinkState,
    code: Option<&VerifiedCode>,
    now: Timestamp,
) -> Result<(), DomainError> {
    match link.status(now) {
        LinkStatus::Revoked => return Err(DomainError::InvitationRevoked),
        _ if code.is_some_and(|c| c.generation() != link.generation) => {
            return Err(DomainError::InvitationRevoked)
        }
        LinkStatus::Exhausted => return Err(DomainError::InvitationExhausted),
        LinkStatus::Expired => return Err(DomainError::InvitationExpired),
        LinkStatus::Active => {}
    }
    Ok(())
}

/// Rule 6 for an email invitation: refused if revoked, used, declined, of an older generation or expired.
fn require_invitation_open(
    invitation: &InvitationState,
    code: Option<&VerifiedCode>,
    now: Timestamp,
) -> Result<(), DomainError> {
    match invitation.status(now) {
        InvitationStatus::Revoked => Err(DomainError::InvitationRevoked),
        InvitationStatus::Accepted => Err(DomainError::InvitationUsed),
        InvitationStatus::Declined => Err(DomainError::InvitationDeclined),
        _ if code.is_some_and(|c| c.generation() != invitation.generation) => {
            Err(DomainError::InvitationRevoked)
        }
        InvitationStatus::Expired => Err(DomainError::InvitationExpired),
        InvitationStatus::Pending => Ok(()),
    }
}

fn decide_resource(
    state: &ResourceState,
    command: ResourceCommand,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, DomainError> {
    let resource = command.resource();
    if ctx.schema.kind() != resource.kind() {
        return Err(DomainError::InvalidRequest(format!(
            "the role schema given is for kind {}, not {}",
            ctx.schema.kind(),
            resource.kind()
        )));
    }
    let rules = Rules {
        state,
        schema: ctx.schema,
        ctx,
    };
    if let ResourceCommand::RegisterResource {
        resource,
        owner,
        parent,
    } = command
    {
        return register(&rules, resource, owner, parent);
    }
    let registered = state
        .registered()
        .ok_or_else(|| DomainError::NotFound(format!("resource {resource}")))?;
    if &registered.resource != resource {
        return Err(DomainError::InvalidRequest(format!(
            "a command for {resource} was decided against {}",
            registered.resource
        )));
    }
    match command {
        ResourceCommand::RegisterResource { .. } => unreachable!("handled above"),
        ResourceCommand::SetMemberRole {
            principal, role, ..
        } => set_member_role(&rules, principal, role),
        ResourceCommand::RemoveMember { principal, .. } => remove_member(&rules, principal),
        ResourceCommand::CreateInviteLink {
            role,
            expires_at,
            max_uses,
            ..
        } => create_link(&rules, role, expires_at, max_uses),
        ResourceCommand::ChangeInviteLink {
            link,
            role,
            expires_at,
            max_uses,
            ..
        } => change_link(&rules, link, role, expires_at, max_uses),
        ResourceCommand::RotateInviteLink { link, .. } => rotate_link(&rules, link),
        ResourceCommand::RevokeInviteLink { link, .. } => revoke_link(&rules, link),
        command @ ResourceCommand::CreateInvitations { .. } => {
            let batch = create_invitations(state, &command, ctx)?;
            if batch.invited.is_empty() {
                // DESIGN section 5: 422 when nobody was invited, with each address's outcome.
                return Err(DomainError::InvalidEmail(Box::new(batch)));
            }
            Ok(batch.events)
        }
        ResourceCommand::ResendInvitation { invitation, .. } => {
            resend_invitation(&rules, invitation)
        }
        ResourceCommand::RevokeInvitation { invitation, .. } => {
            revoke_invitation(&rules, invitation)
        }
        ResourceCommand::AcceptInvitation { code, .. } => accept(&rules, &code),
        ResourceCommand::AcceptInvitationById { invitation, .. } => {
            accept_by_id(&rules, invitation)
        }
        ResourceCommand::DeclineInvitation { code, .. } => decline(&rules, &code),
        ResourceCommand::RecordDelivery {
            invitation,
            generation,
            attempt,
            outcome,
            ..
        } => record_delivery(&rules, invitation, generation, attempt, outcome),
    }
}

fn register(
    rules: &Rules<'_>,
    resource: crate::ResourceId,
    owner: Principal,
    parent: Option<crate::ResourceId>,
) -> Result<Vec<Event>, DomainError> {
    if rules.state.registered().is_some() {
        return Err(DomainError::AlreadyExists(format!("resource {resource}")));
    }
    if parent.as_ref() == Some(&resource) {
        return Err(DomainError::InvalidRequest(
            "a resource cannot be its own parent".into(),
        ));
    }
    Ok(vec![Event::ResourceRegistered {
        resource,
        owner,
        role: rules.schema.highest().clone(),
        parent,
        at: rules.ctx.now,
    }])
}

fn set_member_role(
    rules: &Rules<'_>,
    principal: Principal,
    role: RoleName,
) -> Result<Vec<Event>, DomainError> {
    let standing = rules.standing()?;
    rules.require(&standing, &[Privilege::ManageMembers])?;
    rules.schema.rank_of(&role)?;
    rules.require_grantable(&standing, &role)?;
    if let Some(member) = rules.state.member(&principal) {
        rules.require_outranks(&standing, &principal)?;
        if member.role == role {
            return Ok(vec![]);
        }
        rules.require_owner_left(&principal, Some(&role))?;
    }
    Ok(vec![rules.grant(
        principal,
        role,
        rules.actor_principal(),
        Via::Direct,
    )])
}

fn remove_member(rules: &Rules<'_>, principal: Principal) -> Result<Vec<Event>, DomainError> {
    let left = rules.ctx.actor.principal() == Some(&principal);
    if !left {
        let standing = rules.standing()?;
        rules.require(&standing, &[Privilege::ManageMembers])?;
        rules.require_outranks(&standing, &principal)?;
    }
    let member = rules
        .state
        .member(&principal)
        .ok_or_else(|| DomainError::NotFound(format!("member {principal}")))?;
    rules.require_owner_left(&principal, None)?;
    Ok(vec![Event::MemberRemoved {
        role: member.role.clone(),
        principal,
        removed_by: rules.actor_principal(),
        left,
    }])
}

fn create_link(
    rules: &Rules<'_>,
    role: Option<RoleName>,
    expires_at: Option<Timestamp>,
    max_uses: Option<u32>,
) -> Result<Vec<Event>, DomainError> {
    let standing = rules.standing()?;
    rules.require(
        &standing,
        &[Privilege::Invite, Privilege::ManageInvitations],
    )?;
    let role = rules.schema.resolve(role.as_ref())?;
    rules.require_grantable(&standing, &role)?;
    rules.require_future(expires_at)?;
    if max_uses == Some(0) {
        return Err(DomainError::InvalidRequest(
            "max_uses must be at least 1".into(),
        ));
    }
    let limit = rules.ctx.limits.active_links_max;
    if rules.state.active_link_count(rules.ctx.now) >= limit {
        return Err(DomainError::LimitReached(format!(
            "at most {limit} active invite links per resource"
        )));
    }
    let number = rules.new_number(&BTreeSet::new())?;
    Ok(vec![Event::InviteLinkCreated {
        number,
        generation: 1,
        role,
        expires_at,
        max_uses,
        created_by: rules.actor_principal(),
    }])
}

fn change_link(
    rules: &Rules<'_>,
    number: u64,
    role: Option<RoleName>,
    expires_at: Option<Option<Timestamp>>,
    max_uses: Option<Option<u32>>,
) -> Result<Vec<Event>, DomainError> {
    let (standing, link) = rules.managed_link(number)?;
    rules.require_may_manage(&standing, link.created_by.as_ref())?;
    if link.revoked {
        return Err(DomainError::InvitationRevoked);
    }
    // Changing a link's limits hands its role to more people, so rule 1 applies to the role it has
    // as well as to the one it gets.
    rules.require_grantable(&standing, &link.role)?;
    let next_role = match role {
        Some(role) => {
            rules.schema.rank_of(&role)?;
            rules.require_grantable(&standing, &role)?;
            role
        }
        None => link.role.clone(),
    };
    let next_expires_at = expires_at.unwrap_or(link.expires_at);
    if expires_at.is_some() {
        rules.require_future(next_expires_at)?;
    }
    let next_max_uses = max_uses.unwrap_or(link.max_uses);
    // A limit below the uses so far would leave a link that used more than it may; revoke it instead.
    if next_max_uses.is_some_and(|max| max == 0 || max < link.uses) {
        return Err(DomainError::InvalidRequest(format!(
            "max_uses must be at least 1 and at least the {} uses so far",
            link.uses
        )));
    }
    let changed = LinkState {
        role: next_role.clone(),
        expires_at: next_expires_at,
        max_uses: next_max_uses,
        ..link.clone()
    };
    if &changed == link {
        return Ok(vec![]);
    }
    let now = rules.ctx.now;
    let limit = rules.ctx.limits.active_links_max;
    let revives =
        link.status(now) != LinkStatus::Active && changed.status(now) == LinkStatus::Active;
    if revives && rules.state.active_link_count(now) >= limit {
        return Err(DomainError::LimitReached(format!(
            "at most {limit} active invite links per resource"
        )));
    }
    Ok(vec![Event::InviteLinkChanged {
        number,
        role: next_role,
        expires_at: next_expires_at,
        max_uses: next_max_uses,
        changed_by: rules.actor_principal(),
    }])
}

fn rotate_link(rules: &Rules<'_>, number: u64) -> Result<Vec<Event>, DomainError> {
    let (standing, link) = rules.managed_link(number)?;
    rules.require_may_manage(&standing, link.created_by.as_ref())?;
    if link.revoked {
        return Err(DomainError::InvitationRevoked);
    }
    // A fresh code is a fresh grant of the link's role: without rule 1 here, a member could rotate
    // a higher-ranked member's link and use the new code.
    rules.require_grantable(&standing, &link.role)?;
    let generation = link
        .generation
        .checked_add(1)
        .ok_or_else(|| DomainError::LimitReached("the link was rotated too often".into()))?;
    Ok(vec![Event::InviteLinkRotated {
        number,
        generation,
        rotated_by: rules.actor_principal(),
    }])
}

fn revoke_link(rules: &Rules<'_>, number: u64) -> Result<Vec<Event>, DomainError> {
    let (standing, link) = rules.managed_link(number)?;
    rules.require_may_manage(&standing, link.created_by.as_ref())?;
    if link.revoked {
        return Ok(vec![]);
    }
    Ok(vec![Event::InviteLinkRevoked {
        number,
        revoked_by: rules.actor_principal(),
    }])
}

/// Decides a `CreateInvitations` command and reports the outcome of each email.
///
/// Refuses the whole request (no partial batch) when the actor may not invite with the role, when
/// the request lists more emails than allowed, or when the new invitations would pass the resource's
/// pending limit. An empty `invited` list is not an error here; [`decide`] turns it into `invalid_email`.
pub fn create_invitations(
    state: &ResourceState,
    command: &ResourceCommand,
    ctx: &Context<'_>,
) -> Result<InvitationBatch, DomainError> {
    let ResourceCommand::CreateInvitations {
        resource,
        emails,
        role,
        expires_at,
        message,
    } = command
    else {
        return Err(DomainError::InvalidRequest(
            "not a CreateInvitations command".into(),
        ));
    };
    if state.registered().map(|r| &r.resource) != Some(resource) {
        return Err(DomainError::NotFound(format!("resource {resource}")));
    }
    if ctx.schema.kind() != resource.kind() {
        return Err(DomainError::InvalidRequest(
            "the role schema given is for another kind".into(),
        ));
    }
    let rules = Rules {
        state,
        schema: ctx.schema,
        ctx,
    };
    let standing = rules.standing()?;
    rules.require(
        &standing,
        &[Privilege::Invite, Privilege::ManageInvitations],
    )?;
    let role = rules.schema.resolve(role.as_ref())?;
    rules.require_grantable(&standing, &role)?;
    if message
        .as_ref()
        .is_some_and(|m| m.chars().count() > ctx.limits.message_chars_max)
    {
        return Err(DomainError::InvalidRequest(format!(
            "the message has more than {} characters",
            ctx.limits.message_chars_max
        )));
    }
    rules.require_future(*expires_at)?;
    let (expires_at, validity_ms) = match expires_at {
        Some(at) => (*at, at.ms_since(ctx.now)),
        None => (
            ctx.now
                .checked_add_ms(INVITATION_VALIDITY_DEFAULT_MS)
                .ok_or_else(|| {
                    DomainError::InvalidRequest("the expiry is past the year 9999".into())
                })?,
            INVITATION_VALIDITY_DEFAULT_MS,
        ),
    };
    let item_count = emails.items().len();
    if item_count > ctx.limits.emails_per_request_max {
        return Err(DomainError::LimitReached(format!(
            "{item_count} emails in one request, at most {}",
            ctx.limits.emails_per_request_max
        )));
    }

    let mut batch = InvitationBatch::default();
    let mut taken = BTreeSet::new();
    for outcome in emails.parse() {
        let email = match outcome {
            Ok(email) => email,
            Err(error) => {
                batch.email_errors.push(error);
                continue;
            }
        };
        let known = state
            .known_emails()
            .get(&email)
            .cloned()
            .or_else(|| ctx.known_emails.principal_of(&email));
        if known.is_some_and(|p| state.member(&p).is_some()) {
            batch.already_members.push(email);
        } else if let Some(pending) = state.pending_invitation_for(&email, ctx.now) {
            batch.already_invited.push((email, pending.number));
        } else {
            let number = rules.new_number(&taken)?;
            taken.insert(number);
            batch.invited.push((email.clone(), number));
            batch.events.push(Event::InvitationCreated {
                number,
                generation: 1,
                email,
                role: role.clone(),
                expires_at,
                validity_ms,
                invited_by: rules.actor_principal(),
                message: message.clone(),
            });
        }
    }
    let pending_after = state.pending_invitation_count(ctx.now) + batch.invited.len();
    let limit = ctx.limits.pending_invitations_max;
    if pending_after > limit {
        return Err(DomainError::LimitReached(format!(
            "at most {limit} pending invitations per resource"
        )));
    }
    Ok(batch)
}

fn resend_invitation(rules: &Rules<'_>, number: u64) -> Result<Vec<Event>, DomainError> {
    let (standing, invitation) = rules.managed_invitation(number)?;
    rules.require_may_manage(&standing, invitation.invited_by.as_ref())?;
    let now = rules.ctx.now;
    let was_expired = match invitation.status(now) {
        InvitationStatus::Pending => false,
        InvitationStatus::Expired => true,
        InvitationStatus::Accepted => return Err(DomainError::InvitationUsed),
        InvitationStatus::Declined => return Err(DomainError::InvitationDeclined),
        InvitationStatus::Revoked => return Err(DomainError::InvitationRevoked),
    };
    // A resend is a fresh code, so a fresh grant of the invitation's role (rule 1).
    rules.require_grantable(&standing, &invitation.role)?;
    let limit = rules.ctx.limits.pending_invitations_max;
    if was_expired && rules.state.pending_invitation_count(now) >= limit {
        return Err(DomainError::LimitReached(format!(
            "at most {limit} pending invitations per resource"
        )));
    }
    let generation = invitation
        .generation
        .checked_add(1)
        .ok_or_else(|| DomainError::LimitReached("the invitation was resent too often".into()))?;
    let expires_at = now
        .checked_add_ms(invitation.validity_ms)
        .ok_or_else(|| DomainError::InvalidRequest("the expiry is past the year 9999".into()))?;
    Ok(vec![Event::InvitationResent {
        number,
        generation,
        expires_at,
        resent_by: rules.actor_principal(),
    }])
}

fn revoke_invitation(rules: &Rules<'_>, number: u64) -> Result<Vec<Event>, DomainError> {
    let (standing, invitation) = rules.managed_invitation(number)?;
    rules.require_may_manage(&standing, invitation.invited_by.as_ref())?;
    match invitation.status(rules.ctx.now) {
        InvitationStatus::Revoked => Ok(vec![]),
        InvitationStatus::Accepted => Err(DomainError::InvitationUsed),
        InvitationStatus::Declined => Err(DomainError::InvitationDeclined),
        InvitationStatus::Pending | InvitationStatus::Expired => {
            Ok(vec![Event::InvitationRevoked {
                number,
                revoked_by: rules.actor_principal(),
            }])
        }
    }
}

/// Rules 4 to 7: rule 6 first, then the email match, then rule 5 (a no-op success), then rule 4.
fn accept(rules: &Rules<'_>, code: &VerifiedCode) -> Result<Vec<Event>, DomainError> {
    let now = rules.ctx.now;
    let Some(principal) = rules.actor_principal() else {
        return Err(DomainError::InvalidRequest(
            "accepting needs an acting principal (X-Roster-Actor)".into(),
        ));
    };
    match resolve_code(rules.state, code)? {
        Resolved::Link(link) => {
            require_link_usable(link, Some(code), now)?;
            rules.schema.rank_of(&link.role)?;
            if rules.already_at_or_above(&principal, &link.role) {
                return Ok(vec![]);
            }
            rules.require_inviter_still_may(link.created_by.as_ref(), &link.role)?;
            let uses = link
                .uses
                .checked_add(1)
                .ok_or(DomainError::InvitationExhausted)?;
            Ok(vec![
                Event::InviteLinkUsed {
                    number: link.number,
                    generation: link.generation,
                    used_by: principal.clone(),
                    uses,
                },
                rules.grant(
                    principal,
                    link.role.clone(),
                    link.created_by.clone(),
                    Via::Link {
                        number: link.number,
                    },
                ),
            ])
        }
        Resolved::Invitation(invitation) => {
            require_invitation_open(invitation, Some(code), now)?;
            if rules.ctx.actor.email() != Some(&invitation.email) {
                return Err(DomainError::InvitationEmailMismatch);
            }
            accept_invitation(rules, principal, invitation)
        }
    }
}

/// Accepting a pending email invitation by its number, as its addressee: the verified email
/// stands in for the code. An invitation to another address answers as a missing one, so a
/// caller learns nothing of other people's invitations by trying numbers.
fn accept_by_id(rules: &Rules<'_>, number: u64) -> Result<Vec<Event>, DomainError> {
    let Some(principal) = rules.actor_principal() else {
        return Err(DomainError::InvalidRequest(
            "accepting needs an acting principal (X-Roster-Actor)".into(),
        ));
    };
    let invitation = rules
        .state
        .invitation(number)
        .filter(|i| rules.ctx.actor.email() == Some(&i.email))
        .ok_or_else(|| DomainError::NotFound(format!("invitation {number} for your email")))?;
    require_invitation_open(invitation, None, rules.ctx.now)?;
    accept_invitation(rules, principal, invitation)
}

/// Rules 5 and 4 for an open email invitation whose addressee is the actor.
fn accept_invitation(
    rules: &Rules<'_>,
    principal: Principal,
    invitation: &InvitationState,
) -> Result<Vec<Event>, DomainError> {
    rules.schema.rank_of(&invitation.role)?;
    if rules.already_at_or_above(&principal, &invitation.role) {
        return Ok(vec![]);
    }
    rules.require_inviter_still_may(invitation.invited_by.as_ref(), &invitation.role)?;
    Ok(vec![
        Event::InvitationAccepted {
            number: invitation.number,
            generation: invitation.generation,
            email: invitation.email.clone(),
            accepted_by: principal.clone(),
        },
        rules.grant(
            principal,
            invitation.role.clone(),
            invitation.invited_by.clone(),
            Via::Invitation {
                number: invitation.number,
            },
        ),
    ])
}

/// Rule 7: anyone holding a valid code may decline; declining a link records nothing.
fn decline(rules: &Rules<'_>, code: &VerifiedCode) -> Result<Vec<Event>, DomainError> {
    match resolve_code(rules.state, code)? {
        Resolved::Link(_) => Ok(vec![]),
        Resolved::Invitation(invitation) => {
            require_invitation_open(invitation, Some(code), rules.ctx.now)?;
            Ok(vec![Event::InvitationDeclined {
                number: invitation.number,
                declined_by: rules.actor_principal(),
            }])
        }
    }
}

/// The delivery worker acts as the admin; a mail acknowledged for a generation is recorded once.
fn record_delivery(
    rules: &Rules<'_>,
    number: u64,
    generation: u32,
    attempt: u32,
    outcome: DeliveryOutcome,
) -> Result<Vec<Event>, DomainError> {
    if rules.ctx.actor.principal().is_some() {
        return Err(DomainError::Forbidden(
            "only the delivery worker records deliveries".into(),
        ));
    }
    let invitation = rules.invitation(number)?;
    if attempt == 0 {
        return Err(DomainError::InvalidRequest("attempts count from 1".into()));
    }
    if invitation.delivery.delivered_generation == Some(generation) {
        return Ok(vec![]);
    }
    Ok(vec![match outcome {
        DeliveryOutcome::Delivered => Event::InvitationDelivered {
            number,
            generation,
            attempt,
        },
        DeliveryOutcome::Failed { error } => Event::InvitationDeliveryFailed {
            number,
            generation,
            attempt,
            error,
        },
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_list_is_complete_and_codes_are_distinct() {
        let codes: BTreeSet<&str> = DomainError::ALL_CODES.iter().copied().collect();
        assert_eq!(codes.len(), DomainError::ALL_CODES.len());
    }
}
