//! Hourly snapshot sets: every station's `station_status`, fetched once an hour and flattened
//! into one CSV (`station_status_hourly.csv.gz` of the Toronto 2020 and Ecobici 2024
//! recordings).
//!
//! Columns are found by name. The snapshot time is `snapshot_utc_from_filename` (Toronto,
//! `2020-05-09T03:00:00`, UTC), `snapshot_file_utc` (Ecobici, `20240405210456`), or
//! `snapshot_utc`/`snapshot_time`; `last_updated` (the feed's own time) is used when present.
//! E-bikes are `num_ebikes_available` or `ebike`.
//!
//! A station's row becomes a `StationStatus` event only when its report differs from that
//! station's previous valid snapshot row (including `last_reported`), so a station that did
//! not report between two snapshots is not repeated. Its event time is `last_reported`, else
//! the feed's `last_updated`, else the snapshot time; events come out in event-time order.
//!
//! `check_time`'s "now" is the feed's `last_updated` when the file has it (a report cannot
//! postdate the document it is in), else the snapshot time plus [`SNAPSHOT_FETCH_SLACK_MS`]:
//! file-name times are when the hourly job was *scheduled*, and it fetched minutes later.
//!
//! Coordinates and capacity come from GBFS `station_information` JSON files
//! ([`read_station_information`]), when the recording has them (Ecobici does, Toronto not).
//! Those files are side files of their own dates (Ecobici's are from the first and the last
//! day of 17), so, as for Bluebikes, their capacities judge reports
//! (`gbfs.counts.over_capacity`) only with
//! [`ReplayConfig::side_file_capacity_rule`](super::ReplayConfig::side_file_capacity_rule);
//! the raw snapshots of [`gbfs_snapshots`](super::gbfs_snapshots) apply capacities fetched
//! within the hour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bikeshare_types::contracts::{DeadLetter, Event, StationInfo, StationStatus};
use bikeshare_types::{StationId, Timestamp};
use chrono::NaiveDateTime;
use serde_json::Value;

use super::files::{RecordedCsv, format_error, read_whole};
use super::status::{StatusColumns, parse_epoch};
use super::{
    RecordedFormat, ReplayChunk, ReplayError, ReplayItem, RowContext, StationTable, rule,
    source_name,
};
use crate::gbfs::rules::{self as gbfs_rules, rule as gbfs_rule};
use crate::input::field;

/// How long after its scheduled (file-name) time a snapshot may have been fetched.
pub const SNAPSHOT_FETCH_SLACK_MS: i64 = Timestamp::HOUR_MS;

/// The largest `station_information` document read.
const STATION_INFORMATION_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Reads GBFS `station_information` documents (1.x–3.0, lenient). A station listed in several
/// files keeps its first description (the files are given oldest first: the replay starts
/// with the stations as they were then). Stations without usable coordinates are dead letters.
pub fn read_station_information(
    paths: &[PathBuf],
    ctx: &RowContext,
) -> Result<(StationTable, Vec<DeadLetter>), ReplayError> {
    let mut table = StationTable::default();
    let mut dead = Vec::new();
    for path in paths {
        let source = source_name(path);
        let bytes = read_whole(path, STATION_INFORMATION_MAX_BYTES)?;
        let format = format_error(path);
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|e| format(format!("not JSON: {e}")))?;
        let stations = doc
            .pointer("/data/stations")
            .or(Some(&doc))
            .and_then(Value::as_array)
            .ok_or_else(|| format("no data.stations array".into()))?;
        for st in stations {
            let raw = st.to_string();
            let Some(station_id) = text(&st["station_id"]).map(StationId::new) else {
                dead.push(ctx.dead_letter(&source, rule::PARSE, "station_id is missing", &raw));
                continue;
            };
            if table.contains(&station_id) {
                continue;
            }
            let capacity = number(&st["capacity"])
                .filter(|c| c.fract() == 0.0 && *c > 0.0 && *c <= f64::from(u32::MAX))
                .map(|c| c as u32);
            table.set_capacity(&station_id, capacity);
            let (Some(lat), Some(lon)) = (number(&st["lat"]), number(&st["lon"])) else {
                let message = format!("station {station_id}: no coordinates");
                dead.push(ctx.dead_letter(&source, gbfs_rule::COORDINATES, message, &raw));
                continue;
            };
            if let Err(v) = gbfs_rules::check_coordinates(&station_id, lat, lon) {
                dead.push(ctx.dead_letter(&source, v.rule, v.message, &raw));
                continue;
            }
            let short_name = text(&st["short_name"]);
            table.push_info(
                source.clone(),
                StationInfo {
                    name: text(&st["name"])
                        .or_else(|| short_name.clone())
                        .unwrap_or_else(|| station_id.to_string()),
                    short_name,
                    lat,
                    lon,
                    capacity,
                    region_id: text(&st["region_id"]),
                    is_virtual_station: st["is_virtual_station"].as_bool().unwrap_or(false),
                    station_id,
                },
            );
        }
    }
    Ok((table, dead))
}

