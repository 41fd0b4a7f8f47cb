//! Names of things: resource kinds, resources (`kind/id`), principals, and the streams events live in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A resource kind: `[a-z][a-z0-9_-]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kind(String);

impl Kind {
    /// Checks the kind grammar of DESIGN section 2.
    pub fn parse(text: &str) -> Result<Kind, DomainError> {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if first_ok && rest_ok && text.len() <= 32 {
            Ok(Kind(text.to_owned()))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "resource kind {text:?} must match [a-z][a-z0-9_-]{{0,31}}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Kind {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Kind::parse(&text)
    }
}

impl From<Kind> for String {
    fn from(kind: Kind) -> String {
        kind.0
    }
}

/// A resource, written `kind/id`: `space/spc_42`, `team/17`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId {
    kind: Kind,
    id: String,
}

impl ResourceId {
    /// Builds a resource name from its parts, checking the id grammar `[A-Za-z0-9._~-]{1,128}`.
    pub fn new(kind: Kind, id: &str) -> Result<ResourceId, DomainError> {
        let id_ok = (1..=128).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
        if id_ok {
            Ok(ResourceId {
                kind,
                id: id.to_owned(),
            })
        } else {
            Err(DomainError::InvalidRequest(format!(
                "resource id {id:?} must match [A-Za-z0-9._~-]{{1,128}}"
            )))
        }
    }

    /// Parses `kind/id`.
    pub fn parse(text: &str) -> Result<ResourceId, DomainError> {
        let (kind, id) = text.split_once('/').ok_or_else(|| {
            DomainError::InvalidRequest(format!("resource {text:?} must be written kind/id"))
        })?;
        ResourceId::new(Kind::parse(kind)?, id)
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stream holding this resource's events.
    pub fn stream(&self) -> StreamId {
        StreamId::Resource(self.clone())
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

impl TryFrom<String> for ResourceId {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ResourceId::parse(&text)
    }
}

impl From<ResourceId> for String {
    fn from(resource: ResourceId) -> String {
        resource.to_string()
    }
}

/// An opaque user id of the host application: 1 to 128 printable characters, no `/`, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    /// Checks a principal given in a request: 1 to 128 characters, none of them `/`,
    /// whitespace, a control or a format character (U+200B, U+202E and the rest of Unicode's
    /// category Cf, which would make it print as another name).
    pub fn parse(text: &str) -> Result<Principal, DomainError> {
        let count = text.chars().count();
        let chars_ok = text
            .chars()
            .all(|c| !crate::text::is_invisible_or_space(c) && c != '/');
        if (1..=128).contains(&count) && chars_ok {
            Ok(Principal(text.to_owned()))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "principal {text:?} must be 1 to 128 visible characters without '/', whitespace \
                 or format characters"
            )))
        }
    }

    /// A principal read back from the log, a snapshot or a read model: checked by the rules it
    /// was written under (before 2026-12-07 format characters were let in), so an old log
    /// still reads. Nothing new gets past `parse`.
    fn from_stored(text: String) -> Result<Principal, DomainError> {
        let count = text.chars().count();
        let chars_ok = text
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/');
        if (1..=128).contains(&count) && chars_ok {
            Ok(Principal(text))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "stored principal {text:?} is not a principal"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Principal {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Principal::from_stored(text)
    }
}

impl From<Principal> for String {
    fn from(principal: Principal) -> String {
        principal.0
    }
}

/// Numbers of links and invitations stay below 2^53 so that JSON clients read them exactly.
pub const NUMBER_LIMIT: u64 = 1 << 53;

/// Whether `number` may name a link or an invitation.
pub fn is_valid_number(number: u64) -> bool {
    (1..NUMBER_LIMIT).contains(&number)
}

/// The stream an event belongs to: one per resource, one per kind's role schema, one for API keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamId {
    /// `resource:{kind}/{id}`
    Resource(ResourceId),
    /// `role-schema:{kind}`
    RoleSchema(Kind),
    /// `api-keys`
    ApiKeys,
    /// `webhooks`
    Webhooks,
}

impl StreamId {
    /// Parses a stream name as written in an envelope.
    pub fn parse(text: &str) -> Result<StreamId, DomainError> {
        if text == "api-keys" {
            Ok(StreamId::ApiKeys)
        } else if text == "webhooks" {
            Ok(StreamId::Webhooks)
        } else if let Some(resource) = text.strip_prefix("resource:") {
            Ok(StreamId::Resource(ResourceId::parse(resource)?))
        } else if let Some(kind) = text.strip_prefix("role-schema:") {
            Ok(StreamId::RoleSchema(Kind::parse(kind)?))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "unknown stream {text:?}"
            )))
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Resource(resource) => write!(f, "resource:{resource}"),
            StreamId::RoleSchema(kind) => write!(f, "role-schema:{kind}"),
            StreamId::ApiKeys => f.write_str("api-keys"),
            StreamId::Webhooks => f.write_str("webhooks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_follow_the_grammar() {
        let r = ResourceId::parse("space/spc_42").unwrap();
        assert_eq!((r.kind().as_str(), r.id()), ("space", "spc_42"));
        assert_eq!(r.to_string(), "space/spc_42");
        for bad in [
            "",
            "space",
            "/x",
            "Space/x",
            "1space/x",
            "space/",
            "space/a/b",
            "space/a b",
            "abcdefghijklmnopqrstuvwxyzabcdefg/x",
        ] {
            assert!(ResourceId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(ResourceId::parse(&format!("team/{}", "a".repeat(128))).is_ok());
        assert!(ResourceId::parse(&format!("team/{}", "a".repeat(129))).is_err());
    }

    #[test]
    fn principals_are_printable_without_slash_or_space() {
        assert!(Principal::parse("usr_1@x").is_ok());
        assert!(Principal::parse(&"é".repeat(128)).is_ok());
        for bad in [
            "",
            "a b",
            "a/b",
            "a\tb",
            "a\u{7}",
            &"x".repeat(129),
            "ali\u{200B}ce",
            "\u{202E}ecila",
            "\u{FEFF}alice",
            "alice\u{2060}",
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn stream_names_round_trip() {
        for name in ["api-keys", "resource:team/17", "role-schema:folder"] {
            assert_eq!(StreamId::parse(name).unwrap().to_string(), name);
        }
        assert!(StreamId::parse("resources:team/17").is_err());
    }
}
