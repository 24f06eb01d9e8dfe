//! Semantic rules for station records, each with a stable name that dead letters carry.
//!
//! They run after typed parsing (and after JSON-schema validation when a schema directory is
//! configured), on the numbers as the feed gave them (`i64`, so a negative count is a named
//! rule violation rather than a type error), and they are shared by every producer: live
//! GBFS polling, replays and the simulator's own tests.

use bikeshare_types::{StationId, Timestamp};
use smart_default::SmartDefault;

/// Rule names, as they appear in dead letters and in the `dead_letters_total{reason}` metric.
pub mod rule {
    pub const JSON: &str = "gbfs.json";
    pub const SCHEMA: &str = "gbfs.schema";
    pub const TYPE: &str = "gbfs.type";
    pub const VERSION: &str = "gbfs.version";
    pub const TOO_LARGE: &str = "gbfs.too_large";
    pub const COUNTS_NEGATIVE: &str = "gbfs.counts.negative";
    pub const COUNTS_OVER_CAPACITY: &str = "gbfs.counts.over_capacity";
    pub const COORDINATES: &str = "gbfs.coordinates";
    pub const TIME_FUTURE: &str = "gbfs.time.future";
    pub const TIME_INVALID: &str = "gbfs.time.invalid";
    pub const STATION_UNKNOWN: &str = "gbfs.station.unknown";
    pub const STATION_DUPLICATE: &str = "gbfs.station.duplicate";
    /// A field the GBFS version requires is absent (or `null`).
    pub const FIELD_MISSING: &str = "gbfs.field.missing";
    /// `system_information.timezone` is not an IANA time zone name.
    pub const TIMEZONE: &str = "gbfs.timezone";
}

/// A failed rule: its name and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {message}")]
pub struct RuleViolation {
    pub rule: &'static str,
    pub message: String,
}

impl RuleViolation {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

/// Thresholds of the semantic rules.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, SmartDefault)]
#[serde(default)]
pub struct RuleConfig {
    /// How far `last_reported` may be ahead of the producer's clock (clock skew), in ms.
    #[default(5 * 60_000)]
    pub max_future_skew_ms: i64,
    /// How many vehicles plus docks above `capacity` are tolerated (feeds lag a little).
    #[default(2)]
    pub capacity_tolerance: u32,
}

/// Counts of a station report as the feed gave them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCounts {
    pub bikes_available: i64,
    pub ebikes_available: Option<i64>,
    pub bikes_disabled: Option<i64>,
    pub docks_available: Option<i64>,
    pub docks_disabled: Option<i64>,
}

