//! Typed, lenient parsing of the GBFS feeds we use, for every version from 1.0 to 3.0.
//!
//! A feed is parsed in two levels:
//!
//! - The **feed**: JSON syntax, the header (`last_updated`, `ttl`, `version`) and the shape of
//!   `data`. A failure here is a [`FeedError`]: nothing in the feed can be trusted, the poller
//!   logs it, counts it and tries again at the next poll.
//! - Each **record** (`data.stations[i]`, or the one `system_information`) is read on its own
//!   from its [`serde_json::Value`], so a bad record becomes a [`Rejected`] with the name of the
//!   rule it broke (see [`rules::rule`]) and its raw JSON, while the rest of the feed flows.
//!
//! Differences between versions are absorbed here and normalised into the contracts of
//! [`bikeshare_types::contracts`]: `is_renting` as `1`/`0` (1.x) or booleans (2.x+),
//! `last_reported`/`last_updated` as POSIX seconds (1.x/2.x) or RFC 3339 (3.0),
//! `num_vehicles_available` (3.0) or `num_bikes_available`, localised names (3.0), e-bikes from
//! Lyft's `num_ebikes_available` or PBSC's `num_bikes_available_types.ebike`, and
//! `num_docks_available` from `vehicle_docks_available` when only that is given.
//!
//! After typing, the semantic rules of [`rules`] run: counts ([`rules::check_counts`], with the
//! capacity from the [`KnownStations`] of `station_information`), times
//! ([`rules::check_time`] against the injected clock's `now`), coordinates
//! ([`rules::check_coordinates`]), unknown stations and duplicate station ids.
//!
//! One case is neither accepted nor rejected: a station that is out of service (not installed,
//! or neither renting nor returning) and has never reported (`last_reported` is a placeholder
//! before 2000, e.g. `0` or `86400` in real Lyft and PBSC feeds). It is valid GBFS but carries
//! no observation with a time, so it is [`Skipped`] (counted, not dead-lettered). The same
//! placeholder on a station in service is rejected (`gbfs.time.invalid`).

use std::collections::{BTreeMap, HashMap, HashSet};

use bikeshare_types::contracts::{StationInfo, StationStatus, SystemInfo, VehicleTypeCount};
use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::{StationId, SystemId, Timestamp};
use serde_json::{Map, Value};

use super::fields::{self, get, required};
use super::rules::{self, RawCounts, RuleConfig, RuleViolation, rule};
use super::schema::{RecordErrors, SchemaError};
use super::version::{DeclaredVersion, GbfsVersion, VersionError};

/// Why a record was skipped (not an error; counted in the poller's stats).
pub mod skip {
    /// An out-of-service station that has never reported (`last_reported` before 2000).
    pub const NEVER_REPORTED: &str = "gbfs.skip.never_reported";
    /// A station at (0, 0) without docks: a placeholder (warehouse, test or retired station)
    /// rather than a place. With docks, (0, 0) is rejected as `gbfs.coordinates`.
    pub const PLACEHOLDER_STATION: &str = "gbfs.skip.placeholder_station";
}

/// What a record parser made of one record.
enum Parsed<T> {
    Record(T),
    /// Valid, but nothing to emit: the [`skip`] reason and a message.
    Skip(&'static str, String),
}

pub use super::feed::FeedKind;

/// The header every GBFS file has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedHeader {
    /// When the publisher last updated the data.
    pub last_updated: Timestamp,
    /// Seconds until the data may change (0: fetch again whenever you like).
    pub ttl: u32,
    /// The layout the feed was read with.
    pub version: GbfsVersion,
    /// The version string the feed declared (`1.0` when it declared none).
    pub declared_version: String,
}

/// A record that failed a rule, with its raw JSON for the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub rule: &'static str,
    pub message: String,
    /// The record's JSON, as the feed gave it.
    pub raw: String,
    /// The record's `station_id`, when it has a string one.
    pub station_id: Option<StationId>,
}

impl Rejected {
    pub(crate) fn new(violation: RuleViolation, raw: &Value) -> Self {
        Self {
            rule: violation.rule,
            message: violation.message,
            raw: raw.to_string(),
            station_id: raw
                .get("station_id")
                .and_then(Value::as_str)
                .map(StationId::new),
        }
    }
}

/// A valid record that carries nothing to emit (see [`skip`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: &'static str,
    pub station_id: StationId,
    pub message: String,
}

/// What one feed gave: its header, the records that passed, and the ones that did not.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed<T> {
    pub header: FeedHeader,
    pub records: Vec<T>,
    pub rejected: Vec<Rejected>,
    pub skipped: Vec<Skipped>,
}

/// What a whole feed failed on: nothing in it is used.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("malformed JSON")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The header or the shape of `data` breaks a rule (`gbfs.type`, `gbfs.field.missing`,
    /// `gbfs.time.*`).
    #[error("{0}")]
    Invalid(RuleViolation),
    /// The official JSON schema rejects something outside the station records.
    #[error("fails the official JSON schema: {}", summary(errors))]
    Schema { errors: Vec<String> },
    #[error("the configured JSON schema could not be used")]
    SchemaUnavailable(#[source] SchemaError),
}

