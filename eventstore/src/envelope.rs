//! The stored event: its envelope, the hash chain over envelopes, and the upcasting hook.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{write_canonical, write_canonical_str};

/// A hash in the chain: SHA-256, written as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event: 64 zeros.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Hash> {
        let mut bytes = [0u8; 32];
        // Only the lowercase form is canonical; an uppercase hash is an edit.
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Hash(bytes))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Hash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("a hash is 64 lowercase hex characters"))
    }
}

/// A point in time as UTC milliseconds since the Unix epoch, written as RFC 3339 with
/// exactly three fractional digits so that the canonical bytes of an envelope are stable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_unix_ms(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// The system clock. Only the edges of the system read it; everything inside takes
    /// the time it is handed.
    pub fn now() -> Timestamp {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp(i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX))
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(moment) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                moment.year(),
                u8::from(moment.month()),
                moment.day(),
                moment.hour(),
                moment.minute(),
                moment.second(),
                moment.millisecond()
            ),
            // Out of the calendar's range: still a total, reversible form.
            Err(_) => format!("@{}", self.0),
        }
    }

    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        if let Some(raw) = text.strip_prefix('@') {
            return raw.parse().ok().map(Timestamp);
        }
        let moment =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
        i64::try_from(moment.unix_timestamp_nanos().div_euclid(1_000_000)).ok().map(Timestamp)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }
}

/// An event as a command proposes it, before the log gives it a place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub data: Value,
}

/// An event as the log stores it (DESIGN section 3).
///
/// Field order here is irrelevant to the hash: the chain is computed over the RFC 8785
/// canonical form, which sorts members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub occurred_at: Timestamp,
    pub actor: String,
    pub command_id: String,
    pub correlation_id: String,
    pub data: Value,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl Envelope {
    /// `SHA-256(prev_hash bytes ‖ JCS(envelope without hash))`, where the prev_hash bytes
    /// are the 32 raw bytes (not their hex), as `docs/ARCHITECTURE.md` states for auditors.
    pub fn compute_hash(&self) -> Hash {
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.0);
        hasher.update(self.canonical_without_hash());
        Hash(hasher.finalize().into())
    }

    /// The RFC 8785 form of the envelope without `hash`, written directly: the member names
    /// are fixed, so their sorted order is too, and only `data` needs the general writer.
    pub fn canonical_without_hash(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let member = |out: &mut Vec<u8>, name: &str, first: bool| {
            out.extend_from_slice(if first { b"{\"" } else { b",\"" });
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        // Sorted by UTF-16 code units, which for these ASCII names is byte order.
        member(&mut out, "actor", true);
        write_canonical_str(&self.actor, &mut out);
        member(&mut out, "command_id", false);
        write_canonical_str(&self.command_id, &mut out);
        member(&mut out, "correlation_id", false);
        write_canonical_str(&self.correlation_id, &mut out);
        member(&mut out, "data", false);
        write_canonical(&self.data, &mut out);
        member(&mut out, "event_id", false);
        write_canonical_str(&self.event_id, &mut out);
        member(&mut out, "occurred_at", false);
        write_canonical_str(&self.occurred_at.to_rfc3339(), &mut out);
        member(&mut out, "position", false);
        write_canonical(&Value::from(self.position), &mut out);
        member(&mut out, "prev_hash", false);
        write_canonical_str(&self.prev_hash.to_hex(), &mut out);
        member(&mut out, "schema", false);
        write_canonical(&Value::from(self.schema), &mut out);
        member(&mut out, "stream", false);
        write_canonical_str(&self.stream, &mut out);
        member(&mut out, "type", false);
        write_canonical_str(&self.event_type, &mut out);
        member(&mut out, "version", false);
        write_canonical(&Value::from(self.version), &mut out);
        out.push(b'}');
        out
    }

    /// The envelope as one line of NDJSON, as `roster export` writes it.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Turns an event written under an older schema into the current one, on read.
///
/// The log is never rewritten: the stored envelope (and its hash) keeps the schema it was
/// written with, and readers that decode events pass them through the upcasters first.
pub type UpcastFn = fn(Value) -> Value;

/// The registry of upcasters: `(type, schema) → (fn, next schema)`, applied repeatedly
/// until no step matches, so a chain 1 → 2 → 3 is three small functions.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), (UpcastFn, u32)>,
}

