//! Replays a real Bluebikes month (January 2021, ~144k station reports) from the shared data
//! into memory: event-time order, every row accounted for, station descriptions first, only
//! truly bad rows dead-lettered (the 2023 `stations.csv` capacities do not reject 2021
//! reports; descriptions rise to what reports show), and deterministic ids. Skipped when
//! `../shared/data` is absent.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use bikeshare_producers::output::MemoryOutput;
use bikeshare_producers::replay::{ReplayConfig, ReplaySource, ReplayStats, Replayer};
use bikeshare_testkit::shared_data::shared_data_or_skip;
use bikeshare_types::contracts::{Envelope, Event};
use bikeshare_types::time::ManualClock;
use bikeshare_types::{EventId, SharedClock, Timestamp};

use crate::replay_support::assert_event_time_order;

const MONTH: &str = "station_status_2021-01.csv.bz2";

/// Data rows of a bz2 CSV, counted independently of the replay code.
fn data_rows(path: &Path) -> u64 {
    let reader = BufReader::new(bzip2::read::MultiBzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ));
    let non_empty = reader
        .lines()
        .map(Result::unwrap)
        .filter(|l| !l.trim().is_empty())
        .count();
    non_empty as u64 - 1
}

/// Station ids of `stations.csv` with numeric, non-zero coordinates.
fn stations_with_coordinates(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "station_id,short_name,name,lat,lon,capacity,source"
    );
    lines
        .filter_map(|l| {
            let f: Vec<_> = l.split(',').collect();
            let (lat, lon) = (
                f.get(3)?.parse::<f64>().ok()?,
                f.get(4)?.parse::<f64>().ok()?,
            );
            (lat != 0.0 && lon != 0.0).then(|| f[0].to_owned())
        })
        .collect()
}

async fn replay(dir: &Path, clock: SharedClock) -> (ReplayStats, Vec<Envelope>, MemoryOutput) {
    let source = ReplaySource::Bluebikes {
        status_files: vec![dir.join(MONTH)],
        stations: Some(dir.join("stations.csv")),
    };
    let config = ReplayConfig::new("bluebikes".into()).with_time_zone("America/New_York");
    let replayer = Replayer::new(config, clock).unwrap();
    let out = MemoryOutput::default();
    let stats = replayer.run(&source, &out).await.unwrap();
    (stats, out.take_events(), out)
}

