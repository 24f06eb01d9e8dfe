//! The feature schema: one ordered, named, versioned definition, used online and offline.
//!
//! The schema id is a hash of every feature's name and definition, in order, so a model
//! trained on one schema refuses features computed by another.

use bikeshare_types::contracts::FeatureSchemaId;
use bikeshare_types::ids::deterministic_id;

/// One feature: a name and a definition precise enough to recompute it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureDef {
    pub name: String,
    pub definition: String,
}

/// The ordered feature definitions for a set of window lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSchema {
    pub version: u32,
    pub features: Vec<FeatureDef>,
    pub window_minutes: Vec<u32>,
    /// The labels' horizon: how far the demand profile's features look ahead.
    pub horizon_minutes: u32,
    id: FeatureSchemaId,
}

/// The statistics computed for every window, in order.
pub const WINDOW_STATS: &[(&str, &str)] = &[
    (
        "mean_bikes",
        "time-weighted mean of bikes available over the window",
    ),
    (
        "mean_fill",
        "mean bikes / (mean bikes + mean docks) over the window",
    ),
    (
        "min_bikes",
        "minimum bikes available held during the window",
    ),
    (
        "max_bikes",
        "maximum bikes available held during the window",
    ),
    (
        "delta_bikes",
        "bikes now minus bikes held at the window start",
    ),
    (
        "minutes_to_empty",
        "bikes / (departures - arrivals per minute over the window), minutes until no bike at the window's net flow; 0 when empty; 1440 (a day) when not draining, or beyond",
    ),
    (
        "minutes_to_full",
        "docks / (arrivals - departures per minute over the window), minutes until no dock at the window's net flow; 0 when full; 1440 when not filling, or beyond; missing without docks",
    ),
    (
        "minutes_empty",
        "minutes of the window with no bike while renting",
    ),
    (
        "minutes_full",
        "minutes of the window with no dock while returning",
    ),
    ("reports", "station reports inside the window"),
    (
        "arrivals",
        "sum of increases in bikes between reports inside the window",
    ),
    (
        "departures",
        "sum of decreases in bikes between reports inside the window",
    ),
];

const CURRENT: &[(&str, &str)] = &[
    (
        "bikes",
        "bikes available in the last report at or before as_of",
    ),
    (
        "docks",
        "docks available in the last report (missing when not reported)",
    ),
    (
        "capacity",
        "station capacity from station_information (missing when unknown)",
    ),
    ("fill", "bikes / (bikes + docks) in the last report"),
    (
        "ebikes",
        "e-bikes available in the last report (missing when not reported)",
    ),
    ("bikes_disabled", "disabled bikes in the last report"),
    ("docks_disabled", "disabled docks in the last report"),
    ("is_renting", "1 when the station is renting, else 0"),
    (
        "is_returning",
        "1 when the station is accepting returns, else 0",
    ),
    (
        "is_empty",
        "1 when no bike is available while renting, else 0",
    ),
    (
        "is_full",
        "1 when no dock is available while returning, else 0",
    ),
    (
        "minutes_since_report",
        "minutes from the last report to as_of (staleness)",
    ),
    (
        "minutes_since_empty",
        "minutes since the station was last empty; 0 if empty now; missing if never seen",
    ),
    (
        "minutes_since_full",
        "minutes since the station was last full; 0 if full now; missing if never seen",
    ),
];

const TIME: &[(&str, &str)] = &[
    (
        "hour_sin",
        "sin(2π·h/24), h = local hour of as_of with minutes as a fraction, system time zone",
    ),
    ("hour_cos", "cos(2π·h/24), as hour_sin"),
    (
        "dow_sin",
        "sin(2π·d/7), d = local day of week of as_of, Monday = 0",
    ),
    ("dow_cos", "cos(2π·d/7), as dow_sin"),
    ("is_weekend", "1 on local Saturday and Sunday, else 0"),
];

const NEIGHBOURS: &[(&str, &str)] = &[
    (
        "nb_count",
        "neighbours: the k nearest stations within the radius that have reported",
    ),
    ("nb_mean_fill", "mean fill of the neighbours' last reports"),
    ("nb_bikes", "sum of bikes available at the neighbours"),
    ("nb_docks", "sum of docks available at the neighbours"),
    ("nb_empty", "neighbours empty now"),
    ("nb_full", "neighbours full now"),
    (
        "nb_trend",
        "sum over neighbours of their delta_bikes in their shortest window of at least 15 min, as of their last update",
    ),
];

