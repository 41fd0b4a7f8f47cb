//! The projections: how each read model folds one event into its rows. Dumb on purpose:
//! the events carry what the rows need, so no projection decides anything.

use roster_domain::{Event, Principal, ResourceId, RoleName, Timestamp, Via};
use roster_eventstore::Envelope;

use crate::kv::{key, Batch};
use crate::records::{
    ApiKeyRow, Closure, DeliveryRecord, HistoryEntry, InvitationRecord, InviteRecord, LinkRecord,
    MemberRecord, MembershipRecord, ResourceRecord, WebhookDeliveryRow, WebhookRow,
};
use crate::ProjectionError;

/// One event, decoded once and handed to every projection.
pub struct Fact<'a> {
    pub envelope: &'a Envelope,
    pub event: &'a Event,
    /// The resource of a `resource:` stream.
    pub resource: Option<&'a ResourceId>,
    pub at: Timestamp,
}

/// A read model's fold. Its `version` changes whenever its rows change shape or meaning,
/// and a changed version makes the model rebuild from the log on open.
pub trait Projection: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError>;
}

fn resource_of<'a>(fact: &Fact<'a>) -> Result<&'a ResourceId, ProjectionError> {
    fact.resource.ok_or_else(|| {
        ProjectionError::Corrupt(format!(
            "position {}: {} outside a resource stream",
            fact.envelope.position, fact.envelope.event_type
        ))
    })
}

pub(crate) fn number_key(tag: &[u8], number: u64) -> Vec<u8> {
    key(&[tag, &number.to_be_bytes()])
}

/// Resources, member counts, and which roles of each kind are held (for schema changes).
pub struct Resources;

impl Resources {
    pub(crate) fn row(resource: &ResourceId) -> Vec<u8> {
        key(&[b"r", resource.to_string().as_bytes()])
    }

    pub(crate) fn usage_row(kind: &str, role: &RoleName) -> Vec<u8> {
        key(&[b"k", kind.as_bytes(), role.as_str().as_bytes()])
    }

    fn count(batch: &mut Batch<'_>, row: Vec<u8>, delta: i64) -> Result<(), ProjectionError> {
        let count: i64 = batch.get_json(&row)?.unwrap_or(0);
        let next = count + delta;
        if next <= 0 {
            batch.delete(row);
        } else {
            batch.put_json(row, &next);
        }
        Ok(())
    }

    fn members(
        batch: &mut Batch<'_>,
        resource: &ResourceId,
        delta: i64,
    ) -> Result<(), ProjectionError> {
        let row = Resources::row(resource);
        if let Some(mut record) = batch.get_json::<ResourceRecord>(&row)? {
            record.member_count = record.member_count.saturating_add_signed(delta);
            batch.put_json(row, &record);
        }
        Ok(())
    }
}