/// A string, a number as text, or the first `text` of a GBFS 3.0 localized-string array.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items.iter().find_map(|i| text(&i["text"])),
        _ => None,
    }
}

/// A number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses a snapshot time: RFC 3339, `YYYY-MM-DDTHH:MM:SS` / `YYYY-MM-DD HH:MM:SS` /
/// `YYYYMMDDHHMMSS` (all UTC), or epoch seconds.
pub fn parse_snapshot_time(v: &str) -> Option<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(v) {
        return Some(t);
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, format) {
            return Some(Timestamp::from_datetime(t.and_utc()));
        }
    }
    (v.len() <= 11).then(|| parse_epoch(v)).flatten()
}

/// The previous valid report of a station, to emit only changes.
#[derive(Debug, Clone)]
struct Previous {
    status: StationStatus,
}

/// Reads hourly snapshot files in order, remembering each station's previous report across
/// files.
#[derive(Debug, Default)]
pub struct SnapshotReader {
    stations: StationTable,
    previous: HashMap<StationId, Previous>,
}

/// One valid row, before de-duplication.
struct Candidate {
    snapshot: Timestamp,
    status: StationStatus,
    /// False when `last_reported` was absent and the event time stands in for it.
    reported: bool,
}

impl SnapshotReader {
    pub fn new(stations: StationTable) -> Self {
        Self {
            stations,
            previous: HashMap::new(),
        }
    }

    /// Reads one snapshot file: every data row becomes an event (when changed), a dead letter,
    /// or nothing (unchanged since the station's previous snapshot).
    pub fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        let source = source_name(path);
        let format = format_error(path);
        let mut rows = RecordedCsv::open(path)?;
        let mut chunk = ReplayChunk::default();
        let Some(header) = rows.header()? else {
            return Ok(chunk);
        };
        let columns = StatusColumns::from_header(&header, false).map_err(&format)?;
        let snapshot_col = header
            .find(&[
                "snapshot_utc_from_filename",
                "snapshot_file_utc",
                "snapshot_utc",
                "snapshot_time",
            ])
            .ok_or_else(|| format("missing a snapshot time column".into()))?;
        let feed_time_col = header.find(&["last_updated"]);

        let mut candidates = Vec::new();
        while let Some(row) = rows.next_row()? {
            chunk.rows += 1;
            let fields = &row.fields;
            let candidate = field(fields, Some(snapshot_col))
                .and_then(parse_snapshot_time)
                .ok_or_else(|| {
                    (
                        rule::PARSE,
                        "snapshot time is missing or invalid".to_owned(),
                    )
                })
                .and_then(|snapshot| {
                    let feed_time = field(fields, feed_time_col).and_then(parse_epoch);
                    let parsed = columns.parse(fields).map_err(|m| (rule::PARSE, m))?;
                    let reported = parsed.last_reported.is_some();
                    let event_time = parsed.last_reported.or(feed_time).unwrap_or(snapshot);
                    let now = feed_time.unwrap_or(snapshot.plus_millis(SNAPSHOT_FETCH_SLACK_MS));
                    let capacity = self
                        .stations
                        .capacity(&parsed.station_id)
                        .filter(|_| ctx.side_file_capacity_rule);
                    let status = parsed
                        .validate(event_time, capacity, now, &ctx.rules)
                        .map_err(|v| (v.rule, v.message))?;
                    Ok(Candidate {
                        snapshot,
                        status,
                        reported,
                    })
                });
            match candidate {
                Ok(c) => candidates.push(c),
                Err(e) => chunk.reject_line(ctx, &source, row.line_no, e, &row.raw),
            }
        }
        // Snapshots in time order (stable: rows of one snapshot keep file order), then changes.
        candidates.sort_by_key(|c| c.snapshot);
        for c in candidates {
            if self.unchanged(&c) {
                continue;
            }
            self.previous.insert(
                c.status.station_id.clone(),
                Previous {
                    status: c.status.clone(),
                },
            );
            chunk.items.push(ReplayItem::Fresh {
                time: c.status.last_reported,
                source: source.clone(),
                event: Event::StationStatus(c.status),
            });
        }
        chunk.items.sort_by_key(ReplayItem::event_time);
        Ok(chunk)
    }

    fn unchanged(&self, c: &Candidate) -> bool {
        let Some(prev) = self.previous.get(&c.status.station_id) else {
            return false;
        };
        if c.reported {
            return prev.status == c.status;
        }
        // No `last_reported`: the stand-in time changes every snapshot, so compare the rest.
        let mut status = c.status.clone();
        status.last_reported = prev.status.last_reported;
        prev.status == status
    }
}

