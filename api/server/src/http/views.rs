//! The JSON bodies of the native API, requests and responses, as the OpenAPI document
//! describes them. Views are built from read-model records; codes are derived on the way out.

use roster_domain::{
    CodeKind, CodeStatus, InvitationBatch, InvitationStatus, LinkStatus, Scope, Timestamp,
};
use roster_projections::{
    ApiKeyRow, Closure, HistoryEntry, InvitationRecord, LinkRecord, MemberRecord, MembershipRecord,
    ResourceRecord,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use roster_engine::{CodeAccess, Engine};

fn time(at: Timestamp) -> String {
    at.to_string()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`; `degraded` while a shared store cannot be reached (reads go on, commands answer
    /// 503); `failing` once a write to the log failed.
    pub status: String,
    /// The log's last acknowledged position.
    pub position: u64,
    /// Why, when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyBody {
    pub principal: String,
    /// Any of `read`, `write`, `audit`, `admin`.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub act_as: bool,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKeyView {
    pub id: String,
    /// The key itself: shown only in this response.
    pub key: String,
    pub principal: String,
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    pub act_as: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub principal: String,
    /// Any of `read`, `write`, `audit`, `admin`.
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    pub act_as: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created_at: String,
    pub revoked: bool,
}

impl From<ApiKeyRow> for KeyView {
    fn from(row: ApiKeyRow) -> KeyView {
        KeyView {
            id: row.key_id.to_string(),
            principal: row.principal.to_string(),
            scopes: row.scopes.iter().copied().collect(),
            act_as: row.act_as,
            email: row.email.map(|e| e.to_string()),
            name: row.name,
            created_at: time(row.created_at),
            revoked: row.revoked,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    /// Any of `view_members`, `invite`, `manage_invitations`, `manage_members`, `view_history`.
    pub privileges: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSchemaBody {
    /// Highest first.
    pub roles: Vec<RoleView>,
    pub default_role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleSchemaView {
    pub kind: String,
    pub roles: Vec<RoleView>,
    pub default_role: String,
}

impl From<&roster_domain::RoleSchema> for RoleSchemaView {
    fn from(schema: &roster_domain::RoleSchema) -> RoleSchemaView {
        RoleSchemaView {
            kind: schema.kind().to_string(),
            roles: schema
                .roles()
                .iter()
                .map(|r| RoleView {
                    name: r.name.to_string(),
                    privileges: r.privileges.iter().map(|p| p.name().to_string()).collect(),
                })
                .collect(),
            default_role: schema.default_role().to_string(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// `kind/id`, e.g. `space/spc_42`.
    pub resource: String,
    pub owner: String,
    pub parent: Option<String>,
}

/// Owners a resource's view lists; `owner_count` says how many there are in all.
pub const OWNERS_SHOWN_MAX: usize = 100;

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    pub resource: String,
    /// The current holders of the kind's highest role, in principal order (at most 100;
    /// `owner_count` has them all), not whoever registered it.
    pub owners: Vec<String>,
    pub owner_count: u64,
    pub parent: Option<String>,
    pub registered_at: String,
    pub member_count: u64,
}

impl ResourceView {
    pub fn of(record: ResourceRecord, owners: Vec<roster_domain::Principal>) -> ResourceView {
        ResourceView {
            resource: record.resource.to_string(),
            owners: owners.iter().map(ToString::to_string).collect(),
            owner_count: record.owner_count,
            parent: record.parent.map(|p| p.to_string()),
            registered_at: time(record.registered_at),
            member_count: record.member_count,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkBody {
    /// The kind's default role when absent.
    pub role: Option<String>,
    pub expires_at: Option<String>,
    pub max_uses: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeLinkBody {
    pub role: Option<String>,
    /// `null` removes the expiry.
    #[serde(default, deserialize_with = "super::extract::double_option")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// `null` removes the use limit.
    #[serde(default, deserialize_with = "super::extract::double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_uses: Option<Option<u32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub id: u64,
    pub resource: String,
    pub role: String,
    /// The link's current code (base64url, 43 characters); older generations are dead. Only
    /// for its creator and for those who could have created it (`invite` or
    /// `manage_invitations`, ranking at or above its role); absent for anyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    /// `active`, `expired`, `exhausted` or `revoked`.
    #[schema(value_type = String)]
    pub status: LinkStatus,
}

impl LinkView {
    /// The link as `access` may see it: with its code and URL only when the domain's rule
    /// shows them.
    pub fn of(
        link: &LinkRecord,
        engine: &Engine,
        access: &CodeAccess,
        public_url: &str,
    ) -> LinkView {
        let code = access
            .shows(link.created_by.as_ref(), &link.role)
            .then(|| engine.code(link.number, link.generation).encode_base64());
        LinkView {
            id: link.number,
            resource: link.resource.to_string(),
            role: link.role.to_string(),
            url: code.as_deref().map(|code| invite_url(public_url, code)),
            code,
            created_by: link.created_by.as_ref().map(|p| p.to_string()),
            created_at: time(link.created_at),
            expires_at: link.expires_at.map(time),
            max_uses: link.max_uses,
            uses: link.uses,
            status: link.status(engine.now()),
        }
    }
}

pub use crate::invite_url;

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    pub items: Vec<LinkView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitationsBody {
    /// An array of addresses, or one string of comma-separated addresses.
    #[schema(schema_with = emails_schema)]
    pub emails: serde_json::Value,
    pub role: Option<String>,
    pub expires_at: Option<String>,
    pub message: Option<String>,
}

/// The two forms `emails` takes (DESIGN section 5), so a client generated from the
/// document can send either; the handler reads it as a `Value` to parse either itself.
fn emails_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "An array of addresses, or one string of comma-separated addresses.",
            ))
            .build(),
    )
}

/// Where an invitation's mail stands (DESIGN section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// No SMTP server is configured: the host sends its own mail.
    NotConfigured,
    Pending,
    Delivered,
    /// The worker gave up on the invitation's current code.
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: u64,
    pub resource: String,
    pub email: String,
    pub role: String,
    /// `pending`, `accepted`, `declined`, `revoked` or `expired`.
    #[schema(value_type = String)]
    pub status: InvitationStatus,
    pub invited_by: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub accepted_by: Option<String>,
    pub accepted_at: Option<String>,
    pub delivery: DeliveryView,
    /// Only in the responses that create or resend it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl InvitationView {
    /// `attempts_max` is the delivery worker's limit, `None` when no mail is sent.
    pub fn of(
        invitation: &InvitationRecord,
        engine: &Engine,
        attempts_max: Option<u32>,
    ) -> InvitationView {
        let (accepted_by, accepted_at) = match &invitation.closure {
            Some(Closure::Accepted { by, at }) => (Some(by.to_string()), Some(time(*at))),
            _ => (None, None),
        };
        let delivery = &invitation.delivery;
        let delivery_status = if delivery.delivered_generation == Some(invitation.generation) {
            DeliveryStatus::Delivered
        } else if attempts_max.is_none() {
            DeliveryStatus::NotConfigured
        } else if delivery.last_error.is_some()
            && attempts_max.is_some_and(|max| delivery.attempts >= max)
        {
            // The worker has given up on this generation.
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        InvitationView {
            id: invitation.number,
            resource: invitation.resource.to_string(),
            email: invitation.email.to_string(),
            role: invitation.role.to_string(),
            status: invitation.status(engine.now()),
            invited_by: invitation.invited_by.as_ref().map(|p| p.to_string()),
            created_at: time(invitation.created_at),
            expires_at: time(invitation.expires_at),
            accepted_by,
            accepted_at,
            delivery: DeliveryView {
                status: delivery_status,
                attempts: delivery.attempts,
                last_error: delivery.last_error.clone(),
            },
            code: None,
            url: None,
        }
    }

    pub fn with_code(
        mut self,
        invitation: &InvitationRecord,
        engine: &Engine,
        public_url: &str,
    ) -> InvitationView {
        let code = engine
            .code(invitation.number, invitation.generation)
            .encode_base64();
        self.url = Some(invite_url(public_url, &code));
        self.code = Some(code);
        self
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    pub items: Vec<InvitationView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invited {
    pub email: String,
    pub invitation: InvitationView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlreadyInvited {
    pub email: String,
    pub invitation_id: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailErrorView {
    pub email: String,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationsCreated {
    pub invited: Vec<Invited>,
    pub already_members: Vec<String>,
    pub already_invited: Vec<AlreadyInvited>,
    pub email_errors: Vec<EmailErrorView>,
}

/// The addresses a batch did not invite, and why: in a 201's body, and in the problem of a
/// batch that invited nobody.
#[derive(Debug)]
pub struct NotInvited {
    pub already_members: Vec<String>,
    pub already_invited: Vec<AlreadyInvited>,
    pub email_errors: Vec<EmailErrorView>,
}

impl From<&InvitationBatch> for NotInvited {
    fn from(batch: &InvitationBatch) -> NotInvited {
        NotInvited {
            already_members: batch
                .already_members
                .iter()
                .map(ToString::to_string)
                .collect(),
            // The API's shape, not the domain's tuples.
            already_invited: batch
                .already_invited
                .iter()
                .map(|(email, number)| AlreadyInvited {
                    email: email.to_string(),
                    invitation_id: *number,
                })
                .collect(),
            email_errors: batch
                .email_errors
                .iter()
                .map(|e| EmailErrorView {
                    email: e.email.clone(),
                    error: e.error.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The code: base64url (43 characters) or hex (64 characters).
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    pub resource: String,
    pub role: String,
    /// `link` or `email`.
    #[schema(value_type = String)]
    pub kind: CodeKind,
    /// A link's status (`active`, `expired`, `exhausted`, `revoked`) or an invitation's
    /// (`pending`, `accepted`, `declined`, `revoked`, `expired`).
    #[schema(value_type = String)]
    pub status: CodeStatus,
    pub expires_at: Option<String>,
    pub inviter: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedView {
    pub resource: String,
    pub principal: String,
    pub role: String,
    /// False when the principal already held this role or a higher one.
    pub changed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclinedView {
    pub resource: String,
    /// False for a link: declining a link records nothing.
    pub declined: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub principal: String,
    pub role: String,
    pub since: String,
    pub granted_by: Option<String>,
}

impl From<&MemberRecord> for MemberView {
    fn from(member: &MemberRecord) -> MemberView {
        MemberView {
            principal: member.principal.to_string(),
            role: member.role.to_string(),
            since: time(member.since),
            granted_by: member.granted_by.as_ref().map(|p| p.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleBody {
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipView {
    pub resource: String,
    pub role: String,
    pub since: String,
    pub granted_by: Option<String>,
}

impl From<&MembershipRecord> for MembershipView {
    fn from(m: &MembershipRecord) -> MembershipView {
        MembershipView {
            resource: m.resource.to_string(),
            role: m.role.to_string(),
            since: time(m.since),
            granted_by: m.granted_by.as_ref().map(|p| p.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipList {
    pub items: Vec<MembershipView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceList {
    pub items: Vec<ResourceView>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    pub allowed: bool,
    pub role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub position: u64,
    pub occurred_at: String,
    pub actor: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub resource: Option<String>,
    pub summary: String,
}

impl From<&HistoryEntry> for HistoryView {
    fn from(h: &HistoryEntry) -> HistoryView {
        HistoryView {
            position: h.position,
            occurred_at: time(h.occurred_at),
            actor: h.actor.clone(),
            event_type: h.event_type.clone(),
            resource: h.resource.as_ref().map(|r| r.to_string()),
            summary: h.summary.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryList {
    pub items: Vec<HistoryView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// Envelopes as the log stores them (DESIGN section 3), hash chain included.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    pub next: Option<u64>,
}