impl Projection for Resources {
    fn name(&self) -> &'static str {
        "resources"
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        match fact.event {
            Event::ResourceRegistered {
                resource,
                owner,
                role,
                parent,
                at,
            } => {
                let record = ResourceRecord {
                    resource: resource.clone(),
                    parent: parent.clone(),
                    owner: owner.clone(),
                    registered_at: *at,
                    member_count: 1,
                };
                batch.put_json(Resources::row(resource), &record);
                Resources::count(
                    batch,
                    Resources::usage_row(resource.kind().as_str(), role),
                    1,
                )?;
            }
            Event::MemberAdded { role, .. } => {
                let resource = resource_of(fact)?;
                Resources::members(batch, resource, 1)?;
                Resources::count(
                    batch,
                    Resources::usage_row(resource.kind().as_str(), role),
                    1,
                )?;
            }
            Event::MemberRoleChanged {
                from_role, role, ..
            } => {
                let kind = resource_of(fact)?.kind().as_str();
                Resources::count(batch, Resources::usage_row(kind, from_role), -1)?;
                Resources::count(batch, Resources::usage_row(kind, role), 1)?;
            }
            Event::MemberRemoved { role, .. } => {
                let resource = resource_of(fact)?;
                Resources::members(batch, resource, -1)?;
                Resources::count(
                    batch,
                    Resources::usage_row(resource.kind().as_str(), role),
                    -1,
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The rolemap, by resource and by principal.
pub struct Members;

impl Members {
    pub(crate) fn by_resource(resource: &ResourceId, principal: &Principal) -> Vec<u8> {
        key(&[
            b"r",
            resource.to_string().as_bytes(),
            principal.as_str().as_bytes(),
        ])
    }

    pub(crate) fn by_principal(principal: &Principal, resource: &ResourceId) -> Vec<u8> {
        key(&[
            b"p",
            principal.as_str().as_bytes(),
            resource.to_string().as_bytes(),
        ])
    }

    fn set(batch: &mut Batch<'_>, resource: &ResourceId, record: MemberRecord) {
        let membership = MembershipRecord {
            resource: resource.clone(),
            role: record.role.clone(),
            since: record.since,
            granted_by: record.granted_by.clone(),
        };
        batch.put_owned(
            Members::by_principal(&record.principal, resource),
            membership,
        );
        batch.put_owned(Members::by_resource(resource, &record.principal), record);
    }
}

impl Projection for Members {
    fn name(&self) -> &'static str {
        "members"
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        match fact.event {
            Event::ResourceRegistered {
                resource,
                owner,
                role,
                at,
                ..
            } => {
                let record = MemberRecord {
                    principal: owner.clone(),
                    role: role.clone(),
                    since: *at,
                    granted_by: None,
                    via: Via::Direct,
                };
                Members::set(batch, resource, record);
            }
            Event::MemberAdded {
                principal,
                role,
                granted_by,
                via,
                at,
            }
            | Event::MemberRoleChanged {
                principal,
                role,
                changed_by: granted_by,
                via,
                at,
                ..
            } => {
                let record = MemberRecord {
                    principal: principal.clone(),
                    role: role.clone(),
                    since: *at,
                    granted_by: granted_by.clone(),
                    via: *via,
                };
                Members::set(batch, resource_of(fact)?, record);
            }
            Event::MemberRemoved { principal, .. } => {
                let resource = resource_of(fact)?;
                batch.delete(Members::by_resource(resource, principal));
                batch.delete(Members::by_principal(principal, resource));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Links and email invitations: by number, by resource, pending by email, and the highest
/// number handed out (where the engine's numbering resumes).
pub struct Invitations;

impl Invitations {
    pub(crate) fn by_resource(resource: &ResourceId, tag: &[u8], number: u64) -> Vec<u8> {
        key(&[
            b"r",
            resource.to_string().as_bytes(),
            tag,
            &number.to_be_bytes(),
        ])
    }

    pub(crate) fn pending(email: &str, number: u64) -> Vec<u8> {
        key(&[b"e", email.as_bytes(), &number.to_be_bytes()])
    }

    pub(crate) const HIGHEST_NUMBER: &'static [u8] = b"m";

    fn link(batch: &Batch<'_>, number: u64) -> Result<LinkRecord, ProjectionError> {
        match batch.get_json::<InviteRecord>(&number_key(b"n", number))? {
            Some(InviteRecord::Link(link)) => Ok(link),
            _ => Err(ProjectionError::Corrupt(format!(
                "an event of unknown link {number}"
            ))),
        }
    }

    fn invitation(batch: &Batch<'_>, number: u64) -> Result<InvitationRecord, ProjectionError> {
        match batch.get_json::<InviteRecord>(&number_key(b"n", number))? {
            Some(InviteRecord::Email(invitation)) => Ok(invitation),
            _ => Err(ProjectionError::Corrupt(format!(
                "an event of unknown invitation {number}"
            ))),
        }
    }

    fn put(batch: &mut Batch<'_>, record: InviteRecord) {
        let number = match &record {
            InviteRecord::Link(link) => link.number,
            InviteRecord::Email(invitation) => invitation.number,
        };
        batch.put_json(number_key(b"n", number), &record);
    }

    fn close(batch: &mut Batch<'_>, number: u64, closure: Closure) -> Result<(), ProjectionError> {
        let mut invitation = Invitations::invitation(batch, number)?;
        batch.delete(Invitations::pending(invitation.email.as_str(), number));
        invitation.closure = Some(closure);
        Invitations::put(batch, InviteRecord::Email(invitation));
        Ok(())
    }

    fn note_number(batch: &mut Batch<'_>, number: u64) -> Result<(), ProjectionError> {
        let highest: u64 = batch.get_json(Invitations::HIGHEST_NUMBER)?.unwrap_or(0);
        if number > highest {
            batch.put_json(Invitations::HIGHEST_NUMBER.to_vec(), &number);
        }
        Ok(())
    }
}

impl Projection for Invitations {
    fn name(&self) -> &'static str {
        "invitations"
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        match fact.event {
            Event::InviteLinkCreated {
                number,
                generation,
                role,
                expires_at,
                max_uses,
                created_by,
            } => {
                let resource = resource_of(fact)?;
                let link = LinkRecord {
                    number: *number,
                    generation: *generation,
                    resource: resource.clone(),
                    role: role.clone(),
                    created_by: created_by.clone(),
                    created_at: fact.at,
                    expires_at: *expires_at,
                    max_uses: *max_uses,
                    uses: 0,
                    revoked: false,
                };
                batch.put(
                    Invitations::by_resource(resource, b"l", *number),
                    Vec::new(),
                );
                Invitations::put(batch, InviteRecord::Link(link));
                Invitations::note_number(batch, *number)?;
            }
            Event::InviteLinkChanged {
                number,
                role,
                expires_at,
                max_uses,
                ..
            } => {
                let mut link = Invitations::link(batch, *number)?;
                link.role = role.clone();
                link.expires_at = *expires_at;
                link.max_uses = *max_uses;
                Invitations::put(batch, InviteRecord::Link(link));
            }
            Event::InviteLinkRotated {
                number, generation, ..
            } => {
                let mut link = Invitations::link(batch, *number)?;
                link.generation = *generation;
                Invitations::put(batch, InviteRecord::Link(link));
            }
            Event::InviteLinkRevoked { number, .. } => {
                let mut link = Invitations::link(batch, *number)?;
                link.revoked = true;
                Invitations::put(batch, InviteRecord::Link(link));
            }
            Event::InviteLinkUsed { number, uses, .. } => {
                let mut link = Invitations::link(batch, *number)?;
                link.uses = *uses;
                Invitations::put(batch, InviteRecord::Link(link));
            }
            Event::InvitationCreated {
                number,
                generation,
                email,
                role,
                expires_at,
                invited_by,
                message,
                ..
            } => {
                let resource = resource_of(fact)?;
                let invitation = InvitationRecord {
                    number: *number,
                    generation: *generation,
                    resource: resource.clone(),
                    email: email.clone(),
                    role: role.clone(),
                    invited_by: invited_by.clone(),
                    created_at: fact.at,
                    expires_at: *expires_at,
                    message: message.clone(),
                    closure: None,
                    delivery: DeliveryRecord::default(),
                };
                batch.put(
                    Invitations::by_resource(resource, b"i", *number),
                    Vec::new(),
                );
                batch.put(
                    Invitations::pending(email.as_str(), *number),
                    resource.to_string().into_bytes(),
                );
                Invitations::put(batch, InviteRecord::Email(invitation));
                Invitations::note_number(batch, *number)?;
            }
            Event::InvitationResent {
                number,
                generation,
                expires_at,
                ..
            } => {
                let mut invitation = Invitations::invitation(batch, *number)?;
                invitation.generation = *generation;
                invitation.expires_at = *expires_at;
                Invitations::put(batch, InviteRecord::Email(invitation));
            }
            Event::InvitationAccepted {
                number,
                accepted_by,
                ..
            } => {
                Invitations::close(
                    batch,
                    *number,
                    Closure::Accepted {
                        by: accepted_by.clone(),
                        at: fact.at,
                    },
                )?;
            }
            Event::InvitationDeclined { number, .. } => {
                Invitations::close(batch, *number, Closure::Declined { at: fact.at })?;
            }
            Event::InvitationRevoked { number, .. } => {
                Invitations::close(batch, *number, Closure::Revoked { at: fact.at })?;
            }
            Event::InvitationDelivered {
                number,
                generation,
                attempt,
            } => {
                let mut invitation = Invitations::invitation(batch, *number)?;
                invitation.delivery.attempts = *attempt;
                invitation.delivery.delivered_generation = Some(*generation);
                invitation.delivery.last_error = None;
                Invitations::put(batch, InviteRecord::Email(invitation));
            }
            Event::InvitationDeliveryFailed {
                number,
                attempt,
                error,
                ..
            } => {
                let mut invitation = Invitations::invitation(batch, *number)?;
                invitation.delivery.attempts = *attempt;
                invitation.delivery.last_error = Some(error.clone());
                Invitations::put(batch, InviteRecord::Email(invitation));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Histories: every event of a resource, and every membership event of a principal.
pub struct History;

impl History {
    pub(crate) fn by_resource(resource: &ResourceId, position: u64) -> Vec<u8> {
        key(&[
            b"r",
            resource.to_string().as_bytes(),
            &position.to_be_bytes(),
        ])
    }

    pub(crate) fn by_principal(principal: &Principal, position: u64) -> Vec<u8> {
        key(&[b"p", principal.as_str().as_bytes(), &position.to_be_bytes()])
    }
}

impl Projection for History {
    fn name(&self) -> &'static str {
        "history"
    }

    /// 2: a principal's rows name the resource whose row holds the entry, instead of a copy.
    fn version(&self) -> u32 {
        2
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        let Some(resource) = fact.resource else {
            return Ok(());
        };
        let entry = HistoryEntry {
            position: fact.envelope.position,
            occurred_at: fact.at,
            actor: fact.envelope.actor.clone(),
            event_type: fact.envelope.event_type.clone(),
            resource: Some(resource.clone()),
            summary: crate::summary::summarize(fact.event, resource),
        };
        let principal = match fact.event {
            Event::ResourceRegistered { owner, .. } => Some(owner),
            Event::MemberAdded { principal, .. }
            | Event::MemberRoleChanged { principal, .. }
            | Event::MemberRemoved { principal, .. } => Some(principal),
            _ => None,
        };
        // The entry itself is written once, under its resource: a principal's row only says
        // which resource (with the position in both keys, that finds it). Half the bytes a
        // rebuild writes were these copies.
        if let Some(principal) = principal {
            let key = History::by_principal(principal, entry.position);
            batch.put(key, resource.to_string().into_bytes());
        }
        batch.put_owned(History::by_resource(resource, entry.position), entry);
        Ok(())
    }
}

/// Who is who: API keys by digest, and the verified email of each principal that gave one.
pub struct Identity;

impl Identity {
    pub(crate) fn key_by_digest(digest: &str) -> Vec<u8> {
        key(&[b"d", digest.as_bytes()])
    }

    pub(crate) fn key_by_id(key_id: &str) -> Vec<u8> {
        key(&[b"k", key_id.as_bytes()])
    }

    pub(crate) fn email(email: &str) -> Vec<u8> {
        key(&[b"e", email.as_bytes()])
    }
}

impl Projection for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        match fact.event {
            Event::ApiKeyIssued {
                key_id,
                principal,
                scopes,
                act_as,
                email,
                name,
                digest,
            } => {
                let row = ApiKeyRow {
                    key_id: key_id.clone(),
                    principal: principal.clone(),
                    scopes: scopes.clone(),
                    act_as: *act_as,
                    email: email.clone(),
                    name: name.clone(),
                    digest: digest.to_hex(),
                    created_at: fact.at,
                    revoked: false,
                };
                batch.put(
                    Identity::key_by_id(key_id.as_str()),
                    row.digest.clone().into_bytes(),
                );
                batch.put_json(Identity::key_by_digest(&row.digest), &row);
                if let Some(email) = email {
                    batch.put(
                        Identity::email(email.as_str()),
                        principal.as_str().as_bytes().to_vec(),
                    );
                }
            }
            Event::ApiKeyRevoked { key_id } => {
                if let Some(digest) = batch.get(&Identity::key_by_id(key_id.as_str()))? {
                    let digest = String::from_utf8_lossy(&digest).into_owned();
                    if let Some(mut row) =
                        batch.get_json::<ApiKeyRow>(&Identity::key_by_digest(&digest))?
                    {
                        row.revoked = true;
                        batch.put_json(Identity::key_by_digest(&digest), &row);
                    }
                }
            }
            Event::InvitationAccepted {
                email, accepted_by, ..
            } => {
                batch.put(
                    Identity::email(email.as_str()),
                    accepted_by.as_str().as_bytes().to_vec(),
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// Webhook subscriptions and every delivery attempt.
pub struct Webhooks;

impl Webhooks {
    pub(crate) fn row(webhook: u64) -> Vec<u8> {
        number_key(b"w", webhook)
    }

    pub(crate) fn delivery(webhook: u64, position: u64, attempt: u32) -> Vec<u8> {
        key(&[
            b"d",
            &webhook.to_be_bytes(),
            &position.to_be_bytes(),
            &attempt.to_be_bytes(),
        ])
    }

    fn settle(batch: &mut Batch<'_>, webhook: u64, position: u64) -> Result<(), ProjectionError> {
        if let Some(mut row) = batch.get_json::<WebhookRow>(&Webhooks::row(webhook))? {
            row.settled_position = row.settled_position.max(position);
            batch.put_json(Webhooks::row(webhook), &row);
        }
        Ok(())
    }
}

impl Projection for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        match fact.event {
            Event::WebhookSubscribed {
                webhook,
                url,
                events,
            } => {
                let row = WebhookRow {
                    id: *webhook,
                    url: url.clone(),
                    events: events.clone(),
                    created_at: fact.at,
                    subscribed_at_position: fact.envelope.position,
                    settled_position: fact.envelope.position,
                    removed: false,
                };
                batch.put_json(Webhooks::row(*webhook), &row);
            }
            Event::WebhookRemoved { webhook } => {
                if let Some(mut row) = batch.get_json::<WebhookRow>(&Webhooks::row(*webhook))? {
                    row.removed = true;
                    batch.put_json(Webhooks::row(*webhook), &row);
                }
            }
            Event::WebhookDelivered {
                webhook,
                position,
                attempt,
                status,
            } => {
                let row = WebhookDeliveryRow {
                    position: *position,
                    attempt: *attempt,
                    status: Some(*status),
                    error: None,
                    delivered: true,
                    gave_up: false,
                    at: fact.at,
                };
                batch.put_json(Webhooks::delivery(*webhook, *position, *attempt), &row);
                Webhooks::settle(batch, *webhook, *position)?;
            }
            Event::WebhookDeliveryFailed {
                webhook,
                position,
                attempt,
                status,
                error,
                gave_up,
            } => {
                let row = WebhookDeliveryRow {
                    position: *position,
                    attempt: *attempt,
                    status: *status,
                    error: Some(error.clone()),
                    delivered: false,
                    gave_up: *gave_up,
                    at: fact.at,
                };
                batch.put_json(Webhooks::delivery(*webhook, *position, *attempt), &row);
                if *gave_up {
                    Webhooks::settle(batch, *webhook, *position)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
