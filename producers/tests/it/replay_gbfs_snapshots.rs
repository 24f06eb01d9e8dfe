//! Replays the real raw GBFS snapshots of the shared data (Ecobici 2024: GBFS 1.x documents
//! with `station_information`; Toronto 2020: bare station lists named by their hour) through
//! the same validation as live polling, with the official JSON schemas. Skipped when
//! `../shared/data` is absent.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bikeshare_producers::replay::{ReplaySource, ReplayStats};
use bikeshare_testkit::shared_data::shared_data_or_skip;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{DeadLetter, Envelope, Event};
use serde_json::Value;

use crate::replay_support::{
    self as support, assert_event_time_order, assert_no_report_repeated, statuses,
};

async fn replay(
    data: &Path,
    files_or_dirs: Vec<PathBuf>,
    station_information: Vec<PathBuf>,
    time_zone: &str,
) -> (ReplayStats, Vec<Envelope>, Vec<DeadLetter>) {
    support::replay(
        ReplaySource::GbfsSnapshots {
            files_or_dirs,
            station_information,
            schema_dir: Some(data.join("gbfs-json-schema")),
        },
        time_zone,
    )
    .await
}

/// Every station record of the raw files, counted independently: `(files, records)`.
fn station_records(files: &[PathBuf]) -> (Vec<Vec<Value>>, usize) {
    let docs: Vec<Vec<Value>> = files
        .iter()
        .map(|f| {
            let doc: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            let list = doc.pointer("/data/stations").unwrap_or(&doc);
            list.as_array().unwrap().clone()
        })
        .collect();
    let n = docs.iter().map(Vec::len).sum();
    (docs, n)
}

/// The `last_updated` of each feed heartbeat.
fn heartbeats(events: &[Envelope]) -> Vec<Timestamp> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::FeedHeartbeat(h) => Some(h.last_updated),
            _ => None,
        })
        .collect()
}

/// What every replay of raw snapshots must hold: event-time order, each record an event, a
/// dead letter or unchanged, and no station repeated unchanged.
fn check_common(stats: &ReplayStats, events: &[Envelope], dead: &[DeadLetter], records: usize) {
    assert_event_time_order(stats, events);
    assert_eq!(stats.rows, records as u64);
    let statuses = statuses(events);
    assert!(statuses.len() + dead.len() <= records);
    assert_no_report_repeated(&statuses);
    for s in &statuses {
        assert_eq!(
            events
                .iter()
                .find(|e| matches!(&e.event, Event::StationStatus(x) if x == *s))
                .map(|e| e.event_time),
            Some(s.last_reported)
        );
    }
}

#[tokio::test]
async fn ecobici_raw_snapshots_with_station_information() {
    let Some(data) = shared_data_or_skip("replay_gbfs_snapshots ecobici") else {
        return;
    };
    let dir = data.join("real/ecobici-cdmx-hourly");
    let samples = dir.join("raw_samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (docs, records) = station_records(&files);
    let infos = vec![
        dir.join("station_information_20240422210451.json"),
        dir.join("station_information_20240405210456.json"),
    ];
    let (stats, events, dead) = replay(&data, vec![samples], infos, "America/Mexico_City").await;
    check_common(&stats, &events, &dead, records);
    assert!(dead.is_empty(), "real Ecobici records are valid: {dead:#?}");

    // The first snapshot: every station reports; later ones: only the changed ones.
    let statuses = statuses(&events);
    let first_ids: std::collections::HashSet<_> = docs[0]
        .iter()
        .map(|s| s["station_id"].as_str().unwrap())
        .collect();
    assert_eq!(first_ids.len(), 667);
    let changed_later = statuses.len() - first_ids.len();
    let unchanged = records - statuses.len();
    eprintln!(
        "{} statuses ({changed_later} changes after the first snapshot), {unchanged} unchanged",
        statuses.len()
    );
    // Lyft stations report every few minutes: most change within an hour, a few do not.
    assert!(changed_later > 1000 && unchanged > 0);

    // The earliest station_information leads (given last, read first), at the first event's
    // time, in Mexico City; the later one is 17 days after the last status, so it comes last.
    let leading: Vec<_> = events
        .iter()
        .take_while(|e| matches!(e.event, Event::StationInfo(_)))
        .collect();
    // 667 stations, of which two placeholders at (0, 0) without docks are skipped.
    assert_eq!(leading.len(), 665);
    assert!(leading.iter().all(|e| {
        e.source == "replay:station_information_20240405210456.json"
            && Some(e.event_time) == stats.first_event_time
            && matches!(&e.event, Event::StationInfo(i)
                if (19.0..20.0).contains(&i.lat) && (-99.5..-98.8).contains(&i.lon))
    }));
    let later: Vec<_> = events
        .iter()
        .skip(leading.len())
        .filter(|e| matches!(e.event, Event::StationInfo(_)))
        .collect();
    assert!(later.iter().all(
        |e| e.source == "replay:station_information_20240422210451.json"
            && e.event_time == Timestamp::from_secs(1_713_819_884)
    ));
    assert_eq!(
        heartbeats(&events),
        [1_712_351_088, 1_712_354_729, 1_712_358_300].map(Timestamp::from_secs)
    );
}

#[tokio::test]
async fn toronto_bare_station_lists_named_by_their_hour() {
    let Some(data) = shared_data_or_skip("replay_gbfs_snapshots toronto") else {
        return;
    };
    let samples = data.join("real/toronto-bikeshare-hourly-2020/raw_samples");
    let files = vec![
        samples.join("2020-05-12-13-00-00.json"),
        samples.join("2020-05-12-12-00-00.json"),
    ];
    let (_, records) = station_records(&files);
    let (stats, events, dead) = replay(&data, files, vec![], "America/Toronto").await;
    check_common(&stats, &events, &dead, records);
    assert!(dead.is_empty(), "real Toronto records are valid: {dead:#?}");
    let statuses = statuses(&events);
    assert!(statuses.len() > 467, "{} statuses", statuses.len());
    // PBSC's e-bike counts come through, and the snapshots are read 12:00 then 13:00.
    assert!(statuses.iter().any(|s| s.num_ebikes_available.is_some()));
    let hours = ["2020-05-12T12:00:00Z", "2020-05-12T13:00:00Z"];
    assert_eq!(
        heartbeats(&events),
        hours.map(|h| Timestamp::parse_rfc3339(h).unwrap())
    );
}
