//! The features that look ahead (the demand profile by hour of week, the minutes to empty and
//! to full) through the real processor: what they say about a station with a known weekly
//! pattern, in local hours across daylight-saving changes, over the configured horizon, and
//! that every feature at `as_of` depends on nothing after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::{Emitted, Processor, ProcessorConfig};
use bikeshare_testkit::envelopes::status_envelope;
use bikeshare_types::contracts::{Envelope, Event, StationStatus, SystemInfo};
use bikeshare_types::{SystemId, Timestamp};
use chrono::{TimeZone, Timelike};

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

/// The `SystemInfo` of system `pattern` with time zone `tz`, at `t`.
fn system_info(tz: &str, t: i64) -> Envelope {
    Envelope::new(
        SystemId::new("pattern"),
        "test",
        Timestamp(t),
        Timestamp(t),
        Event::SystemInfo(SystemInfo {
            system_id: SystemId::new("pattern"),
            name: "pattern".into(),
            timezone: tz.into(),
            language: None,
            gbfs_version: "3.0".into(),
        }),
    )
}

/// The system's time zone (UTC), then a report every 10 minutes for `days` days.
fn patterned(days: i64) -> Vec<Envelope> {
    std::iter::once(system_info("Etc/UTC", MONDAY))
        .chain((0..days * 144).map(|k| {
            let t = MONDAY + k * 10 * MIN;
            let b = bikes_at((k * 10) % (24 * 60));
            status_envelope("pattern", "test", "s1", t, b, CAPACITY - b)
        }))
        .collect()
}

const NEW_YORK: chrono_tz::Tz = chrono_tz::America::New_York;

/// UTC ms of a local time in New York (one that exists).
fn ny(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    NEW_YORK
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .unwrap()
        .timestamp_millis()
}

/// New York's time zone, then a report every 10 minutes over `[from, to)`, the pattern of
/// [`bikes_at`] in New York's local time.
fn patterned_in_new_york(from: i64, to: i64) -> Vec<Envelope> {
    std::iter::once(system_info("America/New_York", from))
        .chain((from..to).step_by(10 * MIN as usize).map(|t| {
            let local = NEW_YORK.timestamp_millis_opt(t).unwrap();
            let b = bikes_at(i64::from(local.hour() * 60 + local.minute()));
            status_envelope("pattern", "test", "s1", t, b, CAPACITY - b)
        }))
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

/// On the Monday after a daylight-saving change, 07:50 local reads the Mondays before at
/// 08:00 local (10 departures and an empty moment in the hour after 08:00), although that
/// hour starts at another UTC hour now.
fn the_monday_after_reads_the_same_local_hours(from: i64, monday_0750: i64) {
    let mut p = Processor::new(ProcessorConfig::default());
    let schema = p.schema().clone();
    let rows = rows(&mut p, patterned_in_new_york(from, monday_0750 + HOUR));
    let at = |t: i64, name: &str| {
        let values = rows
            .get(&(t, "s1".to_owned()))
            .unwrap_or_else(|| panic!("a row at {t}"));
        values[schema.index(name).unwrap()]
    };
    let close = |got: Option<f32>, want: f32| {
        let got = got.unwrap();
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    };
    assert_eq!(at(monday_0750, "bikes"), Some(10.0));
    assert_eq!(at(monday_0750, "pf_weeks"), Some(2.0));
    close(at(monday_0750, "pf_departures_30m"), 10.0 * 20.0 / 60.0);
    close(at(monday_0750, "pf_empty_share"), 20.0 / 30.0);
    // An hour earlier (06:50 local, the UTC hour 08:00 local had before the change): quiet.
    close(at(monday_0750 - HOUR, "pf_departures_30m"), 0.0);
    close(at(monday_0750 - HOUR, "pf_empty_share"), 0.0);
}

#[test]
fn the_profile_keeps_local_hours_across_the_march_change_in_new_york() {
    // Mondays 26 February and 4 March (EST), then 11 March (EDT: clocks went forward on
    // Sunday 10 March).
    let from = ny(2024, 2, 26, 0, 0);
    let monday_0750 = ny(2024, 3, 11, 7, 50);
    assert_eq!(
        monday_0750 - ny(2024, 3, 4, 7, 50),
        7 * DAY - HOUR,
        "an hour shorter week"
    );
    the_monday_after_reads_the_same_local_hours(from, monday_0750);
}

#[test]
fn the_profile_keeps_local_hours_across_the_november_change_in_new_york() {
    // Mondays 21 and 28 October (EDT), then 4 November (EST: clocks went back on Sunday 3
    // November).
    let from = ny(2024, 10, 21, 0, 0);
    let monday_0750 = ny(2024, 11, 4, 7, 50);
    assert_eq!(
        monday_0750 - ny(2024, 10, 28, 7, 50),
        7 * DAY + HOUR,
        "an hour longer week"
    );
    the_monday_after_reads_the_same_local_hours(from, monday_0750);
}

#[test]
fn without_a_time_zone_the_profile_is_missing() {
    let mut p = Processor::new(ProcessorConfig::default());
    let schema = p.schema().clone();
    // `patterned` without its `SystemInfo`.
    let rows = rows(&mut p, patterned(15).into_iter().skip(1).collect());
    let pf = schema.index("pf_weeks").unwrap();
    assert!(rows.len() > 1000);
    assert!(
        rows.values().all(|v| v[pf].is_none()),
        "no hour of the week is learned in an unknown zone (never silently UTC)"
    );
}

#[test]
fn the_profile_looks_ahead_over_the_configured_horizon() {
    let config = ProcessorConfig {
        horizon_minutes: 60,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(config);
    let schema = p.schema().clone();
    assert!(schema.index("pf_departures_30m").is_none());
    let rows = rows(&mut p, patterned(15));
    let at = |day: i64, minute: i64, name: &str| {
        rows.get(&(MONDAY + day * DAY + minute * MIN, "s1".to_owned()))
            .unwrap()[schema.index(name).unwrap()]
    };
    let close = |got: Option<f32>, want: f32| {
        let got = got.unwrap();
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    };
    // (07:50, 08:50]: 10 minutes of quiet hour 7, 50 of hour 8 (10 departures).
    close(at(14, 470, "pf_departures_60m"), 10.0 * 50.0 / 60.0);
    close(at(14, 470, "pf_empty_share"), 50.0 / 60.0);
    close(at(14, 470, "pf_bikes_60m"), 10.0 - 10.0 * 50.0 / 60.0);
    // 10 bikes at 50/6 an hour: 72 minutes.
    close(at(14, 470, "minutes_to_empty_profile"), 72.0);
}

/// A small simulated city over nine days: two weeks' worth of hours of the week are not
/// needed for this, only enough that the profile is in use on the last days. Busy, and every
/// station reports at least every 5 minutes, so the reorder buffer (of 10 minutes below)
/// holds each station's next reports while its rows are computed: a feature that read one
/// of them would differ between futures.
fn city() -> CityConfig {
    CityConfig {
        system_id: "pit".into(),
        seed: 7,
        stations: 6,
        radius_km: 1.0,
        capacity_min: 6,
        capacity_max: 12,
        trips_per_station_per_day: 200.0,
        heartbeat_minutes: 5,
        ..CityConfig::default()
    }
}

/// The same events up to `cut`, other ones after it: every station report after `cut` says
/// the opposite (bikes and docks swapped, renting and returning swapped).
fn other_future(events: &[Envelope], cut: i64) -> Vec<Envelope> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e.event_time.millis() > cut
                && let Event::StationStatus(s) = &mut e.event
            {
                let StationStatus {
                    num_bikes_available: bikes,
                    num_docks_available: docks,
                    is_renting,
                    is_returning,
                    ..
                } = s.clone();
                s.num_bikes_available = docks.unwrap_or(0);
                s.num_docks_available = Some(bikes);
                s.is_renting = is_returning;
                s.is_returning = is_renting;
            }
            e
        })
        .collect()
}

