//! Roster's pure membership domain: role schemas, commands, events, decide and evolve, invite codes.
//!
//! Nothing here reads the clock, the disk or the network: time, the actor, the role schema in
//! force and new numbers come in through [`Context`], so a replay decides exactly as the first run.

// First, so that its macro is in scope in the modules below.
#[macro_use]
mod names;
pub mod codes;
mod command;
mod context;
mod decide;
mod email;
mod error;
mod event;
mod ids;
mod keys;
mod query;
mod redecide;
mod schema;
mod state;
#[cfg(feature = "proptest")]
pub mod strategies;
mod text;
mod time;
mod webhooks;

pub use codes::{InviteCode, ParsedCode, ServerSecret, VerifiedCode};
pub use command::{ApiKeyCommand, Command, DeliveryOutcome, ResourceCommand, SchemaCommand};
pub use context::{
    Actor, Context, KnownEmails, Limits, NumberSequence, NumberSource, ADMIN_ACTOR_LABEL,
    LEGACY_ADMIN_ACTOR_LABEL,
};
pub use decide::{
    create_invitations, decide, evolve, fold, Aggregate, InvitationBatch,
    INVITATION_VALIDITY_DEFAULT_MS,
};
pub use email::{Email, EmailError, EmailList, EMAIL_CHARS_MAX};
pub use error::DomainError;
pub use event::{Event, EventDecodeError, Via, EVENT_SCHEMA_VERSION};
pub use ids::{is_valid_number, Kind, Principal, ResourceId, StreamId, NUMBER_LIMIT};
pub use keys::{ApiKeyId, KeyDigest, Scope};
pub use query::{
    may_see_code, preview, resolve_code, CodeKind, CodeStatus, CodeViewer, Preview, Resolved,
};
pub use redecide::{describe, describe_all, redecide, LogCheck, LoggedCommand, Mismatch, Redecide};
pub use schema::{KindUsage, Privilege, RoleDef, RoleName, RoleSchema, ROLES_PER_SCHEMA_MAX};
pub use state::{
    ApiKeyRecord, ApiKeysState, DeliveryState, InvitationClosure, InvitationState,
    InvitationStatus, LinkState, LinkStatus, Membership, RegisteredResource, ResourceState,
    SchemaState,
};
pub use time::{Timestamp, DAY_MS};
pub use webhooks::{
    url_userinfo, Webhook, WebhookCommand, WebhookOutcome, WebhooksState, WEBHOOKS_MAX,
    WEBHOOK_EVENT_TYPES, WEBHOOK_URL_CHARS_MAX,
};
