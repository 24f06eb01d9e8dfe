//! The GBFS documents the simulator serves, as pure functions of the city's records.
//!
//! Two versions are served side by side, each valid against the official JSON schemas:
//!
//! - **2.3** (`/gbfs/2.3/`): POSIX-second `last_updated`/`last_reported`, feeds listed under
//!   `data.<language>.feeds`, `num_bikes_available` (plus the common `num_ebikes_available`
//!   extension), plain-string names.
//! - **3.0** (`/gbfs/3.0/`): RFC 3339 times, `data.feeds`, `num_vehicles_available`,
//!   localized names (`[{"text", "language"}]`), and the fields 3.0 requires
//!   (`opening_hours`, `feed_contact_email`).
//!
//! Both list `vehicle_types.json` (a classic bike and an e-bike), because stations report
//! `vehicle_types_available`.

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{StationInfo, StationStatus, SystemInfo, VehicleTypeCount};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::SimulatorError;
use super::city::{CLASSIC_VEHICLE_TYPE, EBIKE_VEHICLE_TYPE};

/// Contact address published in `system_information` (required in GBFS 3.0).
pub const FEED_CONTACT_EMAIL: &str = "feeds@sim-city.example";
/// Opening hours published in GBFS 3.0 `system_information` (OSM syntax).
pub const OPENING_HOURS: &str = "24/7";
/// Range of an e-bike on a full battery, metres (required for electric vehicle types).
pub const EBIKE_RANGE_METERS: u32 = 60_000;

/// A GBFS version the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GbfsVersion {
    #[serde(rename = "2.3")]
    V2_3,
    #[serde(rename = "3.0")]
    V3_0,
}

impl GbfsVersion {
    pub const ALL: [GbfsVersion; 2] = [GbfsVersion::V2_3, GbfsVersion::V3_0];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2_3 => "2.3",
            Self::V3_0 => "3.0",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A GBFS file the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    Gbfs,
    GbfsVersions,
    SystemInformation,
    VehicleTypes,
    StationInformation,
    StationStatus,
}

impl Feed {
    pub const ALL: [Feed; 6] = [
        Feed::Gbfs,
        Feed::GbfsVersions,
        Feed::SystemInformation,
        Feed::VehicleTypes,
        Feed::StationInformation,
        Feed::StationStatus,
    ];

    /// The feed's name in `gbfs.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gbfs => "gbfs",
            Self::GbfsVersions => "gbfs_versions",
            Self::SystemInformation => "system_information",
            Self::VehicleTypes => "vehicle_types",
            Self::StationInformation => "station_information",
            Self::StationStatus => "station_status",
        }
    }

    /// `<name>.json`, the last segment of the feed's URL.
    pub fn file_name(self) -> String {
        format!("{}.json", self.name())
    }

    pub fn from_file_name(file: &str) -> Option<Self> {
        let name = file.strip_suffix(".json")?;
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The URL of `feed` in `version` under `base_url` (no trailing slash).
pub fn feed_url(base_url: &str, version: GbfsVersion, feed: Feed) -> String {
    format!("{base_url}/gbfs/{}/{}", version.as_str(), feed.file_name())
}

/// What every document's header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub last_updated: Timestamp,
    /// Seconds until the data may change.
    pub ttl: u32,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Time {
    Posix(i64),
    Rfc3339(String),
}

fn time(version: GbfsVersion, t: Timestamp) -> Time {
    match version {
        GbfsVersion::V2_3 => Time::Posix(t.secs()),
        GbfsVersion::V3_0 => Time::Rfc3339(t.to_rfc3339()),
    }
}

#[derive(Serialize)]
struct Document<T> {
    last_updated: Time,
    ttl: u32,
    version: &'static str,
    data: T,
}

fn document<T: Serialize>(
    what: &'static str,
    version: GbfsVersion,
    header: Header,
    data: T,
) -> Result<Vec<u8>, SimulatorError> {
    let doc = Document {
        last_updated: time(version, header.last_updated),
        ttl: header.ttl,
        version: version.as_str(),
        data,
    };
    serde_json::to_vec(&doc).map_err(|source| SimulatorError::Render { what, source })
}

#[derive(Serialize)]
struct Localized<'a> {
    text: &'a str,
    language: &'a str,
}

fn localized<'a>(text: &'a str, language: &'a str) -> [Localized<'a>; 1] {
    [Localized { text, language }]
}

/// The feeds listed in `gbfs.json`.
const LISTED: [Feed; 5] = [
    Feed::SystemInformation,
    Feed::VehicleTypes,
    Feed::StationInformation,
    Feed::StationStatus,
    Feed::GbfsVersions,
];

