//! Who is calling: the admin token or an API key (Bearer, or HTTP Basic with the key as the
//! password), with its scopes, and the principal it acts as (`X-Roster-Actor`,
//! `X-Roster-Actor-Email`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use roster_domain::{Actor, Email, KeyDigest, Principal, Scope};
use roster_projections::ApiKeyRow;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult};
use super::state::AppState;

pub const ACTOR_HEADER: &str = "x-roster-actor";
pub const ACTOR_EMAIL_HEADER: &str = "x-roster-actor-email";

/// What the caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    Admin,
    Key(ApiKeyRow),
}

/// An authenticated caller and the actor its requests act as.
#[derive(Debug, Clone)]
pub struct Caller {
    pub credential: Credential,
    pub actor: Actor,
}

impl Caller {
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Admin => true,
            Credential::Key(key) => {
                key.scopes.contains(&scope) || key.scopes.contains(&Scope::Admin)
            }
        }
    }

    /// 403 unless the caller holds the scope.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this key lacks the `{}` scope",
                scope.name()
            )))
        }
    }

    /// Whether the caller reads as an auditor: a key with the `audit` scope. The admin token
    /// acting for a principal reads as that principal (the admin acting as nobody reads
    /// everything anyway).
    pub fn audits(&self) -> bool {
        matches!(self.credential, Credential::Key(_)) && self.has_scope(Scope::Audit)
    }

    /// Whether the caller may name any principal: the admin and service keys, not user keys.
    pub fn may_name_anyone(&self) -> bool {
        match &self.credential {
            Credential::Admin => true,
            Credential::Key(key) => key.act_as,
        }
    }

    /// A user key (not `act_as`) speaks only for its own principal; the admin and service
    /// keys may name anyone.
    pub fn may_speak_for(&self, principal: &Principal) -> ApiResult<()> {
        match &self.credential {
            Credential::Key(key) if !key.act_as && &key.principal != principal => Err(
                ApiError::forbidden("a user key acts only for its own principal"),
            ),
            _ => Ok(()),
        }
    }

    /// Whether the caller may read `principal`'s memberships and history: anyone who may speak
    /// for it with `read`, and any key with `audit`, which reads everyone's.
    pub fn may_read_principal(&self, principal: &Principal) -> ApiResult<()> {
        if self.audits() {
            return Ok(());
        }
        self.require(Scope::Read)?;
        self.may_speak_for(principal)
    }

    /// The same for an email: a user key may look only at its own.
    pub fn may_read_email(&self, email: &Email) -> ApiResult<()> {
        match &self.credential {
            Credential::Key(key) if !key.act_as && key.email.as_ref() != Some(email) => Err(
                ApiError::forbidden("a user key reads only its own email's invitations"),
            ),
            _ => Ok(()),
        }
    }

    /// The acting principal, for routes that need one.
    pub fn principal(&self) -> Option<&Principal> {
        self.actor.principal()
    }
}

/// The presented token: `Authorization: Bearer <token>`, or HTTP Basic whose password is it.
fn token(headers: &HeaderMap) -> ApiResult<String> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| ApiError::unauthenticated("send a key: `Authorization: Bearer <key>`"))?;
    if values.next().is_some() {
        // Which credential a request carries must never be a guess (the first one, say).
        return Err(ApiError::invalid(
            "the Authorization header is sent more than once",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not text"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                ApiError::unauthenticated("the Basic credentials are not base64 of `user:key`")
            })?;
        let (_, password) = decoded.split_once(':').unwrap_or(("", decoded.as_str()));
        return Ok(password.to_string());
    }
    Err(ApiError::unauthenticated(
        "use `Authorization: Bearer <key>` or Basic with the key as the password",
    ))
}

/// The one value of a header that names someone (`X-Roster-Actor`, `X-Roster-Actor-Email`),
/// percent-decoded as UTF-8, so a principal or an address outside ASCII can be sent by any
/// client (a browser's `fetch` refuses header values beyond Latin-1): `%C3%A9mile` is
/// `émile`; a `%` of the name itself that would read as `%XX` is written `%25`. Raw UTF-8
/// bytes are read too.
/// Sent twice, it is refused: which of two actors a request acts for must never be a guess.
fn named_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid(format!(
            "the {name} header is sent more than once"
        )));
    }
    let raw = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::invalid(format!("the {name} header is not UTF-8")))?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|text| Some(text.into_owned()))
        .map_err(|_| ApiError::invalid(format!("the {name} header is not percent-encoded UTF-8")))
}

/// Resolves the caller; `pub` for the seed products' routes, whose auth errors differ.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let token = token(headers)?;
    let named = named_header(headers, ACTOR_HEADER)?
        .map(|text| {
            Principal::parse(&text).map_err(|e| ApiError::invalid(format!("{ACTOR_HEADER}: {e}")))
        })
        .transpose()?;
    let named_email = named_header(headers, ACTOR_EMAIL_HEADER)?
        .map(|text| {
            Email::parse(&text)
                .map_err(|e| ApiError::invalid(format!("{ACTOR_EMAIL_HEADER}: {}", e.error)))
        })
        .transpose()?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(presented.ct_eq(&state.admin_digest)) {
        let actor = match named {
            Some(principal) => Actor::Principal {
                principal,
                email: named_email,
            },
            None => Actor::Admin,
        };
        return Ok(Caller {
            credential: Credential::Admin,
            actor,
        });
    }
    let key = state
        .engine
        .api_key_by_digest(&KeyDigest::of_key(&token))?
        .ok_or_else(|| ApiError::unauthenticated("this key is unknown or revoked"))?;
    let actor = match (key.act_as, named) {
        (true, Some(principal)) => Actor::Principal {
            principal,
            email: named_email,
        },
        (false, Some(principal)) if principal != key.principal => {
            return Err(ApiError::forbidden(format!(
                "a user key cannot act as another principal ({ACTOR_HEADER})"
            )));
        }
        _ => Actor::Principal {
            principal: key.principal.clone(),
            email: key.email.clone(),
        },
    };
    Ok(Caller {
        credential: Credential::Key(key),
        actor,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers)
    }
}
