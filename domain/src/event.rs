//! The events: what happened, in the past tense, with the data read models need and no secret.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    ApiKeyId, Email, KeyDigest, Kind, Principal, ResourceId, RoleDef, RoleName, Scope, Timestamp,
};

/// The schema version every event type is written with today; older versions would be upcast in [`Event::from_parts`].
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// How a member came by a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    /// Added or changed directly by a member with `manage_members`, or by the admin.
    Direct,
    /// Joined through the invite link of that number.
    Link { number: u64 },
    /// Joined through the email invitation of that number.
    Invitation { number: u64 },
}

/// Every event of every stream.
///
/// Who acted is `Some(principal)`, or `None` for the admin key acting without a principal
/// (DESIGN rule 8: the admin stands outside the rolemap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// Stream `role-schema:{kind}`: the kind's schema from now on.
    RoleSchemaDefined {
        kind: Kind,
        roles: Vec<RoleDef>,
        default_role: RoleName,
    },
    /// The resource exists, and its owner holds `role` (the highest) from this event on.
    ResourceRegistered {
        resource: ResourceId,
        owner: Principal,
        role: RoleName,
        parent: Option<ResourceId>,
        at: Timestamp,
    },
    MemberAdded {
        principal: Principal,
        role: RoleName,
        granted_by: Option<Principal>,
        via: Via,
        at: Timestamp,
    },
    /// A member's role went up or down; `changed_by` becomes the member's grantor.
    MemberRoleChanged {
        principal: Principal,
        from_role: RoleName,
        role: RoleName,
        changed_by: Option<Principal>,
        via: Via,
        at: Timestamp,
    },
    /// The member is gone: removed by another, or `left` of its own accord.
    MemberRemoved {
        principal: Principal,
        role: RoleName,
        removed_by: Option<Principal>,
        left: bool,
    },
    InviteLinkCreated {
        number: u64,
        generation: u32,
        role: RoleName,
        expires_at: Option<Timestamp>,
        max_uses: Option<u32>,
        created_by: Option<Principal>,
    },
    /// The link's role and limits after the change, all of them, so read models just overwrite.
    InviteLinkChanged {
        number: u64,
        role: RoleName,
        expires_at: Option<Timestamp>,
        max_uses: Option<u32>,
        changed_by: Option<Principal>,
    },
    /// A new generation: every code of an older one is dead.
    InviteLinkRotated {
        number: u64,
        generation: u32,
        rotated_by: Option<Principal>,
    },
    InviteLinkRevoked {
        number: u64,
        revoked_by: Option<Principal>,
    },
    /// One more use; `uses` is the count after it.
    InviteLinkUsed {
        number: u64,
        generation: u32,
        used_by: Principal,
        uses: u32,
    },
    InvitationCreated {
        number: u64,
        generation: u32,
        email: Email,
        role: RoleName,
        expires_at: Timestamp,
        validity_ms: i64,
        invited_by: Option<Principal>,
        message: Option<String>,
    },
    /// A new code (generation) and a new expiry, now plus the original validity.
    InvitationResent {
        number: u64,
        generation: u32,
        expires_at: Timestamp,
        resent_by: Option<Principal>,
    },
    /// Also how Roster learns a principal's verified email ("known emails").
    InvitationAccepted {
        number: u64,
        generation: u32,
        email: Email,
        accepted_by: Principal,
    },
    InvitationDeclined {
        number: u64,
        declined_by: Option<Principal>,
    },
    InvitationRevoked {
        number: u64,
        revoked_by: Option<Principal>,
    },
    /// The mail of that generation was accepted by the SMTP server.
    InvitationDelivered {
        number: u64,
        generation: u32,
        attempt: u32,
    },
    InvitationDeliveryFailed {
        number: u64,
        generation: u32,
        attempt: u32,
        error: String,
    },
    /// Stream `api-keys`. Only the key's digest is kept.
    ApiKeyIssued {
        key_id: ApiKeyId,
        principal: Principal,
        scopes: BTreeSet<Scope>,
        act_as: bool,
        email: Option<Email>,
        name: Option<String>,
        digest: KeyDigest,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    /// Stream `webhooks`: a subscription to the listed event types (all when empty).
    WebhookSubscribed {
        webhook: u64,
        url: String,
        events: Vec<String>,
    },
    WebhookRemoved {
        webhook: u64,
    },
    /// The event at `position` reached the webhook, which answered `status`.
    WebhookDelivered {
        webhook: u64,
        position: u64,
        attempt: u32,
        status: u16,
    },
    /// An attempt that got no 2xx; `gave_up` when no further attempt follows.
    WebhookDeliveryFailed {
        webhook: u64,
        position: u64,
        attempt: u32,
        status: Option<u16>,
        error: String,
        gave_up: bool,
    },
}

