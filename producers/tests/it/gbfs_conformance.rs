//! Conformance of our GBFS validation with the official JSON schemas, on every fixture in
//! `../shared/data`:
//!
//! - MobilityData `gbfs-json-schema` test fixtures (2.3, 3.0, 3.1-RC3);
//! - Entur `gbfs-validator-java` fixtures (1.0 to 3.0) and its CLI's valid/invalid feeds;
//! - raw samples of real GBFS 1.x feeds (Ecobici/Lyft, Bike Share Toronto/PBSC).
//!
//! For `gbfs.json`, `system_information`, `station_information` and `station_status`, the
//! official schema of the fixture's declared version decides what is valid (compiled here,
//! independently of `gbfs::schema`):
//!
//! - a fixture the official schema accepts must be accepted with zero rejected records, both
//!   by our typed + semantic validation alone and with schema validation on;
//! - a fixture the official schema rejects must be rejected (the whole feed, or at least one
//!   record) by our typed + semantic + schema validation.
//!
//! Some fixtures are shipped as valid examples but today's official schema rejects them
//! (e.g. Entur's `gbfs.json` files list no `station_status`, two virtual stations lack
//! `lat`/`lon`); the schema's verdict is what counts, and the test prints them.
//!
//! Skipped, with a message, when `../shared/data` is absent.

// Test helpers outside #[test] functions may unwrap too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bikeshare_producers::gbfs::rules::rule;
use bikeshare_producers::gbfs::{
    DeclaredVersion, FeedError, FeedKind, FeedValidator, KnownStations, ParsedFeed, RuleConfig,
    SchemaRegistry,
};
use bikeshare_testkit::shared_data::shared_data_or_skip;
use bikeshare_types::contracts::StationInfo;
use bikeshare_types::{Clock, SystemClock, SystemId, Timestamp};
use serde_json::Value;

const FEEDS: [FeedKind; 4] = [
    FeedKind::Discovery,
    FeedKind::SystemInformation,
    FeedKind::StationInformation,
    FeedKind::StationStatus,
];

fn schema_dir(data: &Path) -> PathBuf {
    data.join("gbfs-json-schema")
}

/// Typed parsing, the default rules and the official schemas of `data`.
fn full_validator(data: &Path) -> FeedValidator {
    let registry = SchemaRegistry::new(schema_dir(data)).expect("schema dir");
    FeedValidator::new(RuleConfig::default()).with_schemas(Arc::new(registry))
}

/// The stations a feed skipped.
fn skipped_ids<T>(feed: &ParsedFeed<T>) -> BTreeSet<String> {
    feed.skipped
        .iter()
        .map(|s| s.station_id.to_string())
        .collect()
}

/// The `station_information` at `path` (read as `bytes`), which must reject no record.
fn information_rejecting_none(
    validator: &FeedValidator,
    path: &Path,
    bytes: &[u8],
) -> ParsedFeed<StationInfo> {
    let info = validator
        .station_information(bytes, now())
        .expect("station_information");
    assert!(
        info.rejected.is_empty(),
        "{}: {:?}",
        path.display(),
        info.rejected
    );
    info
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// Which of our feeds a fixture file is (`station_information_virtual.json` included).
fn feed_of(path: &Path) -> Option<FeedKind> {
    let stem = path.file_stem()?.to_str()?;
    FEEDS.into_iter().find(|f| match f {
        FeedKind::Discovery => stem == "gbfs",
        _ => stem == f.name() || stem.starts_with(&format!("{}_", f.name())),
    })
}

#[derive(Debug)]
struct Fixture {
    path: PathBuf,
    feed: FeedKind,
    /// Whether the fixture's publisher presents it as valid.
    labelled_valid: bool,
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn fixtures(data: &Path) -> (Vec<Fixture>, Vec<PathBuf>) {
    let mut out = vec![];
    let mut not_ours = vec![];
    let mut add = |dir: &Path, labelled_valid: bool| {
        for path in json_files(dir) {
            match feed_of(&path) {
                Some(feed) => out.push(Fixture {
                    path,
                    feed,
                    labelled_valid,
                }),
                None => not_ours.push(path),
            }
        }
    };
    for dir in subdirs(&data.join("gbfs-json-schema/testFixtures")) {
        add(&dir, true);
    }
    let entur = data.join("gbfs-fixtures-entur");
    for dir in subdirs(&entur.join("gbfs-validator-java/src/test/resources/fixtures")) {
        add(&dir, true);
    }
    let cli = entur.join("gbfs-validator-java-cli/src/test/resources/feeds");
    add(&cli.join("valid"), true);
    add(&cli.join("invalid"), false);
    (out, not_ours)
}

fn read_json(path: &Path) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (bytes, doc)
}

/// The official verdict, from the schema of the declared version, compiled here.
fn official_errors(schemas: &Path, feed: FeedKind, doc: &Value) -> Vec<String> {
    let version = DeclaredVersion::from_field(doc.get("version")).expect("fixture version");
    let path = schemas
        .join(format!("v{}", version.declared))
        .join(format!("{}.json", feed.name()));
    let (_, schema) = read_json(&path);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path().as_str()))
        .collect()
}