fn summary(errors: &[String]) -> String {
    match errors {
        [] => "no details".to_owned(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

impl FeedError {
    /// The rule name dead letters and the `feed_errors_total{reason}` metric carry.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Json(_) => rule::JSON,
            Self::Version(e) => e.rule(),
            Self::Invalid(v) => v.rule,
            Self::Schema { .. } | Self::SchemaUnavailable(_) => rule::SCHEMA,
        }
    }
}

impl Classify for FeedError {
    fn class(&self) -> ErrorClass {
        match self {
            // The schema directory is our configuration; everything else is the feed's content.
            Self::SchemaUnavailable(e) => e.class(),
            _ => ErrorClass::User,
        }
    }
    /// The same bytes fail the same way; a later poll may bring different bytes.
    fn retryable(&self) -> bool {
        false
    }
}

/// What record parsing needs besides the feed itself.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    /// The producer's clock reading, for `gbfs.time.future`.
    pub now: Timestamp,
    pub rules: RuleConfig,
    /// Language for GBFS 3.0 localised text; English, then the first, when absent.
    pub language: Option<&'a str>,
    /// JSON-schema errors by station index, rejecting those records as `gbfs.schema`.
    pub schema_errors: Option<&'a RecordErrors>,
}

impl<'a> ParseContext<'a> {
    pub fn new(now: Timestamp) -> Self {
        Self {
            now,
            rules: RuleConfig::default(),
            language: None,
            schema_errors: None,
        }
    }
}

/// The stations `station_information` described, with their capacity (for status checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownStations {
    capacity: HashMap<StationId, Option<u32>>,
}

impl KnownStations {
    pub fn from_infos<'a>(infos: impl IntoIterator<Item = &'a StationInfo>) -> Self {
        Self {
            capacity: infos
                .into_iter()
                .map(|i| (i.station_id.clone(), i.capacity))
                .collect(),
        }
    }
    /// The stations of a parsed `station_information`: its records, and the placeholder
    /// stations it skipped (known, so their status is not `gbfs.station.unknown`, but without
    /// a capacity).
    pub fn from_feed(feed: &ParsedFeed<StationInfo>) -> Self {
        let mut known = Self::from_infos(&feed.records);
        for s in &feed.skipped {
            known.capacity.entry(s.station_id.clone()).or_insert(None);
        }
        known
    }
    pub fn contains(&self, id: &StationId) -> bool {
        self.capacity.contains_key(id)
    }
    /// The capacity, when the station is known and declared one.
    pub fn capacity(&self, id: &StationId) -> Option<u32> {
        self.capacity.get(id).copied().flatten()
    }
    pub fn len(&self) -> usize {
        self.capacity.len()
    }
    pub fn is_empty(&self) -> bool {
        self.capacity.is_empty()
    }
}

/// Parses bytes as JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Value, FeedError> {
    serde_json::from_slice(bytes).map_err(FeedError::Json)
}

fn invalid(rule: &'static str, message: impl Into<String>) -> FeedError {
    FeedError::Invalid(RuleViolation::new(rule, message))
}

/// Reads the header and returns it with the `data` object.
pub fn parse_header<'v>(
    root: &'v Value,
    ctx: &ParseContext<'_>,
) -> Result<(FeedHeader, &'v Map<String, Value>), FeedError> {
    let Some(obj) = root.as_object() else {
        return Err(invalid(
            rule::TYPE,
            format!(
                "a GBFS file must be a JSON object, found {}",
                fields::kind(root)
            ),
        ));
    };
    let version = DeclaredVersion::from_field(obj.get("version"))?;
    let what = "feed header";
    let last_updated = required(obj, "last_updated", what)
        .and_then(|v| fields::as_timestamp(v, what, "last_updated"))
        .map_err(FeedError::Invalid)?;
    check_header_time(last_updated, ctx)?;
    let ttl = required(obj, "ttl", what)
        .and_then(|v| fields::as_i64(v, what, "ttl"))
        .map_err(FeedError::Invalid)?;
    let ttl = u32::try_from(ttl).map_err(|_| {
        invalid(
            rule::TYPE,
            format!("feed header: `ttl` must be a non-negative integer, found {ttl}"),
        )
    })?;
    let data = required(obj, "data", what).map_err(FeedError::Invalid)?;
    let Some(data) = data.as_object() else {
        return Err(FeedError::Invalid(fields::wrong_type(
            what,
            "data",
            "an object",
            data,
        )));
    };
    Ok((
        FeedHeader {
            last_updated,
            ttl,
            version: version.layout,
            declared_version: version.declared,
        },
        data,
    ))
}

fn check_header_time(t: Timestamp, ctx: &ParseContext<'_>) -> Result<(), FeedError> {
    // The same bounds as a station's last_reported; the message names the header.
    rules::check_time(&StationId::new("-"), t, ctx.now, &ctx.rules).map_err(|v| {
        let message = match v.rule {
            rule::TIME_FUTURE => format!(
                "feed header: last_updated {t} is ahead of the producer clock {} by more than {} s",
                ctx.now,
                ctx.rules.max_future_skew_ms / 1000
            ),
            _ => format!("feed header: last_updated {t} is before 2000"),
        };
        invalid(v.rule, message)
    })
}

