//! Every error the HTTP API answers, as `application/problem+json` (RFC 9457) with a stable
//! `code`. A 5xx says only that something went wrong; its cause goes to the log, once.
//!
//! The codes are [`ApiCode`]s, each with its HTTP status (DESIGN section 5); the domain's
//! refusals map onto them here, since the domain knows no HTTP. [`Problem`] is the one body
//! every problem is written as, and what the OpenAPI document describes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use roster_domain::{DomainError, InvitationBatch};
use serde::Serialize;

use super::views::{AlreadyInvited, EmailErrorView, NotInvited};
use roster_engine::EngineError;

/// Writes [`ApiCode`] with its string and status and `ApiCode::ALL` from one list, so that a
/// code cannot be spelt one way in the body and listed another.
macro_rules! api_codes {
    ($($(#[$meta:meta])* $variant:ident => ($text:literal, $status:ident),)*) => {
        /// A stable, machine-readable error code of the API, with the HTTP status it answers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ApiCode {
            $($(#[$meta])* $variant,)*
        }

        impl ApiCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ApiCode] = &[$(ApiCode::$variant),*];

            /// The code as the body's `code` and the end of its `type` URI.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ApiCode::$variant => $text,)*
                }
            }

            /// The status DESIGN section 5 pairs with the code.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ApiCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

api_codes! {
    Unauthenticated => ("unauthenticated", UNAUTHORIZED),
    Forbidden => ("forbidden", FORBIDDEN),
    InvitationEmailMismatch => ("invitation_email_mismatch", FORBIDDEN),
    RoleNotGrantable => ("role_not_grantable", FORBIDDEN),
    NotFound => ("not_found", NOT_FOUND),
    /// An unknown, malformed or forged code: one code for all, so a guesser learns nothing.
    InvitationNotFound => ("invitation_not_found", NOT_FOUND),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED),
    Conflict => ("conflict", CONFLICT),
    AlreadyExists => ("already_exists", CONFLICT),
    LastOwner => ("last_owner", CONFLICT),
    InvitationExpired => ("invitation_expired", GONE),
    InvitationRevoked => ("invitation_revoked", GONE),
    InvitationExhausted => ("invitation_exhausted", GONE),
    InvitationUsed => ("invitation_used", GONE),
    InvitationDeclined => ("invitation_declined", GONE),
    InviterLostPrivilege => ("inviter_lost_privilege", GONE),
    InvalidRequest => ("invalid_request", BAD_REQUEST),
    UnknownRole => ("unknown_role", BAD_REQUEST),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
    LimitReached => ("limit_reached", UNPROCESSABLE_ENTITY),
    InvalidEmail => ("invalid_email", UNPROCESSABLE_ENTITY),
    InvalidUrl => ("invalid_url", UNPROCESSABLE_ENTITY),
    IdempotencyKeyReused => ("idempotency_key_reused", UNPROCESSABLE_ENTITY),
    /// Too many failed code checks; `Retry-After` says when to try again.
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS),
    Internal => ("internal", INTERNAL_SERVER_ERROR),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE),
    /// The request took longer than the server allows.
    Timeout => ("timeout", SERVICE_UNAVAILABLE),
}

impl From<&DomainError> for ApiCode {
    /// Exhaustive, so a new refusal of the domain does not compile until it has its code here.
    fn from(error: &DomainError) -> ApiCode {
        match error {
            DomainError::Forbidden(_) => ApiCode::Forbidden,
            DomainError::NotFound(_) => ApiCode::NotFound,
            DomainError::InvitationNotFound => ApiCode::InvitationNotFound,
            DomainError::Conflict(_) => ApiCode::Conflict,
            DomainError::AlreadyExists(_) => ApiCode::AlreadyExists,
            DomainError::LastOwner(_) => ApiCode::LastOwner,
            DomainError::InvitationExpired => ApiCode::InvitationExpired,
            DomainError::InvitationRevoked => ApiCode::InvitationRevoked,
            DomainError::InvitationExhausted => ApiCode::InvitationExhausted,
            DomainError::InvitationUsed => ApiCode::InvitationUsed,
            DomainError::InvitationDeclined => ApiCode::InvitationDeclined,
            DomainError::InviterLostPrivilege => ApiCode::InviterLostPrivilege,
            DomainError::InvitationEmailMismatch => ApiCode::InvitationEmailMismatch,
            DomainError::InvalidRequest(_) => ApiCode::InvalidRequest,
            DomainError::LimitReached(_) => ApiCode::LimitReached,
            DomainError::InvalidEmail(_) => ApiCode::InvalidEmail,
            DomainError::RoleNotGrantable(_) => ApiCode::RoleNotGrantable,
            DomainError::UnknownRole(_) => ApiCode::UnknownRole,
            DomainError::InvalidUrl(_) => ApiCode::InvalidUrl,
        }
    }
}

