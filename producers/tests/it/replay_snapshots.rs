//! Replays the real hourly snapshot sets (Toronto 2020, Ecobici 2024) from the shared data:
//! event-time order, only changed reports, every row accounted for, and Ecobici's station
//! descriptions first. Skipped when `../shared/data` is absent.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;

use bikeshare_producers::replay::{ReplaySource, ReplayStats};
use bikeshare_testkit::shared_data::shared_data_or_skip;
use bikeshare_types::StationId;
use bikeshare_types::contracts::{DeadLetter, Envelope, Event};

use crate::replay_support::{assert_event_time_order, assert_no_report_repeated, replay, statuses};

/// Checks what every snapshot replay must hold; returns the status events' stations.
fn check_common(
    stats: &ReplayStats,
    events: &[Envelope],
    dead: &[DeadLetter],
) -> HashSet<StationId> {
    assert_event_time_order(stats, events);
    let statuses = statuses(events);
    let file_dead = dead
        .iter()
        .filter(|d| d.source == "replay:station_status_hourly.csv.gz")
        .count();
    let unchanged = stats.rows as usize - statuses.len() - file_dead;
    eprintln!(
        "{} statuses, {file_dead} dead, {unchanged} unchanged rows",
        statuses.len()
    );
    assert!(statuses.len() > 10_000);
    assert!(unchanged > 0, "unchanged reports are not repeated");
    assert!(file_dead * 20 < stats.rows as usize, "under 5% dead");
    assert_no_report_repeated(&statuses);
    statuses.iter().map(|s| s.station_id.clone()).collect()
}

#[tokio::test]
async fn toronto_hourly_snapshots() {
    let Some(data) = shared_data_or_skip("replay_snapshots toronto") else {
        return;
    };
    let dir = data.join("real/toronto-bikeshare-hourly-2020");
    let source = ReplaySource::Snapshots {
        files: vec![dir.join("station_status_hourly.csv.gz")],
        station_information: vec![],
    };
    let (stats, events, dead) = replay(source, "America/Toronto").await;
    assert_eq!(stats.rows, 121_395);
    let stations = check_common(&stats, &events, &dead);
    assert!(stations.len() > 400, "{} stations", stations.len());
    assert!(
        events
            .iter()
            .all(|e| matches!(e.event, Event::StationStatus(_))),
        "no station_information"
    );
}

#[tokio::test]
async fn ecobici_hourly_snapshots_with_station_information() {
    let Some(data) = shared_data_or_skip("replay_snapshots ecobici") else {
        return;
    };
    let dir = data.join("real/ecobici-cdmx-hourly");
    let infos: Vec<PathBuf> = [
        "station_information_20240405210456.json",
        "station_information_20240422210451.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let source = ReplaySource::Snapshots {
        files: vec![dir.join("station_status_hourly.csv.gz")],
        station_information: infos,
    };
    let (stats, events, dead) = replay(source, "America/Mexico_City").await;
    assert_eq!(stats.rows, 265_466);
    check_common(&stats, &events, &dead);
    let infos: Vec<_> = events
        .iter()
        .take_while(|e| matches!(e.event, Event::StationInfo(_)))
        .map(|e| match &e.event {
            Event::StationInfo(i) => i,
            _ => unreachable!(),
        })
        .collect();
    assert!(infos.len() > 600, "{} station descriptions", infos.len());
    assert!(
        infos
            .iter()
            .all(|i| (19.0..20.0).contains(&i.lat) && (-99.5..-98.8).contains(&i.lon)),
        "Mexico City"
    );
    let after: usize = events
        .iter()
        .skip(infos.len())
        .filter(|e| matches!(e.event, Event::StationInfo(_)))
        .count();
    assert_eq!(after, 0, "descriptions come first");
}