/// `system_information`: one record (or one rejection). The payload's `system_id` is
/// `system_id`, the id this pipeline knows the system by (the feed's own `system_id` must be
/// present but is not carried).
pub fn parse_system_information(
    root: &Value,
    system_id: &SystemId,
    ctx: &ParseContext<'_>,
) -> Result<ParsedFeed<SystemInfo>, FeedError> {
    let (header, data) = parse_header(root, ctx)?;
    let mut feed = ParsedFeed {
        header,
        records: vec![],
        rejected: vec![],
        skipped: vec![],
    };
    match system_info(data, system_id, &feed.header, ctx) {
        Ok(info) => feed.records.push(info),
        Err(v) => feed
            .rejected
            .push(Rejected::new(v, &Value::Object(data.clone()))),
    }
    Ok(feed)
}

fn system_info(
    data: &Map<String, Value>,
    system_id: &SystemId,
    header: &FeedHeader,
    ctx: &ParseContext<'_>,
) -> Result<SystemInfo, RuleViolation> {
    let what = "system_information";
    fields::as_str(required(data, "system_id", what)?, what, "system_id")?;
    let language = if let Some(langs) = get(data, "languages") {
        let Some(list) = langs.as_array() else {
            return Err(fields::wrong_type(
                what,
                "languages",
                "a list of strings",
                langs,
            ));
        };
        let mut codes = Vec::with_capacity(list.len());
        for l in list {
            codes.push(fields::as_str(l, what, "languages[]")?);
        }
        fields::pick_language(&codes, ctx.language, |c| Some(*c)).map(|c| (*c).to_owned())
    } else if let Some(l) = get(data, "language") {
        Some(fields::as_str(l, what, "language")?.to_owned())
    } else if header.version.is_v3() {
        return Err(fields::missing(what, "languages"));
    } else {
        return Err(fields::missing(what, "language"));
    };
    let name = fields::localized_text(
        required(data, "name", what)?,
        ctx.language.or(language.as_deref()),
        what,
        "name",
    )?;
    let timezone = fields::as_str(required(data, "timezone", what)?, what, "timezone")?;
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(RuleViolation::new(
            rule::TIMEZONE,
            format!("{what}: timezone {timezone:?} is not an IANA time zone name"),
        ));
    }
    Ok(SystemInfo {
        system_id: system_id.clone(),
        name,
        timezone: timezone.to_owned(),
        language,
        gbfs_version: header.declared_version.clone(),
    })
}

/// `station_information`: one [`StationInfo`] per valid station.
pub fn parse_station_information(
    root: &Value,
    ctx: &ParseContext<'_>,
) -> Result<ParsedFeed<StationInfo>, FeedError> {
    let (header, data) = parse_header(root, ctx)?;
    let version = header.version;
    parse_stations(header, data, ctx, |obj, id| {
        station_info(obj, id, version, ctx)
    })
}

fn station_info(
    obj: &Map<String, Value>,
    id: &StationId,
    _version: GbfsVersion,
    ctx: &ParseContext<'_>,
) -> Result<Parsed<StationInfo>, RuleViolation> {
    let what = &format!("station {id}");
    let name = fields::localized_text(required(obj, "name", what)?, ctx.language, what, "name")?;
    let short_name = get(obj, "short_name")
        .map(|v| fields::localized_text(v, ctx.language, what, "short_name"))
        .transpose()?;
    let lat = fields::as_f64(required(obj, "lat", what)?, what, "lat")?;
    let lon = fields::as_f64(required(obj, "lon", what)?, what, "lon")?;
    let capacity = match fields::opt_i64(obj, "capacity", what)? {
        None => None,
        Some(c) if c < 0 => {
            return Err(RuleViolation::new(
                rule::COUNTS_NEGATIVE,
                format!("{what}: capacity is {c}"),
            ));
        }
        Some(c) => Some(u32::try_from(c).map_err(|_| {
            RuleViolation::new(
                rule::COUNTS_OVER_CAPACITY,
                format!("{what}: capacity is {c}"),
            )
        })?),
    };
    let region_id = match get(obj, "region_id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => return Err(fields::wrong_type(what, "region_id", "a string", other)),
    };
    let is_virtual_station = fields::opt_bool(obj, "is_virtual_station", what)?.unwrap_or(false);
    if lat == 0.0 && lon == 0.0 && capacity.unwrap_or(0) == 0 {
        return Ok(Parsed::Skip(
            skip::PLACEHOLDER_STATION,
            format!("{what} is at (0, 0) without docks: a placeholder, not a place"),
        ));
    }
    rules::check_coordinates(id, lat, lon)?;
    Ok(Parsed::Record(StationInfo {
        station_id: id.clone(),
        name,
        short_name,
        lat,
        lon,
        capacity,
        region_id,
        is_virtual_station,
    }))
}

/// `station_status`: one [`StationStatus`] per valid report.
///
/// With `known`, a station missing from it is rejected (`gbfs.station.unknown`) and counts are
/// checked against its capacity; without, neither check runs (station_information has not been
/// read yet).
pub fn parse_station_status(
    root: &Value,
    ctx: &ParseContext<'_>,
    known: Option<&KnownStations>,
) -> Result<ParsedFeed<StationStatus>, FeedError> {
    let (header, data) = parse_header(root, ctx)?;
    let version = header.version;
    parse_stations(header, data, ctx, |obj, id| {
        station_status(obj, id, version, ctx, known)
    })
}

