//! The state of each stream, and `evolve`: applying one event, with no decision in it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    ApiKeyId, Email, Event, KeyDigest, Kind, Principal, ResourceId, RoleName, RoleSchema, Scope,
    Timestamp, Via,
};

/// A principal's role on a resource, since when, and who granted it (`None`: the admin, or registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "MembershipRow", try_from = "MembershipRow")]
pub struct Membership {
    pub role: RoleName,
    /// When the member got its current role.
    pub since: Timestamp,
    pub granted_by: Option<Principal>,
    pub via: Via,
}

/// A membership as snapshots write it: `[role, since in Unix ms, granted_by, via]`. A snapshot
/// of a resource holds every member, so each is kept to about 50 bytes and parsed without
/// reading a date.
#[derive(Serialize, Deserialize)]
struct MembershipRow(RoleName, i64, Option<Principal>, Via);

impl From<Membership> for MembershipRow {
    fn from(m: Membership) -> MembershipRow {
        MembershipRow(m.role, m.since.unix_ms(), m.granted_by, m.via)
    }
}

impl TryFrom<MembershipRow> for Membership {
    type Error = crate::DomainError;

    fn try_from(
        MembershipRow(role, since, granted_by, via): MembershipRow,
    ) -> Result<Self, Self::Error> {
        Ok(Membership {
            role,
            since: Timestamp::from_unix_ms(since)?,
            granted_by,
            via,
        })
    }
}

named_enum! {
    /// What became of a link, given the time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum LinkStatus {
        Active => "active",
        Expired => "expired",
        Exhausted => "exhausted",
        Revoked => "revoked",
    }
}

named_enum! {
    /// What became of an email invitation, given the time.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum InvitationStatus {
        Pending => "pending",
        Accepted => "accepted",
        Declined => "declined",
        Revoked => "revoked",
        Expired => "expired",
    }
}

/// A multi-use invite link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub number: u64,
    /// Codes of any other generation are dead.
    pub generation: u32,
    pub role: RoleName,
    pub expires_at: Option<Timestamp>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub created_by: Option<Principal>,
    pub revoked: bool,
}

impl LinkState {
    /// Revocation wins over a spent use limit, which wins over expiry: the most lasting reason is shown.
    pub fn status(&self, now: Timestamp) -> LinkStatus {
        if self.revoked {
            LinkStatus::Revoked
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            LinkStatus::Exhausted
        } else if self.expires_at.is_some_and(|at| at <= now) {
            LinkStatus::Expired
        } else {
            LinkStatus::Active
        }
    }
}

/// How an email invitation was closed, if it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvitationClosure {
    Accepted { by: Principal },
    Declined,
    Revoked,
}

/// The delivery worker's progress on an invitation (DESIGN section 8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub attempts: u32,
    pub delivered_generation: Option<u32>,
    pub last_error: Option<String>,
}

/// A single-use email invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationState {
    pub number: u64,
    pub generation: u32,
    pub email: Email,
    pub role: RoleName,
    pub expires_at: Timestamp,
    /// The validity it was created with; a resend moves the expiry to now plus this.
    pub validity_ms: i64,
    pub invited_by: Option<Principal>,
    pub message: Option<String>,
    pub closure: Option<InvitationClosure>,
    pub delivery: DeliveryState,
}

impl InvitationState {
    pub fn status(&self, now: Timestamp) -> InvitationStatus {
        match self.closure {
            Some(InvitationClosure::Accepted { .. }) => InvitationStatus::Accepted,
            Some(InvitationClosure::Declined) => InvitationStatus::Declined,
            Some(InvitationClosure::Revoked) => InvitationStatus::Revoked,
            None if self.expires_at <= now => InvitationStatus::Expired,
            None => InvitationStatus::Pending,
        }
    }
}

/// The resource as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredResource {
    pub resource: ResourceId,
    pub parent: Option<ResourceId>,
    pub registered_at: Timestamp,
}