/// `gbfs.json`: auto-discovery, with absolute URLs under `base_url`.
pub fn gbfs(
    version: GbfsVersion,
    header: Header,
    base_url: &str,
    language: &str,
) -> Result<Vec<u8>, SimulatorError> {
    let feeds: Vec<_> = LISTED
        .iter()
        .map(|&f| json!({"name": f.name(), "url": feed_url(base_url, version, f)}))
        .collect();
    let data = match version {
        GbfsVersion::V2_3 => json!({ language: { "feeds": feeds } }),
        GbfsVersion::V3_0 => json!({ "feeds": feeds }),
    };
    document("gbfs.json", version, header, data)
}

/// `gbfs_versions.json`: every version served, oldest first.
pub fn gbfs_versions(
    version: GbfsVersion,
    header: Header,
    base_url: &str,
) -> Result<Vec<u8>, SimulatorError> {
    let versions: Vec<_> = GbfsVersion::ALL
        .iter()
        .map(|&v| json!({"version": v.as_str(), "url": feed_url(base_url, v, Feed::Gbfs)}))
        .collect();
    document(
        "gbfs_versions.json",
        version,
        header,
        json!({ "versions": versions }),
    )
}

/// `system_information.json`.
pub fn system_information(
    version: GbfsVersion,
    header: Header,
    system: &SystemInfo,
) -> Result<Vec<u8>, SimulatorError> {
    let language = system.language.as_deref().unwrap_or("en");
    let data = match version {
        GbfsVersion::V2_3 => json!({
            "system_id": system.system_id.as_str(),
            "language": language,
            "name": system.name,
            "operator": "bikeshare simulator",
            "timezone": system.timezone,
            "feed_contact_email": FEED_CONTACT_EMAIL,
        }),
        GbfsVersion::V3_0 => json!({
            "system_id": system.system_id.as_str(),
            "languages": [language],
            "name": localized(&system.name, language),
            "operator": localized("bikeshare simulator", language),
            "opening_hours": OPENING_HOURS,
            "feed_contact_email": FEED_CONTACT_EMAIL,
            "timezone": system.timezone,
        }),
    };
    document("system_information.json", version, header, data)
}

/// `vehicle_types.json`: a classic bike and an e-bike.
pub fn vehicle_types(
    version: GbfsVersion,
    header: Header,
    language: &str,
) -> Result<Vec<u8>, SimulatorError> {
    let name = |text| gbfs_name(version, text, language);
    let data = json!({ "vehicle_types": [
        {
            "vehicle_type_id": CLASSIC_VEHICLE_TYPE,
            "form_factor": "bicycle",
            "propulsion_type": "human",
            "name": name("Classic bike"),
        },
        {
            "vehicle_type_id": EBIKE_VEHICLE_TYPE,
            "form_factor": "bicycle",
            "propulsion_type": "electric_assist",
            "max_range_meters": EBIKE_RANGE_METERS,
            "name": name("E-bike"),
        },
    ]});
    document("vehicle_types.json", version, header, data)
}

#[derive(Serialize)]
struct Stations<T> {
    stations: Vec<T>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Name<'a> {
    Plain(&'a str),
    Localized([Localized<'a>; 1]),
}

#[derive(Serialize)]
struct InfoItem<'a> {
    station_id: &'a str,
    name: Name<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    short_name: Option<Name<'a>>,
    lat: f64,
    lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    region_id: Option<&'a str>,
    is_virtual_station: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<u32>,
}

/// A name in the version's form: plain text in 2.3, localized text in 3.0.
fn gbfs_name<'a>(version: GbfsVersion, text: &'a str, language: &'a str) -> Name<'a> {
    match version {
        GbfsVersion::V2_3 => Name::Plain(text),
        GbfsVersion::V3_0 => Name::Localized([Localized { text, language }]),
    }
}

/// `station_information.json`.
pub fn station_information(
    version: GbfsVersion,
    header: Header,
    stations: &[StationInfo],
    language: &str,
) -> Result<Vec<u8>, SimulatorError> {
    let items = stations
        .iter()
        .map(|s| InfoItem {
            station_id: s.station_id.as_str(),
            name: gbfs_name(version, &s.name, language),
            short_name: s
                .short_name
                .as_deref()
                .map(|n| gbfs_name(version, n, language)),
            lat: s.lat,
            lon: s.lon,
            region_id: s.region_id.as_deref(),
            is_virtual_station: s.is_virtual_station,
            capacity: s.capacity,
        })
        .collect();
    document(
        "station_information.json",
        version,
        header,
        Stations { stations: items },
    )
}

#[derive(Serialize)]
struct StatusV23<'a> {
    station_id: &'a str,
    num_bikes_available: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_ebikes_available: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_bikes_disabled: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_docks_available: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_docks_disabled: Option<u32>,
    is_installed: bool,
    is_renting: bool,
    is_returning: bool,
    last_reported: i64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    vehicle_types_available: &'a [VehicleTypeCount],
}

#[derive(Serialize)]
struct StatusV30<'a> {
    station_id: &'a str,
    num_vehicles_available: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_vehicles_disabled: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_docks_available: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_docks_disabled: Option<u32>,
    is_installed: bool,
    is_renting: bool,
    is_returning: bool,
    last_reported: String,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    vehicle_types_available: &'a [VehicleTypeCount],
}

