//! Directories of raw GBFS snapshots: `station_status` JSON files as a feed served them (any
//! version 1.0–3.0, plain, gzip or bzip2), with optional `station_information` files.
//!
//! Every document goes through the same [`FeedValidator`] as live polling (header, official
//! JSON schema when configured, typed parsing, named rules), so a replayed record is judged
//! exactly as it would have been live. What differs is only *when* "now" is:
//!
//! - **Order.** Files are read in snapshot order: the document's `last_updated`, else a time
//!   in the file name ([`time_from_file_name`]: `station_status_20240405210456.json`,
//!   `2020-05-12-3-00-00.json`, `1712351088.json`, ...), ties in the order given. A directory
//!   stands for its `*.json[.gz|.bz2]` files; in a status directory, files named after another
//!   GBFS feed (`station_information...`, `gbfs.json`, ...) are left out, and a
//!   `station_information` directory contributes only files with that name. Ordering reads
//!   every file once ahead of the replay (for its header), so each file is read twice.
//! - **Times.** The header's `last_updated` is checked against the replay clock (a recording
//!   cannot come from the future). Records are checked against the document's own
//!   `last_updated`: a report cannot postdate the document it is in (plus the rule's skew).
//! - **Bare station lists.** Some recorders kept only `data.stations` (the Toronto 2020 set
//!   is a JSON array per file). Such a file is read as a GBFS 1.0 document whose
//!   `last_updated` is its file-name time; as that is when the job was *scheduled*, records
//!   may be up to [`SNAPSHOT_FETCH_SLACK_MS`] later. Without a time in its name it is a dead
//!   letter (`gbfs.field.missing`).
//! - **Changes only.** A station's record becomes a `StationStatus` event only when its report
//!   differs from that station's previous valid one ([`StationStatus::same_report`]), as in
//!   [`snapshots`](super::snapshots) and the poller; event time is `last_reported`. Each
//!   document with a newer `last_updated` also gives a `FeedHeartbeat`, as the poller does.
//! - **Bad input.** A rejected record is a dead letter with its rule and raw JSON. A file that
//!   fails as a whole (not JSON, unknown version, broken header, schema errors outside the
//!   records) is one dead letter with the feed's rule and the file's text, and counts as one
//!   row; the replay goes on. A file that cannot be read at all is a [`ReplayError::Io`].
//!
//! **Station information.** The earliest `station_information` document describes the stations
//! before the first event (the replay prelude); a later one emits a `StationInfo` for each
//! station it describes differently, at its `last_updated`. Its station list and capacities
//! judge a status snapshot (`gbfs.station.unknown`, `gbfs.counts.over_capacity`) only when the
//! two are within [`CONTEMPORANEOUS_MS`] of each other: a station list from another day is not
//! evidence against a real report (stations are added, docks are added). Station information
//! records are not counted in [`ReplayStats::rows`](super::ReplayStats::rows).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bikeshare_types::contracts::{DeadLetter, Event, FeedHeartbeat, StationInfo, StationStatus};
use bikeshare_types::error::chain;
use bikeshare_types::{StationId, Timestamp};
use chrono::NaiveDate;
use serde_json::{Value, json};

use super::files::{io_error, read_whole};
use super::snapshots::SNAPSHOT_FETCH_SLACK_MS;
use super::{RecordedFormat, ReplayChunk, ReplayError, ReplayItem, RowContext, source_name};
use crate::gbfs::model::{FeedError, KnownStations, ParseContext, parse_header, parse_json};
use crate::gbfs::rules::rule as gbfs_rule;
use crate::gbfs::{FeedKind, FeedValidator, fields};

/// The largest snapshot document read (after decompression).
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How far apart a `station_information` and a `station_status` document may be for the
/// information to judge the status: an hour, the longest a live poller keeps
/// `station_information` by default (`PollerConfig::info_max_interval`).
pub const CONTEMPORANEOUS_MS: i64 = Timestamp::HOUR_MS;