impl RawCounts {
    fn named(&self) -> [(&'static str, Option<i64>); 5] {
        [
            ("num_bikes_available", Some(self.bikes_available)),
            ("num_ebikes_available", self.ebikes_available),
            ("num_bikes_disabled", self.bikes_disabled),
            ("num_docks_available", self.docks_available),
            ("num_docks_disabled", self.docks_disabled),
        ]
    }
}

/// Counts are non-negative, fit in `u32`, and bikes + docks (available and disabled) are not
/// above `capacity + tolerance` when the capacity is known.
pub fn check_counts(
    station: &StationId,
    counts: &RawCounts,
    capacity: Option<u32>,
    config: &RuleConfig,
) -> Result<(), RuleViolation> {
    for (name, value) in counts.named() {
        match value {
            Some(v) if v < 0 => {
                return Err(RuleViolation::new(
                    rule::COUNTS_NEGATIVE,
                    format!("station {station}: {name} is {v}"),
                ));
            }
            Some(v) if v > i64::from(u32::MAX) => {
                return Err(RuleViolation::new(
                    rule::COUNTS_OVER_CAPACITY,
                    format!("station {station}: {name} is {v}"),
                ));
            }
            _ => {}
        }
    }
    if let Some(ebikes) = counts.ebikes_available
        && ebikes > counts.bikes_available
    {
        return Err(RuleViolation::new(
            rule::COUNTS_OVER_CAPACITY,
            format!(
                "station {station}: {ebikes} e-bikes available but only {} bikes",
                counts.bikes_available
            ),
        ));
    }
    if let Some(cap) = capacity {
        let total = counts.bikes_available
            + counts.bikes_disabled.unwrap_or(0)
            + counts.docks_available.unwrap_or(0)
            + counts.docks_disabled.unwrap_or(0);
        let limit = i64::from(cap) + i64::from(config.capacity_tolerance);
        if total > limit {
            return Err(RuleViolation::new(
                rule::COUNTS_OVER_CAPACITY,
                format!(
                    "station {station}: bikes + docks = {total} above capacity {cap} \
                     (+{} tolerated)",
                    config.capacity_tolerance
                ),
            ));
        }
    }
    Ok(())
}

/// `last_reported` is a plausible time: after 2000-01-01 and not beyond the skew bound.
pub fn check_time(
    station: &StationId,
    last_reported: Timestamp,
    now: Timestamp,
    config: &RuleConfig,
) -> Result<(), RuleViolation> {
    const Y2000_MS: i64 = 946_684_800_000;
    if last_reported.millis() < Y2000_MS {
        return Err(RuleViolation::new(
            rule::TIME_INVALID,
            format!("station {station}: last_reported {last_reported} is before 2000"),
        ));
    }
    let ahead = last_reported.millis() - now.millis();
    if ahead > config.max_future_skew_ms {
        return Err(RuleViolation::new(
            rule::TIME_FUTURE,
            format!(
                "station {station}: last_reported {last_reported} is {} s in the future \
                 (at most {} s tolerated)",
                ahead / 1000,
                config.max_future_skew_ms / 1000
            ),
        ));
    }
    Ok(())
}

/// Latitude and longitude are on the globe and not the (0, 0) placeholder.
pub fn check_coordinates(station: &StationId, lat: f64, lon: f64) -> Result<(), RuleViolation> {
    let on_globe = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    if !on_globe || (lat == 0.0 && lon == 0.0) || !lat.is_finite() || !lon.is_finite() {
        return Err(RuleViolation::new(
            rule::COORDINATES,
            format!("station {station}: impossible coordinates ({lat}, {lon})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(bikes: i64, docks: i64) -> RawCounts {
        RawCounts {
            bikes_available: bikes,
            docks_available: Some(docks),
            ..Default::default()
        }
    }

    #[test]
    fn counts_rules() {
        let s = StationId::new("s");
        let c = RuleConfig::default();
        assert!(check_counts(&s, &counts(3, 7), Some(10), &c).is_ok());
        assert!(
            check_counts(&s, &counts(3, 9), Some(10), &c).is_ok(),
            "within tolerance"
        );
        let e = check_counts(&s, &counts(3, 10), Some(10), &c).unwrap_err();
        assert_eq!(e.rule, rule::COUNTS_OVER_CAPACITY);
        let e = check_counts(&s, &counts(-1, 7), Some(10), &c).unwrap_err();
        assert_eq!(e.rule, rule::COUNTS_NEGATIVE);
        assert!(
            check_counts(&s, &counts(300, 7), None, &c).is_ok(),
            "no capacity known"
        );
        let ebikes = RawCounts {
            ebikes_available: Some(4),
            ..counts(3, 7)
        };
        assert!(check_counts(&s, &ebikes, Some(10), &c).is_err());
    }

    #[test]
    fn time_rules() {
        let s = StationId::new("s");
        let c = RuleConfig::default();
        let now = Timestamp::from_secs(1_700_000_000);
        assert!(check_time(&s, now.plus_minutes(4), now, &c).is_ok());
        assert_eq!(
            check_time(&s, now.plus_minutes(6), now, &c)
                .unwrap_err()
                .rule,
            rule::TIME_FUTURE
        );
        assert_eq!(
            check_time(&s, Timestamp(0), now, &c).unwrap_err().rule,
            rule::TIME_INVALID
        );
    }

    #[test]
    fn coordinate_rules() {
        let s = StationId::new("s");
        assert!(check_coordinates(&s, 42.36, -71.06).is_ok());
        assert!(check_coordinates(&s, 0.0, 0.0).is_err());
        assert!(check_coordinates(&s, 91.0, 0.5).is_err());
        assert!(check_coordinates(&s, f64::NAN, 1.0).is_err());
    }
}