/// The state of one `resource:{kind}/{id}` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceState {
    registered: Option<RegisteredResource>,
    members: BTreeMap<Principal, Membership>,
    links: BTreeMap<u64, LinkState>,
    invitations: BTreeMap<u64, InvitationState>,
    known_emails: BTreeMap<Email, Principal>,
}

impl ResourceState {
    /// `None` until `ResourceRegistered`.
    pub fn registered(&self) -> Option<&RegisteredResource> {
        self.registered.as_ref()
    }

    pub fn members(&self) -> &BTreeMap<Principal, Membership> {
        &self.members
    }

    pub fn member(&self, principal: &Principal) -> Option<&Membership> {
        self.members.get(principal)
    }

    pub fn links(&self) -> &BTreeMap<u64, LinkState> {
        &self.links
    }

    pub fn link(&self, number: u64) -> Option<&LinkState> {
        self.links.get(&number)
    }

    pub fn invitations(&self) -> &BTreeMap<u64, InvitationState> {
        &self.invitations
    }

    pub fn invitation(&self, number: u64) -> Option<&InvitationState> {
        self.invitations.get(&number)
    }

    /// Emails this resource learnt from acceptances, with the principal that verified each.
    pub fn known_emails(&self) -> &BTreeMap<Email, Principal> {
        &self.known_emails
    }

    /// What holds of every state the rules can reach, given the schema in force: nothing
    /// happens on a resource before it is registered; a registered one keeps a holder of the
    /// highest role (rule 3); each link and invitation is filed under its own number.
    /// `roster verify` checks each resource's final state with it; the rules keep it command
    /// by command.
    pub fn check_invariants(&self, schema: &RoleSchema) -> Result<(), String> {
        if self.registered.is_none() {
            if !self.members.is_empty() || !self.links.is_empty() || !self.invitations.is_empty() {
                return Err("members, links or invitations on an unregistered resource".into());
            }
            return Ok(());
        }
        let highest = schema.highest();
        if !self.members.values().any(|m| &m.role == highest) {
            return Err(format!("nobody holds {highest}"));
        }
        if let Some((number, link)) = self
            .links
            .iter()
            .find(|(number, link)| **number != link.number)
        {
            return Err(format!("link {} is filed under {number}", link.number));
        }
        if let Some((number, invitation)) = self
            .invitations
            .iter()
            .find(|(number, i)| **number != i.number)
        {
            return Err(format!(
                "invitation {} is filed under {number}",
                invitation.number
            ));
        }
        Ok(())
    }

    /// The pending invitation for an email, if any.
    pub fn pending_invitation_for(
        &self,
        email: &Email,
        now: Timestamp,
    ) -> Option<&InvitationState> {
        self.invitations
            .values()
            .find(|i| &i.email == email && i.status(now) == InvitationStatus::Pending)
    }

    pub fn pending_invitation_count(&self, now: Timestamp) -> usize {
        self.invitations
            .values()
            .filter(|i| i.status(now) == InvitationStatus::Pending)
            .count()
    }

    pub fn active_link_count(&self, now: Timestamp) -> usize {
        self.links
            .values()
            .filter(|l| l.status(now) == LinkStatus::Active)
            .count()
    }

    /// Applies one event. Events of other streams, and events naming a link or invitation this
    /// state never saw, change nothing: `decide` never emits them, and replay must not fail on them.
    pub fn evolve(mut self, event: &Event) -> ResourceState {
        self.apply(event);
        self
    }