/// The body of every error response of the native API.
///
/// The members are declared in the order the body had when it was written as a JSON map
/// (alphabetical), so its bytes are as they were.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Only for `invalid_email` from creating invitations: the invitations pending already
    /// for some of the addresses, as in a 201's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_invited: Option<Vec<AlreadyInvited>>,
    /// Only for `invalid_email` from creating invitations: the addresses whose known principal
    /// is a member already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_members: Option<Vec<String>>,
    /// The stable, machine-readable error code.
    pub code: String,
    pub detail: String,
    /// Only for `invalid_email` from creating invitations: the addresses that are not ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_errors: Option<Vec<EmailErrorView>>,
    pub status: u16,
    pub title: String,
    /// A URI naming the kind of problem: `https://roster.dev/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ApiCode,
    /// The code's own status, except where a seed product's shape answers another.
    pub status: StatusCode,
    pub detail: String,
    /// For an `invalid_email` refusal of creating invitations: the batch's per-email outcome,
    /// as the domain decided it, for the body to say why each address was not invited.
    pub refused_batch: Option<Box<InvitationBatch>>,
    /// Seconds to wait, for a 429.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ApiCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            detail: detail.into(),
            refused_batch: None,
            retry_after_s: None,
        }
    }

    /// The same error answered with another status: for a seed product whose document
    /// answers this case so (Teable's 400 for addresses that are all members already).
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(ApiCode::InvalidRequest, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(ApiCode::Unauthenticated, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(ApiCode::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(ApiCode::NotFound, detail)
    }

    /// A body past `body_bytes_max`, wherever it is read (the JSON extractor, the seed routes'
    /// raw bodies, the idempotency fingerprint): one answer for all.
    pub fn payload_too_large() -> ApiError {
        ApiError::new(
            ApiCode::PayloadTooLarge,
            "the body is larger than the server accepts",
        )
    }

    /// A 500: the body says only that something went wrong; `cause` goes to the log, here, once.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "answered 500");
        ApiError::new(ApiCode::Internal, "something went wrong on our side")
    }

    /// 503: the server (or this node) cannot answer now; `Retry-After: 1`.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(ApiCode::Unavailable, detail)
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        let code = ApiCode::from(&error);
        let detail = match &error {
            // The same words for every code that opens nothing, so an error tells a guesser
            // nothing about which invitations exist.
            DomainError::InvitationNotFound => "no invitation or link has this code".to_string(),
            other => other.to_string(),
        };
        let mut api_error = ApiError::new(code, detail);
        if let DomainError::InvalidEmail(batch) = error {
            api_error.refused_batch = Some(batch);
        }
        api_error
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Domain(domain) => domain.into(),
            EngineError::Unavailable(reason) => {
                tracing::warn!(%reason, "engine unavailable");
                ApiError::unavailable("the server cannot take commands right now; retry later")
            }
            EngineError::Store(error) => {
                tracing::error!(%error, "the event store failed");
                ApiError::unavailable("the event store failed; retry later")
            }
            EngineError::IdempotencyKeyReused => ApiError::new(
                ApiCode::IdempotencyKeyReused,
                "this Idempotency-Key was first used with another body; use a new key for a new request",
            ),
            EngineError::Projection(error) => {
                ApiError::internal(format_args!("a read model failed: {error}"))
            }
            // Only workers make fenced commands; no request reaches this.
            EngineError::LeaseLost(lease) => {
                ApiError::unavailable(format!("the lease {lease} was taken over"))
            }
        }
    }
}

