//! The domain's rule violations, each with the stable machine-readable code and HTTP status of DESIGN section 5.

/// Why a command was refused.
///
/// The variants are the domain's part of the error codes of DESIGN section 5; the transport
/// layer maps them with [`DomainError::code`] and [`DomainError::status`] and must not
/// invent codes of its own for domain outcomes.
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
    /// No email of the request could be invited (see the per-email outcome for why).
    #[error("invalid email: {0}")]
    InvalidEmail(String),
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
    /// The stable machine-readable code of DESIGN section 5.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Forbidden(_) => "forbidden",
            DomainError::NotFound(_) => "not_found",
            DomainError::InvitationNotFound => "invitation_not_found",
            DomainError::Conflict(_) => "conflict",
            DomainError::AlreadyExists(_) => "already_exists",
            DomainError::LastOwner(_) => "last_owner",
            DomainError::InvitationExpired => "invitation_expired",
            DomainError::InvitationRevoked => "invitation_revoked",
            DomainError::InvitationExhausted => "invitation_exhausted",
            DomainError::InvitationUsed => "invitation_used",
            DomainError::InvitationDeclined => "invitation_declined",
            DomainError::InviterLostPrivilege => "inviter_lost_privilege",
            DomainError::InvitationEmailMismatch => "invitation_email_mismatch",
            DomainError::InvalidRequest(_) => "invalid_request",
            DomainError::LimitReached(_) => "limit_reached",
            DomainError::InvalidEmail(_) => "invalid_email",
            DomainError::RoleNotGrantable(_) => "role_not_grantable",
            DomainError::UnknownRole(_) => "unknown_role",
            DomainError::InvalidUrl(_) => "invalid_url",
        }
    }

    /// The HTTP status DESIGN section 5 pairs with the code.
    pub fn status(&self) -> u16 {
        match self {
            DomainError::Forbidden(_)
            | DomainError::InvitationEmailMismatch
            | DomainError::RoleNotGrantable(_) => 403,
            DomainError::NotFound(_) | DomainError::InvitationNotFound => 404,
            DomainError::Conflict(_)
            | DomainError::AlreadyExists(_)
            | DomainError::LastOwner(_) => 409,
            DomainError::InvitationExpired
            | DomainError::InvitationRevoked
            | DomainError::InvitationExhausted
            | DomainError::InvitationUsed
            | DomainError::InvitationDeclined
            | DomainError::InviterLostPrivilege => 410,
            DomainError::InvalidRequest(_) | DomainError::UnknownRole(_) => 400,
            DomainError::LimitReached(_)
            | DomainError::InvalidEmail(_)
            | DomainError::InvalidUrl(_) => 422,
        }
    }

    /// Every code the domain can produce, for exhaustiveness checks in tests and in the API's documentation.
    pub const ALL_CODES: [&'static str; 19] = [
        "forbidden",
        "not_found",
        "invitation_not_found",
        "conflict",
        "already_exists",
        "last_owner",
        "invitation_expired",
        "invitation_revoked",
        "invitation_exhausted",
        "invitation_used",
        "invitation_declined",
        "inviter_lost_privilege",
        "invitation_email_mismatch",
        "invalid_request",
        "limit_reached",
        "invalid_email",
        "role_not_grantable",
        "unknown_role",
        "invalid_url",
    ];
}
