//! The commands: what an actor asks for, in the imperative, one enum per kind of stream.

use std::collections::BTreeSet;

use crate::{
    ApiKeyId, Email, EmailList, KeyDigest, Kind, Principal, ResourceId, RoleDef, RoleName, Scope,
    StreamId, Timestamp, VerifiedCode,
};

/// Commands on one resource's stream. Each names its resource, so a misrouted command is caught.
///
/// A role of `None` means the kind's default role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceCommand {
    RegisterResource {
        resource: ResourceId,
        owner: Principal,
        parent: Option<ResourceId>,
    },
    /// Adds the principal with the role, or changes its role: `PUT .../members/{principal}`.
    SetMemberRole {
        resource: ResourceId,
        principal: Principal,
        role: RoleName,
    },
    /// Removes a member, or leaves when the principal is the actor itself.
    RemoveMember {
        resource: ResourceId,
        principal: Principal,
    },
    CreateInviteLink {
        resource: ResourceId,
        role: Option<RoleName>,
        expires_at: Option<Timestamp>,
        max_uses: Option<u32>,
    },
    /// A patch: `None` keeps a field; `Some(None)` clears an expiry or a use limit.
    ChangeInviteLink {
        resource: ResourceId,
        link: u64,
        role: Option<RoleName>,
        expires_at: Option<Option<Timestamp>>,
        max_uses: Option<Option<u32>>,
    },
    RotateInviteLink {
        resource: ResourceId,
        link: u64,
    },
    RevokeInviteLink {
        resource: ResourceId,
        link: u64,
    },
    /// One invitation per valid, new email; see [`crate::create_invitations`] for the per-email outcome.
    CreateInvitations {
        resource: ResourceId,
        emails: EmailList,
        role: Option<RoleName>,
        expires_at: Option<Timestamp>,
        message: Option<String>,
    },
    ResendInvitation {
        resource: ResourceId,
        invitation: u64,
    },
    RevokeInvitation {
        resource: ResourceId,
        invitation: u64,
    },
    /// Accepts a link or an email invitation; the caller found the resource from the code's number.
    AcceptInvitation {
        resource: ResourceId,
        code: VerifiedCode,
    },
    DeclineInvitation {
        resource: ResourceId,
        code: VerifiedCode,
    },
    /// Accepts a pending email invitation without its code, for a principal whose verified
    /// email is the invited one: `POST /v1/invitations/{id}/accept`, so a host can offer
    /// "you have 2 invitations" to a signed-in user.
    AcceptInvitationById {
        resource: ResourceId,
        invitation: u64,
    },
    /// The delivery worker's report on one attempt to mail an invitation.
    RecordDelivery {
        resource: ResourceId,
        invitation: u64,
        generation: u32,
        attempt: u32,
        outcome: DeliveryOutcome,
    },
}

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Failed { error: String },
}

impl ResourceCommand {
    pub fn resource(&self) -> &ResourceId {
        match self {
            ResourceCommand::RegisterResource { resource, .. }
            | ResourceCommand::SetMemberRole { resource, .. }
            | ResourceCommand::RemoveMember { resource, .. }
            | ResourceCommand::CreateInviteLink { resource, .. }
            | ResourceCommand::ChangeInviteLink { resource, .. }
            | ResourceCommand::RotateInviteLink { resource, .. }
            | ResourceCommand::RevokeInviteLink { resource, .. }
            | ResourceCommand::CreateInvitations { resource, .. }
            | ResourceCommand::ResendInvitation { resource, .. }
            | ResourceCommand::RevokeInvitation { resource, .. }
            | ResourceCommand::AcceptInvitation { resource, .. }
            | ResourceCommand::DeclineInvitation { resource, .. }
            | ResourceCommand::AcceptInvitationById { resource, .. }
            | ResourceCommand::RecordDelivery { resource, .. } => resource,
        }
    }
}

/// Commands on a kind's role schema stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaCommand {
    DefineRoleSchema {
        kind: Kind,
        roles: Vec<RoleDef>,
        default_role: RoleName,
    },
}

/// Commands on the API keys stream. `decide` never sees a raw key, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyCommand {
    IssueApiKey {
        key_id: ApiKeyId,
        principal: Principal,
        scopes: BTreeSet<Scope>,
        act_as: bool,
        email: Option<Email>,
        name: Option<String>,
        digest: KeyDigest,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
}

/// Any command, for callers that route by stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Resource(ResourceCommand),
    Schema(SchemaCommand),
    ApiKeys(ApiKeyCommand),
    Webhooks(crate::WebhookCommand),
}

impl Command {
    /// The stream the command is decided against and appends to.
    pub fn stream(&self) -> StreamId {
        match self {
            Command::Resource(command) => StreamId::Resource(command.resource().clone()),
            Command::Schema(SchemaCommand::DefineRoleSchema { kind, .. }) => {
                StreamId::RoleSchema(kind.clone())
            }
            Command::ApiKeys(_) => StreamId::ApiKeys,
            Command::Webhooks(_) => StreamId::Webhooks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_names_its_stream() {
        let resource = ResourceId::parse("team/17").unwrap();
        let revoke = Command::Resource(ResourceCommand::RevokeInviteLink {
            resource: resource.clone(),
            link: 3,
        });
        assert_eq!(revoke.stream().to_string(), "resource:team/17");
        let schema = Command::Schema(SchemaCommand::DefineRoleSchema {
            kind: resource.kind().clone(),
            roles: vec![],
            default_role: RoleName::parse("member").unwrap(),
        });
        assert_eq!(schema.stream().to_string(), "role-schema:team");
        let key = Command::ApiKeys(ApiKeyCommand::RevokeApiKey {
            key_id: ApiKeyId::parse("k1").unwrap(),
        });
        assert_eq!(key.stream(), StreamId::ApiKeys);
    }
}
