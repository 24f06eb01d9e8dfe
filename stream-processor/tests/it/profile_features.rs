//! The features that look ahead (the demand profile by hour of week, the minutes to empty and
//! to full) through the real processor: what they say about a station with a known weekly
//! pattern, and that every feature at `as_of` depends on nothing after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::{Emitted, Processor, ProcessorConfig};
use bikeshare_testkit::envelopes::status_envelope;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::Envelope;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// Monday 2024-06-03 00:00 UTC.
const MONDAY: i64 = 1_717_372_800_000;
const CAPACITY: u32 = 20;

/// Bikes of the patterned station at minute `m` of a day: 10, drained at 08:00 (5 leave) and
/// 08:10 (5 more: empty), refilled at 09:00.
fn bikes_at(m: i64) -> u32 {
    match m {
        480..490 => 5,
        490..540 => 0,
        _ => 10,
    }
}

/// A report every 10 minutes for `days` days.
fn patterned(days: i64) -> Vec<Envelope> {
    (0..days * 144)
        .map(|k| {
            let t = MONDAY + k * 10 * MIN;
            let b = bikes_at((k * 10) % (24 * 60));
            status_envelope("pattern", "test", "s1", t, b, CAPACITY - b)
        })
        .collect()
}

/// Every row's values by `(as_of, station)` (the last row of each).
fn rows(p: &mut Processor, events: Vec<Envelope>) -> BTreeMap<(i64, String), Vec<Option<f32>>> {
    let mut out = Vec::new();
    let mut rows = BTreeMap::new();
    for env in events {
        p.process(env, &mut out);
        for e in out.drain(..) {
            if let Emitted::Row(r) = e {
                rows.insert(
                    (r.vector.as_of.millis(), r.vector.station_id.to_string()),
                    r.vector.values,
                );
            }
        }
    }
    rows
}

#[test]
fn the_profile_learns_a_weekly_pattern_from_past_weeks_only() {
    let mut p = Processor::new(ProcessorConfig::default());
    let schema = p.schema().clone();
    let rows = rows(&mut p, patterned(15));
    let at = |day: i64, minute: i64, name: &str| {
        let values = rows
            .get(&(MONDAY + day * DAY + minute * MIN, "s1".to_owned()))
            .unwrap_or_else(|| panic!("a row on day {day} at minute {minute}"));
        values[schema.index(name).unwrap()]
    };
    // 07:50: the next 30 minutes overlap 10 minutes of hour 7 (quiet) and 20 of hour 8
    // (10 departures, empty).
    for name in ["pf_weeks", "pf_departures_30m", "pf_empty_share"] {
        assert_eq!(
            at(6, 470, name),
            None,
            "day 6: this hour of the week was never over before"
        );
    }
    assert_eq!(at(7, 470, "pf_weeks"), Some(1.0));
    assert_eq!(at(14, 470, "pf_weeks"), Some(2.0));
    let close = |got: Option<f32>, want: f32| {
        let got = got.unwrap();
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    };
    close(at(14, 470, "pf_departures_30m"), 10.0 * 20.0 / 60.0);
    close(at(14, 470, "pf_arrivals_30m"), 0.0);
    close(at(14, 470, "pf_empty_share"), 20.0 / 30.0);
    close(at(14, 470, "pf_full_share"), 0.0);
    close(at(14, 470, "pf_bikes_30m"), 10.0 - 10.0 / 3.0);
    close(at(14, 470, "pf_docks_30m"), 10.0 + 10.0 / 3.0);
    // 10 bikes at 10/3 per 30 minutes: 90 minutes.
    close(at(14, 470, "minutes_to_empty_profile"), 90.0);
    close(at(14, 470, "minutes_to_full_profile"), 1440.0);
    // 12:00: a quiet hour, seen quiet.
    close(at(14, 720, "pf_departures_30m"), 0.0);
    close(at(14, 720, "pf_empty_share"), 0.0);
    // At 08:00, 5 bikes left in the last 15 minutes (10 held at the window's start, 07:45):
    // the other 5 at 1/3 a minute last 15 minutes; at 08:10 it is empty.
    assert_eq!(at(14, 490, "bikes"), Some(0.0));
    close(at(14, 480, "minutes_to_empty_15m"), 15.0);
    close(at(14, 480, "minutes_to_full_15m"), 1440.0);
    close(at(14, 490, "minutes_to_empty_15m"), 0.0);
}

/// A small simulated city over nine days: two weeks' worth of hours of the week are not
/// needed for this, only enough that the profile is in use on the last days.
fn city() -> CityConfig {
    CityConfig {
        system_id: "pit".into(),
        seed: 7,
        stations: 6,
        radius_km: 1.0,
        capacity_min: 6,
        capacity_max: 12,
        trips_per_station_per_day: 60.0,
        heartbeat_minutes: 30,
        ..CityConfig::default()
    }
}

#[test]
fn every_feature_at_as_of_depends_on_nothing_after_it() {
    let from = Timestamp(MONDAY);
    let to = Timestamp(MONDAY + 9 * DAY);
    let events: Vec<Envelope> = history(&city(), from, to).unwrap().collect();
    // In order, no reorder buffer: a row at `as_of` is emitted when the first event at or
    // after it arrives, so a run cut at `cut` has every row before `cut`.
    let config = ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    };
    let mut full = Processor::new(config.clone());
    let schema = full.schema().clone();
    let all = rows(&mut full, events.clone());
    let pf = schema.index("pf_departures_30m").unwrap();
    let with_profile = all
        .iter()
        .filter(|(k, v)| k.0 >= MONDAY + 8 * DAY && v[pf].is_some())
        .count();
    assert!(
        with_profile > 100,
        "the profile is in use on the last day ({with_profile} rows)"
    );
    for cut_day in [7, 8] {
        let cut = MONDAY + cut_day * DAY + 8 * HOUR + 7 * MIN;
        let mut p = Processor::new(config.clone());
        let head: Vec<Envelope> = events
            .iter()
            .filter(|e| e.event_time.millis() < cut)
            .cloned()
            .collect();
        let cut_rows = rows(&mut p, head);
        let mut compared = 0;
        for (key, values) in cut_rows.iter().filter(|(k, _)| k.0 < cut) {
            let same = all
                .get(key)
                .unwrap_or_else(|| panic!("row {key:?} in the full run"));
            for (j, (a, b)) in values.iter().zip(same).enumerate() {
                assert!(
                    a.map(f32::to_bits) == b.map(f32::to_bits),
                    "{key:?}: feature {} is {a:?} cut at {cut}, {b:?} with the later events",
                    schema.features[j].name
                );
            }
            compared += 1;
        }
        assert!(compared > 1000, "compared {compared} rows");
    }
}
