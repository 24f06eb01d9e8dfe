//! The Bluebikes station-status change log (monthly `station_status_YYYY-MM.csv[.bz2]`).
//!
//! One row per station report (`station_id`, `last_reported`), rows not sorted. Its
//! `station_latitude`/`station_longitude`/`station_name` are `NA`; coordinates and capacity
//! come from a separate `stations.csv` (`station_id,short_name,name,lat,lon,capacity,...`),
//! read by [`read_stations`]: its stations become `StationInfo` events, emitted before the
//! first status. A status row of a station without coordinates is still replayed (its
//! features are missing downstream).
//!
//! **Capacity.** `stations.csv` is a snapshot of a different date (2023) than the change logs
//! (2021), and stations gained and lost docks in between: station 222, listed with 5 docks,
//! reports 14 in January 2021. A capacity from another date is no evidence against a real
//! report, so its capacities do not feed `gbfs.counts.over_capacity` unless
//! [`ReplayConfig::side_file_capacity_rule`](super::ReplayConfig::side_file_capacity_rule)
//! asks for it (the rule stays on for live feeds and GBFS snapshots, whose capacities are
//! contemporaneous). Instead, the description follows the evidence: when a replayed report
//! has more bikes + docks (available and disabled) than the capacity last described for its
//! station, a `StationInfo` with that total as capacity is emitted just before the report, at
//! its time — as a live poller emits a changed description. A station's last description
//! thus carries the largest total seen, without looking ahead.
//!
//! `check_time` needs a "now". A recorded month cannot contain reports from after that month,
//! so "now" is the end of the month named in the file name (`..._2021-01...`) plus one day
//! (the months are local Boston months, a few hours behind UTC); a file without a month in
//! its name is checked against the replay clock (a recording cannot be from the future).

use std::path::Path;
use std::sync::Arc;

use std::collections::HashMap;

use bikeshare_types::contracts::{DeadLetter, Event, StationInfo, StationStatus};
use bikeshare_types::{StationId, Timestamp};
use chrono::NaiveDate;

use super::files::{RecordedCsv, format_error};
use super::status::StatusColumns;
use super::{
    RecordedFormat, ReplayChunk, ReplayError, ReplayItem, RowContext, StationTable, rule,
    source_name,
};
use crate::gbfs::rules::{self as gbfs_rules, rule as gbfs_rule};
use crate::input::{field, parse_int};

/// Reads `stations.csv`. Rows without usable coordinates or with an unparseable capacity are
/// dead letters (`gbfs.coordinates`, `replay.parse`); a repeated id is `gbfs.station.duplicate`.
pub fn read_stations(
    path: &Path,
    ctx: &RowContext,
) -> Result<(StationTable, Vec<DeadLetter>), ReplayError> {
    let source = source_name(path);
    let mut rows = RecordedCsv::open(path)?;
    let mut stations = StationTable::default();
    let mut dead = Vec::new();
    let Some(header) = rows.header()? else {
        return Ok((stations, dead));
    };
    let id_col = header.require("station_id").map_err(format_error(path))?;
    let lat_col = header.find(&["lat", "latitude"]);
    let lon_col = header.find(&["lon", "lng", "longitude"]);
    let name_col = header.find(&["name"]);
    let short_col = header.find(&["short_name"]);
    let cap_col = header.find(&["capacity"]);
    let mut seen = std::collections::HashSet::new();
    while let Some(row) = rows.next_row()? {
        let f = &row.fields;
        let mut reject = |rule: &str, message: String| {
            let message = format!("line {}: {message}", row.line_no);
            dead.push(ctx.dead_letter(&source, rule, message, &row.raw));
        };
        let Some(id) = field(f, Some(id_col)) else {
            reject(rule::PARSE, "station_id is missing".into());
            continue;
        };
        let station_id = StationId::new(id);
        if !seen.insert(station_id.clone()) {
            reject(
                gbfs_rule::STATION_DUPLICATE,
                format!("station {station_id} listed again"),
            );
            continue;
        }
        let capacity = match field(f, cap_col).map(parse_int) {
            None => None,
            Some(Some(c)) => u32::try_from(c).ok().filter(|c| *c > 0),
            Some(None) => {
                reject(
                    rule::PARSE,
                    format!("station {station_id}: capacity is not a number"),
                );
                continue;
            }
        };
        stations.set_capacity(&station_id, capacity);
        let coord = |col| field(f, col).and_then(|v| v.parse::<f64>().ok());
        let (Some(lat), Some(lon)) = (coord(lat_col), coord(lon_col)) else {
            reject(
                gbfs_rule::COORDINATES,
                format!("station {station_id}: no coordinates"),
            );
            continue;
        };
        if let Err(v) = gbfs_rules::check_coordinates(&station_id, lat, lon) {
            reject(v.rule, v.message);
            continue;
        }
        let short_name = field(f, short_col).map(str::to_owned);
        let name = field(f, name_col).map(str::to_owned);
        stations.push_info(
            source.clone(),
            StationInfo {
                name: name
                    .or_else(|| short_name.clone())
                    .unwrap_or_else(|| id.to_owned()),
                station_id,
                short_name,
                lat,
                lon,
                capacity,
                region_id: None,
                is_virtual_station: false,
            },
        );
    }
    Ok((stations, dead))
}

