//! The projections: how each read model folds one event into its rows. Dumb on purpose:
//! the events carry what the rows need, so no projection decides anything.

use roster_domain::{Event, Principal, ResourceId, RoleName, Timestamp, Via};
use roster_eventstore::Envelope;

use crate::codec;
use crate::kv::{key, Batch};
use crate::records::{
    ApiKeyRow, Closure, DeliveryRecord, InvitationRecord, InviteRecord, LinkRecord, ResourceRecord,
    WebhookDeliveryRow, WebhookRow,
};
use crate::summary::write_summary;
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

/// `key` of a tag, a resource and more parts, without the resource's `String` first: a fold
/// makes several such keys per event.
fn resource_key(tag: &[u8], resource: &ResourceId, rest: &[&[u8]]) -> Vec<u8> {
    let (kind, id) = (resource.kind().as_str(), resource.id());
    let length =
        tag.len() + kind.len() + id.len() + rest.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut key = Vec::with_capacity(length + 2);
    key.extend_from_slice(tag);
    key.push(0);
    key.extend_from_slice(kind.as_bytes());
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    for part in rest {
        key.push(0);
        key.extend_from_slice(part);
    }
    debug_assert_eq!(
        key,
        crate::kv::key(&[&[tag, resource.to_string().as_bytes()], rest].concat())
    );
    key
}

pub(crate) fn number_key(tag: &[u8], number: u64) -> Vec<u8> {
    key(&[tag, &number.to_be_bytes()])
}

/// Resources, member counts, and which roles of each kind are held (for schema changes).
pub struct Resources;

impl Resources {
    pub(crate) fn row(resource: &ResourceId) -> Vec<u8> {
        resource_key(b"r", resource, &[])
    }

    pub(crate) fn usage_row(kind: &str, role: &RoleName) -> Vec<u8> {
        key(&[b"k", kind.as_bytes(), role.as_str().as_bytes()])
    }

    /// A holder of the resource's highest role: `o ‖ resource ‖ principal`, listed in
    /// principal order by `ReadModels::owners`.
    pub(crate) fn owner_row(resource: &ResourceId, principal: &Principal) -> Vec<u8> {
        resource_key(b"o", resource, &[principal.as_str().as_bytes()])
    }

    /// What every owner row of the resource starts with: its row less the principal.
    pub(crate) fn owner_prefix(resource: &ResourceId) -> Vec<u8> {
        let mut prefix = resource_key(b"o", resource, &[]);
        prefix.push(0);
        prefix
    }

    /// Records that `principal` now holds `role` on the resource (or nothing, for `None`):
    /// its owner row and the resource's owner count follow whether that is the highest role.
    fn holds(
        batch: &mut Batch<'_>,
        resource: &ResourceId,
        principal: &Principal,
        role: Option<&RoleName>,
    ) -> Result<(), ProjectionError> {
        let row = Resources::owner_row(resource, principal);
        let was = batch.get(&row)?.is_some();
        let mut is = false;
        batch.update::<ResourceRecord>(&Resources::row(resource), |record| {
            is = role == Some(&record.highest_role);
            match (was, is) {
                (false, true) => record.owner_count += 1,
                (true, false) => record.owner_count = record.owner_count.saturating_sub(1),
                _ => {}
            }
            Ok(())
        })?;
        match (was, is) {
            (false, true) => batch.put_record(row, 1i64),
            (true, false) => batch.delete(row),
            _ => {}
        }
        Ok(())
    }

    fn count(batch: &mut Batch<'_>, row: Vec<u8>, delta: i64) -> Result<(), ProjectionError> {
        let mut next = delta;
        let found = batch.update::<i64>(&row, |count| {
            *count += delta;
            next = *count;
            Ok(())
        })?;
        if next <= 0 {
            batch.delete(row);
        } else if !found {
            batch.put_record(row, next);
        }
        Ok(())
    }

    fn members(
        batch: &mut Batch<'_>,
        resource: &ResourceId,
        delta: i64,
    ) -> Result<(), ProjectionError> {
        batch.update::<ResourceRecord>(&Resources::row(resource), |record| {
            record.member_count = record.member_count.saturating_add_signed(delta);
            Ok(())
        })?;
        Ok(())
    }
}