fn station_status(
    obj: &Map<String, Value>,
    id: &StationId,
    version: GbfsVersion,
    ctx: &ParseContext<'_>,
    known: Option<&KnownStations>,
) -> Result<Parsed<StationStatus>, RuleViolation> {
    let what = &format!("station {id}");
    if let Some(known) = known
        && !known.contains(id)
    {
        return Err(RuleViolation::new(
            rule::STATION_UNKNOWN,
            format!(
                "{what} is not in station_information ({} stations known)",
                known.len()
            ),
        ));
    }
    // 3.0 renamed bikes to vehicles; accept either name in any version.
    let (bikes_key, other_key, disabled_key, other_disabled_key) = if version.is_v3() {
        (
            "num_vehicles_available",
            "num_bikes_available",
            "num_vehicles_disabled",
            "num_bikes_disabled",
        )
    } else {
        (
            "num_bikes_available",
            "num_vehicles_available",
            "num_bikes_disabled",
            "num_vehicles_disabled",
        )
    };
    let bikes_available = match fields::opt_count(obj, bikes_key, what)? {
        Some(v) => v,
        None => fields::opt_count(obj, other_key, what)?
            .ok_or_else(|| fields::missing(what, bikes_key))?,
    };
    let bikes_disabled = match fields::opt_count(obj, disabled_key, what)? {
        Some(v) => Some(v),
        None => fields::opt_count(obj, other_disabled_key, what)?,
    };
    let ebikes_available = match fields::opt_count(obj, "num_ebikes_available", what)? {
        Some(v) => Some(v),
        // PBSC 1.x: {"mechanical": n, "ebike": m}
        None => match get(obj, "num_bikes_available_types") {
            Some(Value::Object(types)) => fields::opt_count(types, "ebike", what)?,
            Some(other) => {
                return Err(fields::wrong_type(
                    what,
                    "num_bikes_available_types",
                    "an object",
                    other,
                ));
            }
            None => None,
        },
    };
    let vehicle_docks = vehicle_docks_total(obj, what)?;
    let docks_available = fields::opt_count(obj, "num_docks_available", what)?.or(vehicle_docks);
    let docks_disabled = fields::opt_count(obj, "num_docks_disabled", what)?;
    let is_installed = fields::as_bool(required(obj, "is_installed", what)?, what, "is_installed")?;
    let is_renting = fields::as_bool(required(obj, "is_renting", what)?, what, "is_renting")?;
    let is_returning = fields::as_bool(required(obj, "is_returning", what)?, what, "is_returning")?;
    let last_reported =
        fields::as_timestamp(required(obj, "last_reported", what)?, what, "last_reported")?;
    let vehicle_types_available = vehicle_types(obj, what)?;

    let counts = RawCounts {
        bikes_available,
        ebikes_available,
        bikes_disabled,
        docks_available,
        docks_disabled,
    };
    rules::check_counts(id, &counts, known.and_then(|k| k.capacity(id)), &ctx.rules)?;
    if let Err(v) = rules::check_time(id, last_reported, ctx.now, &ctx.rules) {
        let out_of_service = !is_installed || (!is_renting && !is_returning);
        if v.rule == rule::TIME_INVALID && out_of_service {
            return Ok(Parsed::Skip(
                skip::NEVER_REPORTED,
                format!(
                    "{what} is out of service and has never reported ({})",
                    v.message
                ),
            ));
        }
        return Err(v);
    }
    // check_counts has bounded every count to 0..=u32::MAX.
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok(Parsed::Record(StationStatus {
        station_id: id.clone(),
        num_bikes_available: to_u32(bikes_available),
        num_ebikes_available: ebikes_available.map(to_u32),
        num_bikes_disabled: bikes_disabled.map(to_u32),
        num_docks_available: docks_available.map(to_u32),
        num_docks_disabled: docks_disabled.map(to_u32),
        is_installed,
        is_renting,
        is_returning,
        last_reported,
        vehicle_types_available,
    }))
}

/// `vehicle_types_available` (2.1+): counts per vehicle type.
fn vehicle_types(
    obj: &Map<String, Value>,
    what: &str,
) -> Result<Vec<VehicleTypeCount>, RuleViolation> {
    let key = "vehicle_types_available";
    let Some(v) = get(obj, key) else {
        return Ok(vec![]);
    };
    let Some(items) = v.as_array() else {
        return Err(fields::wrong_type(what, key, "a list", v));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(entry) = item.as_object() else {
            return Err(fields::wrong_type(
                what,
                key,
                "a list of {vehicle_type_id, count}",
                item,
            ));
        };
        let type_key = "vehicle_types_available[].vehicle_type_id";
        let vehicle_type_id =
            fields::as_str(required(entry, "vehicle_type_id", what)?, what, type_key)?;
        let count_key = "vehicle_types_available[].count";
        let count = fields::as_i64(required(entry, "count", what)?, what, count_key)?;
        out.push(VehicleTypeCount {
            vehicle_type_id: vehicle_type_id.into(),
            count: count_u32(count, what, vehicle_type_id)?,
        });
    }
    Ok(out)
}

