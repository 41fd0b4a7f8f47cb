//! How rows are stored: the busiest rows (history entries, members, memberships) in a compact
//! binary form, the others as JSON. A rebuild writes about 250,000 of the busy rows; as JSON
//! they took most of the write time (an RFC 3339 time formatted per row, field names, escapes)
//! and twice the bytes, and every byte is copied into a page and into sled's log.
//!
//! The binary form: integers as LEB128 varints, times as their unix milliseconds (zigzag
//! varint), strings as a varint length and UTF-8 bytes, an option as a byte 0 or 1 before its
//! value. Fields are read back in the order they are written, and a row must end where its
//! last field does. A change of any row's form changes its model's version, so rows of an
//! older form are never read: the model is rebuilt from the log on open.

use roster_domain::{Principal, ResourceId, RoleName, Timestamp, Via};

use crate::records::{HistoryEntry, MemberRecord, MembershipRecord};
use crate::ProjectionError;

/// A row type as its model stores it.
pub(crate) trait Record: Send + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError>
    where
        Self: Sized;
}

/// Rows stored as JSON: read and written rarely (a link's row changes once per use, but a
/// catch-up keeps it typed in memory and writes it once per chunk), so their form stays
/// readable and was left as it was.
macro_rules! json_records {
    ($($record:ty),* $(,)?) => {
        $(
            impl Record for $record {
                fn encode(&self, out: &mut Vec<u8>) {
                    // Plain structs of strings and numbers: serialising them cannot fail.
                    let _ = serde_json::to_writer(out, self);
                }

                fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError> {
                    serde_json::from_slice(bytes).map_err(|e| corrupt(key, &e.to_string()))
                }
            }
        )*
    };
}

json_records!(
    i64,
    u64,
    crate::records::ResourceRecord,
    crate::records::InviteRecord,
    crate::records::ApiKeyRow,
    crate::records::WebhookRow,
    crate::records::WebhookDeliveryRow,
);

fn corrupt(key: &[u8], reason: &str) -> ProjectionError {
    ProjectionError::Corrupt(format!("row {}: {reason}", String::from_utf8_lossy(key)))
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // The low seven bits, with the high bit saying more follow.
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, u64::try_from(text.len()).unwrap_or(u64::MAX));
    out.extend_from_slice(text.as_bytes());
}

fn put_time(out: &mut Vec<u8>, at: Timestamp) {
    // Zigzag, so times before 1970 stay short too.
    let ms = at.unix_ms();
    put_varint(out, ((ms << 1) ^ (ms >> 63)).cast_unsigned());
}

fn put_option<T>(out: &mut Vec<u8>, value: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match value {
        Some(value) => {
            out.push(1);
            put(out, value);
        }
        None => out.push(0),
    }
}

fn put_via(out: &mut Vec<u8>, via: Via) {
    match via {
        Via::Direct => out.push(0),
        Via::Link { number } => {
            out.push(1);
            put_varint(out, number);
        }
        Via::Invitation { number } => {
            out.push(2);
            put_varint(out, number);
        }
    }
}

/// Reads a binary row field by field; every error names the row.
pub(crate) struct Fields<'b> {
    key: &'b [u8],
    rest: &'b [u8],
}

impl<'b> Fields<'b> {
    pub(crate) fn new(key: &'b [u8], bytes: &'b [u8]) -> Fields<'b> {
        Fields { key, rest: bytes }
    }

    fn error(&self, reason: &str) -> ProjectionError {
        corrupt(self.key, reason)
    }

    fn byte(&mut self) -> Result<u8, ProjectionError> {
        let (first, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| self.error("cut short"))?;
        self.rest = rest;
        Ok(*first)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, ProjectionError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("a number longer than 64 bits"))
    }

    pub(crate) fn str(&mut self) -> Result<&'b str, ProjectionError> {
        let length = usize::try_from(self.varint()?).map_err(|_| self.error("too long"))?;
        if self.rest.len() < length {
            return Err(self.error("cut short"));
        }
        let (text, rest) = self.rest.split_at(length);
        self.rest = rest;
        std::str::from_utf8(text).map_err(|_| self.error("a string that is not UTF-8"))
    }

    fn time(&mut self) -> Result<Timestamp, ProjectionError> {
        let zigzag = self.varint()?;
        let ms = (zigzag >> 1).cast_signed() ^ -(zigzag & 1).cast_signed();
        Timestamp::from_unix_ms(ms).map_err(|e| self.error(&e.to_string()))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ProjectionError>,
    ) -> Result<Option<T>, ProjectionError> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(self.error("a bad option tag")),
        }
    }

    fn principal(&mut self) -> Result<Principal, ProjectionError> {
        let text = self.str()?;
        Principal::parse(text).map_err(|e| self.error(&e.to_string()))
    }

    fn role(&mut self) -> Result<RoleName, ProjectionError> {
        let text = self.str()?;
        RoleName::parse(text).map_err(|e| self.error(&e.to_string()))
    }

    fn via(&mut self) -> Result<Via, ProjectionError> {
        match self.byte()? {
            0 => Ok(Via::Direct),
            1 => Ok(Via::Link {
                number: self.varint()?,
            }),
            2 => Ok(Via::Invitation {
                number: self.varint()?,
            }),
            _ => Err(self.error("a bad via tag")),
        }
    }

    /// Paired with the writer: a row holds its fields and nothing after them.
    fn end<T>(self, value: T) -> Result<T, ProjectionError> {
        if self.rest.is_empty() {
            Ok(value)
        } else {
            Err(self.error("bytes after the last field"))
        }
    }
}