/// Reads one month of the change log into event-time order. Every data row becomes either a
/// `StationStatus` event or a dead letter (`replay.parse` or a `gbfs.*` rule).
pub fn read_status_file(
    path: &Path,
    stations: &StationTable,
    ctx: &RowContext,
) -> Result<ReplayChunk, ReplayError> {
    let source = source_name(path);
    let now = month_horizon(path).unwrap_or_else(|| ctx.clock.now());
    let mut rows = RecordedCsv::open(path)?;
    let mut chunk = ReplayChunk::default();
    let Some(header) = rows.header()? else {
        return Ok(chunk);
    };
    let columns = StatusColumns::from_header(&header, true).map_err(format_error(path))?;
    while let Some(row) = rows.next_row()? {
        chunk.rows += 1;
        let validated = columns
            .parse(&row.fields)
            .map_err(|m| (rule::PARSE, m))
            .and_then(|parsed| {
                let t = parsed
                    .last_reported
                    .ok_or((rule::PARSE, "last_reported is missing".into()))?;
                let capacity = stations
                    .capacity(&parsed.station_id)
                    .filter(|_| ctx.side_file_capacity_rule);
                parsed
                    .validate(t, capacity, now, &ctx.rules)
                    .map_err(|v| (v.rule, v.message))
            })
            .map(|status| (status.last_reported, Event::StationStatus(status)));
        chunk.row(ctx, &source, row.line_no, &row.raw, validated);
    }
    chunk.items.sort_by_key(ReplayItem::event_time);
    Ok(chunk)
}

/// The latest plausible report time of a monthly file: one day after the end of the
/// `YYYY-MM` month its name carries, or `None` when the name has no month.
pub fn month_horizon(path: &Path) -> Option<Timestamp> {
    let name = path.file_name()?.to_str()?.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let (year, month) = name.windows(7).find_map(|w| {
        if !(digits(&w[..4]) && w[4] == b'-' && digits(&w[5..])) {
            return None;
        }
        let year: i32 = std::str::from_utf8(&w[..4]).ok()?.parse().ok()?;
        let month: u32 = std::str::from_utf8(&w[5..]).ok()?.parse().ok()?;
        (1..=12).contains(&month).then_some((year, month))
    })?;
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = first.checked_add_months(chrono::Months::new(1))?;
    let end = next.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
    Some(Timestamp::from_datetime(end))
}

/// Bikes + docks, available and disabled: the docks a report proves the station has.
fn docks_in_use(s: &StationStatus) -> u32 {
    [
        Some(s.num_bikes_available),
        s.num_bikes_disabled,
        s.num_docks_available,
        s.num_docks_disabled,
    ]
    .into_iter()
    .flatten()
    .fold(0u32, u32::saturating_add)
}

/// The [`RecordedFormat`] of a run over change-log files.
#[derive(Debug)]
pub(crate) struct BluebikesFormat {
    stations: StationTable,
    /// The last description emitted of each station with one, for raising its capacity.
    described: HashMap<StationId, StationInfo>,
}

impl BluebikesFormat {
    pub fn new(stations: StationTable) -> Self {
        let described = stations
            .infos()
            .map(|i| (i.station_id.clone(), i.clone()))
            .collect();
        Self {
            stations,
            described,
        }
    }

    /// Puts a raised description before each report above its station's described capacity
    /// (see the module docs). `items` are in event-time order and stay so.
    fn raise_capacities(&mut self, items: Vec<ReplayItem>) -> Vec<ReplayItem> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let ReplayItem::Fresh {
                time,
                source,
                event: Event::StationStatus(status),
            } = &item
                && let Some(info) = self.described.get_mut(&status.station_id)
                && let Some(capacity) = info.capacity
                && docks_in_use(status) > capacity
            {
                info.capacity = Some(docks_in_use(status));
                out.push(ReplayItem::Fresh {
                    time: *time,
                    source: source.clone(),
                    event: Event::StationInfo(info.clone()),
                });
            }
            out.push(item);
        }
        out
    }
}