/// The sum of `vehicle_docks_available[].count` (2.1+), when present.
fn vehicle_docks_total(obj: &Map<String, Value>, what: &str) -> Result<Option<i64>, RuleViolation> {
    let key = "vehicle_docks_available";
    let Some(v) = get(obj, key) else {
        return Ok(None);
    };
    let Some(items) = v.as_array() else {
        return Err(fields::wrong_type(what, key, "a list", v));
    };
    let mut total: i64 = 0;
    for item in items {
        let Some(entry) = item.as_object() else {
            return Err(fields::wrong_type(
                what,
                key,
                "a list of {vehicle_type_ids, count}",
                item,
            ));
        };
        let ids = required(entry, "vehicle_type_ids", what)?;
        if !ids
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
        {
            return Err(fields::wrong_type(
                what,
                "vehicle_docks_available[].vehicle_type_ids",
                "a list of strings",
                ids,
            ));
        }
        let count_key = "vehicle_docks_available[].count";
        let count = fields::as_i64(required(entry, "count", what)?, what, count_key)?;
        count_u32(count, what, "vehicle_docks_available")?;
        total = total.saturating_add(count);
    }
    Ok(Some(total))
}

fn count_u32(count: i64, what: &str, of: &str) -> Result<u32, RuleViolation> {
    if count < 0 {
        return Err(RuleViolation::new(
            rule::COUNTS_NEGATIVE,
            format!("{what}: count for {of} is {count}"),
        ));
    }
    u32::try_from(count).map_err(|_| {
        RuleViolation::new(
            rule::COUNTS_OVER_CAPACITY,
            format!("{what}: count for {of} is {count}"),
        )
    })
}

/// The shared loop over `data.stations`: per element, type and id checks, duplicates, the
/// record parser `parse`, then the element's JSON-schema errors.
fn parse_stations<T>(
    header: FeedHeader,
    data: &Map<String, Value>,
    ctx: &ParseContext<'_>,
    mut parse: impl FnMut(&Map<String, Value>, &StationId) -> Result<Parsed<T>, RuleViolation>,
) -> Result<ParsedFeed<T>, FeedError> {
    let what = "data";
    let stations = required(data, "stations", what).map_err(FeedError::Invalid)?;
    let Some(stations) = stations.as_array() else {
        return Err(FeedError::Invalid(fields::wrong_type(
            what, "stations", "a list", stations,
        )));
    };
    let mut feed = ParsedFeed {
        header,
        records: Vec::with_capacity(stations.len()),
        rejected: vec![],
        skipped: vec![],
    };
    let mut seen: HashSet<&str> = HashSet::with_capacity(stations.len());
    let empty = BTreeMap::new();
    let schema_errors = ctx.schema_errors.unwrap_or(&empty);
    for (i, raw) in stations.iter().enumerate() {
        let outcome = station_record(i, raw, &mut seen, &mut parse).and_then(|parsed| {
            match schema_errors.get(&i) {
                Some(errors) => Err(RuleViolation::new(
                    rule::SCHEMA,
                    format!(
                        "data.stations[{i}] fails the official JSON schema: {}",
                        summary(errors)
                    ),
                )),
                None => Ok(parsed),
            }
        });
        match outcome {
            Ok((_, Parsed::Record(record))) => feed.records.push(record),
            Ok((station_id, Parsed::Skip(reason, message))) => {
                feed.skipped.push(Skipped {
                    reason,
                    station_id,
                    message,
                });
            }
            Err(v) => feed.rejected.push(Rejected::new(v, raw)),
        }
    }
    Ok(feed)
}

