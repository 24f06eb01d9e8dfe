//! Event time: a millisecond [`Timestamp`] and an injected [`Clock`].
//!
//! Logic never reads the wall clock itself; it is handed a `Clock`, so tests and replays
//! control time (`ManualClock`) and the simulator can run faster than real time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC.
///
/// Serialised as an RFC 3339 string with milliseconds (`2021-01-01T05:00:00.000Z`); it also
/// deserialises from an integer number of milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MINUTE_MS: i64 = 60_000;
    pub const HOUR_MS: i64 = 3_600_000;

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn from_secs(s: i64) -> Self {
        Self(s.saturating_mul(1000))
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
    pub fn plus_minutes(self, m: i64) -> Self {
        self.plus_millis(m.saturating_mul(Self::MINUTE_MS))
    }
    /// The greatest multiple of `step_ms` at or before `self` (a grid aligned to the epoch).
    pub fn floor_to(self, step_ms: i64) -> Self {
        Self(self.0 - self.0.rem_euclid(step_ms.max(1)))
    }
    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_millis())
    }
    /// Parses RFC 3339 (`2021-01-01T05:00:00Z`, with or without fraction or offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Self(d.timestamp_millis()))
    }
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch milliseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v)
                    .ok_or_else(|| E::custom(format!("invalid RFC 3339 timestamp: {v:?}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where "now" comes from. Inject it; never call `SystemTime::now` inside logic.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }
}

/// A clock that moves only when told to: for tests and replays.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(at.0)))
    }
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }
    pub fn advance_millis(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A shareable clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// A `Duration` as whole milliseconds in configuration files:
/// `#[serde(rename = "timeout_ms", with = "millis")]` (one beyond `u64::MAX` ms is written as
/// `u64::MAX`).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip_and_integer_input() {
        let t = Timestamp::from_secs(1_609_477_200);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2021-01-01T05:00:00.000Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&s).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("1609477200000").unwrap(),
            t
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn floor_is_epoch_aligned_for_negative_times_too() {
        assert_eq!(
            Timestamp(7 * 60_000 + 5).floor_to(300_000),
            Timestamp(300_000)
        );
        assert_eq!(Timestamp(-1).floor_to(300_000), Timestamp(-300_000));
    }
}