/// Our verdict: `Ok(n)` when the feed was accepted with `n` rejected records.
fn ours(validator: &FeedValidator, feed: FeedKind, bytes: &[u8]) -> Result<usize, FeedError> {
    let t = now();
    let sys = SystemId::new("conformance");
    Ok(match feed {
        FeedKind::Discovery => validator.discovery(bytes, t)?.rejected.len(),
        FeedKind::SystemInformation => validator.system_information(bytes, &sys, t)?.rejected.len(),
        FeedKind::StationInformation => validator.station_information(bytes, t)?.rejected.len(),
        FeedKind::StationStatus => validator.station_status(bytes, t, None)?.rejected.len(),
    })
}

fn describe(result: &Result<usize, FeedError>) -> String {
    match result {
        Ok(0) => "accepted".to_owned(),
        Ok(n) => format!("{n} record(s) rejected"),
        Err(e) => format!("feed rejected ({e})"),
    }
}

#[test]
fn fixtures_agree_with_the_official_schemas() {
    let Some(data) = shared_data_or_skip("fixtures_agree_with_the_official_schemas") else {
        return;
    };
    let schemas = schema_dir(&data);
    let typed_only = FeedValidator::new(RuleConfig::default());
    let registry = Arc::new(SchemaRegistry::new(&schemas).expect("schema dir"));
    let full = FeedValidator::new(RuleConfig::default()).with_schemas(registry);

    let (fixtures, not_ours) = fixtures(&data);
    let mut valid = 0;
    let mut invalid = 0;
    let mut failures = vec![];
    for fx in &fixtures {
        let (bytes, doc) = read_json(&fx.path);
        let official = official_errors(&schemas, fx.feed, &doc);
        let typed = ours(&typed_only, fx.feed, &bytes);
        let checked = ours(&full, fx.feed, &bytes);
        let name = fx
            .path
            .strip_prefix(&data)
            .unwrap_or(&fx.path)
            .display()
            .to_string();
        if official.is_empty() {
            valid += 1;
            for (layer, result) in [("typed", &typed), ("typed+schema", &checked)] {
                if !matches!(result, Ok(0)) {
                    failures.push(format!("{name}: valid, but {layer}: {}", describe(result)));
                }
            }
            if !fx.labelled_valid {
                eprintln!("note: {name} is labelled invalid but the official schema accepts it");
            }
        } else {
            invalid += 1;
            if matches!(checked, Ok(0)) {
                failures.push(format!(
                    "{name}: the official schema rejects it ({}) but we accept it",
                    official.join("; ")
                ));
            }
            eprintln!(
                "invalid{}: {name}\n  official: {}\n  typed only: {}\n  typed+schema: {}",
                if fx.labelled_valid {
                    " (shipped as a valid example)"
                } else {
                    ""
                },
                official.first().map(String::as_str).unwrap_or_default(),
                describe(&typed),
                describe(&checked),
            );
        }
    }
    eprintln!(
        "{} fixture files are feeds we do not read (vehicle_types, system_hours, …)",
        not_ours.len()
    );
    eprintln!("{valid} valid and {invalid} invalid fixtures checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        valid > 0 && invalid > 0,
        "fixtures not found under {}",
        data.display()
    );
    for feed in FEEDS {
        assert!(
            fixtures.iter().any(|f| f.feed == feed),
            "no {feed} fixture found"
        );
    }
}