impl Projection for Resources {
    fn name(&self) -> &'static str {
        "resources"
    }

    /// 2: the holders of each resource's highest role (`o` rows and `owner_count`) instead of
    /// the registering owner, who may have handed the role on since.
    fn version(&self) -> u32 {
        2
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
                    highest_role: role.clone(),
                    registered_at: *at,
                    member_count: 1,
                    owner_count: 1,
                };
                batch.put_record(Resources::row(resource), record);
                batch.put_record(Resources::owner_row(resource, owner), 1i64);
                Resources::count(
                    batch,
                    Resources::usage_row(resource.kind().as_str(), role),
                    1,
                )?;
            }
            Event::MemberAdded {
                principal, role, ..
            } => {
                let resource = resource_of(fact)?;
                Resources::members(batch, resource, 1)?;
                Resources::holds(batch, resource, principal, Some(role))?;
                Resources::count(
                    batch,
                    Resources::usage_row(resource.kind().as_str(), role),
                    1,
                )?;
            }
            Event::MemberRoleChanged {
                principal,
                from_role,
                role,
                ..
            } => {
                let resource = resource_of(fact)?;
                Resources::holds(batch, resource, principal, Some(role))?;
                let kind = resource.kind().as_str();
                Resources::count(batch, Resources::usage_row(kind, from_role), -1)?;
                Resources::count(batch, Resources::usage_row(kind, role), 1)?;
            }
            Event::MemberRemoved {
                principal, role, ..
            } => {
                let resource = resource_of(fact)?;
                Resources::members(batch, resource, -1)?;
                Resources::holds(batch, resource, principal, None)?;
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
        resource_key(b"r", resource, &[principal.as_str().as_bytes()])
    }

    pub(crate) fn by_principal(principal: &Principal, resource: &ResourceId) -> Vec<u8> {
        let mut key = key(&[b"p", principal.as_str().as_bytes()]);
        key.push(0);
        key.extend_from_slice(resource.kind().as_str().as_bytes());
        key.push(b'/');
        key.extend_from_slice(resource.id().as_bytes());
        key
    }

    /// Writes both rows of a membership: a `MemberRecord` and a `MembershipRecord`, each
    /// encoded from the event's fields in place (the keys hold the principal and resource).
    fn set(
        batch: &mut Batch<'_>,
        resource: &ResourceId,
        principal: &Principal,
        role: &RoleName,
        since: Timestamp,
        granted_by: Option<&Principal>,
        via: Via,
    ) {
        batch.write(&Members::by_principal(principal, resource), |out| {
            codec::put_membership(out, role, since, granted_by);
        });
        batch.write(&Members::by_resource(resource, principal), |out| {
            codec::put_member(out, role, since, granted_by, via);
        });
    }
}

impl Projection for Members {
    fn name(&self) -> &'static str {
        "members"
    }

    /// 2: rows in the binary form of `codec.rs`, not JSON.
    fn version(&self) -> u32 {
        2
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
                Members::set(batch, resource, owner, role, *at, None, Via::Direct);
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
                let resource = resource_of(fact)?;
                Members::set(
                    batch,
                    resource,
                    principal,
                    role,
                    *at,
                    granted_by.as_ref(),
                    *via,
                );
            }
            Event::MemberRemoved { principal, .. } => {
                let resource = resource_of(fact)?;
                batch.erase(&Members::by_resource(resource, principal));
                batch.erase(&Members::by_principal(principal, resource));
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
        resource_key(b"r", resource, &[tag, &number.to_be_bytes()])
    }

    pub(crate) fn pending(email: &str, number: u64) -> Vec<u8> {
        key(&[b"e", email.as_bytes(), &number.to_be_bytes()])
    }

    pub(crate) const HIGHEST_NUMBER: &'static [u8] = b"m";

    fn invitation(batch: &Batch<'_>, number: u64) -> Result<InvitationRecord, ProjectionError> {
        match batch.get_record::<InviteRecord>(&number_key(b"n", number))? {
            Some(InviteRecord::Email(invitation)) => Ok(invitation),
            _ => Err(ProjectionError::Corrupt(format!(
                "an event of unknown invitation {number}"
            ))),
        }
    }

    /// Changes a link's row in place.
    fn change_link(
        batch: &mut Batch<'_>,
        number: u64,
        change: impl FnOnce(&mut LinkRecord),
    ) -> Result<(), ProjectionError> {
        let unknown = || ProjectionError::Corrupt(format!("an event of unknown link {number}"));
        let found =
            batch.update::<InviteRecord>(&number_key(b"n", number), |record| match record {
                InviteRecord::Link(link) => {
                    change(link);
                    Ok(())
                }
                InviteRecord::Email(_) => Err(unknown()),
            })?;
        if found {
            Ok(())
        } else {
            Err(unknown())
        }
    }

    fn put(batch: &mut Batch<'_>, record: InviteRecord) {
        let number = match &record {
            InviteRecord::Link(link) => link.number,
            InviteRecord::Email(invitation) => invitation.number,
        };
        batch.put_record(number_key(b"n", number), record);
    }

    fn close(batch: &mut Batch<'_>, number: u64, closure: Closure) -> Result<(), ProjectionError> {
        let mut invitation = Invitations::invitation(batch, number)?;
        batch.delete(Invitations::pending(invitation.email.normal(), number));
        invitation.closure = Some(closure);
        Invitations::put(batch, InviteRecord::Email(invitation));
        Ok(())
    }

    fn note_number(batch: &mut Batch<'_>, number: u64) -> Result<(), ProjectionError> {
        let highest: u64 = batch.get_record(Invitations::HIGHEST_NUMBER)?.unwrap_or(0);
        if number > highest {
            batch.put_record(Invitations::HIGHEST_NUMBER.to_vec(), number);
        }
        Ok(())
    }
}