/// The station's demand profile by local hour of week ([`crate::profile`]): what the same
/// hours of past weeks looked like, from hours over by `as_of`, over the next `{h}` minutes
/// (the labels' horizon), names and definitions with `{h}` written out.
const PROFILE: &[(&str, &str)] = &[
    (
        "pf_weeks",
        "past weeks the profile has seen of the hours of (as_of, as_of + {h} min] (the fewest of the hours seen); missing when none or without the system's time zone",
    ),
    (
        "pf_departures_{h}m",
        "departures the profile expects in (as_of, as_of + {h} min]: per-hour departures of those hours of the week, averaged over past weeks (the first 6 equally, then fading by 1/6 a week), weighted by overlap; hours of the week are local to the system's time zone (bin = the local hour of week in which each UTC-aligned hour starts)",
    ),
    (
        "pf_arrivals_{h}m",
        "arrivals the profile expects in (as_of, as_of + {h} min], as pf_departures_{h}m",
    ),
    (
        "pf_empty_share",
        "share of past weeks with an empty moment in the hours of (as_of, as_of + {h} min], averaged as pf_departures_{h}m",
    ),
    (
        "pf_full_share",
        "share of past weeks with a full moment in those hours, as pf_empty_share",
    ),
    (
        "pf_bikes_{h}m",
        "bikes + pf_arrivals_{h}m - pf_departures_{h}m: bikes in {h} minutes at the profile's net flow (may be negative)",
    ),
    (
        "pf_docks_{h}m",
        "docks - pf_arrivals_{h}m + pf_departures_{h}m: docks in {h} minutes at the profile's net flow; missing without docks",
    ),
    (
        "minutes_to_empty_profile",
        "bikes / (pf_departures_{h}m - pf_arrivals_{h}m per minute): minutes until no bike at the profile's net flow; 0 when empty; 1440 when not draining, or beyond",
    ),
    (
        "minutes_to_full_profile",
        "docks / (pf_arrivals_{h}m - pf_departures_{h}m per minute), as minutes_to_empty_profile; missing without docks",
    ),
];

const WEATHER: &[(&str, &str)] = &[
    (
        "temperature_c",
        "temperature of the latest weather observation at or before as_of",
    ),
    (
        "precipitation_mm",
        "precipitation of that observation, mm in the hour",
    ),
    ("wind_speed_kmh", "wind speed of that observation"),
    ("humidity_pct", "relative humidity of that observation"),
    (
        "weather_age_minutes",
        "minutes from that observation's hour to as_of",
    ),
];

impl FeatureSchema {
    /// The version this code computes (3: the demand profile by local hours of the week, and
    /// over the configured horizon).
    pub const VERSION: u32 = 3;
    /// The horizon of [`Self::current`] (the processor's default).
    pub const DEFAULT_HORIZON_MINUTES: u32 = 30;

    /// The current schema (version [`Self::VERSION`]) with the given window lengths
    /// (minutes) and the default horizon ([`Self::DEFAULT_HORIZON_MINUTES`]): what the
    /// processor computes with that horizon.
    pub fn current(window_minutes: &[u32]) -> Self {
        Self::with_horizon(window_minutes, Self::DEFAULT_HORIZON_MINUTES)
    }

    /// The current schema for the given windows and labels' horizon (minutes): what a
    /// processor with that configuration computes. Another horizon gives other profile
    /// features (their names say it: `pf_departures_{h}m`), so another id.
    pub fn with_horizon(window_minutes: &[u32], horizon_minutes: u32) -> Self {
        let mut features = Vec::new();
        let mut push =
            |name: String, definition: String| features.push(FeatureDef { name, definition });
        for (n, d) in CURRENT {
            push((*n).into(), (*d).into());
        }
        for w in window_minutes {
            for (n, d) in WINDOW_STATS {
                push(
                    format!("{n}_{w}m"),
                    format!("{d}; window ({w} min before as_of, as_of]"),
                );
            }
        }
        for (n, d) in TIME.iter().chain(NEIGHBOURS) {
            push((*n).into(), (*d).into());
        }
        let h = horizon_minutes.to_string();
        for (n, d) in PROFILE {
            push(n.replace("{h}", &h), d.replace("{h}", &h));
        }
        for (n, d) in WEATHER {
            push((*n).into(), (*d).into());
        }
        let mut parts: Vec<Vec<u8>> =
            vec![format!("feature-schema-v{}", Self::VERSION).into_bytes()];
        for f in &features {
            parts.push(f.name.as_bytes().to_vec());
            parts.push(f.definition.as_bytes().to_vec());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let id = FeatureSchemaId(
            format!(
                "fs{}-{}",
                Self::VERSION,
                &deterministic_id(&refs).as_str()[..16]
            )
            .into(),
        );
        Self {
            version: Self::VERSION,
            features,
            window_minutes: window_minutes.to_vec(),
            horizon_minutes,
            id,
        }
    }

    pub fn id(&self) -> &FeatureSchemaId {
        &self.id
    }
    pub fn len(&self) -> usize {
        self.features.len()
    }
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }
    /// Index of a feature by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_names_definitions_and_order() {
        let a = FeatureSchema::current(&[5, 15, 30, 60]);
        assert_eq!(a.id(), FeatureSchema::current(&[5, 15, 30, 60]).id());
        assert_ne!(a.id(), FeatureSchema::current(&[15, 5, 30, 60]).id());
        assert_ne!(a.id(), FeatureSchema::current(&[5, 15, 30]).id());
        assert!(a.id().0.starts_with("fs3-"), "{}", a.id().0);
        let h45 = FeatureSchema::with_horizon(&[5, 15, 30, 60], 45);
        assert_ne!(a.id(), h45.id(), "the profile looks over the horizon");
        assert!(h45.index("pf_departures_45m").is_some());
        assert!(h45.index("pf_departures_30m").is_none());
        assert_eq!(
            FeatureSchema::with_horizon(&[5, 15, 30, 60], 30).id(),
            a.id()
        );
        assert_eq!(a.len(), 14 + 4 * WINDOW_STATS.len() + 5 + 7 + 9 + 5);
        let names: std::collections::HashSet<_> = a.names().collect();
        assert_eq!(names.len(), a.len(), "names are unique");
    }
}
