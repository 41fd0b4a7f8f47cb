//! Email addresses: a pragmatic validator, the normal form every comparison uses (DESIGN
//! section 13), the form as written that mail goes to, and email lists.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest address accepted, in characters (RFC 5321's path limit less the angle brackets).
pub const EMAIL_CHARS_MAX: usize = 254;

/// A validated email address: as it was written, and its normal form, which is what every
/// comparison uses (DESIGN section 13).
///
/// The normal form is the address trimmed, its domain in lowercase IDNA ASCII form, and its
/// local part with the ASCII letters A-Z folded to a-z and every other character kept as
/// written. No Unicode case folding: it would make the Kelvin sign (U+212A) equal to `k`, so a
/// key with a look-alike address could accept kate's invitation, and it rewrites characters such
/// as `İ` that a mail server may treat as part of a mailbox's name. Mail goes to the address as
/// the inviter wrote it.
#[derive(Debug, Clone)]
pub struct Email {
    written: String,
    normal: String,
}

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
    /// a dot and no empty label that is a valid internationalised domain name, no whitespace,
    /// control or format characters, at most 254 characters. Whether the mailbox exists is the
    /// mail server's business.
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
        if trimmed.chars().any(crate::text::is_invisible_or_space) {
            return Err(refuse(
                "contains whitespace, control or invisible format characters",
            ));
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
        let ascii_domain = idna::domain_to_ascii(domain)
            .ok()
            .filter(|d| d.contains('.') && !d.split('.').any(str::is_empty))
            .ok_or_else(|| refuse("the domain is not a valid domain name"))?;
        let normal = format!("{}@{ascii_domain}", local.to_ascii_lowercase());
        if normal.len() > EMAIL_CHARS_MAX {
            return Err(refuse("longer than 254 characters in its ASCII form"));
        }
        Ok(Email {
            written: trimmed.to_owned(),
            normal,
        })
    }

    /// An address read back from the log, a snapshot or a read model: it was checked when it
    /// was written (by the rules of then), so it is only normalised again, never refused, and
    /// an old log still reads.
    fn from_stored(text: String) -> Email {
        let normal = match text.rsplit_once('@') {
            Some((local, domain)) => {
                let domain =
                    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase());
                format!("{}@{domain}", local.to_ascii_lowercase())
            }
            None => text.to_ascii_lowercase(),
        };
        Email {
            written: text,
            normal,
        }
    }

    /// The normal form: what comparisons, lookups and indexes use.
    pub fn normal(&self) -> &str {
        &self.normal
    }

    /// The address as it was written (trimmed): what mail is sent to and views show.
    pub fn written(&self) -> &str {
        &self.written
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Email) -> bool {
        self.normal == other.normal
    }
}

impl Eq for Email {}

impl PartialOrd for Email {
    fn partial_cmp(&self, other: &Email) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Email {
    fn cmp(&self, other: &Email) -> std::cmp::Ordering {
        self.normal.cmp(&other.normal)
    }
}

impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normal.hash(state);
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Email, D::Error> {
        String::deserialize(deserializer).map(Email::from_stored)
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
    fn normalises_by_trimming_and_folding_ascii_only() {
        let ada = Email::parse("  Ada@Example.ORG ").unwrap();
        assert_eq!(ada.normal(), "ada@example.org");
        assert_eq!(ada.written(), "Ada@Example.ORG");
        assert_eq!(ada.to_string(), "Ada@Example.ORG");
        assert_eq!(ada, Email::parse("ada@example.org").unwrap());
    }

    #[test]
    fn look_alikes_stay_apart_and_are_written_as_given() {
        let kate = Email::parse("kate@example.com").unwrap();
        let kelvin = Email::parse("\u{212A}ate@example.com").unwrap();
        assert_ne!(kelvin, kate, "the Kelvin sign is not a k");
        assert_eq!(kelvin.normal(), "\u{212A}ate@example.com");
        let dotted = Email::parse("İnci@example.com").unwrap();
        assert_eq!(dotted.written(), "İnci@example.com");
        assert_eq!(dotted.normal(), "İnci@example.com");
        assert_ne!(dotted, Email::parse("i\u{307}nci@example.com").unwrap());
        assert_ne!(
            Email::parse("STRASSE@example.com").unwrap(),
            Email::parse("straße@example.com").unwrap()
        );
    }

    #[test]
    fn the_domain_is_compared_in_its_ascii_form() {
        let unicode = Email::parse("anna@Bücher.Example").unwrap();
        assert_eq!(unicode.normal(), "anna@xn--bcher-kva.example");
        assert_eq!(unicode, Email::parse("anna@xn--bcher-kva.example").unwrap());
        assert_eq!(unicode.written(), "anna@Bücher.Example");
    }

    #[test]
    fn a_stored_address_reads_back_with_the_same_normal_form() {
        for text in [
            "Ada@Example.ORG",
            "\u{212A}ate@example.com",
            "anna@Bücher.Example",
        ] {
            let parsed = Email::parse(text).unwrap();
            let json = serde_json::to_string(&parsed).unwrap();
            let read: Email = serde_json::from_str(&json).unwrap();
            assert_eq!(read.normal(), parsed.normal());
            assert_eq!(read.written(), parsed.written());
        }
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
            "ada\u{200B}@x.io",
            "ada@x\u{202E}.io",
            "\u{FEFF}ada@x.io",
            "ada\u{00AD}@x.io",
            "ada@xn--.io",
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
        assert_eq!(outcomes[0].as_ref().unwrap().normal(), "a@x.io");
        assert_eq!(outcomes[1].as_ref().unwrap().normal(), "b@x.io");
        assert_eq!(outcomes[1].as_ref().unwrap().written(), "B@x.io");
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