fn station_record<'v, T>(
    i: usize,
    raw: &'v Value,
    seen: &mut HashSet<&'v str>,
    parse: &mut impl FnMut(&Map<String, Value>, &StationId) -> Result<Parsed<T>, RuleViolation>,
) -> Result<(StationId, Parsed<T>), RuleViolation> {
    let what = format!("data.stations[{i}]");
    let Some(obj) = raw.as_object() else {
        return Err(RuleViolation::new(
            rule::TYPE,
            format!("{what} must be an object, found {}", fields::kind(raw)),
        ));
    };
    let id = fields::as_str(required(obj, "station_id", &what)?, &what, "station_id")?;
    if !seen.insert(id) {
        return Err(RuleViolation::new(
            rule::STATION_DUPLICATE,
            format!("{what}: station {id} appears more than once in the feed"),
        ));
    }
    let id = StationId::new(id);
    let parsed = parse(obj, &id)?;
    Ok((id, parsed))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn ctx() -> ParseContext<'static> {
        ParseContext::new(Timestamp::from_secs(NOW))
    }

    fn status_feed(version: Option<&str>, stations: Value) -> Value {
        let mut feed = json!({"last_updated": NOW - 10, "ttl": 60, "data": {"stations": stations}});
        if let Some(v) = version {
            feed["version"] = json!(v);
        }
        feed
    }

    fn v1_station(id: &str, bikes: i64, docks: i64) -> Value {
        json!({
            "station_id": id, "num_bikes_available": bikes, "num_docks_available": docks,
            "is_installed": 1, "is_renting": 1, "is_returning": 1, "last_reported": NOW - 60
        })
    }

    fn rules_of<T>(feed: &ParsedFeed<T>) -> Vec<&'static str> {
        feed.rejected.iter().map(|r| r.rule).collect()
    }

    #[test]
    fn v1_numeric_booleans_and_lyft_ebikes() {
        let mut s = v1_station("1", 5, 10);
        s["num_ebikes_available"] = json!(2);
        let feed = parse_station_status(&status_feed(None, json!([s])), &ctx(), None).unwrap();
        assert_eq!(feed.header.version, GbfsVersion::V1_0);
        assert_eq!(feed.header.declared_version, "1.0");
        let r = &feed.records[0];
        assert!(r.is_renting && r.is_installed && r.is_returning);
        assert_eq!(r.num_ebikes_available, Some(2));
        assert_eq!(r.last_reported, Timestamp::from_secs(NOW - 60));
    }

    #[test]
    fn pbsc_ebike_types() {
        let mut s = v1_station("1", 5, 10);
        s["num_bikes_available_types"] = json!({"mechanical": 4, "ebike": 1});
        let feed = parse_station_status(&status_feed(None, json!([s])), &ctx(), None).unwrap();
        assert_eq!(feed.records[0].num_ebikes_available, Some(1));
    }

    #[test]
    fn v3_vehicles_rfc3339_and_docks_from_vehicle_docks() {
        let s = json!({
            "station_id": "a", "num_vehicles_available": 3, "num_vehicles_disabled": 1,
            "is_installed": true, "is_renting": true, "is_returning": false,
            "last_reported": "2023-11-14T22:13:00Z",
            "vehicle_types_available": [{"vehicle_type_id": "bike", "count": 3}],
            "vehicle_docks_available": [
                {"vehicle_type_ids": ["bike"], "count": 4},
                {"vehicle_type_ids": ["scooter", "bike"], "count": 2}
            ]
        });
        let mut feed_json = status_feed(Some("3.0"), json!([s]));
        feed_json["last_updated"] = json!("2023-11-14T22:13:10Z");
        let feed = parse_station_status(&feed_json, &ctx(), None).unwrap();
        assert!(feed.rejected.is_empty(), "{:?}", feed.rejected);
        let r = &feed.records[0];
        assert_eq!(r.num_bikes_available, 3);
        assert_eq!(r.num_bikes_disabled, Some(1));
        assert_eq!(r.num_docks_available, Some(6));
        assert!(!r.is_returning);
        assert_eq!(r.vehicle_types_available[0].count, 3);
        assert_eq!(
            feed.header.last_updated,
            Timestamp::parse_rfc3339("2023-11-14T22:13:10Z").unwrap()
        );
    }

    #[test]
    fn one_bad_record_does_not_stop_the_feed() {
        let stations = json!([
            v1_station("1", 5, 10),
            v1_station("2", -1, 10),
            v1_station("3", 1, 1)
        ]);
        let feed = parse_station_status(&status_feed(Some("2.3"), stations), &ctx(), None).unwrap();
        assert_eq!(feed.records.len(), 2);
        assert_eq!(rules_of(&feed), [rule::COUNTS_NEGATIVE]);
        let raw: Value = serde_json::from_str(&feed.rejected[0].raw).unwrap();
        assert_eq!(raw["station_id"], "2");
    }

    #[test]
    fn a_null_count_is_a_type_error_but_an_absent_one_is_not() {
        let mut null_docks = v1_station("1", 5, 10);
        null_docks["num_docks_available"] = Value::Null;
        let mut null_ebikes = v1_station("2", 5, 10);
        null_ebikes["num_ebikes_available"] = Value::Null;
        let mut no_docks = v1_station("3", 5, 10); // a station without docks: field absent
        no_docks
            .as_object_mut()
            .unwrap()
            .remove("num_docks_available");
        let stations = json!([null_docks, null_ebikes, no_docks]);
        let feed = parse_station_status(&status_feed(Some("2.3"), stations), &ctx(), None).unwrap();
        assert_eq!(rules_of(&feed), [rule::TYPE, rule::TYPE]);
        assert!(
            feed.rejected[0]
                .message
                .contains("`num_docks_available` must be an integer, found null"),
            "{}",
            feed.rejected[0].message
        );
        assert_eq!(feed.records.len(), 1);
        assert_eq!(feed.records[0].num_docks_available, None);
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        let mut wrong = v1_station("1", 5, 10);
        wrong["num_bikes_available"] = json!("5");
        let mut missing = v1_station("2", 5, 10);
        missing.as_object_mut().unwrap().remove("is_renting");
        let mut no_id = v1_station("3", 5, 10);
        no_id.as_object_mut().unwrap().remove("station_id");
        let mut numeric_id = v1_station("4", 5, 10);
        numeric_id["station_id"] = json!(4);
        let mut bad_bool = v1_station("5", 5, 10);
        bad_bool["is_installed"] = json!("yes");
        let stations = json!([
            wrong,
            missing,
            no_id,
            numeric_id,
            bad_bool,
            "not an object",
            null
        ]);
        let feed = parse_station_status(&status_feed(None, stations), &ctx(), None).unwrap();
        assert!(feed.records.is_empty());
        assert_eq!(
            rules_of(&feed),
            [
                rule::TYPE,
                rule::FIELD_MISSING,
                rule::FIELD_MISSING,
                rule::TYPE,
                rule::TYPE,
                rule::TYPE,
                rule::TYPE
            ]
        );
        assert!(
            feed.rejected[0].message.contains("num_bikes_available"),
            "{:?}",
            feed.rejected[0]
        );
        assert!(feed.rejected[1].message.contains("is_renting"));
    }

    #[test]
    fn over_capacity_uses_the_known_capacity() {
        let infos = [bikeshare_testkit::envelopes::station_info(
            "1",
            "A".into(),
            42.0,
            -71.0,
            10,
        )];
        let known = KnownStations::from_infos(&infos);
        let feed_json = status_feed(None, json!([v1_station("1", 8, 8)]));
        let with = parse_station_status(&feed_json, &ctx(), Some(&known)).unwrap();
        assert_eq!(rules_of(&with), [rule::COUNTS_OVER_CAPACITY]);
        let without = parse_station_status(&feed_json, &ctx(), None).unwrap();
        assert_eq!(
            without.records.len(),
            1,
            "no capacity known, no capacity rule"
        );
    }

    #[test]
    fn unknown_station_is_rejected_only_when_stations_are_known() {
        let known = KnownStations::default();
        let feed_json = status_feed(None, json!([v1_station("9", 1, 1)]));
        let feed = parse_station_status(&feed_json, &ctx(), Some(&known)).unwrap();
        assert_eq!(rules_of(&feed), [rule::STATION_UNKNOWN]);
    }

    #[test]
    fn future_and_implausible_times() {
        let mut future = v1_station("1", 1, 1);
        future["last_reported"] = json!(NOW + 3600);
        let mut ancient_in_service = v1_station("2", 1, 1);
        ancient_in_service["last_reported"] = json!(0);
        let mut never_reported = v1_station("3", 0, 0);
        never_reported["last_reported"] = json!(86_400);
        never_reported["is_installed"] = json!(0);
        let mut bad_string = v1_station("4", 1, 1);
        bad_string["last_reported"] = json!("soon");
        let stations = json!([future, ancient_in_service, never_reported, bad_string]);
        let feed = parse_station_status(&status_feed(None, stations), &ctx(), None).unwrap();
        assert_eq!(
            rules_of(&feed),
            [rule::TIME_FUTURE, rule::TIME_INVALID, rule::TIME_INVALID]
        );
        assert_eq!(feed.skipped.len(), 1);
        assert_eq!(feed.skipped[0].station_id.as_str(), "3");
        assert_eq!(feed.skipped[0].reason, skip::NEVER_REPORTED);
    }

    #[test]
    fn duplicate_station_ids_keep_the_first() {
        let stations = json!([
            v1_station("1", 1, 1),
            v1_station("1", 2, 2),
            v1_station("2", 1, 1)
        ]);
        let feed = parse_station_status(&status_feed(None, stations), &ctx(), None).unwrap();
        assert_eq!(feed.records.len(), 2);
        assert_eq!(feed.records[0].num_bikes_available, 1);
        assert_eq!(rules_of(&feed), [rule::STATION_DUPLICATE]);
    }

    #[test]
    fn whole_feed_errors() {
        let c = ctx();
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), rule::TYPE),
            (
                json!({"ttl": 0, "data": {"stations": []}}),
                rule::FIELD_MISSING,
            ),
            (
                json!({"last_updated": NOW, "data": {"stations": []}}),
                rule::FIELD_MISSING,
            ),
            (json!({"last_updated": NOW, "ttl": 0}), rule::FIELD_MISSING),
            (
                json!({"last_updated": NOW, "ttl": 0, "data": []}),
                rule::TYPE,
            ),
            (
                json!({"last_updated": NOW, "ttl": -5, "data": {}}),
                rule::TYPE,
            ),
            (
                json!({"last_updated": NOW, "ttl": 0, "data": {}}),
                rule::FIELD_MISSING,
            ),
            (
                json!({"last_updated": NOW, "ttl": 0, "data": {"stations": {}}}),
                rule::TYPE,
            ),
            (
                json!({"last_updated": "now", "ttl": 0, "data": {"stations": []}}),
                rule::TIME_INVALID,
            ),
            (
                json!({"last_updated": NOW + 86_400, "ttl": 0, "data": {"stations": []}}),
                rule::TIME_FUTURE,
            ),
            (
                json!({"last_updated": NOW, "ttl": 0, "version": "4.0", "data": {"stations": []}}),
                rule::VERSION,
            ),
            (
                json!({"last_updated": NOW, "ttl": 0, "version": 2.3, "data": {"stations": []}}),
                rule::VERSION,
            ),
        ];
        for (doc, want) in cases {
            let err = parse_station_status(&doc, &c, None).unwrap_err();
            assert_eq!(err.rule(), want, "{doc}: {err}");
        }
        let err = parse_json(b"{\"last_updated\": 1,").unwrap_err();
        assert_eq!(err.rule(), rule::JSON);
        assert!(matches!(err, FeedError::Json(_)));
    }

    #[test]
    fn station_information_across_versions() {
        let v2 = json!({"last_updated": NOW, "ttl": 0, "version": "2.2", "data": {"stations": [
            {"station_id": "a", "name": "A St", "lat": 42.1, "lon": -71.2, "capacity": 12,
             "region_id": 71, "is_virtual_station": false},
            {"station_id": "b", "name": "B St", "lat": 0.0, "lon": 0.0, "capacity": 10},
            {"station_id": "f", "name": "Warehouse", "lat": 0.0, "lon": 0.0, "capacity": 0},
            {"station_id": "c", "name": "C St", "lat": 42.1, "lon": -71.2, "capacity": -1},
            {"station_id": "d", "lat": 42.1, "lon": -71.2},
            {"station_id": "e", "name": "E St", "lat": "42.1", "lon": -71.2}
        ]}});
        let feed = parse_station_information(&v2, &ctx()).unwrap();
        assert_eq!(feed.records.len(), 1);
        assert_eq!(feed.records[0].capacity, Some(12));
        assert_eq!(feed.records[0].region_id.as_deref(), Some("71"));
        assert_eq!(feed.skipped.len(), 1);
        assert_eq!(feed.skipped[0].reason, skip::PLACEHOLDER_STATION);
        let known = KnownStations::from_feed(&feed);
        assert!(known.contains(&StationId::new("f")) && known.contains(&StationId::new("a")));
        assert!(
            !known.contains(&StationId::new("b")),
            "rejected stations are not known"
        );
        assert_eq!(
            rules_of(&feed),
            [
                rule::COORDINATES,
                rule::COUNTS_NEGATIVE,
                rule::FIELD_MISSING,
                rule::TYPE
            ]
        );

        let v3 = json!({"last_updated": "2023-11-14T22:13:10Z", "ttl": 0, "version": "3.0",
            "data": {"stations": [{"station_id": "a",
                "name": [{"text": "Rue A", "language": "fr"}, {"text": "A Street", "language": "en"}],
                "lat": 48.8, "lon": 2.3, "is_virtual_station": true}]}});
        let feed = parse_station_information(&v3, &ctx()).unwrap();
        assert_eq!(feed.records[0].name, "A Street");
        assert!(feed.records[0].is_virtual_station);
        let fr = ParseContext {
            language: Some("fr"),
            ..ctx()
        };
        assert_eq!(
            parse_station_information(&v3, &fr).unwrap().records[0].name,
            "Rue A"
        );
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(json!("2023-11-14T22:13:00Z")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,24}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const STATUS_FIELDS: [&str; 12] = [
        "station_id",
        "num_bikes_available",
        "num_vehicles_available",
        "num_ebikes_available",
        "num_bikes_available_types",
        "num_docks_available",
        "is_installed",
        "is_renting",
        "last_reported",
        "vehicle_types_available",
        "vehicle_docks_available",
        "num_docks_disabled",
    ];

    proptest::proptest! {
        /// Whatever one field of one station holds, that station is accepted, skipped or
        /// rejected with a named rule, and the other station still flows.
        #[test]
        fn any_value_in_any_field_is_handled(
            field in proptest::sample::select(STATUS_FIELDS.to_vec()),
            value in arb_json(),
            version in proptest::sample::select(vec![None, Some("1.1"), Some("2.3"), Some("3.0")]),
        ) {
            let mut station = v1_station("1", 5, 10);
            station[field] = value.clone();
            let doc = status_feed(version, json!([station, v1_station("2", 1, 1)]));
            let feed = parse_station_status(&doc, &ctx(), None).unwrap();
            proptest::prop_assert_eq!(
                feed.records.len() + feed.rejected.len() + feed.skipped.len(),
                2
            );
            for r in &feed.rejected {
                proptest::prop_assert!(r.rule.starts_with("gbfs."), "{:?}", r);
            }
            if value != json!("2") {
                proptest::prop_assert!(feed.records.iter().any(|r| r.station_id.as_str() == "2"));
            }
        }

        /// Arbitrary documents never panic any parser.
        #[test]
        fn arbitrary_documents_never_panic(doc in arb_json(), data in arb_json()) {
            let c = ctx();
            let sys = SystemId::new("s");
            let mut with_header = json!({"last_updated": NOW, "ttl": 0, "data": data});
            for d in [&doc, &with_header] {
                let _ = parse_station_status(d, &c, Some(&KnownStations::default()));
                let _ = parse_station_information(d, &c);
                let _ = parse_system_information(d, &sys, &c);
                let _ = crate::gbfs::discovery::parse_discovery(d, &c);
            }
            with_header["data"] = json!({"stations": [doc.clone()]});
            let feed = parse_station_status(&with_header, &c, None).unwrap();
            proptest::prop_assert_eq!(feed.records.len() + feed.rejected.len() + feed.skipped.len(), 1);
        }
    }

    #[test]
    fn system_information_needs_a_real_timezone() {
        let sys = SystemId::new("demo");
        let doc = |tz: Value| {
            json!({"last_updated": NOW, "ttl": 0, "version": "2.3",
                   "data": {"system_id": "x", "language": "en", "name": "Demo", "timezone": tz}})
        };
        let ok = parse_system_information(&doc(json!("America/New_York")), &sys, &ctx()).unwrap();
        assert_eq!(ok.records[0].timezone, "America/New_York");
        assert_eq!(ok.records[0].system_id, sys);
        assert_eq!(ok.records[0].gbfs_version, "2.3");
        let bad = parse_system_information(&doc(json!("Mars/Olympus")), &sys, &ctx()).unwrap();
        assert_eq!(rules_of(&bad), [rule::TIMEZONE]);
        let missing = json!({"last_updated": NOW, "ttl": 0,
                             "data": {"system_id": "x", "language": "en", "name": "Demo"}});
        let missing = parse_system_information(&missing, &sys, &ctx()).unwrap();
        assert_eq!(rules_of(&missing), [rule::FIELD_MISSING]);
        assert!(missing.rejected[0].message.contains("timezone"));

        let v3 = json!({"last_updated": "2023-11-14T22:13:10Z", "ttl": 0, "version": "3.0",
            "data": {"system_id": "x", "languages": ["fr", "en"], "timezone": "Europe/Paris",
                     "name": [{"text": "Vélo", "language": "fr"}, {"text": "Bike", "language": "en"}]}});
        let info = parse_system_information(&v3, &sys, &ctx()).unwrap();
        assert_eq!(info.records[0].language.as_deref(), Some("en"));
        assert_eq!(info.records[0].name, "Bike");
    }
}