impl Projection for Invitations {
    fn name(&self) -> &'static str {
        "invitations"
    }

    /// 2: open invitations are keyed by the address's normal form of DESIGN section 13 (ASCII
    /// letters folded, the domain in IDNA ASCII form), not by its Unicode lowercase.
    fn version(&self) -> u32 {
        2
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
                Invitations::change_link(batch, *number, |link| {
                    link.role = role.clone();
                    link.expires_at = *expires_at;
                    link.max_uses = *max_uses;
                })?;
            }
            Event::InviteLinkRotated {
                number, generation, ..
            } => {
                Invitations::change_link(batch, *number, |link| link.generation = *generation)?;
            }
            Event::InviteLinkRevoked { number, .. } => {
                Invitations::change_link(batch, *number, |link| link.revoked = true)?;
            }
            Event::InviteLinkUsed { number, uses, .. } => {
                Invitations::change_link(batch, *number, |link| link.uses = *uses)?;
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
                    Invitations::pending(email.normal(), *number),
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
        resource_key(b"r", resource, &[&position.to_be_bytes()])
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
    /// 3: entries in the binary form of `codec.rs`, not JSON.
    fn version(&self) -> u32 {
        3
    }

    fn apply(&self, batch: &mut Batch<'_>, fact: &Fact<'_>) -> Result<(), ProjectionError> {
        let Some(resource) = fact.resource else {
            return Ok(());
        };
        let position = fact.envelope.position;
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
            batch.write(&History::by_principal(principal, position), |out| {
                out.extend_from_slice(resource.kind().as_str().as_bytes());
                out.push(b'/');
                out.extend_from_slice(resource.id().as_bytes());
            });
        }
        // Encoded straight from the event: no `HistoryEntry`, no summary `String`.
        batch.write(&History::by_resource(resource, position), |out| {
            codec::put_history_entry(
                out,
                fact.at,
                &fact.envelope.actor,
                &fact.envelope.event_type,
                |out| {
                    // Writing into memory cannot fail.
                    let _ = write_summary(&mut codec::Text(out), fact.event, resource);
                },
            );
        });
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

    /// 2: known emails are keyed by the address's normal form of DESIGN section 13.
    fn version(&self) -> u32 {
        2
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
                batch.put_record(Identity::key_by_digest(&row.digest), row);
                if let Some(email) = email {
                    batch.put(
                        Identity::email(email.normal()),
                        principal.as_str().as_bytes().to_vec(),
                    );
                }
            }
            Event::ApiKeyRevoked { key_id } => {
                if let Some(digest) = batch.get(&Identity::key_by_id(key_id.as_str()))? {
                    let digest = String::from_utf8_lossy(&digest).into_owned();
                    if let Some(mut row) =
                        batch.get_record::<ApiKeyRow>(&Identity::key_by_digest(&digest))?
                    {
                        row.revoked = true;
                        batch.put_record(Identity::key_by_digest(&digest), row);
                    }
                }
            }
            Event::InvitationAccepted {
                email, accepted_by, ..
            } => {
                batch.put(
                    Identity::email(email.normal()),
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
        if let Some(mut row) = batch.get_record::<WebhookRow>(&Webhooks::row(webhook))? {
            row.settled_position = row.settled_position.max(position);
            batch.put_record(Webhooks::row(webhook), row);
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
                batch.put_record(Webhooks::row(*webhook), row);
            }
            Event::WebhookRemoved { webhook } => {
                if let Some(mut row) = batch.get_record::<WebhookRow>(&Webhooks::row(*webhook))? {
                    row.removed = true;
                    batch.put_record(Webhooks::row(*webhook), row);
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
                batch.put_record(Webhooks::delivery(*webhook, *position, *attempt), row);
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
                batch.put_record(Webhooks::delivery(*webhook, *position, *attempt), row);
                if *gave_up {
                    Webhooks::settle(batch, *webhook, *position)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}
