//! The domain's rule violations, each with the stable machine-readable code of DESIGN section 5.

use crate::decide::InvitationBatch;

/// Why a command was refused.
///
/// The variants are the domain's part of the error codes of DESIGN section 5; a transport maps
/// each to its own form (the server to an HTTP status) and must not invent codes of its own for
/// domain outcomes. The domain knows no transport: no status lives here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The actor is not a member, lacks the privilege, or ranks below the member it acts on.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The resource, member, link, invitation or API key does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A code that does not parse, does not verify, or names no invitation or link.
    #[error("invitation not found")]
    InvitationNotFound,
    /// The command contradicts the current state (e.g. a role schema change that would strand members).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The thing to create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The command would leave the resource without a holder of its highest role (rule 3).
    #[error("the resource would have no {0} left")]
    LastOwner(String),
    /// The invitation or link has expired.
    #[error("the invitation has expired")]
    InvitationExpired,
    /// The invitation or link was revoked, or the code is of an older generation.
    #[error("the invitation was revoked")]
    InvitationRevoked,
    /// The link has reached its use limit.
    #[error("the invite link has reached its use limit")]
    InvitationExhausted,
    /// The email invitation was accepted already.
    #[error("the invitation was used already")]
    InvitationUsed,
    /// The email invitation was declined.
    #[error("the invitation was declined")]
    InvitationDeclined,
    /// The inviter no longer may grant the invited role (rule 4).
    #[error("the inviter no longer may grant this role")]
    InviterLostPrivilege,
    /// The accepting principal's verified email is not the invited one.
    #[error("the invitation is for another email address")]
    InvitationEmailMismatch,
    /// The command is malformed or its values are out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A configured limit would be exceeded.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// No email of a `CreateInvitations` could be invited. The refusal carries the batch's
    /// per-email outcome (members already, invited already, not addresses), so whoever
    /// explains the refusal reads it from here rather than deciding the command again.
    #[error(
        "invalid email: nobody was invited: {} already members, {} already invited, {} invalid",
        .0.already_members.len(),
        .0.already_invited.len(),
        .0.email_errors.len()
    )]
    InvalidEmail(Box<InvitationBatch>),
    /// The actor may not grant this role (rule 1).
    #[error("the role {0} is ranked above the actor's own")]
    RoleNotGrantable(String),
    /// The role is not in the kind's role schema.
    #[error("unknown role: {0}")]
    UnknownRole(String),
    /// A URL the command cannot take (a webhook URL with credentials in it).
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
}

impl DomainError {
    /// No invite link `number` on the resource, or none the actor may know of: one wording,
    /// wherever it is answered, so that the answer tells a stranger nothing.
    pub fn no_such_link(number: u64) -> DomainError {
        DomainError::NotFound(format!("invite link {number}"))
    }

    /// No email invitation `number` on the resource, or none the actor may know of.
    pub fn no_such_invitation(number: u64) -> DomainError {
        DomainError::NotFound(format!("invitation {number}"))
    }
}

/// Writes [`DomainError::code`] and [`DomainError::ALL_CODES`] from one list, so the two cannot
/// drift: `code`'s match is exhaustive, so a new variant does not compile until it is listed
/// here, and being listed puts its code in `ALL_CODES`.
macro_rules! codes {
    ($($variant:ident => $code:literal,)*) => {
        impl DomainError {
            /// The stable machine-readable code of DESIGN section 5.
            pub fn code(&self) -> &'static str {
                match self {
                    $(DomainError::$variant { .. } => $code,)*
                }
            }

            /// Every code the domain can produce, one per variant in declaration order, for
            /// exhaustiveness checks in tests and in the API's documentation.
            pub const ALL_CODES: &'static [&'static str] = &[$($code),*];
        }
    };
}

codes! {
    Forbidden => "forbidden",
    NotFound => "not_found",
    InvitationNotFound => "invitation_not_found",
    Conflict => "conflict",
    AlreadyExists => "already_exists",
    LastOwner => "last_owner",
    InvitationExpired => "invitation_expired",
    InvitationRevoked => "invitation_revoked",
    InvitationExhausted => "invitation_exhausted",
    InvitationUsed => "invitation_used",
    InvitationDeclined => "invitation_declined",
    InviterLostPrivilege => "inviter_lost_privilege",
    InvitationEmailMismatch => "invitation_email_mismatch",
    InvalidRequest => "invalid_request",
    LimitReached => "limit_reached",
    InvalidEmail => "invalid_email",
    RoleNotGrantable => "role_not_grantable",
    UnknownRole => "unknown_role",
    InvalidUrl => "invalid_url",
}

#[cfg(test)]
mod tests {
    use super::DomainError;

    #[test]
    fn each_code_is_listed_once() {
        let mut codes = DomainError::ALL_CODES.to_vec();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), DomainError::ALL_CODES.len());
    }

    #[test]
    fn a_refused_batch_says_what_it_holds_as_before() {
        let batch = crate::InvitationBatch {
            already_members: vec![crate::Email::parse("a@example.com").expect("an address")],
            ..Default::default()
        };
        let error = DomainError::InvalidEmail(Box::new(batch));
        assert_eq!(error.code(), "invalid_email");
        assert_eq!(
            error.to_string(),
            "invalid email: nobody was invited: 1 already members, 0 already invited, 0 invalid"
        );
    }
}