/// `station_status.json`.
pub fn station_status(
    version: GbfsVersion,
    header: Header,
    stations: &[StationStatus],
) -> Result<Vec<u8>, SimulatorError> {
    const WHAT: &str = "station_status.json";
    match version {
        GbfsVersion::V2_3 => {
            let items = stations
                .iter()
                .map(|s| StatusV23 {
                    station_id: s.station_id.as_str(),
                    num_bikes_available: s.num_bikes_available,
                    num_ebikes_available: s.num_ebikes_available,
                    num_bikes_disabled: s.num_bikes_disabled,
                    num_docks_available: s.num_docks_available,
                    num_docks_disabled: s.num_docks_disabled,
                    is_installed: s.is_installed,
                    is_renting: s.is_renting,
                    is_returning: s.is_returning,
                    last_reported: s.last_reported.secs(),
                    vehicle_types_available: &s.vehicle_types_available,
                })
                .collect();
            document(WHAT, version, header, Stations { stations: items })
        }
        GbfsVersion::V3_0 => {
            let items = stations
                .iter()
                .map(|s| StatusV30 {
                    station_id: s.station_id.as_str(),
                    num_vehicles_available: s.num_bikes_available,
                    num_vehicles_disabled: s.num_bikes_disabled,
                    num_docks_available: s.num_docks_available,
                    num_docks_disabled: s.num_docks_disabled,
                    is_installed: s.is_installed,
                    is_renting: s.is_renting,
                    is_returning: s.is_returning,
                    last_reported: s.last_reported.to_rfc3339(),
                    vehicle_types_available: &s.vehicle_types_available,
                })
                .collect();
            document(WHAT, version, header, Stations { stations: items })
        }
    }
}

/// The `ttl` of the feeds: a report changes at most once per simulated minute, which is
/// `60 / effective_scale` real seconds (0 when that is below a second).
pub fn ttl_seconds(effective_scale: f64) -> u32 {
    if effective_scale.is_nan() || effective_scale <= 0.0 {
        return 60;
    }
    (60.0 / effective_scale).floor().clamp(0.0, 86_400.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{City, CityConfig};
    use serde_json::Value;

    fn city() -> City {
        let mut c = City::new(
            CityConfig {
                stations: 5,
                ..CityConfig::default()
            },
            Timestamp::from_secs(1_717_400_000),
        )
        .unwrap();
        c.advance_to(Timestamp::from_secs(1_717_400_000 + 3600));
        c
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn versions_differ_where_the_spec_does() {
        let c = city();
        let h = Header {
            last_updated: c.now(),
            ttl: 60,
        };
        let s23 = parse(&station_status(GbfsVersion::V2_3, h, &c.station_status()).unwrap());
        let s30 = parse(&station_status(GbfsVersion::V3_0, h, &c.station_status()).unwrap());
        assert_eq!(s23["last_updated"], c.now().secs());
        assert_eq!(s30["last_updated"], c.now().to_rfc3339());
        assert_eq!(s23["version"], "2.3");
        let (a, b) = (&s23["data"]["stations"][0], &s30["data"]["stations"][0]);
        assert_eq!(a["num_bikes_available"], b["num_vehicles_available"]);
        assert!(a["last_reported"].is_i64() && b["last_reported"].is_string());
        assert!(b.get("num_bikes_available").is_none());

        let i30 = parse(
            &station_information(GbfsVersion::V3_0, h, &c.station_information(), "en").unwrap(),
        );
        assert_eq!(i30["data"]["stations"][0]["name"][0]["language"], "en");
        let g23 = parse(&gbfs(GbfsVersion::V2_3, h, "http://x:1", "en").unwrap());
        let g30 = parse(&gbfs(GbfsVersion::V3_0, h, "http://x:1", "en").unwrap());
        assert_eq!(
            g23["data"]["en"]["feeds"][0]["url"],
            "http://x:1/gbfs/2.3/system_information.json"
        );
        assert_eq!(g30["data"]["feeds"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn ttl_follows_the_scale() {
        assert_eq!(ttl_seconds(1.0), 60);
        assert_eq!(ttl_seconds(0.5), 120);
        assert_eq!(ttl_seconds(60.0), 1);
        assert_eq!(ttl_seconds(120.0), 0);
        assert_eq!(ttl_seconds(f64::NAN), 60);
    }

    #[test]
    fn feed_names_round_trip() {
        for f in Feed::ALL {
            assert_eq!(Feed::from_file_name(&f.file_name()), Some(f));
        }
        assert_eq!(Feed::from_file_name("free_bike_status.json"), None);
        assert_eq!(GbfsVersion::parse("3.0"), Some(GbfsVersion::V3_0));
    }
}
