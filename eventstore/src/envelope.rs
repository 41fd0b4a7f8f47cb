//! The stored event: its envelope, the hash chain over envelopes, and the upcasting hook.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{write_canonical, write_canonical_str, write_canonical_u64, write_u64};

/// A hash in the chain: SHA-256, written as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event: 64 zeros.
    pub const GENESIS: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Appends the 64 lowercase hex characters to `out`, without a `String` in between: the
    /// writer does this twice per event.
    pub(crate) fn write_hex(&self, out: &mut Vec<u8>) {
        // A table lookup per nibble: the hex crate's iterator chain showed in the profile.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out.extend_from_slice(&text);
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
        Hash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a hash is 64 lowercase hex characters"))
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
        let mut out = Vec::with_capacity(24);
        self.write_rfc3339(&mut out);
        // Only ASCII digits and punctuation are written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the RFC 3339 form to `out` without formatting machinery: the writer does
    /// this twice per event (hash and stored bytes).
    pub(crate) fn write_rfc3339(self, out: &mut Vec<u8>) {
        let nanos = i128::from(self.0) * 1_000_000;
        let moment = match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(moment) if (0..=9999).contains(&moment.year()) => moment,
            // Years without four plain digits (before year 0, after 9999) have no RFC 3339
            // form that reads back: a total, reversible form instead.
            _ => {
                out.push(b'@');
                out.extend_from_slice(self.0.to_string().as_bytes());
                return;
            }
        };
        let digits = |out: &mut Vec<u8>, value: u32, width: u32| {
            for place in (0..width).rev() {
                let digit = value / 10u32.pow(place) % 10;
                // A decimal digit: below 10, so the conversion is exact.
                out.push(b'0' + u8::try_from(digit).unwrap_or(0));
            }
        };
        digits(out, moment.year().unsigned_abs(), 4);
        out.push(b'-');
        digits(out, u32::from(u8::from(moment.month())), 2);
        out.push(b'-');
        digits(out, u32::from(moment.day()), 2);
        out.push(b'T');
        digits(out, u32::from(moment.hour()), 2);
        out.push(b':');
        digits(out, u32::from(moment.minute()), 2);
        out.push(b':');
        digits(out, u32::from(moment.second()), 2);
        out.push(b'.');
        digits(out, u32::from(moment.millisecond()), 3);
        out.push(b'Z');
    }

    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        if let Some(raw) = text.strip_prefix('@') {
            return raw.parse().ok().map(Timestamp);
        }
        let moment =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .ok()?;
        i64::try_from(moment.unix_timestamp_nanos().div_euclid(1_000_000))
            .ok()
            .map(Timestamp)
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
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
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
        write_quoted(&mut out, |out| self.occurred_at.write_rfc3339(out));
        member(&mut out, "position", false);
        write_canonical_u64(self.position, &mut out);
        member(&mut out, "prev_hash", false);
        write_quoted(&mut out, |out| self.prev_hash.write_hex(out));
        member(&mut out, "schema", false);
        write_canonical_u64(u64::from(self.schema), &mut out);
        member(&mut out, "stream", false);
        write_canonical_str(&self.stream, &mut out);
        member(&mut out, "type", false);
        write_canonical_str(&self.event_type, &mut out);
        member(&mut out, "version", false);
        write_canonical_u64(self.version, &mut out);
        out.push(b'}');
        out
    }

    /// The bytes the log stores for this envelope: exactly what `serde_json::to_vec` writes
    /// (a test holds them equal), written directly because the writer does it once per event
    /// and serde's generic path (a `String` per hash and per timestamp) was a tenth of its time.
    pub(crate) fn stored_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(512);
        let member = |out: &mut Vec<u8>, name: &str, first: bool| {
            out.extend_from_slice(if first { b"{\"" } else { b",\"" });
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        // serde's order: the order of the struct's fields.
        member(&mut out, "position", true);
        write_u64(self.position, &mut out);
        member(&mut out, "stream", false);
        write_canonical_str(&self.stream, &mut out);
        member(&mut out, "version", false);
        write_u64(self.version, &mut out);
        member(&mut out, "event_id", false);
        write_canonical_str(&self.event_id, &mut out);
        member(&mut out, "type", false);
        write_canonical_str(&self.event_type, &mut out);
        member(&mut out, "schema", false);
        write_u64(u64::from(self.schema), &mut out);
        member(&mut out, "occurred_at", false);
        write_quoted(&mut out, |out| self.occurred_at.write_rfc3339(out));
        member(&mut out, "actor", false);
        write_canonical_str(&self.actor, &mut out);
        member(&mut out, "command_id", false);
        write_canonical_str(&self.command_id, &mut out);
        member(&mut out, "correlation_id", false);
        write_canonical_str(&self.correlation_id, &mut out);
        member(&mut out, "data", false);
        // The data as serde writes it, not in canonical form: that keeps integers beyond
        // 2^53 and floats exactly as they were given.
        serde_json::to_writer(&mut out, &self.data)?;
        member(&mut out, "prev_hash", false);
        write_quoted(&mut out, |out| self.prev_hash.write_hex(out));
        member(&mut out, "hash", false);
        write_quoted(&mut out, |out| self.hash.write_hex(out));
        out.push(b'}');
        Ok(out)
    }

    /// The envelope as one line of NDJSON, as `roster export` writes it.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A JSON string of characters that need no escaping (hex digits, timestamps).
