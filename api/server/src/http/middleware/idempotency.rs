//! `Idempotency-Key` on POST routes: the command id and request fingerprint the engine keeps
//! a first outcome under, handed to the handlers as [`IdempotencyKey`].

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::http::auth;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use roster_engine::Idempotency;

/// The command id a request's `Idempotency-Key` maps to (set by [`idempotency`]).
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<Idempotency>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<IdempotencyKey>()
            .cloned()
            .unwrap_or_default())
    }
}

/// `Idempotency-Key` on POST routes. The command id is a digest of the caller's credentials,
/// the acting principal, the route and the key, so only the same caller repeating itself on
/// the same route shares an outcome. The request's fingerprint is a keyed digest of its body
/// in canonical form (RFC 8785 for JSON, so spacing and member order do not count), kept with
/// the first outcome: the same key with another body is refused, 422
/// `idempotency_key_reused`, instead of running as a new command or answering the first.
/// The key is the server secret's, so the fingerprint of a body with an address in it tells
/// a copy of the log nothing.
pub async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let mut keys = request.headers().get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(next.run(request).await);
    };
    if keys.next().is_some() {
        return Err(ApiError::invalid(
            "the Idempotency-Key header is sent more than once",
        ));
    }
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| ApiError::invalid("Idempotency-Key must be 1 to 255 visible characters"))?
        .to_string();
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.body_bytes_max)
        .await
        .map_err(|_| ApiError::payload_too_large())?;
    let mut digest = Sha256::new();
    for part in [
        parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
        parts
            .headers
            .get(auth::ACTOR_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default(),
        parts.uri.path().as_bytes(),
        key.as_bytes(),
    ] {
        digest.update(Sha256::digest(part));
    }
    let canonical = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) => roster_eventstore::canonical::to_canonical_vec(&value),
        Err(_) => bytes.to_vec(),
    };
    let mut fingerprint = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(
        &state
            .engine
            .secret()
            .derive_key("idempotency-fingerprint", 0),
    )
    .map_err(|e| ApiError::internal(format_args!("the fingerprint key: {e}")))?;
    hmac::Mac::update(&mut fingerprint, &canonical);
    parts.extensions.insert(IdempotencyKey(Some(Idempotency {
        command_id: format!("idem-{}", hex::encode(digest.finalize())),
        fingerprint: Some(hmac::Mac::finalize(fingerprint).into_bytes().into()),
    })));
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