impl Upcasters {
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Registers the step from `schema` to `schema + 1` for `event_type`.
    pub fn register(&mut self, event_type: &str, schema: u32, step: UpcastFn) -> &mut Upcasters {
        self.steps.insert((event_type.to_owned(), schema), (step, schema.saturating_add(1)));
        self
    }

    /// The event's `(schema, data)` in the newest schema known.
    pub fn upcast(&self, event_type: &str, mut schema: u32, mut data: Value) -> (u32, Value) {
        // A registry can hold at most one step per (type, schema), so this terminates
        // unless it registered a step onto an ever-growing schema, which `register` forbids
        // by always going up by one and the map being finite.
        while let Some((step, next)) = self.steps.get(&(event_type.to_owned(), schema)) {
            data = step(data);
            schema = *next;
        }
        (schema, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Envelope {
        Envelope {
            position: 1,
            stream: "resource:space/spc_42".into(),
            version: 1,
            event_id: "01JD0000000000000000000000".into(),
            event_type: "ResourceRegistered".into(),
            schema: 1,
            occurred_at: Timestamp(1_763_769_600_123),
            actor: "admin".into(),
            command_id: "c1".into(),
            correlation_id: "c1".into(),
            data: json!({"owner": "alice"}),
            prev_hash: Hash::GENESIS,
            hash: Hash::GENESIS,
        }
    }

    #[test]
    fn hash_covers_every_field_but_itself() {
        let base = sample();
        let reference = base.compute_hash();
        let mut with_hash = base.clone();
        with_hash.hash = reference;
        assert_eq!(with_hash.compute_hash(), reference, "the hash field is excluded");
        let edits: Vec<Box<dyn Fn(&mut Envelope)>> = vec![
            Box::new(|e| e.position = 2),
            Box::new(|e| e.stream.push('x')),
            Box::new(|e| e.version = 2),
            Box::new(|e| e.event_id.push('x')),
            Box::new(|e| e.event_type.push('x')),
            Box::new(|e| e.schema = 2),
            Box::new(|e| e.occurred_at = Timestamp(1)),
            Box::new(|e| e.actor.push('x')),
            Box::new(|e| e.command_id.push('x')),
            Box::new(|e| e.correlation_id.push('x')),
            Box::new(|e| e.data = json!({"owner": "mallory"})),
            Box::new(|e| e.prev_hash = Hash([1; 32])),
        ];
        for edit in edits {
            let mut edited = base.clone();
            edit(&mut edited);
            assert_ne!(edited.compute_hash(), reference);
        }
    }

    #[test]
    fn the_direct_canonical_form_equals_the_general_one() {
        let mut envelope = sample();
        envelope.data = json!({"z": [1, 2.5, "\u{1f600}"], "a": {"nested": null}});
        let mut general = serde_json::to_value(&envelope).expect("json");
        general.as_object_mut().expect("object").remove("hash");
        assert_eq!(envelope.canonical_without_hash(), crate::canonical::to_canonical_vec(&general));
    }

    #[test]
    fn timestamps_round_trip_with_millisecond_precision() {
        let moment = Timestamp(1_763_769_600_123);
        assert_eq!(moment.to_rfc3339(), "2025-11-22T00:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339("2025-11-22T01:00:00.123+01:00"), Some(moment));
        assert_eq!(Timestamp::parse_rfc3339(&Timestamp(-1).to_rfc3339()), Some(Timestamp(-1)));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn envelope_json_round_trips() {
        let mut envelope = sample();
        envelope.hash = envelope.compute_hash();
        let line = envelope.to_json_line();
        let back: Envelope = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, envelope);
    }

    #[test]
    fn upcasters_chain_steps() {
        let mut upcasters = Upcasters::new();
        upcasters.register("MemberAdded", 1, |mut data| {
            data["via"] = json!("direct");
            data
        });
        upcasters.register("MemberAdded", 2, |mut data| {
            data["note"] = json!("");
            data
        });
        let (schema, data) = upcasters.upcast("MemberAdded", 1, json!({"role": "viewer"}));
        assert_eq!(schema, 3);
        assert_eq!(data, json!({"role": "viewer", "via": "direct", "note": ""}));
        assert_eq!(upcasters.upcast("Other", 1, json!(1)), (1, json!(1)));
    }
}