/// Names of GBFS feeds other than `station_status`: files named so are left out of a status
/// directory.
const OTHER_FEEDS: [&str; 9] = [
    "station_information",
    "system_information",
    "gbfs_versions",
    "vehicle_types",
    "free_bike_status",
    "vehicle_status",
    "system_pricing_plans",
    "system_regions",
    "geofencing_zones",
];

/// Which feed a snapshot file holds. Information sorts first among equal times, so a status
/// snapshot is judged by the information fetched with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Information,
    Status,
}

impl Kind {
    /// Whether a file found in a directory of this kind belongs to it.
    fn takes(self, name: &str) -> bool {
        let json = [".json", ".json.gz", ".json.bz2"]
            .iter()
            .any(|ext| name.ends_with(ext));
        json && match self {
            Self::Information => name.contains(FeedKind::StationInformation.name()),
            Self::Status => {
                !name.starts_with("gbfs.") && !OTHER_FEEDS.iter().any(|f| name.contains(f))
            }
        }
    }
}

/// A file and its place in the replay.
#[derive(Debug, Clone)]
struct Planned {
    time: Option<Timestamp>,
    kind: Kind,
    path: PathBuf,
}

/// Expands directories and puts the files of `kind` in snapshot order (stable: ties keep the
/// order given).
fn plan_files(paths: &[PathBuf], kind: Kind) -> Result<Vec<Planned>, ReplayError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let io_err = io_error(path);
            let mut found = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io_err)? {
                let entry = entry.map_err(io_err)?;
                let name = entry.file_name();
                if entry.file_type().map_err(io_err)?.is_file()
                    && kind.takes(&name.to_string_lossy())
                {
                    found.push(entry.path());
                }
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut planned = files
        .into_iter()
        .map(|path| {
            let time = document_time(&path)?.or_else(|| time_from_file_name(&path));
            Ok(Planned { time, kind, path })
        })
        .collect::<Result<Vec<_>, ReplayError>>()?;
    planned.sort_by_key(|p| p.time);
    Ok(planned)
}

/// Reads a file whole (decompressed), refusing more than [`MAX_DOCUMENT_BYTES`].
fn read_document(path: &Path) -> Result<Vec<u8>, ReplayError> {
    read_whole(path, MAX_DOCUMENT_BYTES)
}

/// The `last_updated` of a document, when it is a JSON object with a readable one.
fn document_time(path: &Path) -> Result<Option<Timestamp>, ReplayError> {
    #[derive(serde::Deserialize)]
    struct HeaderOnly {
        last_updated: Option<Value>,
    }
    let bytes = read_document(path)?;
    Ok(serde_json::from_slice::<HeaderOnly>(&bytes)
        .ok()
        .and_then(|h| h.last_updated)
        .and_then(|v| fields::as_timestamp(&v, "header", "last_updated").ok()))
}