/// Two inputs that are the same up to `as_of` and differ after it give the same features at
/// `as_of`, bit for bit: through the reorder buffer (a lateness of 2 and of 10 minutes holds
/// later events while rows are computed) and with the update trigger (early rows from
/// buffered reports), whatever the later events say. A feature that read one buffered event
/// ahead fails it: checked once by letting `ebikes` read the station's next buffered report.
/// Each run replays 9 days of 6 busy stations (~10 s in a debug build for all nine runs).
#[test]
fn every_feature_at_as_of_depends_on_nothing_after_it() {
    let from = Timestamp(MONDAY);
    let to = Timestamp(MONDAY + 9 * DAY);
    let events: Vec<Envelope> = history(&city(), from, to).unwrap().collect();
    for config in [
        ProcessorConfig::default(),
        ProcessorConfig {
            lateness_ms: 10 * MIN,
            ..ProcessorConfig::default()
        },
        ProcessorConfig {
            lateness_ms: 10 * MIN,
            score_on_arrival: true,
            ..ProcessorConfig::default()
        },
    ] {
        let mut p = Processor::new(config.clone());
        let schema = p.schema().clone();
        let all = rows(&mut p, events.clone());
        let pf = schema.index("pf_departures_30m").unwrap();
        let with_profile = all
            .iter()
            .filter(|(k, v)| k.0 >= MONDAY + 8 * DAY && v[pf].is_some())
            .count();
        assert!(
            with_profile > 100,
            "the profile is in use on the last day ({with_profile} rows)"
        );
        // Cuts in busy hours (the morning and evening peaks), at a minute the stations
        // report and between reports.
        let mut compared = 0;
        for cut in [
            MONDAY + 7 * DAY + 8 * HOUR + 7 * MIN,
            MONDAY + 8 * DAY + 17 * HOUR + 2 * MIN + 30_000,
        ] {
            let other = other_future(&events, cut);
            assert_ne!(other, events, "the futures differ");
            let mut q = Processor::new(config.clone());
            let other_rows = rows(&mut q, other);
            let changed = other_rows
                .iter()
                .filter(|(k, v)| all.get(k).is_some_and(|w| w != *v))
                .count();
            assert!(changed > 100, "rows after {cut} differ ({changed})");
            for (key, values) in all.iter().filter(|(k, _)| k.0 <= cut) {
                let same = other_rows
                    .get(key)
                    .unwrap_or_else(|| panic!("row {key:?} with the other future"));
                for (j, (a, b)) in values.iter().zip(same).enumerate() {
                    assert!(
                        a.map(f32::to_bits) == b.map(f32::to_bits),
                        "{key:?}: feature {} is {a:?}, {b:?} with another future after {cut}",
                        schema.features[j].name
                    );
                }
                compared += 1;
            }
        }
        assert!(compared > 5000, "compared {compared} rows");
    }
}