fn write_quoted(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    write(out);
    out.push(b'"');
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
        self.steps.insert(
            (event_type.to_owned(), schema),
            (step, schema.saturating_add(1)),
        );
        self
    }

    /// Whether an event of this type and schema would be changed by `upcast`: readers that
    /// can decode the stored data as it is skip the copy `upcast` takes.
    pub fn has_step(&self, event_type: &str, schema: u32) -> bool {
        !self.steps.is_empty() && self.steps.contains_key(&(event_type.to_owned(), schema))
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
        assert_eq!(
            with_hash.compute_hash(),
            reference,
            "the hash field is excluded"
        );
        type Edit = Box<dyn Fn(&mut Envelope)>;
        let edits: Vec<Edit> = vec![
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
        assert_eq!(
            envelope.canonical_without_hash(),
            crate::canonical::to_canonical_vec(&general)
        );
    }

    #[test]
    fn the_direct_stored_form_equals_serde() {
        let mut envelope = sample();
        let awkward: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
        envelope.actor = awkward.clone();
        envelope.stream = format!("resource:{awkward}");
        envelope.data = json!({"z": [1, 2.5, u64::MAX, -7, 1e21], "a": {"k": awkward}});
        envelope.hash = envelope.compute_hash();
        for position in [0, 1, 9, 10, u64::from(u32::MAX), (1 << 53) + 1, u64::MAX] {
            envelope.position = position;
            envelope.version = position;
            assert_eq!(
                envelope.stored_json().expect("stored"),
                serde_json::to_vec(&envelope).expect("serde"),
                "position {position}"
            );
            let mut general = serde_json::to_value(&envelope).expect("json");
            general.as_object_mut().expect("object").remove("hash");
            assert_eq!(
                envelope.canonical_without_hash(),
                crate::canonical::to_canonical_vec(&general),
                "position {position}"
            );
        }
    }

    #[test]
    fn the_direct_hex_form_equals_the_general_one() {
        let hash = Hash(std::array::from_fn(|i| {
            u8::try_from(i * 37 % 256).unwrap_or(0)
        }));
        let mut out = Vec::new();
        hash.write_hex(&mut out);
        assert_eq!(out, hash.to_hex().into_bytes());
        assert_eq!(Hash::from_hex(&hash.to_hex()), Some(hash));
    }

    #[test]
    fn the_direct_timestamp_form_equals_the_general_one() {
        // Across eras, leap days, the edges of four-digit years and the calendar's range;
        // outside the years 0 to 9999 both give the `@ms` form, the only one that reads back.
        let general = |moment: Timestamp| {
            let nanos = i128::from(moment.0) * 1_000_000;
            match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
                Ok(m) if (0..=9999).contains(&m.year()) => format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    m.year(),
                    u8::from(m.month()),
                    m.day(),
                    m.hour(),
                    m.minute(),
                    m.second(),
                    m.millisecond()
                ),
                _ => format!("@{}", moment.0),
            }
        };
        let mut samples = vec![
            0,
            -1,
            1,
            951_782_400_000,
            1_763_769_600_123,
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MAX,
            i64::MIN,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            samples.push(i64::from_ne_bytes(state.to_ne_bytes()) >> 20);
        }
        for ms in samples {
            let text = Timestamp(ms).to_rfc3339();
            assert_eq!(text, general(Timestamp(ms)), "{ms}");
            assert_eq!(
                Timestamp::parse_rfc3339(&text),
                Some(Timestamp(ms)),
                "{text} reads back"
            );
        }
    }

    #[test]
    fn timestamps_round_trip_with_millisecond_precision() {
        let moment = Timestamp(1_763_769_600_123);
        assert_eq!(moment.to_rfc3339(), "2025-11-22T00:00:00.123Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2025-11-22T01:00:00.123+01:00"),
            Some(moment)
        );
        assert_eq!(
            Timestamp::parse_rfc3339(&Timestamp(-1).to_rfc3339()),
            Some(Timestamp(-1))
        );
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
        assert!(upcasters.has_step("MemberAdded", 2));
        assert!(!upcasters.has_step("MemberAdded", 3));
        assert!(!Upcasters::new().has_step("MemberAdded", 1));
    }
}
