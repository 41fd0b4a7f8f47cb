//! The rows of the read models: what queries return, shaped for the API, holding no secret.

use roster_domain::{ApiKeyId, Email, Principal, ResourceId, RoleName, Scope, Timestamp, Via};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A registered resource, how many members it has and how many hold its highest role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub resource: ResourceId,
    pub parent: Option<ResourceId>,
    /// The highest role of its kind's schema when it was registered, which cannot change
    /// while the kind has resources (a schema change that would is refused).
    pub highest_role: RoleName,
    pub registered_at: Timestamp,
    pub member_count: u64,
    /// Members holding `highest_role` now (rule 3 keeps it at one or more).
    pub owner_count: u64,
}

/// One entry of a resource's rolemap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub principal: Principal,
    pub role: RoleName,
    pub since: Timestamp,
    pub granted_by: Option<Principal>,
    pub via: Via,
}

/// One membership of a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub resource: ResourceId,
    pub role: RoleName,
    pub since: Timestamp,
    pub granted_by: Option<Principal>,
}

/// An invite link, without its code (the API derives it from number and generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub number: u64,
    pub generation: u32,
    pub resource: ResourceId,
    pub role: RoleName,
    pub created_by: Option<Principal>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
}

impl LinkRecord {
    pub fn status(&self, now: Timestamp) -> roster_domain::LinkStatus {
        use roster_domain::LinkStatus;
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

/// How an email invitation ended, if it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Closure {
    Accepted { by: Principal, at: Timestamp },
    Declined { at: Timestamp },
    Revoked { at: Timestamp },
}

/// The delivery of an invitation's mail, as the delivery worker reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub attempts: u32,
    pub delivered_generation: Option<u32>,
    pub last_error: Option<String>,
}

/// An email invitation, without its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRecord {
    pub number: u64,
    pub generation: u32,
    pub resource: ResourceId,
    pub email: Email,
    pub role: RoleName,
    pub invited_by: Option<Principal>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub message: Option<String>,
    pub closure: Option<Closure>,
    pub delivery: DeliveryRecord,
}

impl InvitationRecord {
    pub fn status(&self, now: Timestamp) -> roster_domain::InvitationStatus {
        use roster_domain::InvitationStatus;
        match self.closure {
            Some(Closure::Accepted { .. }) => InvitationStatus::Accepted,
            Some(Closure::Declined { .. }) => InvitationStatus::Declined,
            Some(Closure::Revoked { .. }) => InvitationStatus::Revoked,
            None if self.expires_at <= now => InvitationStatus::Expired,
            None => InvitationStatus::Pending,
        }
    }
}

/// A link or an invitation, by its number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InviteRecord {
    Link(LinkRecord),
    Email(InvitationRecord),
}

impl InviteRecord {
    pub fn resource(&self) -> &ResourceId {
        match self {
            InviteRecord::Link(link) => &link.resource,
            InviteRecord::Email(invitation) => &invitation.resource,
        }
    }
}

/// One line of a history: an event, when, by whom, and what it did in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub position: u64,
    pub occurred_at: Timestamp,
    pub actor: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub resource: Option<ResourceId>,
    pub summary: String,
}

/// An API key as the API lists it: its digest is kept for authentication, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub key_id: ApiKeyId,
    pub principal: Principal,
    pub scopes: BTreeSet<Scope>,
    pub act_as: bool,
    pub email: Option<Email>,
    pub name: Option<String>,
    pub digest: String,
    pub created_at: Timestamp,
    pub revoked: bool,
}

/// A webhook subscription (its secret is derived, never kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRow {
    pub id: u64,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: Timestamp,
    /// The position of the event that subscribed it: deliveries start after it.
    pub subscribed_at_position: u64,
    /// The last position whose delivery is settled (delivered, or given up on).
    pub settled_position: u64,
    pub removed: bool,
}

/// One attempt to deliver one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeliveryRow {
    pub position: u64,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub delivered: bool,
    pub gave_up: bool,
    pub at: Timestamp,
}