    /// Applies one event in place: what [`ResourceState::evolve`] does, without moving the state.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ResourceRegistered {
                resource,
                owner,
                role,
                parent,
                at,
            } => {
                self.registered = Some(RegisteredResource {
                    resource: resource.clone(),
                    parent: parent.clone(),
                    registered_at: *at,
                });
                self.members.insert(
                    owner.clone(),
                    Membership {
                        role: role.clone(),
                        since: *at,
                        granted_by: None,
                        via: Via::Direct,
                    },
                );
            }
            Event::MemberAdded {
                principal,
                role,
                granted_by,
                via,
                at,
            } => {
                self.members.insert(
                    principal.clone(),
                    Membership {
                        role: role.clone(),
                        since: *at,
                        granted_by: granted_by.clone(),
                        via: *via,
                    },
                );
            }
            Event::MemberRoleChanged {
                principal,
                role,
                changed_by,
                via,
                at,
                ..
            } => {
                if let Some(member) = self.members.get_mut(principal) {
                    member.role = role.clone();
                    member.since = *at;
                    member.granted_by = changed_by.clone();
                    member.via = *via;
                }
            }
            Event::MemberRemoved { principal, .. } => {
                self.members.remove(principal);
            }
            Event::InviteLinkCreated {
                number,
                generation,
                role,
                expires_at,
                max_uses,
                created_by,
            } => {
                self.links.insert(
                    *number,
                    LinkState {
                        number: *number,
                        generation: *generation,
                        role: role.clone(),
                        expires_at: *expires_at,
                        max_uses: *max_uses,
                        uses: 0,
                        created_by: created_by.clone(),
                        revoked: false,
                    },
                );
            }
            Event::InviteLinkChanged {
                number,
                role,
                expires_at,
                max_uses,
                ..
            } => {
                if let Some(link) = self.links.get_mut(number) {
                    link.role = role.clone();
                    link.expires_at = *expires_at;
                    link.max_uses = *max_uses;
                }
            }
            Event::InviteLinkRotated {
                number, generation, ..
            } => {
                if let Some(link) = self.links.get_mut(number) {
                    link.generation = *generation;
                }
            }
            Event::InviteLinkRevoked { number, .. } => {
                if let Some(link) = self.links.get_mut(number) {
                    link.revoked = true;
                }
            }
            Event::InviteLinkUsed { number, uses, .. } => {
                if let Some(link) = self.links.get_mut(number) {
                    link.uses = *uses;
                }
            }
            Event::InvitationCreated {
                number,
                generation,
                email,
                role,
                expires_at,
                validity_ms,
                invited_by,
                message,
            } => {
                self.invitations.insert(
                    *number,
                    InvitationState {
                        number: *number,
                        generation: *generation,
                        email: email.clone(),
                        role: role.clone(),
                        expires_at: *expires_at,
                        validity_ms: *validity_ms,
                        invited_by: invited_by.clone(),
                        message: message.clone(),
                        closure: None,
                        delivery: DeliveryState::default(),
                    },
                );
            }
            Event::InvitationResent {
                number,
                generation,
                expires_at,
                ..
            } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.generation = *generation;
                    invitation.expires_at = *expires_at;
                }
            }
            Event::InvitationAccepted {
                number,
                email,
                accepted_by,
                ..
            } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.closure = Some(InvitationClosure::Accepted {
                        by: accepted_by.clone(),
                    });
                }
                self.known_emails.insert(email.clone(), accepted_by.clone());
            }
            Event::InvitationDeclined { number, .. } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.closure = Some(InvitationClosure::Declined);
                }
            }
            Event::InvitationRevoked { number, .. } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.closure = Some(InvitationClosure::Revoked);
                }
            }
            Event::InvitationDelivered {
                number,
                generation,
                attempt,
            } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.delivery.attempts = *attempt;
                    invitation.delivery.delivered_generation = Some(*generation);
                    invitation.delivery.last_error = None;
                }
            }
            Event::InvitationDeliveryFailed {
                number,
                attempt,
                error,
                ..
            } => {
                if let Some(invitation) = self.invitations.get_mut(number) {
                    invitation.delivery.attempts = *attempt;
                    invitation.delivery.last_error = Some(error.clone());
                }
            }
            Event::RoleSchemaDefined { .. }
            | Event::ApiKeyIssued { .. }
            | Event::ApiKeyRevoked { .. }
            | Event::WebhookSubscribed { .. }
            | Event::WebhookRemoved { .. }
            | Event::WebhookDelivered { .. }
            | Event::WebhookDeliveryFailed { .. } => {}
        }
    }
}