impl RecordedFormat for SnapshotReader {
    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        SnapshotReader::read_file(self, path, ctx)
    }

    fn prelude(&mut self) -> Vec<(Arc<str>, Event)> {
        self.stations.prelude()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::tests::ctx;

    const TORONTO: &str = "snapshot_utc_from_filename,station_id,num_bikes_available,mechanical,\
        ebike,num_bikes_disabled,num_docks_available,num_docks_disabled,is_installed,is_renting,\
        is_returning,last_reported,status";

    fn status_of(item: &ReplayItem) -> &StationStatus {
        match item {
            ReplayItem::Fresh {
                event: Event::StationStatus(s),
                ..
            } => s,
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn snapshot_times_in_every_recorded_form() {
        let t = Timestamp::parse_rfc3339("2024-04-05T21:04:56Z").unwrap();
        assert_eq!(parse_snapshot_time("20240405210456"), Some(t));
        assert_eq!(parse_snapshot_time("2024-04-05T21:04:56"), Some(t));
        assert_eq!(parse_snapshot_time("2024-04-05 21:04:56"), Some(t));
        assert_eq!(parse_snapshot_time("2024-04-05T21:04:56Z"), Some(t));
        assert_eq!(parse_snapshot_time("1712351096"), Some(t));
        assert_eq!(parse_snapshot_time("soon"), None);
    }

    #[test]
    fn emits_only_changes_in_event_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("station_status_hourly.csv");
        // Station 1 reports at 03:10 and again at 04:05; station 2 reports once (02:50) and
        // is repeated unchanged; station 3 has no last_reported and changes in the third
        // snapshot only; row 4 is dead (negative); station 5's time is the placeholder 0.
        let rows = [
            "2020-05-09T05:00:00,1,4,4,0,0,6,0,1,1,1,1589000000,IN_SERVICE", // 04:53:20
            "2020-05-09T03:00:00,1,3,3,0,0,7,0,1,1,1,1588993800,IN_SERVICE", // 03:10
            "2020-05-09T03:00:00,2,5,5,0,0,5,0,1,1,1,1588992600,IN_SERVICE", // 02:50
            "2020-05-09T03:00:00,3,1,1,0,0,9,0,1,1,1,,IN_SERVICE",
            "2020-05-09T03:00:00,4,-1,1,0,0,9,0,1,1,1,1588992600,IN_SERVICE",
            "2020-05-09T03:00:00,5,0,0,0,0,0,0,1,0,0,0,END_OF_LIFE",
            "2020-05-09T04:00:00,1,3,3,0,0,7,0,1,1,1,1588993800,IN_SERVICE",
            "2020-05-09T04:00:00,2,5,5,0,0,5,0,1,1,1,1588992600,IN_SERVICE",
            "2020-05-09T04:00:00,3,1,1,0,0,9,0,1,1,1,,IN_SERVICE",
            "2020-05-09T05:00:00,3,2,2,1,0,8,0,1,1,1,,IN_SERVICE",
        ];
        std::fs::write(&p, format!("{TORONTO}\r\n{}\r\n", rows.join("\r\n"))).unwrap();
        let mut reader = SnapshotReader::default();
        let chunk = reader.read_file(&p, &ctx()).unwrap();
        assert_eq!(chunk.rows, 10);
        let got: Vec<_> = chunk
            .items
            .iter()
            .map(|i| {
                let s = status_of(i);
                (
                    s.station_id.to_string(),
                    s.last_reported.to_rfc3339(),
                    s.num_bikes_available,
                )
            })
            .collect();
        let want = [
            ("2", "2020-05-09T02:50:00.000Z", 5),
            ("3", "2020-05-09T03:00:00.000Z", 1),
            ("1", "2020-05-09T03:10:00.000Z", 3),
            ("1", "2020-05-09T04:53:20.000Z", 4),
            ("3", "2020-05-09T05:00:00.000Z", 2),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect();
        assert_eq!(got, want);
        assert_eq!(status_of(&chunk.items[4]).num_ebikes_available, Some(1));
        let rules: Vec<_> = chunk.dead_letters.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["gbfs.counts.negative", "gbfs.time.invalid"]);

        // A second file continues from the first: an unchanged station stays quiet.
        let p2 = dir.path().join("more.csv");
        std::fs::write(&p2, format!("{TORONTO}\n{}\n", rows[0])).unwrap();
        assert!(reader.read_file(&p2, &ctx()).unwrap().items.is_empty());
    }

    #[test]
    fn time_check_allows_a_late_fetch_but_not_the_next_day() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        // Scheduled 03:00, reported 03:12 (a late fetch) and 2020-05-10 (impossible).
        let rows = "2020-05-09T03:00:00,1,3,3,0,0,7,0,1,1,1,1588993920,IN_SERVICE\n\
                    2020-05-09T03:00:00,2,3,3,0,0,7,0,1,1,1,1589080000,IN_SERVICE\n";
        std::fs::write(&p, format!("{TORONTO}\n{rows}")).unwrap();
        let chunk = SnapshotReader::default().read_file(&p, &ctx()).unwrap();
        assert_eq!(chunk.items.len(), 1);
        assert_eq!(chunk.dead_letters[0].rule, "gbfs.time.future");
    }

    #[test]
    fn ecobici_columns_and_station_information() {
        let dir = tempfile::tempdir().unwrap();
        let info1 = dir.path().join("station_information_1.json");
        let info2 = dir.path().join("station_information_2.json");
        std::fs::write(
            &info1,
            r#"{"last_updated":1712351088,"ttl":2,"data":{"stations":[
                {"station_id":"5","name":"CE-407","short_name":"407","lat":19.36,"lon":-99.15,"capacity":19},
                {"station_id":6,"name":[{"text":"Uxmal","language":"es"}],"lat":"19.3","lon":-99.1},
                {"station_id":"7","name":"Nowhere","lat":0,"lon":0,"capacity":5}
            ]}}"#,
        )
        .unwrap();
        std::fs::write(
            &info2,
            r#"{"data":{"stations":[
                {"station_id":"5","name":"renamed later","lat":19.0,"lon":-99.0,"capacity":3},
                {"station_id":"8","name":"New","lat":19.4,"lon":-99.2,"capacity":10}
            ]}}"#,
        )
        .unwrap();
        let (table, dead) = read_station_information(&[info1, info2], &ctx()).unwrap();
        let names: Vec<_> = table.infos().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["CE-407", "Uxmal", "New"]);
        assert_eq!(table.capacity(&"5".into()), Some(19));
        assert_eq!(table.capacity(&"7".into()), Some(5));
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].rule, "gbfs.coordinates");

        let p = dir.path().join("station_status_hourly.csv.gz");
        let text = "snapshot_file_utc,last_updated,station_id,num_bikes_available,\
            num_bikes_disabled,num_docks_available,num_docks_disabled,is_installed,is_renting,\
            is_returning,last_reported,num_ebikes_available\r\n\
            20240405210456,1712351088,5,3,0,16,0,1,1,1,1712349447,\r\n\
            20240405210456,1712351088,7,3,0,16,0,1,1,1,1712349447,\r\n\
            20240405210456,1712351088,8,3,0,6,0,1,1,1,1712351400,\r\n";
        std::fs::write(&p, text).unwrap();
        // Station 7's capacity (5, from the side file) judges its report only when asked.
        let strict = RowContext {
            side_file_capacity_rule: true,
            ..ctx()
        };
        let mut reader = SnapshotReader::new(table.clone());
        let chunk = reader.read_file(&p, &strict).unwrap();
        assert_eq!(chunk.items.len(), 1);
        assert_eq!(status_of(&chunk.items[0]).num_ebikes_available, None);
        let rules: Vec<_> = chunk.dead_letters.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["gbfs.counts.over_capacity", "gbfs.time.future"]);
        assert_eq!(reader.prelude().len(), 3);

        let chunk = SnapshotReader::new(table).read_file(&p, &ctx()).unwrap();
        let ids: Vec<_> = chunk
            .items
            .iter()
            .map(|i| status_of(i).station_id.as_str())
            .collect();
        assert_eq!(ids, ["5", "7"]);
        let rules: Vec<_> = chunk.dead_letters.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(rules, ["gbfs.time.future"]);
    }
}