/// An envelope's `type`, `schema` and `data` that do not make an event this version knows.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event type {event_type} has no schema version {schema}")]
    UnknownSchema { event_type: String, schema: u32 },
    #[error("event {event_type}: {source}")]
    Data {
        event_type: String,
        source: serde_json::Error,
    },
}

impl Event {
    /// The new link, invitation or webhook number this event hands out, if it is one that
    /// does: every number comes from one sequence, which must resume past all of them.
    pub fn new_number(&self) -> Option<u64> {
        match self {
            Event::InviteLinkCreated { number, .. } | Event::InvitationCreated { number, .. } => {
                Some(*number)
            }
            Event::WebhookSubscribed { webhook, .. } => Some(*webhook),
            _ => None,
        }
    }

    /// The event type, as stored in the envelope's `type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::RoleSchemaDefined { .. } => "RoleSchemaDefined",
            Event::ResourceRegistered { .. } => "ResourceRegistered",
            Event::MemberAdded { .. } => "MemberAdded",
            Event::MemberRoleChanged { .. } => "MemberRoleChanged",
            Event::MemberRemoved { .. } => "MemberRemoved",
            Event::InviteLinkCreated { .. } => "InviteLinkCreated",
            Event::InviteLinkChanged { .. } => "InviteLinkChanged",
            Event::InviteLinkRotated { .. } => "InviteLinkRotated",
            Event::InviteLinkRevoked { .. } => "InviteLinkRevoked",
            Event::InviteLinkUsed { .. } => "InviteLinkUsed",
            Event::InvitationCreated { .. } => "InvitationCreated",
            Event::InvitationResent { .. } => "InvitationResent",
            Event::InvitationAccepted { .. } => "InvitationAccepted",
            Event::InvitationDeclined { .. } => "InvitationDeclined",
            Event::InvitationRevoked { .. } => "InvitationRevoked",
            Event::InvitationDelivered { .. } => "InvitationDelivered",
            Event::InvitationDeliveryFailed { .. } => "InvitationDeliveryFailed",
            Event::ApiKeyIssued { .. } => "ApiKeyIssued",
            Event::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            Event::WebhookSubscribed { .. } => "WebhookSubscribed",
            Event::WebhookRemoved { .. } => "WebhookRemoved",
            Event::WebhookDelivered { .. } => "WebhookDelivered",
            Event::WebhookDeliveryFailed { .. } => "WebhookDeliveryFailed",
        }
    }

    /// The schema version this event is written with.
    pub fn schema(&self) -> u32 {
        EVENT_SCHEMA_VERSION
    }

    /// The envelope's `data`.
    pub fn to_data(&self) -> Value {
        // Every field serialises to JSON without failure (no maps with non-string keys, no floats).
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => unreachable!("an adjacently tagged enum serialises to an object"),
        }
    }

    /// Reads an event back from its envelope's `type`, `schema` and `data`.
    pub fn from_parts(
        event_type: &str,
        schema: u32,
        data: Value,
    ) -> Result<Event, EventDecodeError> {
        if schema != EVENT_SCHEMA_VERSION {
            return Err(EventDecodeError::UnknownSchema {
                event_type: event_type.to_owned(),
                schema,
            });
        }
        let tagged = serde_json::json!({ "type": event_type, "data": data });
        let event: Event =
            serde_json::from_value(tagged).map_err(|source| EventDecodeError::Data {
                event_type: event_type.to_owned(),
                source,
            })?;
        // Paired check: what was read back is of the type the envelope names.
        debug_assert_eq!(event.event_type(), event_type);
        Ok(event)
    }
}