/// The parts of a key of NUL-separated parts (see `kv::key`) after its first (the tag).
fn key_parts(key: &[u8], parts: usize) -> Option<Vec<&[u8]>> {
    let rest = key.get(2..).filter(|_| key.get(1) == Some(&0))?;
    let split: Vec<&[u8]> = rest.splitn(parts, |b| *b == 0).collect();
    (split.len() == parts).then_some(split)
}

fn key_str<'k>(key: &[u8], part: &'k [u8]) -> Result<&'k str, ProjectionError> {
    std::str::from_utf8(part).map_err(|_| corrupt(key, "a key that is not UTF-8"))
}

/// A part of `key` read as a domain name (a principal, a resource), or the key is corrupt.
fn key_name<T, E: std::fmt::Display>(
    key: &[u8],
    part: &[u8],
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ProjectionError> {
    parse(key_str(key, part)?).map_err(|e| corrupt(key, &e.to_string()))
}

/// A history entry under `r ‖ resource ‖ position` (`History::by_resource`): the key holds the
/// resource and the position, so the value holds the rest, its summary last and unframed (so
/// it can be written in place, without a `String` first).
pub(crate) fn put_history_entry(
    out: &mut Vec<u8>,
    occurred_at: Timestamp,
    actor: &str,
    event_type: &str,
    summary: impl FnOnce(&mut Vec<u8>),
) {
    put_time(out, occurred_at);
    put_str(out, actor);
    put_str(out, event_type);
    summary(out);
}

impl Record for HistoryEntry {
    /// Paired with `decode` under the key `History::by_resource(resource, position)`.
    fn encode(&self, out: &mut Vec<u8>) {
        put_history_entry(
            out,
            self.occurred_at,
            &self.actor,
            &self.event_type,
            |out| {
                out.extend_from_slice(self.summary.as_bytes());
            },
        );
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError> {
        let (resource, position) = key
            .len()
            .checked_sub(9)
            .filter(|end| key.get(*end) == Some(&0))
            .and_then(|end| {
                let position = <[u8; 8]>::try_from(key.get(end + 1..)?).ok()?;
                Some((key.get(2..end)?, u64::from_be_bytes(position)))
            })
            .ok_or_else(|| corrupt(key, "not a history key"))?;
        let resource = key_name(key, resource, ResourceId::parse)?;
        let mut fields = Fields::new(key, bytes);
        let occurred_at = fields.time()?;
        let actor = fields.str()?.to_owned();
        let event_type = fields.str()?.to_owned();
        let summary = std::str::from_utf8(fields.rest)
            .map_err(|_| corrupt(key, "a summary that is not UTF-8"))?
            .to_owned();
        Ok(HistoryEntry {
            position,
            occurred_at,
            actor,
            event_type,
            resource: Some(resource),
            summary,
        })
    }
}

/// A member under `r ‖ resource ‖ principal` (`Members::by_resource`): the key holds the
/// principal.
pub(crate) fn put_member(
    out: &mut Vec<u8>,
    role: &RoleName,
    since: Timestamp,
    granted_by: Option<&Principal>,
    via: Via,
) {
    put_str(out, role.as_str());
    put_time(out, since);
    put_option(out, granted_by, |out, p| put_str(out, p.as_str()));
    put_via(out, via);
}

impl Record for MemberRecord {
    /// Paired with `decode` under the key `Members::by_resource(_, principal)`.
    fn encode(&self, out: &mut Vec<u8>) {
        put_member(
            out,
            &self.role,
            self.since,
            self.granted_by.as_ref(),
            self.via,
        );
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError> {
        let parts = key_parts(key, 2).ok_or_else(|| corrupt(key, "not a member key"))?;
        let principal = key_name(key, parts[1], Principal::parse)?;
        let mut fields = Fields::new(key, bytes);
        let record = MemberRecord {
            principal,
            role: fields.role()?,
            since: fields.time()?,
            granted_by: fields.option(Fields::principal)?,
            via: fields.via()?,
        };
        fields.end(record)
    }
}

/// A membership under `p ‖ principal ‖ resource` (`Members::by_principal`): the key holds the
/// resource.
pub(crate) fn put_membership(
    out: &mut Vec<u8>,
    role: &RoleName,
    since: Timestamp,
    granted_by: Option<&Principal>,
) {
    put_str(out, role.as_str());
    put_time(out, since);
    put_option(out, granted_by, |out, p| put_str(out, p.as_str()));
}

impl Record for MembershipRecord {
    /// Paired with `decode` under the key `Members::by_principal(_, resource)`.
    fn encode(&self, out: &mut Vec<u8>) {
        put_membership(out, &self.role, self.since, self.granted_by.as_ref());
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, ProjectionError> {
        let parts = key_parts(key, 2).ok_or_else(|| corrupt(key, "not a membership key"))?;
        let resource = key_name(key, parts[1], ResourceId::parse)?;
        let mut fields = Fields::new(key, bytes);
        let record = MembershipRecord {
            resource,
            role: fields.role()?,
            since: fields.time()?,
            granted_by: fields.option(Fields::principal)?,
        };
        fields.end(record)
    }
}

/// `Vec<u8>` as a `fmt::Write`, to format text straight into a row.
pub(crate) struct Text<'a>(pub(crate) &'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::key;

    fn round_trip<T: Record + PartialEq + std::fmt::Debug>(key: &[u8], record: &T, strict: bool) {
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        assert_eq!(&T::decode(key, &bytes).expect("decodes"), record);
        // Every shorter prefix, and one byte more, is refused rather than misread (but a
        // history entry's last field, its summary, is whatever follows the others).
        if strict {
            for cut in 0..bytes.len() {
                assert!(T::decode(key, &bytes[..cut]).is_err(), "cut at {cut}");
            }
            bytes.push(0);
            assert!(T::decode(key, &bytes).is_err());
        }
    }

    fn time(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms).expect("in range")
    }

    #[test]
    fn binary_rows_read_back_as_written() {
        let resource = ResourceId::parse("space/spc_42").expect("parses");
        let alice = Principal::parse("alice").expect("parses");
        for (at, via) in [
            (time(1_790_000_000_123), Via::Direct),
            (time(-62_167_219_200_000), Via::Link { number: 1 << 52 }),
            (time(253_402_300_799_999), Via::Invitation { number: 0 }),
            (time(0), Via::Link { number: 127 }),
        ] {
            for (position, summary) in [(u64::MAX, "x".repeat(300)), (1, String::new())] {
                let entry = HistoryEntry {
                    position,
                    occurred_at: at,
                    actor: "admin ünïcode".into(),
                    event_type: "MemberAdded".into(),
                    resource: Some(resource.clone()),
                    summary,
                };
                let row = key(&[&b"r"[..], b"space/spc_42", &position.to_be_bytes()]);
                round_trip(&row, &entry, false);
            }
            let row = key(&[&b"r"[..], b"space/spc_42", b"alice"]);
            round_trip(
                &row,
                &MemberRecord {
                    principal: alice.clone(),
                    role: RoleName::parse("editor").expect("parses"),
                    since: at,
                    granted_by: Some(Principal::parse("bob").expect("parses")),
                    via,
                },
                true,
            );
            let row = key(&[&b"p"[..], b"alice", b"space/spc_42"]);
            round_trip(
                &row,
                &MembershipRecord {
                    resource: resource.clone(),
                    role: RoleName::parse("viewer").expect("parses"),
                    since: at,
                    granted_by: None,
                },
                true,
            );
        }
    }

    #[test]
    fn a_row_under_a_key_of_another_shape_is_an_error() {
        let mut bytes = Vec::new();
        put_membership(
            &mut bytes,
            &RoleName::parse("viewer").expect("parses"),
            time(0),
            None,
        );
        assert!(MembershipRecord::decode(b"p\0alice", &bytes).is_err());
        assert!(MembershipRecord::decode(b"p\0alice\0not a resource", &bytes).is_err());
        let mut entry = Vec::new();
        put_history_entry(&mut entry, time(0), "admin", "MemberAdded", |_| {});
        let position = 7u64.to_be_bytes();
        let good = key(&[&b"r"[..], b"space/a", &position]);
        assert!(HistoryEntry::decode(&good, &entry).is_ok());
        assert!(HistoryEntry::decode(&good[..good.len() - 1], &entry).is_err());
        assert!(HistoryEntry::decode(&key(&[&b"r"[..], b"space", &position]), &entry).is_err());
    }
}