/// The snapshot time in a file name (UTC): one run of digits `YYYYMMDDHHMMSS`,
/// `YYYYMMDDHHMM`, `YYYYMMDD` + `HHMMSS`, epoch seconds (10 digits) or milliseconds (13); or
/// separate fields `YYYY?MM?DD[?HH[?MM[?SS]]]` with any separators, unpadded allowed.
pub fn time_from_file_name(path: &Path) -> Option<Timestamp> {
    let name = path.file_name()?.to_str()?;
    let runs: Vec<&str> = name
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
        .collect();
    let compact = |s: &str, format: &str| {
        chrono::NaiveDateTime::parse_from_str(s, format)
            .ok()
            .map(|t| Timestamp::from_datetime(t.and_utc()))
    };
    for (i, run) in runs.iter().enumerate() {
        let found = match run.len() {
            14 => compact(run, "%Y%m%d%H%M%S"),
            12 => compact(&format!("{run}00"), "%Y%m%d%H%M%S"),
            8 => runs
                .get(i + 1)
                .filter(|next| next.len() == 6)
                .and_then(|next| compact(&format!("{run}{next}"), "%Y%m%d%H%M%S")),
            10 => run.parse().ok().map(Timestamp::from_secs),
            13 => run.parse().ok().map(Timestamp::from_millis),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    let start = runs.iter().position(|r| r.len() == 4)?;
    let parts: Vec<u32> = runs[start..]
        .iter()
        .take(6)
        .map(|r| r.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day, rest @ ..] = parts.as_slice() else {
        return None;
    };
    let at = |i: usize| rest.get(i).copied().unwrap_or(0);
    let t = NaiveDate::from_ymd_opt(i32::try_from(*year).ok()?, *month, *day)?.and_hms_opt(
        at(0),
        at(1),
        at(2),
    )?;
    Some(Timestamp::from_datetime(t.and_utc()))
}

/// A document ready for the validator.
struct Document {
    value: Value,
    last_updated: Timestamp,
    /// "Now" for the records' time rule.
    now: Timestamp,
}

/// What loading a file gave.
enum Loaded {
    Document(Document),
    /// The whole file failed: one dead letter.
    Rejected(DeadLetter),
}

/// The file's text for a whole-file dead letter (truncated by [`DeadLetter::new`]).
fn whole_file_letter(
    ctx: &RowContext,
    path: &Path,
    bytes: &[u8],
    rule: &str,
    message: &str,
) -> DeadLetter {
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    ctx.dead_letter(
        &source_name(path),
        rule,
        format!("{name}: {message}"),
        &String::from_utf8_lossy(bytes),
    )
}

/// Reads a file, its JSON and its header (see the module docs for bare station lists).
fn load(path: &Path, ctx: &RowContext) -> Result<Loaded, ReplayError> {
    let bytes = read_document(path)?;
    let reject = |rule: &str, message: &str| {
        Ok(Loaded::Rejected(whole_file_letter(
            ctx, path, &bytes, rule, message,
        )))
    };
    let mut value = match parse_json(&bytes) {
        Ok(v) => v,
        Err(e) => return reject(e.rule(), &chain(&e)),
    };
    let mut scheduled = false;
    if let Value::Array(stations) = value {
        let Some(t) = time_from_file_name(path) else {
            return reject(
                gbfs_rule::FIELD_MISSING,
                "a bare list of stations has no `last_updated`, and the file name no time",
            );
        };
        value = json!({"last_updated": t.secs(), "ttl": 0, "data": {"stations": stations}});
        scheduled = true;
    }
    let header_ctx = ParseContext {
        rules: ctx.rules,
        ..ParseContext::new(ctx.clock.now())
    };
    let last_updated = match parse_header(&value, &header_ctx) {
        Ok((header, _)) => header.last_updated,
        Err(e) => return reject(e.rule(), &chain(&e)),
    };
    let now = if scheduled {
        last_updated.plus_millis(SNAPSHOT_FETCH_SLACK_MS)
    } else {
        last_updated
    };
    Ok(Loaded::Document(Document {
        value,
        last_updated,
        now,
    }))
}

/// A whole-feed failure: a dead letter, unless the schema configuration is at fault.
fn feed_failure(
    e: FeedError,
    ctx: &RowContext,
    path: &Path,
    doc: &Value,
) -> Result<DeadLetter, ReplayError> {
    if let FeedError::SchemaUnavailable(_) = e {
        return Err(ReplayError::Config(chain(&e)));
    }
    Ok(whole_file_letter(
        ctx,
        path,
        doc.to_string().as_bytes(),
        e.rule(),
        &chain(&e),
    ))
}

/// Reads GBFS snapshot files in snapshot order, remembering each station's previous report
/// and description across files. See the module docs.
#[derive(Debug)]
pub struct GbfsSnapshotReader {
    validator: FeedValidator,
    /// `station_information` files still to read, in snapshot order.
    information: Vec<Planned>,
    information_paths: HashSet<PathBuf>,
    prelude: Vec<(Arc<str>, Event)>,
    /// The last description of each station.
    stations: HashMap<StationId, StationInfo>,
    /// The latest station information read: its time and stations.
    in_effect: Option<(Timestamp, KnownStations)>,
    previous: HashMap<StationId, StationStatus>,
    last_heartbeat: Option<Timestamp>,
}

impl GbfsSnapshotReader {
    /// Orders the `station_information` files (files or directories) and reads the earliest
    /// valid one as the prelude; returns the reader and the dead letters of what was read.
    pub fn open(
        station_information: &[PathBuf],
        validator: FeedValidator,
        ctx: &RowContext,
    ) -> Result<(Self, Vec<DeadLetter>), ReplayError> {
        let mut reader = Self {
            validator,
            information: Vec::new(),
            information_paths: HashSet::new(),
            prelude: Vec::new(),
            stations: HashMap::new(),
            in_effect: None,
            previous: HashMap::new(),
            last_heartbeat: None,
        };
        let mut planned = plan_files(station_information, Kind::Information)?.into_iter();
        let mut dead = Vec::new();
        while reader.in_effect.is_none() {
            let Some(first) = planned.next() else { break };
            dead.extend(
                reader
                    .read_information(&first.path, ctx, true)?
                    .dead_letters,
            );
        }
        reader.information = planned.collect();
        Ok((reader, dead))
    }

    /// One `station_information` document: descriptions that changed (into the prelude when
    /// `prelude`, else as events at its `last_updated`) and the stations in effect.
    fn read_information(
        &mut self,
        path: &Path,
        ctx: &RowContext,
        prelude: bool,
    ) -> Result<ReplayChunk, ReplayError> {
        let mut chunk = ReplayChunk::default();
        let doc = match load(path, ctx)? {
            Loaded::Document(doc) => doc,
            Loaded::Rejected(letter) => {
                chunk.dead_letters.push(letter);
                return Ok(chunk);
            }
        };
        let parsed = match self.validator.station_information_doc(&doc.value, doc.now) {
            Ok(parsed) => parsed,
            Err(e) => {
                chunk
                    .dead_letters
                    .push(feed_failure(e, ctx, path, &doc.value)?);
                return Ok(chunk);
            }
        };
        let source = source_name(path);
        chunk.dead_letters = parsed
            .rejected
            .iter()
            .map(|r| ctx.dead_letter(&source, r.rule, &r.message, &r.raw))
            .collect();
        for info in &parsed.records {
            if self.stations.get(&info.station_id) == Some(info) {
                continue;
            }
            self.stations.insert(info.station_id.clone(), info.clone());
            let event = Event::StationInfo(info.clone());
            if prelude {
                self.prelude.push((source.clone(), event));
            } else {
                chunk.items.push(ReplayItem::Fresh {
                    time: doc.last_updated,
                    source: source.clone(),
                    event,
                });
            }
        }
        self.in_effect = Some((doc.last_updated, KnownStations::from_feed(&parsed)));
        Ok(chunk)
    }

    /// One `station_status` document: changed reports, a heartbeat, dead letters.
    fn read_status(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        let mut chunk = ReplayChunk::default();
        let doc = match load(path, ctx)? {
            Loaded::Document(doc) => doc,
            Loaded::Rejected(letter) => {
                chunk.rows = 1;
                chunk.dead_letters.push(letter);
                return Ok(chunk);
            }
        };
        let known = self
            .in_effect
            .as_ref()
            .filter(|(at, _)| (at.millis() - doc.last_updated.millis()).abs() <= CONTEMPORANEOUS_MS)
            .map(|(_, known)| known);
        let parsed = match self
            .validator
            .station_status_doc(&doc.value, doc.now, known)
        {
            Ok(parsed) => parsed,
            Err(e) => {
                chunk.rows = 1;
                chunk
                    .dead_letters
                    .push(feed_failure(e, ctx, path, &doc.value)?);
                return Ok(chunk);
            }
        };
        let source = source_name(path);
        chunk.rows = (parsed.records.len() + parsed.rejected.len() + parsed.skipped.len()) as u64;
        chunk.dead_letters = parsed
            .rejected
            .iter()
            .map(|r| ctx.dead_letter(&source, r.rule, &r.message, &r.raw))
            .collect();
        for status in parsed.records {
            if self
                .previous
                .get(&status.station_id)
                .is_some_and(|prev| prev.same_report(&status))
            {
                continue;
            }
            self.previous
                .insert(status.station_id.clone(), status.clone());
            chunk.items.push(ReplayItem::Fresh {
                time: status.last_reported,
                source: source.clone(),
                event: Event::StationStatus(status),
            });
        }
        let last_updated = parsed.header.last_updated;
        if self.last_heartbeat.is_none_or(|t| last_updated > t) {
            self.last_heartbeat = Some(last_updated);
            chunk.items.push(ReplayItem::Fresh {
                time: last_updated,
                source: source.clone(),
                event: Event::FeedHeartbeat(FeedHeartbeat {
                    feed: FeedKind::StationStatus.name().into(),
                    last_updated,
                    period_s: None,
                }),
            });
        }
        chunk.items.sort_by_key(ReplayItem::event_time);
        Ok(chunk)
    }
}

impl RecordedFormat for GbfsSnapshotReader {
    fn plan(&mut self, paths: &[PathBuf], _ctx: &RowContext) -> Result<Vec<PathBuf>, ReplayError> {
        let mut all = plan_files(paths, Kind::Status)?;
        all.append(&mut self.information);
        all.sort_by_key(|p| (p.time, p.kind));
        self.information_paths = all
            .iter()
            .filter(|p| p.kind == Kind::Information)
            .map(|p| p.path.clone())
            .collect();
        Ok(all.into_iter().map(|p| p.path).collect())
    }

    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        if self.information_paths.contains(path) {
            self.read_information(path, ctx, false)
        } else {
            self.read_status(path, ctx)
        }
    }

    fn prelude(&mut self) -> Vec<(Arc<str>, Event)> {
        std::mem::take(&mut self.prelude)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::output::MemoryOutput;
    use crate::replay::tests::ctx;
    use crate::replay::{ReplayConfig, ReplaySource, ReplayStats, Replayer};

    /// 2020-09-13T12:26:40Z; the test clock is in December 2021.
    const T0: i64 = 1_600_000_000;

    fn station(id: &str, bikes: i64, docks: i64, last_reported: i64) -> Value {
        json!({"station_id": id, "num_bikes_available": bikes, "num_docks_available": docks,
               "is_installed": true, "is_renting": true, "is_returning": true,
               "last_reported": last_reported})
    }

    fn status_doc(last_updated: i64, stations: Vec<Value>) -> Value {
        json!({"last_updated": last_updated, "ttl": 60, "version": "2.3",
               "data": {"stations": stations}})
    }

    fn info_doc(last_updated: i64, stations: &[(&str, u32)]) -> Value {
        let stations: Vec<Value> = stations
            .iter()
            .map(|(id, capacity)| {
                json!({"station_id": id, "name": format!("Station {id}"), "lat": 19.4,
                       "lon": -99.1, "capacity": capacity})
            })
            .collect();
        json!({"last_updated": last_updated, "ttl": 60, "version": "2.3",
               "data": {"stations": stations}})
    }

    fn write(dir: &Path, name: &str, doc: &Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, doc.to_string()).unwrap();
        p
    }

    fn source(files: Vec<PathBuf>, station_information: Vec<PathBuf>) -> ReplaySource {
        ReplaySource::GbfsSnapshots {
            files_or_dirs: files,
            station_information,
            schema_dir: None,
        }
    }

    async fn replay(source: &ReplaySource) -> (ReplayStats, Vec<Event>, Vec<DeadLetter>) {
        let c = ctx();
        let config = ReplayConfig::new("test".into()).with_time_zone("America/Toronto");
        let replayer = Replayer::new(config, c.clock).unwrap();
        let out = MemoryOutput::default();
        let stats = replayer.run(source, &out).await.unwrap();
        let events = out.take_events();
        assert!(
            matches!(&events[0].event, Event::SystemInfo(i) if i.timezone == "America/Toronto"),
            "the time zone first: {:?}",
            events[0]
        );
        assert!(
            events
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time),
            "event-time order"
        );
        (
            stats,
            events.into_iter().map(|e| e.event).collect(),
            out.take_dead_letters(),
        )
    }

    /// `(station, last_reported - T0, bikes)` of the status events.
    fn statuses(events: &[Event]) -> Vec<(String, i64, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::StationStatus(s) => Some((
                    s.station_id.to_string(),
                    s.last_reported.secs() - T0,
                    s.num_bikes_available,
                )),
                _ => None,
            })
            .collect()
    }

    fn heartbeats(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::FeedHeartbeat(h) => Some(h.last_updated.secs() - T0),
                _ => None,
            })
            .collect()
    }

    fn rules(dead: &[DeadLetter]) -> Vec<&str> {
        dead.iter().map(|d| d.rule.as_str()).collect()
    }

    #[tokio::test]
    async fn snapshots_are_read_in_document_order_and_only_changes_emitted() {
        let dir = tempfile::tempdir().unwrap();
        // Named against their order: `last_updated` decides.
        let a = write(
            dir.path(),
            "z.json",
            &status_doc(
                T0,
                vec![station("1", 3, 7, T0 - 50), station("2", 5, 5, T0 - 100)],
            ),
        );
        let b = write(
            dir.path(),
            "y.json",
            &status_doc(
                T0 + 600,
                vec![station("1", 4, 6, T0 + 500), station("2", 5, 5, T0 - 100)],
            ),
        );
        // GBFS 3.0: RFC 3339 times and vehicles; station 1 unchanged, station 2 changed.
        let v3 = json!({"last_updated": "2020-09-13T12:46:40Z", "ttl": 60, "version": "3.0",
        "data": {"stations": [
            {"station_id": "1", "num_vehicles_available": 4, "num_docks_available": 6,
             "is_installed": true, "is_renting": true, "is_returning": true,
             "last_reported": "2020-09-13T12:35:00Z"},
            {"station_id": "2", "num_vehicles_available": 6, "num_docks_available": 4,
             "is_installed": true, "is_renting": true, "is_returning": true,
             "last_reported": "2020-09-13T12:45:00Z"}
        ]}});
        let c = write(dir.path(), "x.json", &v3);
        let (stats, events, dead) = replay(&source(vec![c, b, a], vec![])).await;
        assert_eq!(
            statuses(&events),
            [
                ("2".to_owned(), -100, 5),
                ("1".to_owned(), -50, 3),
                ("1".to_owned(), 500, 4),
                ("2".to_owned(), 1100, 6),
            ]
        );
        assert_eq!(heartbeats(&events), [0, 600, 1200]);
        assert!(dead.is_empty(), "{dead:?}");
        // The events: the time zone's SystemInfo, 4 statuses and 3 heartbeats.
        assert_eq!((stats.rows, stats.events, stats.out_of_order), (6, 8, 0));
    }

    #[tokio::test]
    async fn bad_records_and_bad_files_are_dead_letters_and_the_rest_flows() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(
            dir.path(),
            "1.json",
            &status_doc(
                T0,
                vec![
                    station("1", 3, 7, T0 - 50),
                    station("2", -1, 7, T0 - 50),
                    station("3", 1, 1, T0 + 3600),
                ],
            ),
        );
        let broken = dir.path().join("2.json");
        std::fs::write(&broken, b"{\"last_updated\": 16000").unwrap();
        let mut unknown_version = status_doc(T0 + 60, vec![station("1", 2, 8, T0 + 30)]);
        unknown_version["version"] = json!("9.9");
        let unknown_version = write(dir.path(), "3.json", &unknown_version);
        // A document from after the replay clock (2030).
        let future = write(
            dir.path(),
            "4.json",
            &status_doc(1_900_000_000, vec![station("1", 2, 8, 1_900_000_000)]),
        );
        let no_stations = write(
            dir.path(),
            "5.json",
            &json!({"last_updated": T0 + 120, "ttl": 0, "data": {}}),
        );
        let (stats, events, dead) = replay(&source(
            vec![good, broken, unknown_version, future, no_stations],
            vec![],
        ))
        .await;
        assert_eq!(statuses(&events), [("1".to_owned(), -50, 3)]);
        assert_eq!(
            rules(&dead),
            [
                "gbfs.json",
                "gbfs.counts.negative",
                "gbfs.time.future",
                "gbfs.version",
                "gbfs.field.missing",
                "gbfs.time.future",
            ],
            "{dead:#?}"
        );
        // Records carry their own JSON; whole files their text and name.
        assert!(dead[1].raw.contains("\"station_id\":\"2\""));
        assert_eq!(dead[0].raw, "{\"last_updated\": 16000");
        assert!(
            dead[0].message.starts_with("2.json: "),
            "{}",
            dead[0].message
        );
        assert_eq!(dead[0].source, "replay:2.json");
        assert_eq!(stats.rows, 3 + 4, "records, and one per failed file");
    }

    #[tokio::test]
    async fn bare_station_lists_take_the_time_in_their_file_name() {
        let dir = tempfile::tempdir().unwrap();
        // Scheduled 03:00 UTC (hour not padded), fetched 03:07.
        let at = time_from_file_name(Path::new("2020-05-12-3-00-00.json")).unwrap();
        assert_eq!(
            at,
            Timestamp::parse_rfc3339("2020-05-12T03:00:00Z").unwrap()
        );
        let list = json!([
            {"station_id": "7000", "num_bikes_available": 2,
             "num_bikes_available_types": {"mechanical": 1, "ebike": 1},
             "num_docks_available": 3, "is_installed": 1, "is_renting": 1, "is_returning": 1,
             "last_reported": at.secs() + 420, "status": "IN_SERVICE"},
            {"station_id": "7001", "num_bikes_available": 2, "num_docks_available": 3,
             "is_installed": 1, "is_renting": 1, "is_returning": 1,
             "last_reported": at.secs() + 86_400}
        ]);
        let named = write(dir.path(), "2020-05-12-3-00-00.json", &list);
        let nameless = write(dir.path(), "latest.json", &list);
        let (_, events, dead) = replay(&source(vec![dir.path().to_owned()], vec![])).await;
        let ebikes: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::StationStatus(s) => Some((s.station_id.to_string(), s.num_ebikes_available)),
                _ => None,
            })
            .collect();
        assert_eq!(ebikes, [("7000".to_owned(), Some(1))]);
        assert_eq!(
            rules(&dead),
            ["gbfs.field.missing", "gbfs.time.future"],
            "the nameless list (no time sorts first), then the next-day report"
        );
        assert_eq!(dead[0].source, source_name(&nameless).as_ref());
        assert!(named.exists());
    }

    #[tokio::test]
    async fn station_information_judges_only_contemporaneous_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        let info = dir.path().join("info");
        std::fs::create_dir(&info).unwrap();
        write(
            &info,
            "station_information_1.json",
            &info_doc(T0, &[("1", 10), ("2", 10)]),
        );
        write(
            &info,
            "station_information_2.json",
            &info_doc(T0 + 2 * day, &[("1", 20), ("2", 10), ("3", 5)]),
        );
        std::fs::write(info.join("notes.txt"), "not a snapshot").unwrap();
        let status = dir.path().join("status");
        std::fs::create_dir(&status).unwrap();
        // The status directory also holds station information: left out.
        write(
            &status,
            "station_information_9.json",
            &info_doc(T0, &[("1", 1)]),
        );
        let over = |id: &str, t: i64| station(id, 8, 8, t);
        write(
            &status,
            "station_status_1.json",
            &status_doc(
                T0 + 60,
                vec![over("1", T0 + 30), station("9", 1, 1, T0 + 30)],
            ),
        );
        write(
            &status,
            "station_status_2.json",
            &status_doc(
                T0 + day,
                vec![over("1", T0 + day - 5), station("9", 1, 2, T0 + day - 5)],
            ),
        );
        write(
            &status,
            "station_status_3.json",
            &status_doc(
                T0 + 2 * day + 60,
                vec![over("1", T0 + 2 * day), over("2", T0 + 2 * day)],
            ),
        );
        let (stats, events, dead) = replay(&source(vec![status], vec![info])).await;
        let infos: Vec<_> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Event::StationInfo(s) => Some((i, s.station_id.to_string(), s.capacity)),
                _ => None,
            })
            .collect();
        assert_eq!(
            infos[..2],
            [(1, "1".to_owned(), Some(10)), (2, "2".to_owned(), Some(10))],
            "the earliest information leads (after the time zone)"
        );
        assert_eq!(
            infos[2..]
                .iter()
                .map(|(_, id, cap)| (id.as_str(), *cap))
                .collect::<Vec<_>>(),
            [("1", Some(20)), ("3", Some(5))],
            "then what changed"
        );
        assert_eq!(
            statuses(&events),
            [
                ("1".to_owned(), day - 5, 8),
                ("9".to_owned(), day - 5, 1),
                ("1".to_owned(), 2 * day, 8),
            ]
        );
        assert_eq!(
            rules(&dead),
            [
                "gbfs.counts.over_capacity",
                "gbfs.station.unknown",
                "gbfs.counts.over_capacity"
            ]
        );
        assert!(dead[2].raw.contains("\"station_id\":\"2\""));
        assert_eq!(stats.rows, 6, "station information is not counted");
    }

    #[tokio::test]
    async fn an_unusable_schema_directory_is_a_configuration_error() {
        let source = ReplaySource::GbfsSnapshots {
            files_or_dirs: vec![],
            station_information: vec![],
            schema_dir: Some("/nonexistent/gbfs-json-schema".into()),
        };
        let replayer = Replayer::new(ReplayConfig::new("t".into()), ctx().clock).unwrap();
        let err = replayer
            .run(&source, &MemoryOutput::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::Config(_)), "{err}");
        let missing = source_name(Path::new("/nonexistent/x.json"));
        assert_eq!(&*missing, "replay:x.json");
        let err = replayer
            .run(
                &self::source(vec!["/nonexistent/x.json".into()], vec![]),
                &MemoryOutput::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::Io { .. }), "{err}");
    }

    #[test]
    fn times_in_file_names() {
        let at = |s: &str| time_from_file_name(Path::new(s)).map(|t| t.to_rfc3339());
        let t = Some("2024-04-05T21:04:56.000Z".to_owned());
        assert_eq!(at("station_status_20240405210456.json"), t);
        assert_eq!(at("x/station_status_20240405_210456.json.gz"), t);
        assert_eq!(at("2024-04-05T21:04:56Z.json"), t);
        assert_eq!(at("1712351096.json"), t);
        assert_eq!(at("1712351096000.json"), t);
        assert_eq!(
            at("2020-05-12-3-00-00.json"),
            Some("2020-05-12T03:00:00.000Z".to_owned())
        );
        assert_eq!(
            at("status_2021-01-02.json"),
            Some("2021-01-02T00:00:00.000Z".to_owned())
        );
        assert_eq!(at("station_status.json"), None);
        assert_eq!(at("status_2021-01.json"), None);
        assert_eq!(at("2020-13-40-00-00-00.json"), None);
    }
}
