//! Property: for any seed, city size and time, the station documents the simulator serves
//! (both GBFS versions) pass the semantic rules every producer applies.

// Test helpers outside #[test] functions may unwrap too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used)]

use bikeshare_producers::gbfs::rules::{self, RawCounts, RuleConfig};
use bikeshare_simulator::feeds::{self, GbfsVersion, Header};
use bikeshare_simulator::{City, CityConfig};
use bikeshare_types::{StationId, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

/// 2016-01-01 and 2030-01-01, UTC.
const FROM_MS: i64 = 1_451_606_400_000;
const TO_MS: i64 = 1_893_456_000_000;

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn last_reported(version: GbfsVersion, v: &Value) -> Timestamp {
    match version {
        GbfsVersion::V2_3 => Timestamp::from_secs(v["last_reported"].as_i64().unwrap()),
        GbfsVersion::V3_0 => {
            Timestamp::parse_rfc3339(v["last_reported"].as_str().unwrap()).unwrap()
        }
    }
}

fn check(city: &City, version: GbfsVersion) -> Result<(), TestCaseError> {
    let header = Header {
        last_updated: city.now(),
        ttl: 60,
    };
    let info: Value = serde_json::from_slice(
        &feeds::station_information(version, header, &city.station_information(), "en").unwrap(),
    )
    .unwrap();
    let status: Value = serde_json::from_slice(
        &feeds::station_status(version, header, &city.station_status()).unwrap(),
    )
    .unwrap();
    let infos = info["data"]["stations"].as_array().unwrap();
    let statuses = status["data"]["stations"].as_array().unwrap();
    prop_assert_eq!(infos.len(), city.station_count());
    prop_assert_eq!(statuses.len(), city.station_count());

    let config = RuleConfig::default();
    for (i, s) in infos.iter().zip(statuses) {
        let id = StationId::new(s["station_id"].as_str().unwrap());
        prop_assert_eq!(&i["station_id"], &s["station_id"]);
        let (lat, lon) = (i["lat"].as_f64().unwrap(), i["lon"].as_f64().unwrap());
        rules::check_coordinates(&id, lat, lon).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let capacity = i["capacity"].as_u64().map(|c| c as u32);
        let counts = match version {
            GbfsVersion::V2_3 => RawCounts {
                bikes_available: int(s, "num_bikes_available").unwrap(),
                ebikes_available: int(s, "num_ebikes_available"),
                bikes_disabled: int(s, "num_bikes_disabled"),
                docks_available: int(s, "num_docks_available"),
                docks_disabled: int(s, "num_docks_disabled"),
            },
            GbfsVersion::V3_0 => RawCounts {
                bikes_available: int(s, "num_vehicles_available").unwrap(),
                ebikes_available: None,
                bikes_disabled: int(s, "num_vehicles_disabled"),
                docks_available: int(s, "num_docks_available"),
                docks_disabled: int(s, "num_docks_disabled"),
            },
        };
        rules::check_counts(&id, &counts, capacity, &config)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Stricter than the rule's tolerance: the simulator's counts add up exactly.
        let total = counts.bikes_available
            + counts.bikes_disabled.unwrap_or(0)
            + counts.docks_available.unwrap_or(0)
            + counts.docks_disabled.unwrap_or(0);
        prop_assert_eq!(Some(total as u32), capacity);
        let reported = last_reported(version, s);
        rules::check_time(&id, reported, city.now(), &config)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            reported <= city.now(),
            "last_reported after the feed's time"
        );
        let types: i64 = s["vehicle_types_available"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["count"].as_i64().unwrap())
            .sum();
        prop_assert_eq!(types, counts.bikes_available);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn served_station_documents_pass_the_semantic_rules(
        seed in any::<u64>(),
        stations in 1u32..80,
        start_ms in FROM_MS..TO_MS,
        minutes in 0i64..2_500,
        ebike_share in 0.0f64..1.0,
        rebalancing in any::<bool>(),
        centre_lat in -70.0f64..70.0,
        centre_lon in -180.0f64..180.0,
        radius_km in 0.5f64..60.0,
    ) {
        let config = CityConfig {
            seed,
            stations,
            ebike_share,
            rebalancing,
            centre_lat,
            centre_lon,
            radius_km,
            ..CityConfig::default()
        };
        let start = Timestamp(start_ms);
        let mut city = City::new(config, start).unwrap();
        check(&city, GbfsVersion::V2_3)?;
        city.advance_to(start.plus_minutes(minutes));
        check(&city, GbfsVersion::V2_3)?;
        check(&city, GbfsVersion::V3_0)?;
    }
}
