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
    ///
    /// The form [`Timestamp::to_rfc3339`] writes (`2021-01-01T05:00:00.000Z`, and the same
    /// without the fraction) is read by a small parser of its fixed layout; anything else
    /// (another offset, another fraction length, a leap second, any doubt) goes to chrono's
    /// parser, whose answer is returned. The fast way accepts only what chrono accepts, with
    /// the same value (a unit test compares both, decision 100).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        parse_canonical(s.as_bytes()).or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| Self(d.timestamp_millis()))
        })
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

/// `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, upper-case `T` and `Z`,
/// seconds 00–59), as milliseconds; `None` for anything else, including any out-of-range
/// field, so that chrono decides.
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    let millis = match b.len() {
        20 if b[19] == b'Z' => 0,
        24 if b[19] == b'.' && b[23] == b'Z' => digits(&b[20..23])?,
        _ => return None,
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(Timestamp(secs * 1_000 + millis))
}

/// The value of ASCII decimal digits (`None` if any byte is not one).
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), for a year 0–9999.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    /// chrono's answer for `s`, what `parse_rfc3339` returned before it had a fast way.
    fn by_chrono(s: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Timestamp(d.timestamp_millis()))
    }

    /// The fixed-layout parser agrees with chrono: on every instant it writes (random ones
    /// over years 0–9999, every day boundary of leap and common years, the edges of each
    /// field) and on each of those strings with one byte changed to a digit, a sign, a
    /// letter or a separator (out-of-range fields, other layouts, offsets, lower case):
    /// either the same milliseconds, or the fast way declines and chrono answers.
    #[test]
    fn the_canonical_parser_answers_what_chrono_does() {
        // The fixed instants and the month ends of the years below are all changed byte by
        // byte (1900-02-28 into 1900-02-29, ...); the random ones until 400 k changes.
        let mut edges: Vec<Timestamp> = vec![
            Timestamp(0),
            Timestamp(-1),
            Timestamp(1_609_477_200_000),
            Timestamp(951_782_400_000),   // 2000-02-29
            Timestamp(4_107_542_400_000), // 2100-03-01
        ];
        let mut instants: Vec<Timestamp> = Vec::new();
        let (min, max) = (-62_167_219_200_000i64, 253_402_300_799_999i64); // years 0..=9999
        let mut rng = crate::splitmix::SplitMix64::new(100);
        for _ in 0..20_000 {
            let span = u64::try_from(max - min).unwrap_or(u64::MAX);
            let at = min + i64::try_from(rng.next_u64() % span).unwrap_or(0);
            instants.push(Timestamp(at));
            // Whole seconds too (the form without a fraction).
            instants.push(Timestamp(at - at.rem_euclid(1000)));
        }
        for year in [
            1600i64, 1700, 1900, 1970, 1999, 2000, 2020, 2021, 2024, 2100, 2400,
        ] {
            for day in 0..367 {
                let start = (days_from_civil(year, 1, 1) + day) * 86_400_000;
                let pair = [Timestamp(start), Timestamp(start - 1)];
                let month_end = pair[1].to_rfc3339()[8..10] >= *"28";
                if month_end { &mut edges } else { &mut instants }.extend(pair);
            }
        }
        instants.extend([Timestamp(min), Timestamp(max)]);
        let mut fast_ones = 0u32;
        let (mut compared, mut edges_changed) = (0u32, 0u32);
        let always = edges.len();
        for (n, t) in edges.into_iter().chain(instants).enumerate() {
            let text = t.to_rfc3339();
            let whole = text.replace(".000Z", "Z");
            for s in [text.as_str(), whole.as_str()] {
                assert_eq!(parse_canonical(s.as_bytes()), by_chrono(s), "{s}");
                assert_eq!(Timestamp::parse_rfc3339(s), by_chrono(s), "{s}");
                fast_ones += u32::from(parse_canonical(s.as_bytes()).is_some());
                if s.len() < 20 || (n >= always && compared > 400_000) {
                    continue;
                }
                edges_changed += u32::from(n < always);
                let mut bytes = s.as_bytes().to_vec();
                for i in 0..bytes.len() {
                    let was = bytes[i];
                    for b in *b"0123456789+-.:TtZz x" {
                        bytes[i] = b;
                        let Ok(changed) = std::str::from_utf8(&bytes) else {
                            continue;
                        };
                        let fast = parse_canonical(changed.as_bytes());
                        if fast.is_some() {
                            assert_eq!(fast, by_chrono(changed), "{changed}");
                        }
                        assert_eq!(Timestamp::parse_rfc3339(changed), by_chrono(changed));
                        compared += 1;
                    }
                    bytes[i] = was;
                }
            }
        }
        assert!(fast_ones > 40_000, "the fast way read {fast_ones}");
        assert!(edges_changed > 800, "{edges_changed} month ends changed");
        // Leap seconds, offsets, other fractions and lengths: chrono's, never the fast way's.
        for s in [
            "2016-12-31T23:59:60.000Z",
            "2016-12-31T23:59:60Z",
            "2021-01-01T05:00:00+01:00",
            "2021-01-01T05:00:00.5Z",
            "2021-01-01T05:00:00.123456Z",
            "2021-01-01t05:00:00Z",
            "2021-01-01 05:00:00Z",
            "2021-02-29T00:00:00Z",
            "2021-01-01T24:00:00Z",
            "+2021-01-01T05:00:00Z",
            "2021-01-01T05:00:00.000Z ",
            "",
        ] {
            assert_eq!(parse_canonical(s.as_bytes()), None, "{s}");
            assert_eq!(Timestamp::parse_rfc3339(s), by_chrono(s), "{s}");
        }
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
