//! Instants as unix milliseconds, written as RFC 3339 UTC with exactly three fractional digits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::DomainError;

/// One millisecond-precision instant in UTC.
///
/// The range is limited to the years 0000 to 9999 so that every value can be written as
/// RFC 3339, which makes serialisation infallible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

impl Timestamp {
    /// 0000-01-01T00:00:00.000Z.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000);
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// The instant `unix_ms` milliseconds after the epoch, if it lies in the years 0000 to 9999.
    pub fn from_unix_ms(unix_ms: i64) -> Result<Timestamp, DomainError> {
        if (Self::MIN.0..=Self::MAX.0).contains(&unix_ms) {
            Ok(Timestamp(unix_ms))
        } else {
            Err(DomainError::InvalidRequest(format!(
                "timestamp {unix_ms} ms is outside the years 0000 to 9999"
            )))
        }
    }

    /// Milliseconds since the unix epoch.
    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// Parses any RFC 3339 timestamp, whatever its offset; sub-millisecond digits are truncated
    /// towards the past so that a parsed instant never lies after the written one.
    pub fn parse(text: &str) -> Result<Timestamp, DomainError> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| DomainError::InvalidRequest(format!("not an RFC 3339 timestamp: {e}")))?;
        let unix_ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        let unix_ms = i64::try_from(unix_ms)
            .map_err(|_| DomainError::InvalidRequest("timestamp out of range".into()))?;
        Timestamp::from_unix_ms(unix_ms)
    }

    /// `self + delta_ms`, or `None` outside the representable range.
    pub fn checked_add_ms(self, delta_ms: i64) -> Option<Timestamp> {
        self.0
            .checked_add(delta_ms)
            .and_then(|ms| Timestamp::from_unix_ms(ms).ok())
    }

    /// `self + delta_ms`, clamped to the representable range.
    pub fn saturating_add_ms(self, delta_ms: i64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(delta_ms)
                .clamp(Self::MIN.0, Self::MAX.0),
        )
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn ms_since(self, earlier: Timestamp) -> i64 {
        // Both values lie within the year range, so the difference cannot overflow.
        self.0 - earlier.0
    }

    fn to_offset_date_time(self) -> OffsetDateTime {
        let nanos = i128::from(self.0) * 1_000_000;
        // The constructor guarantees the range that `time` supports by default.
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self
            .to_offset_date_time()
            .format(&format)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_utc_with_three_fractional_digits() {
        let t = Timestamp::parse("2026-11-22T11:00:00.5+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T10:00:00.500Z");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-22T10:00:00.500Z\""
        );
    }

    #[test]
    fn truncates_sub_millisecond_digits_towards_the_past() {
        let t = Timestamp::parse("1969-12-31T23:59:59.9995Z").unwrap();
        assert_eq!(t.unix_ms(), -1);
        assert_eq!(t.to_string(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_range_ends_are_writable_and_beyond_is_refused() {
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999Z");
        assert!(Timestamp::from_unix_ms(Timestamp::MAX.unix_ms() + 1).is_err());
        assert_eq!(Timestamp::MAX.checked_add_ms(1), None);
        assert_eq!(Timestamp::MAX.saturating_add_ms(i64::MAX), Timestamp::MAX);
        assert!(Timestamp::parse("not a time").is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let t = Timestamp::from_unix_ms(1_795_860_000_123).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
