//! One recorded `station_status` row as CSV: column mapping, parsing and the semantic rules.
//!
//! Shared by the Bluebikes change log and the hourly snapshot sets, which flatten the same
//! GBFS fields under slightly different column names.

use std::borrow::Cow;

use bikeshare_types::contracts::StationStatus;
use bikeshare_types::{StationId, Timestamp};

use crate::gbfs::rules::{self, RawCounts, RuleConfig, RuleViolation};
use crate::input::{Header, field, parse_bool, parse_int};

/// Epoch values at or above this are milliseconds, below it seconds (1e11 s is year 5138).
const EPOCH_MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Where the status fields are in a file's rows.
#[derive(Debug, Clone)]
pub(crate) struct StatusColumns {
    station_id: usize,
    bikes: usize,
    ebikes: Option<usize>,
    bikes_disabled: Option<usize>,
    docks: usize,
    docks_disabled: Option<usize>,
    installed: usize,
    renting: usize,
    returning: usize,
    last_reported: Option<usize>,
}

/// A row's values as the file gave them, before the semantic rules.
#[derive(Debug, Clone)]
pub(crate) struct ParsedStatus {
    pub station_id: StationId,
    pub counts: RawCounts,
    pub is_installed: bool,
    pub is_renting: bool,
    pub is_returning: bool,
    pub last_reported: Option<Timestamp>,
}

impl StatusColumns {
    /// Maps the header; `last_reported` is optional when the file has a snapshot time.
    pub fn from_header(h: &Header, require_last_reported: bool) -> Result<Self, String> {
        let last_reported = h.find(&["last_reported"]);
        if require_last_reported && last_reported.is_none() {
            return Err("missing column \"last_reported\"".into());
        }
        Ok(Self {
            station_id: h.require("station_id")?,
            bikes: h.require("num_bikes_available")?,
            ebikes: h.find(&["num_ebikes_available", "ebike"]),
            bikes_disabled: h.find(&["num_bikes_disabled"]),
            docks: h.require("num_docks_available")?,
            docks_disabled: h.find(&["num_docks_disabled"]),
            installed: h.require("is_installed")?,
            renting: h.require("is_renting")?,
            returning: h.require("is_returning")?,
            last_reported,
        })
    }