#[tokio::test]
async fn replays_a_real_month_in_order_with_every_row_accounted_for() {
    let Some(data) = shared_data_or_skip("replay_bluebikes") else {
        return;
    };
    let dir = data.join("real/bluebikes-boston-2021");
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap());

    let started = std::time::Instant::now();
    let (stats, events, out) = replay(&dir, Arc::new(clock.clone())).await;
    let elapsed = started.elapsed();
    eprintln!(
        "replayed {} events and {} dead letters from {} rows in {elapsed:.2?} ({:.0} events/s)",
        stats.events,
        stats.dead_letters,
        stats.rows,
        stats.events as f64 / elapsed.as_secs_f64()
    );

    // Event-time order, no out-of-order events.
    assert_event_time_order(&stats, &events);
    assert_eq!(stats.events, events.len() as u64);
    assert_eq!(stats.first_event_time, events.first().map(|e| e.event_time));
    assert_eq!(stats.last_event_time, events.last().map(|e| e.event_time));

    // Every row is a status event or a dead letter.
    let rows = data_rows(&dir.join(MONTH));
    assert!(rows > 100_000, "{rows} rows");
    assert_eq!(stats.rows, rows);
    let statuses: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StationStatus(s) => Some((e, s)),
            _ => None,
        })
        .collect();
    let dead = out.take_dead_letters();
    let month_source = format!("replay:{MONTH}");
    let dead_rows = dead.iter().filter(|d| d.source == month_source).count();
    assert_eq!(statuses.len() + dead_rows, rows as usize);
    assert_eq!(stats.dead_letters, dead.len() as u64);
    let mut by_rule = BTreeMap::new();
    for d in &dead {
        *by_rule.entry(d.rule.as_str()).or_insert(0) += 1;
        assert!(
            !d.raw.is_empty() && !d.raw.contains('\n'),
            "raw line kept: {d:?}"
        );
    }
    eprintln!("dead letters by rule: {by_rule:?}");
    // Only truly bad rows: with the 2023 capacities, 1,911 real reports (1.3%) were
    // rejected as over capacity.
    assert!(dead_rows <= 20, "{dead_rows} dead letters: {by_rule:?}");
    assert!(
        by_rule
            .keys()
            .all(|r| ["gbfs.counts.negative", "gbfs.time.future", "replay.parse"].contains(r)),
        "{by_rule:?}"
    );
    for (env, s) in &statuses {
        assert_eq!(env.event_time, s.last_reported);
        assert_eq!(env.source, month_source);
        assert_eq!(env.system_id.as_str(), "bluebikes");
    }

    // Station descriptions: one per station with coordinates, all before the first status,
    // at the first event's time.
    let expected = stations_with_coordinates(&dir.join("stations.csv"));
    // First of all, the system's time zone (the change log carries none).
    match &events[0].event {
        Event::SystemInfo(info) => assert_eq!(info.timezone, "America/New_York"),
        other => panic!("first event is not the time zone: {other:?}"),
    }
    let infos: Vec<_> = events[1..]
        .iter()
        .take_while(|e| matches!(e.event, Event::StationInfo(_)))
        .map(|e| match &e.event {
            Event::StationInfo(i) => (e.event_time, i.station_id.to_string(), i.lat, i.lon),
            _ => unreachable!(),
        })
        .collect();
    let info_ids: HashSet<_> = infos.iter().map(|(_, id, _, _)| id.clone()).collect();
    assert_eq!(info_ids, expected);
    assert!(
        infos
            .iter()
            .all(|(t, _, lat, lon)| Some(*t) == stats.first_event_time
                && (42.0..43.0).contains(lat)
                && (-72.0..-70.5).contains(lon))
    );
    // After them, statuses and raised descriptions: each report fits the capacity last
    // described for its station, and station 222 (5 docks in 2023) rose to at least 14.
    let mut capacity: HashMap<String, Option<u32>> = HashMap::new();
    let mut raised = 0;
    for e in &events[1..] {
        match &e.event {
            Event::StationInfo(i) => {
                let before = capacity.insert(i.station_id.to_string(), i.capacity);
                if before.is_some() {
                    raised += 1;
                    assert!(i.capacity > before.flatten(), "{i:?} lowered");
                    assert_eq!(e.source, month_source);
                }
            }
            Event::StationStatus(s) => {
                let docks = s.num_bikes_available
                    + s.num_bikes_disabled.unwrap_or(0)
                    + s.num_docks_available.unwrap_or(0)
                    + s.num_docks_disabled.unwrap_or(0);
                if let Some(Some(cap)) = capacity.get(s.station_id.as_str()) {
                    assert!(docks <= *cap, "{s:?} above {cap}");
                }
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    eprintln!("{raised} raised station descriptions");
    assert!(capacity["222"] >= Some(14), "{:?}", capacity["222"]);
    assert_eq!(1 + infos.len() + raised + statuses.len(), events.len());
    // A station without coordinates still has its reports replayed.
    assert!(
        statuses
            .iter()
            .any(|(_, s)| !info_ids.contains(s.station_id.as_str()))
    );

    // Deterministic ids: unique, and the same in a second replay at another ingest time.
    let ids: Vec<EventId> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids are unique"
    );
    drop(statuses);
    drop(events);
    clock.advance_millis(3_600_000);
    let (stats2, events2, _) = replay(&dir, Arc::new(clock)).await;
    assert_eq!(stats2, stats);
    let ids2: Vec<EventId> = events2.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids2, ids);
}