impl RecordedFormat for BluebikesFormat {
    fn read_file(&mut self, path: &Path, ctx: &RowContext) -> Result<ReplayChunk, ReplayError> {
        let mut chunk = read_status_file(path, &self.stations, ctx)?;
        if !ctx.side_file_capacity_rule {
            chunk.items = self.raise_capacities(std::mem::take(&mut chunk.items));
        }
        Ok(chunk)
    }

    fn prelude(&mut self) -> Vec<(Arc<str>, Event)> {
        self.stations.prelude()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::replay::tests::ctx;

    const HEADER: &str = "num_docks_available,is_installed,num_bikes_available,station_id,\
        is_returning,num_ebikes_available,is_renting,station_status,last_reported,\
        num_docks_disabled,num_bikes_disabled,date,year,month,day,hour,minute,\
        station_latitude,station_longitude,station_name";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn month_horizon_is_a_day_after_the_month() {
        let h = month_horizon(Path::new("x/station_status_2021-12.csv.bz2")).unwrap();
        assert_eq!(h, Timestamp::parse_rfc3339("2022-01-02T00:00:00Z").unwrap());
        assert_eq!(month_horizon(Path::new("status_2021-13.csv")), None);
        assert_eq!(month_horizon(Path::new("status.csv")), None);
    }

    #[test]
    fn stations_keep_coordinates_and_reject_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "stations.csv",
            "station_id,short_name,name,lat,lon,capacity,source\n\
             3,B32006,\"Fenway, Avenue\",42.34,-71.10,14,x\n\
             5,,North Lot,42.34,-71.09,,x\n\
             6,,Zero,0,0,15,x\n\
             7,,Nowhere,,,15,x\n\
             8,,Cap,42.3,-71.0,lots,x\n\
             3,,Again,42.0,-71.0,1,x\n\
             9,,Zero capacity,42.3,-71.0,0,x\n",
        );
        let (stations, dead) = read_stations(&p, &ctx()).unwrap();
        let ids: Vec<_> = stations.infos().map(|i| i.station_id.as_str()).collect();
        assert_eq!(ids, ["3", "5", "9"]);
        assert_eq!(stations.infos().next().unwrap().name, "Fenway, Avenue");
        assert_eq!(stations.capacity(&"3".into()), Some(14));
        assert_eq!(stations.capacity(&"5".into()), None);
        assert_eq!(stations.capacity(&"9".into()), None, "0 is a placeholder");
        assert_eq!(
            stations.capacity(&"7".into()),
            Some(15),
            "capacity without coordinates"
        );
        let rules: Vec<_> = dead.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "gbfs.coordinates",
                "gbfs.coordinates",
                "replay.parse",
                "gbfs.station.duplicate"
            ]
        );
        assert!(dead[0].raw.starts_with("6,,Zero"));
    }

    #[test]
    fn a_quoted_line_break_stays_in_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "stations.csv",
            "station_id,name,lat,lon,capacity\n\
             3,\"Fenway\nAvenue\",42.34,-71.10,14\n\
             4,Nowhere,,,15\n",
        );
        let (stations, dead) = read_stations(&p, &ctx()).unwrap();
        assert_eq!(stations.infos().next().unwrap().name, "Fenway\nAvenue");
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].message.starts_with("line 4:"),
            "{}",
            dead[0].message
        );
        assert_eq!(dead[0].raw, "4,Nowhere,,,15");
    }

    #[test]
    fn status_rows_are_sorted_and_bad_rows_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let mut stations = StationTable::default();
        stations.set_capacity(&"3".into(), Some(10));
        let p = write(
            dir.path(),
            "station_status_2021-01.csv",
            &format!(
                "{HEADER}\r\n\
                 5,1,5,3,1,0,1,active,1609477400,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 5,1,4,3,1,0,1,active,1609477300,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 5,1,-1,4,1,0,1,active,1609477300,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 9,1,5,3,1,0,1,active,1609477500,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 5,1,5,3,1,0,1,active,1893456000,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 5,1,x,3,1,0,1,active,1609477300,0,0,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 5,1,5,777,1,NA,1,active,1609477350,NA,NA,18628,2021,1,1,0,2,NA,NA,NA\r\n\
                 \r\n"
            ),
        );
        // The side file's capacity (10) judges reports only when asked to.
        let strict = RowContext {
            side_file_capacity_rule: true,
            ..ctx()
        };
        let chunk = read_status_file(&p, &stations, &strict).unwrap();
        assert_eq!(chunk.rows, 7);
        let times: Vec<_> = chunk.items.iter().map(|i| i.event_time().secs()).collect();
        assert_eq!(times, [1_609_477_300, 1_609_477_350, 1_609_477_400]);
        let ReplayItem::Fresh {
            event: Event::StationStatus(s),
            source,
            ..
        } = &chunk.items[1]
        else {
            panic!("not a fresh status");
        };
        assert_eq!(&**source, "replay:station_status_2021-01.csv");
        assert_eq!(
            (
                s.station_id.as_str(),
                s.num_ebikes_available,
                s.num_docks_disabled
            ),
            ("777", None, None)
        );
        let rules: Vec<_> = chunk.dead_letters.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "gbfs.counts.negative",
                "gbfs.counts.over_capacity",
                "gbfs.time.future",
                "replay.parse"
            ]
        );
        assert!(chunk.dead_letters[0].raw.starts_with("5,1,-1,4,"));
        assert!(
            chunk.dead_letters[3].message.contains("line 7"),
            "{}",
            chunk.dead_letters[3].message
        );

        let lenient = read_status_file(&p, &stations, &ctx()).unwrap();
        let times: Vec<_> = lenient
            .items
            .iter()
            .map(|i| i.event_time().secs())
            .collect();
        assert_eq!(
            times,
            [1_609_477_300, 1_609_477_350, 1_609_477_400, 1_609_477_500]
        );
        let rules: Vec<_> = lenient
            .dead_letters
            .iter()
            .map(|d| d.rule.as_str())
            .collect();
        assert_eq!(
            rules,
            ["gbfs.counts.negative", "gbfs.time.future", "replay.parse"]
        );
    }

    #[test]
    fn capacities_rise_to_what_reports_show_without_rejecting_them() {
        let dir = tempfile::tempdir().unwrap();
        let stations = write(
            dir.path(),
            "stations.csv",
            "station_id,name,lat,lon,capacity
222,Small,42.3,-71.1,5
7,Nowhere,,,5
",
        );
        let (table, _) = read_stations(&stations, &ctx()).unwrap();
        // (bikes, docks, last_reported): 14 docks in use, then 9, then 16; station 7 has no
        // description to raise.
        let row = |station: &str, bikes: u32, docks: u32, t: i64| {
            format!("{docks},1,{bikes},{station},1,0,1,active,{t},0,1,18628,2021,1,1,0,2,NA,NA,NA")
        };
        let log = write(
            dir.path(),
            "station_status_2021-01.csv",
            &[
                HEADER.to_owned(),
                row("222", 4, 10, 1_609_477_300),
                row("222", 3, 6, 1_609_477_200),
                row("222", 5, 11, 1_609_477_400),
                row("222", 2, 12, 1_609_477_500),
                row("7", 9, 9, 1_609_477_300),
            ]
            .join("\n"),
        );
        let mut format = BluebikesFormat::new(table);
        let chunk = format.read_file(&log, &ctx()).unwrap();
        assert!(chunk.dead_letters.is_empty(), "{:?}", chunk.dead_letters);
        let got: Vec<_> = chunk
            .items
            .iter()
            .map(|i| match i {
                ReplayItem::Fresh {
                    time,
                    event: Event::StationInfo(info),
                    ..
                } => (time.secs(), format!("info {}", info.capacity.unwrap())),
                ReplayItem::Fresh {
                    time,
                    event: Event::StationStatus(s),
                    ..
                } => (time.secs(), format!("status {}", s.station_id)),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want = [
            (1_609_477_200, "info 10"),
            (1_609_477_200, "status 222"),
            (1_609_477_300, "info 15"),
            (1_609_477_300, "status 222"),
            (1_609_477_300, "status 7"),
            (1_609_477_400, "info 17"),
            (1_609_477_400, "status 222"),
            (1_609_477_500, "status 222"),
        ];
        let want: Vec<_> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want);
        // The raised description is kept across files: a later month does not lower it.
        assert_eq!(format.described[&StationId::new("222")].capacity, Some(17));
    }

    #[test]
    fn missing_required_column_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "s.csv", "station_id,num_bikes_available\n1,2\n");
        let err = read_status_file(&p, &StationTable::default(), &ctx()).unwrap_err();
        assert!(matches!(err, ReplayError::Format { .. }), "{err}");
    }
}