    /// Parses the row's fields; `Err` says which field is unusable.
    pub fn parse(&self, f: &[Cow<'_, str>]) -> Result<ParsedStatus, String> {
        let required = |idx: usize, name: &str| {
            field(f, Some(idx)).ok_or_else(|| format!("{name} is missing"))
        };
        let int = |v: &str, name: &str| {
            parse_int(v).ok_or_else(|| format!("{name} is not an integer: {v:?}"))
        };
        let opt_int =
            |idx: Option<usize>, name: &str| field(f, idx).map(|v| int(v, name)).transpose();
        let flag = |idx: usize, name: &str| {
            let v = required(idx, name)?;
            parse_bool(v).ok_or_else(|| format!("{name} is not a flag: {v:?}"))
        };
        let station_id = StationId::new(required(self.station_id, "station_id")?);
        let last_reported = field(f, self.last_reported)
            .map(|v| parse_epoch(v).ok_or_else(|| format!("last_reported is not a time: {v:?}")))
            .transpose()?;
        Ok(ParsedStatus {
            station_id,
            counts: RawCounts {
                bikes_available: int(
                    required(self.bikes, "num_bikes_available")?,
                    "num_bikes_available",
                )?,
                ebikes_available: opt_int(self.ebikes, "num_ebikes_available")?,
                bikes_disabled: opt_int(self.bikes_disabled, "num_bikes_disabled")?,
                docks_available: opt_int(Some(self.docks), "num_docks_available")?,
                docks_disabled: opt_int(self.docks_disabled, "num_docks_disabled")?,
            },
            is_installed: flag(self.installed, "is_installed")?,
            is_renting: flag(self.renting, "is_renting")?,
            is_returning: flag(self.returning, "is_returning")?,
            last_reported,
        })
    }
}

/// Parses an epoch time in seconds (or milliseconds, when that large) or RFC 3339.
pub(crate) fn parse_epoch(v: &str) -> Option<Timestamp> {
    if let Some(n) = parse_int(v) {
        return Some(if n.abs() >= EPOCH_MILLIS_THRESHOLD {
            Timestamp::from_millis(n)
        } else {
            Timestamp::from_secs(n)
        });
    }
    Timestamp::parse_rfc3339(v)
}

impl ParsedStatus {
    /// Applies the named rules (`check_counts` against `capacity`, `check_time` against
    /// `now`) and builds the contract type with `last_reported = event_time`.
    pub fn validate(
        self,
        event_time: Timestamp,
        capacity: Option<u32>,
        now: Timestamp,
        config: &RuleConfig,
    ) -> Result<StationStatus, RuleViolation> {
        rules::check_counts(&self.station_id, &self.counts, capacity, config)?;
        rules::check_time(&self.station_id, event_time, now, config)?;
        let station = &self.station_id;
        let count = |v: i64| {
            u32::try_from(v).map_err(|_| {
                RuleViolation::new(
                    rules::rule::COUNTS_OVER_CAPACITY,
                    format!("station {station}: count {v} out of range"),
                )
            })
        };
        let opt = |v: Option<i64>| v.map(count).transpose();
        Ok(StationStatus {
            num_bikes_available: count(self.counts.bikes_available)?,
            num_ebikes_available: opt(self.counts.ebikes_available)?,
            num_bikes_disabled: opt(self.counts.bikes_disabled)?,
            num_docks_available: opt(self.counts.docks_available)?,
            num_docks_disabled: opt(self.counts.docks_disabled)?,
            is_installed: self.is_installed,
            is_renting: self.is_renting,
            is_returning: self.is_returning,
            last_reported: event_time,
            vehicle_types_available: Vec::new(),
            station_id: self.station_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::csv_fields;

    const HEADER: &str = "station_id,num_bikes_available,num_docks_available,is_installed,\
                          is_renting,is_returning,last_reported,ebike";

    fn columns() -> StatusColumns {
        StatusColumns::from_header(&Header::new(&csv_fields(HEADER)), true).unwrap()
    }

    #[test]
    fn parses_aliases_and_epoch_units() {
        let row = columns()
            .parse(&csv_fields("7,3,4,1,true,0,1609477327,1"))
            .unwrap();
        assert_eq!(row.station_id, StationId::new("7"));
        assert_eq!(row.counts.ebikes_available, Some(1));
        assert!(!row.is_returning);
        assert_eq!(row.last_reported, Some(Timestamp::from_secs(1_609_477_327)));
        let ms = columns()
            .parse(&csv_fields("7,3,4,1,1,1,1609477327000,"))
            .unwrap();
        assert_eq!(ms.last_reported, Some(Timestamp::from_secs(1_609_477_327)));
        assert_eq!(ms.counts.ebikes_available, None);
    }

    #[test]
    fn names_the_unusable_field() {
        let err = columns()
            .parse(&csv_fields("7,three,4,1,1,1,1609477327,"))
            .unwrap_err();
        assert!(err.contains("num_bikes_available"), "{err}");
        let err = columns()
            .parse(&csv_fields("7,3,4,1,yes,1,1609477327,"))
            .unwrap_err();
        assert!(err.contains("is_renting"), "{err}");
        // A short row: docks may be missing (virtual stations), the flags may not.
        let err = columns().parse(&csv_fields("7,3")).unwrap_err();
        assert!(err.contains("is_installed"), "{err}");
        assert!(
            StatusColumns::from_header(&Header::new(&csv_fields("station_id,x")), false).is_err()
        );
    }

    #[test]
    fn validate_applies_the_named_rules() {
        let t = Timestamp::from_secs(1_609_477_327);
        let cfg = RuleConfig::default();
        let row = columns()
            .parse(&csv_fields("7,-1,4,1,1,1,1609477327,"))
            .unwrap();
        let e = row.validate(t, None, t, &cfg).unwrap_err();
        assert_eq!(e.rule, rules::rule::COUNTS_NEGATIVE);
        let row = columns()
            .parse(&csv_fields("7,3,4,1,1,1,1609477327,"))
            .unwrap();
        assert_eq!(
            row.clone().validate(t, Some(4), t, &cfg).unwrap_err().rule,
            "gbfs.counts.over_capacity"
        );
        let e = row
            .clone()
            .validate(t, None, t.plus_minutes(-60), &cfg)
            .unwrap_err();
        assert_eq!(e.rule, rules::rule::TIME_FUTURE);
        let s = row.validate(t, Some(7), t, &cfg).unwrap();
        assert_eq!(
            (
                s.num_bikes_available,
                s.num_docks_available,
                s.last_reported
            ),
            (3, Some(4), t)
        );
    }
}
