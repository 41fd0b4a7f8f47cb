//! Pure read helpers over a resource's state: which link or invitation a code names, and its preview.

use serde::{Deserialize, Serialize};

use crate::state::{InvitationState, InvitationStatus, LinkState, LinkStatus, ResourceState};
use crate::{DomainError, Email, Principal, ResourceId, RoleName, Timestamp, VerifiedCode};

/// What a code's number names on a resource.
#[derive(Debug, Clone, Copy)]
pub enum Resolved<'s> {
    Link(&'s LinkState),
    Invitation(&'s InvitationState),
}

/// The link or invitation a verified code names, by number only: whether its generation is current
/// is for the caller, which answers `invitation_revoked` for an older one.
pub fn resolve_code<'s>(
    state: &'s ResourceState,
    code: &VerifiedCode,
) -> Result<Resolved<'s>, DomainError> {
    if let Some(link) = state.link(code.number()) {
        Ok(Resolved::Link(link))
    } else if let Some(invitation) = state.invitation(code.number()) {
        Ok(Resolved::Invitation(invitation))
    } else {
        Err(DomainError::InvitationNotFound)
    }
}

named_enum! {
    /// Whether a code is for a multi-use link or a single email.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CodeKind {
        Link => "link",
        Email => "email",
    }
}

named_enum! {
    /// The status a preview shows: a link's or an invitation's, seen through the presented code.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum CodeStatus {
        Active => "active",
        Pending => "pending",
        Accepted => "accepted",
        Declined => "declined",
        Revoked => "revoked",
        Expired => "expired",
        Exhausted => "exhausted",
    }
}

impl From<LinkStatus> for CodeStatus {
    fn from(status: LinkStatus) -> CodeStatus {
        match status {
            LinkStatus::Active => CodeStatus::Active,
            LinkStatus::Expired => CodeStatus::Expired,
            LinkStatus::Exhausted => CodeStatus::Exhausted,
            LinkStatus::Revoked => CodeStatus::Revoked,
        }
    }
}

impl From<InvitationStatus> for CodeStatus {
    fn from(status: InvitationStatus) -> CodeStatus {
        match status {
            InvitationStatus::Pending => CodeStatus::Pending,
            InvitationStatus::Accepted => CodeStatus::Accepted,
            InvitationStatus::Declined => CodeStatus::Declined,
            InvitationStatus::Revoked => CodeStatus::Revoked,
            InvitationStatus::Expired => CodeStatus::Expired,
        }
    }
}

/// What `POST /v1/invitations/preview` shows to whoever holds a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub resource: ResourceId,
    pub number: u64,
    pub kind: CodeKind,
    pub role: RoleName,
    pub status: CodeStatus,
    pub expires_at: Option<Timestamp>,
    /// `None` when the admin made it.
    pub inviter: Option<Principal>,
    /// The invited address, for an email invitation: its holder received it there.
    pub email: Option<Email>,
}

/// The preview of a code. A code of an older generation shows as `revoked`, since it can no longer be used.
pub fn preview(
    state: &ResourceState,
    code: &VerifiedCode,
    now: Timestamp,
) -> Result<Preview, DomainError> {
    let resource = state
        .registered()
        .map(|r| r.resource.clone())
        .ok_or(DomainError::InvitationNotFound)?;
    Ok(match resolve_code(state, code)? {
        Resolved::Link(link) => {
            let status = if link.generation != code.generation() && !link.revoked {
                CodeStatus::Revoked
            } else {
                link.status(now).into()
            };
            Preview {
                resource,
                number: link.number,
                kind: CodeKind::Link,
                role: link.role.clone(),
                status,
                expires_at: link.expires_at,
                inviter: link.created_by.clone(),
                email: None,
            }
        }
        Resolved::Invitation(invitation) => {
            let stale = invitation.generation != code.generation() && invitation.closure.is_none();
            let status = if stale {
                CodeStatus::Revoked
            } else {
                invitation.status(now).into()
            };
            Preview {
                resource,
                number: invitation.number,
                kind: CodeKind::Email,
                role: invitation.role.clone(),
                status,
                expires_at: Some(invitation.expires_at),
                inviter: invitation.invited_by.clone(),
                email: Some(invitation.email.clone()),
            }
        }
    })
}

/// Who is looking at a resource's links and invitations, for deciding whether their codes may
/// be shown: the admin acting as nobody (`principal: None`), or a principal with its role on
/// the resource, if it holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeViewer {
    pub principal: Option<crate::Principal>,
    pub role: Option<RoleName>,
    /// False for a caller that may only read (a key without the `write` scope, an audit key):
    /// a code is a credential, and nothing that only reads is handed one.
    pub may_act: bool,
}

impl CodeViewer {
    /// A caller that is shown no code.
    pub fn none() -> CodeViewer {
        CodeViewer {
            principal: None,
            role: None,
            may_act: false,
        }
    }
}

/// Whether a link's or an invitation's code (and the URL that carries it) may be shown to
/// `viewer` (DESIGN section 5): to the admin acting as nobody, to its creator, and to anyone
/// who could have created it themselves: `invite` or `manage_invitations`, ranking at or above
/// its role (rule 1). Anyone else who may list it sees it without its code: a viewer who could
/// copy a creator's code from a list could accept it and be raised to the creator's role.
pub fn may_see_code(
    schema: &crate::RoleSchema,
    viewer: &CodeViewer,
    creator: Option<&crate::Principal>,
    role: &RoleName,
) -> bool {
    if !viewer.may_act {
        return false;
    }
    let Some(principal) = &viewer.principal else {
        return true;
    };
    if creator == Some(principal) {
        return true;
    }
    let Some(own) = &viewer.role else {
        return false;
    };
    let may_invite = schema.allows(own, crate::Privilege::Invite)
        || schema.allows(own, crate::Privilege::ManageInvitations);
    let ranks_at_or_above = match (schema.rank(own), schema.rank(role)) {
        (Some(own_rank), Some(role_rank)) => own_rank <= role_rank,
        _ => false,
    };
    may_invite && ranks_at_or_above
}
