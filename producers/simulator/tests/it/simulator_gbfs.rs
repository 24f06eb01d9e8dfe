//! The GBFS producer against the real city simulator, both over HTTP and as documents:
//!
//! - a [`GbfsPoller`] polls the simulator's GBFS 2.3 and 3.0 feeds served on 127.0.0.1:0,
//!   with the official JSON schemas on: discovery, information and status events flow with no
//!   dead letter, a poll with nothing changed is a `304` with no event, and after the
//!   (manual) wall clock moves only the stations whose report changed are emitted;
//! - a property test: for any seed, city size, centre and time, every document of
//!   `simulator::feeds` (both versions) passes [`FeedValidator`] with the official schemas,
//!   with no record rejected or skipped.
//!
//! The official schemas come from `../shared/data/gbfs-json-schema`; without it the HTTP test
//! runs with typed validation only and says so, and the property test is skipped.

// Test helpers outside #[test] functions may unwrap too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_producers::gbfs::model::ParsedFeed;
use bikeshare_producers::gbfs::{
    FeedKind, FeedValidator, GbfsPoller, KnownStations, PollReport, PollerConfig, RuleConfig,
    SchemaRegistry,
};
use bikeshare_producers::output::MemoryOutput;
use bikeshare_simulator::feeds::{self, Header};
use bikeshare_simulator::{
    City, CityConfig, GbfsVersion, RunningSimulator, SimulatorConfig, serve,
};
use bikeshare_testkit::shared_data::shared_data_dir;
use bikeshare_types::contracts::{Envelope, Event, StationStatus};
use bikeshare_types::time::ManualClock;
use bikeshare_types::{StationId, SystemId, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

/// 2024-06-04 12:00 UTC (a Tuesday, 08:00 in Toronto).
const WALL: i64 = 1_717_502_400_000;
const STATIONS: u32 = 100;

/// The official schema directory, or `None` with a message saying what is not checked.
fn schema_dir(test: &str) -> Option<PathBuf> {
    let dir = shared_data_dir().map(|d| d.join("gbfs-json-schema"));
    match dir {
        Some(d) if d.is_dir() => Some(d),
        _ => {
            eprintln!(
                "{test}: ../shared/data/gbfs-json-schema not found (set BIKESHARE_SHARED_DIR): \
                 without the official JSON schemas"
            );
            None
        }
    }
}

/// A simulator a day behind a manual wall clock, running 60 times faster; its background
/// task only moves when the test calls `sync`.
async fn start() -> (RunningSimulator, ManualClock) {
    let wall = ManualClock::new(Timestamp(WALL));
    let config = SimulatorConfig {
        city: CityConfig {
            stations: STATIONS,
            ..CityConfig::default()
        },
        bind: "127.0.0.1:0".parse().unwrap(),
        tick_ms: 3_600_000,
        time_scale: 60.0,
        start: Some(Timestamp(WALL).plus_minutes(-24 * 60)),
        ..SimulatorConfig::default()
    };
    let sim = serve(config, Arc::new(wall.clone()), std::future::pending())
        .await
        .unwrap();
    (sim, wall)
}

fn kinds(events: &[Envelope]) -> BTreeMap<String, usize> {
    let mut by_kind = BTreeMap::new();
    for e in events {
        *by_kind.entry(e.kind().as_str().to_owned()).or_default() += 1;
    }
    by_kind
}

fn statuses(events: &[Envelope]) -> Vec<StationStatus> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StationStatus(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn assert_clean(report: &PollReport, output: &MemoryOutput, version: GbfsVersion) {
    assert!(report.is_ok(), "{version:?}: {:?}", report.errors);
    let dead = output.take_dead_letters();
    assert!(dead.is_empty(), "{version:?}: {dead:#?}");
    assert_eq!(report.dead_letters, 0);
    assert_eq!(report.skipped, 0, "{version:?}");
}

/// Polls the simulator's `version` feeds three times around a clock move.
async fn poll_the_simulator(version: GbfsVersion, schemas: Option<PathBuf>) {
    let (sim, wall) = start().await;
    let config = PollerConfig {
        schema_dir: schemas,
        // Information feeds are read on the first poll only; status at every poll.
        info_min_interval: Duration::from_secs(3600),
        ..PollerConfig::default()
    };
    let mut poller = GbfsPoller::new(
        SystemId::new("sim-city"),
        &sim.gbfs_url(version),
        config,
        Arc::new(wall.clone()),
    )
    .unwrap();
    let output = MemoryOutput::default();

    // First poll: discovery, system and station information, every station's status.
    let report = poller.poll_once(&output).await;
    assert_clean(&report, &output, version);
    let fetched: BTreeSet<FeedKind> = report.fetched.iter().copied().collect();
    assert_eq!(
        fetched,
        BTreeSet::from([
            FeedKind::Discovery,
            FeedKind::SystemInformation,
            FeedKind::StationInformation,
            FeedKind::StationStatus
        ])
    );
    let events = output.take_events();
    let n = STATIONS as usize;
    assert_eq!(
        kinds(&events),
        BTreeMap::from([
            // station_status's, and one per information feed read (their freshness).
            ("feed_heartbeat".to_owned(), 3),
            ("station_info".to_owned(), n),
            ("station_status".to_owned(), n),
            ("system_info".to_owned(), 1),
        ]),
        "{version:?}"
    );
    let mut last: HashMap<StationId, StationStatus> = statuses(&events)
        .into_iter()
        .map(|s| (s.station_id.clone(), s))
        .collect();
    assert_eq!(last.len(), n);

    // Nothing changed: a 304 and no event.
    let report = poller.poll_once(&output).await;
    assert_clean(&report, &output, version);
    assert_eq!(
        report.not_modified,
        [FeedKind::StationStatus],
        "{version:?}"
    );
    assert!(report.fetched.is_empty(), "{:?}", report.fetched);
    assert_eq!(report.events, 0);
    assert!(output.take_events().is_empty());

    // Ten wall seconds are ten sim minutes of the Monday morning peak.
    wall.advance_millis(10_000);
    sim.sync().await.unwrap();
    let report = poller.poll_once(&output).await;
    assert_clean(&report, &output, version);
    assert_eq!(report.fetched, [FeedKind::StationStatus]);
    let events = output.take_events();
    let emitted: BTreeSet<StationId> = statuses(&events)
        .iter()
        .map(|s| s.station_id.clone())
        .collect();
    assert_eq!(kinds(&events).get("feed_heartbeat"), Some(&1));

    // What changed, read independently from the feed itself.
    let body = reqwest::get(format!(
        "{}/gbfs/{}/station_status.json",
        sim.base_url(),
        version.as_str()
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let now = Timestamp(WALL + 10_000);
    let served = FeedValidator::default()
        .station_status(&body, now, None)
        .unwrap();
    let changed: BTreeSet<StationId> = served
        .records
        .iter()
        .filter(|s| last.get(&s.station_id) != Some(*s))
        .map(|s| s.station_id.clone())
        .collect();
    assert_eq!(
        emitted, changed,
        "{version:?}: exactly the changed stations"
    );
    assert!(
        !changed.is_empty() && changed.len() < n,
        "{version:?}: some but not all of {n} stations changed in ten minutes ({})",
        changed.len()
    );
    for s in statuses(&events) {
        assert_ne!(last.insert(s.station_id.clone(), s.clone()), Some(s));
    }
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn the_poller_reads_the_simulator_in_gbfs_2_3() {
    let schemas = schema_dir("the_poller_reads_the_simulator_in_gbfs_2_3");
    poll_the_simulator(GbfsVersion::V2_3, schemas).await;
}

#[tokio::test]
async fn the_poller_reads_the_simulator_in_gbfs_3_0() {
    let schemas = schema_dir("the_poller_reads_the_simulator_in_gbfs_3_0");
    poll_the_simulator(GbfsVersion::V3_0, schemas).await;
}

/// 2016-01-01 and 2030-01-01, UTC.
const FROM_MS: i64 = 1_451_606_400_000;
const TO_MS: i64 = 1_893_456_000_000;

/// Every document the simulator serves for `city`, through the validator, in `version`.
fn validate_documents(
    validator: &FeedValidator,
    city: &City,
    version: GbfsVersion,
) -> Result<(), TestCaseError> {
    let header = Header {
        last_updated: city.now(),
        ttl: 60,
    };
    let now = city.now();
    let what = |feed: &str| format!("{} {feed}", version.as_str());
    let fail =
        |feed: &str, e: &dyn std::fmt::Display| TestCaseError::fail(format!("{}: {e}", what(feed)));

    let gbfs = feeds::gbfs(version, header, "http://127.0.0.1:1", "en").unwrap();
    let discovery = validator
        .discovery(&gbfs, now)
        .map_err(|e| fail("gbfs", &e))?;
    prop_assert!(discovery.rejected.is_empty(), "{:?}", discovery.rejected);
    prop_assert!(discovery.url(FeedKind::StationStatus).is_some());

    let system = feeds::system_information(version, header, &city.system_information()).unwrap();
    let system = validator
        .system_information(&system, &SystemId::new("sim-city"), now)
        .map_err(|e| fail("system_information", &e))?;
    prop_assert_eq!(system.records.len(), 1, "{:?}", system.rejected);

    let info =
        feeds::station_information(version, header, &city.station_information(), "en").unwrap();
    let info = validator
        .station_information(&info, now)
        .map_err(|e| fail("station_information", &e))?;
    every_station_read(&what("info"), &info, city.station_count())?;

    let known = KnownStations::from_feed(&info);
    let status = feeds::station_status(version, header, &city.station_status()).unwrap();
    let status = validator
        .station_status(&status, now, Some(&known))
        .map_err(|e| fail("station_status", &e))?;
    every_station_read(&what("status"), &status, city.station_count())
}

/// A feed of `stations` records read whole: none rejected, none skipped.
fn every_station_read<T>(
    what: &str,
    parsed: &ParsedFeed<T>,
    stations: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(parsed.rejected.is_empty(), "{what}: {:?}", parsed.rejected);
    prop_assert!(parsed.skipped.is_empty(), "{what}: {:?}", parsed.skipped);
    prop_assert_eq!(parsed.records.len(), stations, "{}", what);
    Ok(())
}

#[test]
fn simulator_documents_pass_the_official_schemas_and_every_rule() {
    let Some(dir) = schema_dir("simulator_documents_pass_the_official_schemas_and_every_rule")
    else {
        eprintln!("SKIPPED: the property needs the official schemas");
        return;
    };
    let registry = Arc::new(SchemaRegistry::new(dir).unwrap());
    // The schemas of both versions exist: the property checks against them, not nothing.
    let city = City::new(CityConfig::default(), Timestamp(FROM_MS)).unwrap();
    let header = Header {
        last_updated: city.now(),
        ttl: 60,
    };
    for version in GbfsVersion::ALL {
        let doc = feeds::station_status(version, header, &city.station_status()).unwrap();
        let doc = serde_json::from_slice(&doc).unwrap();
        let report = registry
            .check(version.as_str(), FeedKind::StationStatus, &doc)
            .unwrap();
        assert!(
            report.checked && report.is_valid(),
            "{version:?}: {report:?}"
        );
    }
    let validator = FeedValidator::new(RuleConfig::default()).with_schemas(registry);
    let strategy = (
        any::<u64>(),
        1u32..200,
        (-70.0f64..70.0, -180.0f64..180.0, 0.5f64..60.0),
        FROM_MS..TO_MS,
        0i64..1_500,
        (0.0f64..1.0, any::<bool>()),
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &strategy,
            |(
                seed,
                stations,
                (centre_lat, centre_lon, radius_km),
                start_ms,
                minutes,
                (ebike_share, rebalancing),
            )| {
                let config = CityConfig {
                    seed,
                    stations,
                    centre_lat,
                    centre_lon,
                    radius_km,
                    ebike_share,
                    rebalancing,
                    ..CityConfig::default()
                };
                let start = Timestamp(start_ms);
                let mut city = City::new(config, start).unwrap();
                for version in GbfsVersion::ALL {
                    validate_documents(&validator, &city, version)?;
                }
                city.advance_to(start.plus_minutes(minutes));
                for version in GbfsVersion::ALL {
                    validate_documents(&validator, &city, version)?;
                }
                Ok(())
            },
        )
        .unwrap();
}
