//! Email addresses: a pragmatic validator, the normal form used for comparison, and email lists.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest address accepted, in characters (RFC 5321's path limit less the angle brackets).
pub const EMAIL_CHARS_MAX: usize = 254;

/// A validated email address in normal form: trimmed and lowercased.
///
/// Roster compares addresses case-insensitively (DESIGN section 2), and keeping only the normal
/// form means two spellings of one address can never become two invitations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why one address of a list was refused, as reported in `email_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailError {
    /// The item as it was given (trimmed).
    pub email: String,
    /// A short reason for a person to read.
    pub error: String,
}

impl Email {
    /// Validates and normalises one address.
    ///
    /// Deliberately pragmatic rather than RFC 5322: one `@`, a non-empty local part, a domain with
    /// a dot and no empty label, no whitespace or control characters, at most 254 characters.
    /// Whether the mailbox exists is the mail server's business.
    pub fn parse(text: &str) -> Result<Email, EmailError> {
        let trimmed = text.trim();
        let refuse = |why: &str| EmailError {
            email: trimmed.to_owned(),
            error: why.to_owned(),
        };
        if trimmed.is_empty() {
            return Err(refuse("empty address"));
        }
        if trimmed.chars().count() > EMAIL_CHARS_MAX {
            return Err(refuse("longer than 254 characters"));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse("contains whitespace or control characters"));
        }
        if trimmed.chars().any(|c| {
            matches!(
                c,
                ',' | ';' | '<' | '>' | '(' | ')' | '[' | ']' | '\\' | '"'
            )
        }) {
            return Err(refuse("contains a character not allowed in an address"));
        }
        let Some((local, domain)) = trimmed.split_once('@') else {
            return Err(refuse("missing @"));
        };
        if domain.contains('@') {
            return Err(refuse("more than one @"));
        }
        if local.is_empty() {
            return Err(refuse("empty local part"));
        }
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return Err(refuse("the domain needs a dot and no empty label"));
        }
        Ok(Email(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Email::parse(&text).map_err(|e| format!("invalid email {:?}: {}", e.email, e.error))
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
    }
}

/// The `emails` field of a create-invitations request: one comma-separated string (Onehub) or an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmailList {
    /// `"a@x.io, b@y.io"`
    Joined(String),
    /// `["a@x.io", "b@y.io"]`
    Items(Vec<String>),
}

impl EmailList {
    /// The raw items: the array as given, or the string split on commas with empty pieces dropped
    /// (a trailing comma is a common slip, not an address).
    pub fn items(&self) -> Vec<&str> {
        match self {
            EmailList::Joined(text) => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .collect(),
            EmailList::Items(items) => items.iter().map(String::as_str).collect(),
        }
    }

    /// One outcome per distinct item, in the order given: the normal form, or why it was refused.
    /// A second spelling of an address already listed is dropped rather than reported, so that a
    /// request never invites one address twice.
    pub fn parse(&self) -> Vec<Result<Email, EmailError>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut outcomes = Vec::new();
        for item in self.items() {
            match Email::parse(item) {
                Ok(email) => {
                    if seen.insert(email.clone()) {
                        outcomes.push(Ok(email));
                    }
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        outcomes
    }
}

impl From<Vec<&str>> for EmailList {
    fn from(items: Vec<&str>) -> EmailList {
        EmailList::Items(items.into_iter().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_by_trimming_and_lowercasing() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
    }

    #[test]
    fn refuses_what_cannot_be_an_address() {
        let long = format!("{}@x.io", "a".repeat(250));
        for bad in [
            "",
            "  ",
            "ada",
            "@x.io",
            "ada@",
            "ada@localhost",
            "ada@x..io",
            "ada@.x.io",
            "ada@x.io.",
            "a da@x.io",
            "ada@@x.io",
            "a@b@x.io",
            "ada@x.io,bob@y.io",
            "<ada@x.io>",
            &long,
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_list_comes_as_a_string_or_an_array_with_outcomes_per_item() {
        let joined: EmailList = serde_json::from_str(r#""a@x.io, B@x.io ,,bad, A@X.io,""#).unwrap();
        let outcomes = joined.parse();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0].as_ref().unwrap().as_str(), "a@x.io");
        assert_eq!(outcomes[1].as_ref().unwrap().as_str(), "b@x.io");
        assert_eq!(outcomes[2].as_ref().unwrap_err().email, "bad");

        let items: EmailList = serde_json::from_str(r#"["a@x.io", ""]"#).unwrap();
        let outcomes = items.parse();
        assert_eq!(outcomes.len(), 2);
        assert!(
            outcomes[1].is_err(),
            "an empty array item is reported, not dropped"
        );
    }
}