/// The state of one `role-schema:{kind}` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaState {
    defined: Option<RoleSchema>,
}

impl SchemaState {
    /// The schema an admin defined, if any.
    pub fn defined(&self) -> Option<&RoleSchema> {
        self.defined.as_ref()
    }

    /// The schema in force for the kind: the defined one, or the built-in one.
    pub fn in_force(&self, kind: &Kind) -> RoleSchema {
        self.defined
            .clone()
            .unwrap_or_else(|| RoleSchema::builtin(kind))
    }

    pub fn evolve(mut self, event: &Event) -> SchemaState {
        self.apply(event);
        self
    }

    /// Applies one event in place: what [`SchemaState::evolve`] does, without moving the state.
    pub fn apply(&mut self, event: &Event) {
        if let Event::RoleSchemaDefined {
            kind,
            roles,
            default_role,
        } = event
        {
            // `decide` only emits valid schemas. An invalid one (a log edited by hand) keeps the
            // schema in force rather than silently falling back to the built-in one.
            if let Ok(schema) = RoleSchema::new(kind.clone(), roles.clone(), default_role.clone()) {
                self.defined = Some(schema);
            }
        }
    }
}

/// One API key as the log knows it: no key, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub key_id: ApiKeyId,
    pub principal: Principal,
    pub scopes: BTreeSet<Scope>,
    pub act_as: bool,
    pub email: Option<Email>,
    pub name: Option<String>,
    pub digest: KeyDigest,
    pub revoked: bool,
}

/// The state of the `api-keys` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeysState {
    keys: BTreeMap<ApiKeyId, ApiKeyRecord>,
    by_digest: BTreeMap<KeyDigest, ApiKeyId>,
}

impl ApiKeysState {
    pub fn keys(&self) -> &BTreeMap<ApiKeyId, ApiKeyRecord> {
        &self.keys
    }

    pub fn key(&self, key_id: &ApiKeyId) -> Option<&ApiKeyRecord> {
        self.keys.get(key_id)
    }

    /// The live (unrevoked) key with this digest: how a presented key is authenticated.
    pub fn by_digest(&self, digest: &KeyDigest) -> Option<&ApiKeyRecord> {
        self.by_digest
            .get(digest)
            .and_then(|id| self.keys.get(id))
            .filter(|key| !key.revoked)
    }

    pub fn evolve(mut self, event: &Event) -> ApiKeysState {
        self.apply(event);
        self
    }

    /// Applies one event in place: what [`ApiKeysState::evolve`] does, without moving the state.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ApiKeyIssued {
                key_id,
                principal,
                scopes,
                act_as,
                email,
                name,
                digest,
            } => {
                self.by_digest.insert(*digest, key_id.clone());
                self.keys.insert(
                    key_id.clone(),
                    ApiKeyRecord {
                        key_id: key_id.clone(),
                        principal: principal.clone(),
                        scopes: scopes.clone(),
                        act_as: *act_as,
                        email: email.clone(),
                        name: name.clone(),
                        digest: *digest,
                        revoked: false,
                    },
                );
            }
            Event::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.keys.get_mut(key_id) {
                    key.revoked = true;
                }
            }
            _ => {}
        }
    }

    /// Every known principal's verified email, from the keys that carry one.
    pub fn known_emails(&self) -> BTreeMap<Email, Principal> {
        self.keys
            .values()
            .filter(|k| !k.revoked)
            .filter_map(|k| k.email.clone().map(|e| (e, k.principal.clone())))
            .collect()
    }
}
