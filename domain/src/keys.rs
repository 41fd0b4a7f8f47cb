//! API key values the domain sees: scopes, key ids, and SHA-256 digests (never the keys themselves).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::DomainError;

named_enum! {
    /// What an API key may do (DESIGN section 5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Scope {
        Read => "read",
        Write => "write",
        Audit => "audit",
        Admin => "admin",
    }
}

/// An API key's public id, as shown in listings and used to revoke it: 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyId(String);

impl ApiKeyId {
    pub fn parse(text: &str) -> Result<ApiKeyId, DomainError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(ApiKeyId(text.to_owned()))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "API key id {text:?} must be 1 to 64 of [A-Za-z0-9_-]"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ApiKeyId {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ApiKeyId::parse(&text)
    }
}

impl From<ApiKeyId> for String {
    fn from(id: ApiKeyId) -> String {
        id.0
    }
}

/// The SHA-256 digest of an API key, written as lowercase hex; the log keeps only this.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of a raw key, computed where the key is made or presented, never in `decide`.
    pub fn of_key(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_hex(text: &str) -> Result<KeyDigest, DomainError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| DomainError::InvalidRequest("a key digest is 64 hex characters".into()))?;
        Ok(KeyDigest(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({})", self.to_hex())
    }
}

impl TryFrom<String> for KeyDigest {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        KeyDigest::from_hex(&text)
    }
}

impl From<KeyDigest> for String {
    fn from(digest: KeyDigest) -> String {
        digest.to_hex()
    }
}