impl From<roster_projections::ProjectionError> for ApiError {
    fn from(error: roster_projections::ProjectionError) -> ApiError {
        EngineError::Projection(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let not_invited = self.refused_batch.as_deref().map(NotInvited::from);
        let (already_invited, already_members, email_errors) = match not_invited {
            Some(n) => (
                Some(n.already_invited),
                Some(n.already_members),
                Some(n.email_errors),
            ),
            None => (None, None, None),
        };
        let body = Problem {
            already_invited,
            already_members,
            code: self.code.as_str().to_string(),
            detail: self.detail.clone(),
            email_errors,
            status: self.status.as_u16(),
            title: self.title().to_string(),
            kind: format!("https://roster.dev/problems/{}", self.code.as_str()),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One refusal of each kind the domain has; `ApiCode::from` is exhaustive, so a new kind
    /// fails to compile there, and this list then fails the coverage check below.
    fn every_refusal() -> Vec<DomainError> {
        let text = || "x".to_string();
        vec![
            DomainError::Forbidden(text()),
            DomainError::NotFound(text()),
            DomainError::InvitationNotFound,
            DomainError::Conflict(text()),
            DomainError::AlreadyExists(text()),
            DomainError::LastOwner(text()),
            DomainError::InvitationExpired,
            DomainError::InvitationRevoked,
            DomainError::InvitationExhausted,
            DomainError::InvitationUsed,
            DomainError::InvitationDeclined,
            DomainError::InviterLostPrivilege,
            DomainError::InvitationEmailMismatch,
            DomainError::InvalidRequest(text()),
            DomainError::LimitReached(text()),
            DomainError::InvalidEmail(Box::default()),
            DomainError::RoleNotGrantable(text()),
            DomainError::UnknownRole(text()),
            DomainError::InvalidUrl(text()),
        ]
    }

    #[test]
    fn every_domain_code_is_answered_with_its_own_spelling() {
        let refusals = every_refusal();
        for refusal in &refusals {
            assert_eq!(
                ApiCode::from(refusal).as_str(),
                refusal.code(),
                "{refusal:?}"
            );
        }
        let covered: BTreeSet<&str> = refusals.iter().map(DomainError::code).collect();
        let all: BTreeSet<&str> = DomainError::ALL_CODES.iter().copied().collect();
        assert_eq!(
            covered, all,
            "every_refusal lists one refusal per domain code"
        );
    }

    #[test]
    fn codes_are_distinct_and_statuses_are_errors() {
        let names: BTreeSet<&str> = ApiCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ApiCode::ALL.len());
        for code in ApiCode::ALL {
            let status = code.status();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_batch_is_in_the_problem_and_other_problems_have_no_extension() {
        let email = roster_domain::Email::parse("m@example.com").expect("an address");
        let batch = InvitationBatch {
            already_members: vec![email],
            ..Default::default()
        };
        let response = ApiError::from(DomainError::InvalidEmail(Box::new(batch))).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        assert_eq!(
            std::str::from_utf8(&bytes).expect("text"),
            r#"{"already_invited":[],"already_members":["m@example.com"],"code":"invalid_email","detail":"invalid email: nobody was invited: 1 already members, 0 already invited, 0 invalid","email_errors":[],"status":422,"title":"Unprocessable Entity","type":"https://roster.dev/problems/invalid_email"}"#
        );
        let plain = ApiError::not_found("nothing here").into_response();
        let bytes = axum::body::to_bytes(plain.into_body(), usize::MAX)
            .await
            .expect("a body");
        assert_eq!(
            std::str::from_utf8(&bytes).expect("text"),
            r#"{"code":"not_found","detail":"nothing here","status":404,"title":"Not Found","type":"https://roster.dev/problems/not_found"}"#
        );
    }
}