/// Station ids of a feed, as the raw JSON has them.
fn raw_ids(doc: &Value) -> Vec<String> {
    doc["data"]["stations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["station_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Status checked against the station_information beside it: every station the information
/// knows is accepted, and exactly the ones it does not know are `gbfs.station.unknown`.
#[test]
fn status_fixtures_against_their_station_information() {
    let Some(data) = shared_data_or_skip("status_fixtures_against_their_station_information")
    else {
        return;
    };
    let validator = full_validator(&data);
    let mut dirs: Vec<PathBuf> = subdirs(&data.join("gbfs-json-schema/testFixtures"));
    dirs.extend(subdirs(&data.join(
        "gbfs-fixtures-entur/gbfs-validator-java/src/test/resources/fixtures",
    )));
    let mut pairs = 0;
    for dir in dirs {
        let (info_path, status_path) = (
            dir.join("station_information.json"),
            dir.join("station_status.json"),
        );
        if !info_path.is_file() || !status_path.is_file() {
            continue;
        }
        pairs += 1;
        let (info_bytes, _) = read_json(&info_path);
        let (status_bytes, status_doc) = read_json(&status_path);
        let info = information_rejecting_none(&validator, &info_path, &info_bytes);
        let known = KnownStations::from_feed(&info);
        let status = validator
            .station_status(&status_bytes, now(), Some(&known))
            .expect("status");

        let info_ids: BTreeSet<String> = info
            .records
            .iter()
            .map(|r| r.station_id.to_string())
            .collect();
        let expected_unknown: BTreeSet<String> = raw_ids(&status_doc)
            .into_iter()
            .filter(|id| !info_ids.contains(id))
            .collect();
        let unknown: BTreeSet<String> = status
            .rejected
            .iter()
            .filter(|r| r.rule == rule::STATION_UNKNOWN)
            .filter_map(|r| r.station_id.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(unknown, expected_unknown, "{}", status_path.display());
        assert_eq!(
            status.rejected.len(),
            expected_unknown.len(),
            "{}: {:?}",
            status_path.display(),
            status.rejected
        );
        assert_eq!(
            status.records.len() + expected_unknown.len(),
            raw_ids(&status_doc).len(),
            "{}",
            status_path.display()
        );
        if !expected_unknown.is_empty() {
            eprintln!(
                "note: {} names stations its station_information lacks: {expected_unknown:?}",
                status_path.display()
            );
        }
    }
    assert!(pairs > 0, "no fixture directory has both station feeds");
}

/// Real GBFS 1.x feeds: zero rejected records; out-of-service stations that never reported
/// (a placeholder `last_reported` before 2000) are skipped, exactly those.
#[test]
fn real_gbfs_1_samples_are_accepted() {
    let Some(data) = shared_data_or_skip("real_gbfs_1_samples_are_accepted") else {
        return;
    };
    let validator = full_validator(&data);
    let real = data.join("real");

    // Ecobici (Lyft): station_information snapshots and raw station_status files.
    let ecobici = real.join("ecobici-cdmx-hourly");
    let mut known = None;
    for path in json_files(&ecobici)
        .into_iter()
        .filter(|p| feed_of(p) == Some(FeedKind::StationInformation))
    {
        let (bytes, doc) = read_json(&path);
        let feed = information_rejecting_none(&validator, &path, &bytes);
        assert!(
            feed.records.iter().all(|r| r.capacity.is_some()),
            "Lyft feeds give capacity"
        );
        // Skipped: exactly the dockless stations at (0, 0) of the raw data.
        let placeholders: BTreeSet<String> = doc["data"]["stations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["lat"].as_f64() == Some(0.0)
                    && s["lon"].as_f64() == Some(0.0)
                    && s["capacity"].as_i64().unwrap_or(0) == 0
            })
            .filter_map(|s| s["station_id"].as_str().map(str::to_owned))
            .collect();
        let skipped = skipped_ids(&feed);
        assert_eq!(skipped, placeholders, "{}", path.display());
        assert_eq!(feed.records.len() + skipped.len(), raw_ids(&doc).len());
        // The status samples start at the first snapshot's time: check them against it.
        known.get_or_insert_with(|| KnownStations::from_feed(&feed));
    }
    let known = known.expect("no Ecobici station_information found");
    let mut samples = 0;
    let mut status_files: Vec<(PathBuf, Vec<u8>, Value)> = json_files(&ecobici.join("raw_samples"))
        .into_iter()
        .map(|p| {
            let (bytes, doc) = read_json(&p);
            (p, bytes, doc)
        })
        .collect();

    // Toronto (PBSC): the archive kept only `data.stations`; wrap it in a 1.0 header whose
    // last_updated is the newest report.
    for path in json_files(&real.join("toronto-bikeshare-hourly-2020/raw_samples")) {
        let (_, stations) = read_json(&path);
        let newest = stations
            .as_array()
            .and_then(|a| a.iter().filter_map(|s| s["last_reported"].as_i64()).max())
            .expect("stations with last_reported");
        let doc =
            serde_json::json!({"last_updated": newest, "ttl": 0, "data": {"stations": stations}});
        status_files.push((path, serde_json::to_vec(&doc).expect("json"), doc));
    }

    for (path, bytes, doc) in status_files {
        let is_ecobici = path.starts_with(&ecobici);
        let feed = validator
            .station_status(&bytes, now(), is_ecobici.then_some(&known))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            feed.rejected.is_empty(),
            "{}: {:?}",
            path.display(),
            &feed.rejected[..feed.rejected.len().min(3)]
        );

        // Which stations the raw data says have never reported while out of service.
        let placeholder: BTreeSet<String> = doc["data"]["stations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                let flag = |k: &str| {
                    s[k].as_i64()
                        .map(|v| v == 1)
                        .or(s[k].as_bool())
                        .unwrap_or(false)
                };
                let before_2000 = s["last_reported"].as_i64().is_some_and(|t| t < 946_684_800);
                let out_of_service =
                    !flag("is_installed") || (!flag("is_renting") && !flag("is_returning"));
                before_2000 && out_of_service
            })
            .filter_map(|s| s["station_id"].as_str().map(str::to_owned))
            .collect();
        let skipped = skipped_ids(&feed);
        assert_eq!(skipped, placeholder, "{}", path.display());
        assert_eq!(
            feed.records.len() + skipped.len(),
            raw_ids(&doc).len(),
            "{}",
            path.display()
        );

        // Values survive normalisation: compare a few fields with the raw JSON.
        let raw: HashMap<&str, &Value> = doc["data"]["stations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["station_id"].as_str()?, s)))
            .collect();
        for r in &feed.records {
            let s = raw[r.station_id.as_str()];
            assert_eq!(
                Some(i64::from(r.num_bikes_available)),
                s["num_bikes_available"].as_i64()
            );
            assert_eq!(
                r.num_docks_available.map(i64::from),
                s["num_docks_available"].as_i64()
            );
            assert_eq!(Some(r.last_reported.secs()), s["last_reported"].as_i64());
            assert_eq!(
                r.num_ebikes_available.map(i64::from),
                s["num_bikes_available_types"]["ebike"]
                    .as_i64()
                    .or(s["num_ebikes_available"].as_i64())
            );
        }
        samples += 1;
    }
    assert!(
        samples >= 2,
        "real samples not found under {}",
        real.display()
    );
}
