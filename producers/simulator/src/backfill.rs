//! The simulated history as input-stream events, without serving anything.
//!
//! [`history`] steps a [`City`] from `from` (floored to the hour) to `to` and yields the
//! [`Envelope`]s a live producer polling the simulator would have published, in
//! event-time order: first the `SystemInfo` and every `StationInfo` (at `from`), the first
//! hour's weather and every station's initial report; then, minute by minute, the
//! `StationStatus` of each station that reported (on change or heartbeat, at its
//! `last_reported`), then a `FeedHeartbeat` for `station_status` at the minute (as a live
//! poller publishes after each read, so watermarks advance through quiet minutes) and, on
//! each full hour, that hour's `Weather`. Each envelope has `ingest_time = event_time` and
//! source `simulator`.
//!
//! [`write_history`] writes them as JSON lines, gzip-compressed when the path ends in
//! `.gz`, through a temporary file renamed into place, so a failed run leaves no partial
//! file behind.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use bikeshare_types::contracts::{Envelope, Event, FeedHeartbeat};
use bikeshare_types::{SystemId, Timestamp};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::{City, CityConfig, SimulatorError};

/// The `source` of every simulated envelope.
pub const SOURCE: &str = "simulator";

/// The simulated history, one envelope at a time (see the module docs for the order).
#[derive(Debug)]
pub struct History {
    city: City,
    system_id: SystemId,
    to: Timestamp,
    queue: VecDeque<Envelope>,
}

/// The history of the city `config` from `from` (floored to the hour) to `to`.
pub fn history(
    config: &CityConfig,
    from: Timestamp,
    to: Timestamp,
) -> Result<History, SimulatorError> {
    if to < from {
        return Err(SimulatorError::Config {
            field: "backfill.to",
            message: format!("{to} is before {from}"),
        });
    }
    let start = from.floor_to(Timestamp::HOUR_MS);
    let city = City::new(config.clone(), start)?;
    let system_id = SystemId::new(config.system_id.clone());
    let mut h = History {
        city,
        system_id,
        to,
        queue: VecDeque::new(),
    };
    h.push(start, Event::SystemInfo(h.city.system_information()));
    for info in h.city.station_information() {
        h.push(start, Event::StationInfo(info));
    }
    h.push(start, Event::Weather(h.city.weather(start)));
    for status in h.city.station_status() {
        h.push(status.last_reported, Event::StationStatus(status));
    }
    h.push_feed_heartbeat(start);
    Ok(h)
}

impl History {
    /// The city being stepped (its state is that of the last envelope's minute).
    pub fn city(&self) -> &City {
        &self.city
    }

    fn push(&mut self, event_time: Timestamp, event: Event) {
        self.queue.push_back(Envelope::new(
            self.system_id.clone(),
            SOURCE,
            event_time,
            event_time,
            event,
        ));
    }

    /// What a live poller publishes after reading `station_status` as of `t`.
    fn push_feed_heartbeat(&mut self, t: Timestamp) {
        let beat = FeedHeartbeat {
            feed: "station_status".into(),
            last_updated: t,
            period_s: None,
        };
        self.push(t, Event::FeedHeartbeat(beat));
    }

    fn step(&mut self) {
        self.city.step();
        let mut reports: Vec<_> = self
            .city
            .reported_last_step()
            .iter()
            .filter_map(|&s| self.city.status_of(s as usize))
            .collect();
        reports.sort_by(|a, b| {
            a.last_reported
                .cmp(&b.last_reported)
                .then_with(|| a.station_id.cmp(&b.station_id))
        });
        for status in reports {
            self.push(status.last_reported, Event::StationStatus(status));
        }
        let now = self.city.now();
        self.push_feed_heartbeat(now);
        if now.millis().rem_euclid(Timestamp::HOUR_MS) == 0 {
            self.push(now, Event::Weather(self.city.weather(now)));
        }
    }
}

impl Iterator for History {
    type Item = Envelope;

    fn next(&mut self) -> Option<Envelope> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.city.now().plus_minutes(1) > self.to {
                return None;
            }
            self.step();
        }
    }
}

/// What [`write_history`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillSummary {
    pub events: u64,
    pub station_status: u64,
    pub weather: u64,
    pub feed_heartbeats: u64,
    pub stations: u64,
    pub first_event_time: Option<Timestamp>,
    pub last_event_time: Option<Timestamp>,
}

/// Writes the history of `config` from `from` to `to` to `path` as JSON lines of
/// [`Envelope`], gzip-compressed when the path ends in `.gz`.
pub fn write_history(
    config: &CityConfig,
    from: Timestamp,
    to: Timestamp,
    path: &Path,
) -> Result<BackfillSummary, SimulatorError> {
    write_history_with_progress(config, from, to, path, &AtomicI64::new(0))
}

/// [`write_history`], storing the event time (ms) of each event written into `progress`, for a
/// progress bar.
pub fn write_history_with_progress(
    config: &CityConfig,
    from: Timestamp,
    to: Timestamp,
    path: &Path,
    progress: &AtomicI64,
) -> Result<BackfillSummary, SimulatorError> {
    let events = history(config, from, to)?;
    let tmp = temp_path(path);
    let io = |source: std::io::Error| SimulatorError::Io {
        path: path.to_owned(),
        source,
    };
    let result = (|| {
        let file = File::create(&tmp).map_err(io)?;
        let gzip = path.extension().is_some_and(|e| e == "gz");
        let (file, summary) = if gzip {
            let mut out =
                BufWriter::with_capacity(1 << 20, GzEncoder::new(file, Compression::fast()));
            let s = write_lines(events, &mut out, path, progress)?;
            (
                out.into_inner()
                    .map_err(|e| io(e.into_error()))?
                    .finish()
                    .map_err(io)?,
                s,
            )
        } else {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let s = write_lines(events, &mut out, path, progress)?;
            (out.into_inner().map_err(|e| io(e.into_error()))?, s)
        };
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn write_lines(
    events: History,
    out: &mut impl Write,
    path: &Path,
    progress: &AtomicI64,
) -> Result<BackfillSummary, SimulatorError> {
    let io = |source: std::io::Error| SimulatorError::Io {
        path: path.to_owned(),
        source,
    };
    let mut s = BackfillSummary::default();
    let mut line = Vec::with_capacity(1024);
    for env in events {
        line.clear();
        serde_json::to_writer(&mut line, &env).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        out.write_all(&line).map_err(io)?;
        s.events += 1;
        match env.event {
            Event::StationStatus(_) => s.station_status += 1,
            Event::Weather(_) => s.weather += 1,
            Event::StationInfo(_) => s.stations += 1,
            Event::FeedHeartbeat(_) => s.feed_heartbeats += 1,
            Event::SystemInfo(_) => {}
        }
        s.first_event_time.get_or_insert(env.event_time);
        s.last_event_time = Some(env.event_time);
        progress.store(env.event_time.millis(), Ordering::Relaxed);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use bikeshare_types::contracts::EventKind;
    use flate2::read::GzDecoder;

    use super::*;

    const FROM: i64 = 1_717_387_200_000; // 2024-06-03 04:00 UTC

    fn small() -> CityConfig {
        CityConfig {
            stations: 20,
            ..CityConfig::default()
        }
    }

    #[test]
    fn events_are_in_event_time_order_and_complete() {
        let to = Timestamp(FROM).plus_minutes(6 * 60 + 30);
        let events: Vec<Envelope> = history(&small(), Timestamp(FROM + 1234), to)
            .unwrap()
            .collect();
        assert_eq!(events[0].kind(), EventKind::SystemInfo);
        assert!(
            events[1..21]
                .iter()
                .all(|e| e.kind() == EventKind::StationInfo)
        );
        assert!(
            events
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time),
            "not in event-time order"
        );
        assert!(
            events
                .iter()
                .all(|e| e.event_time == e.ingest_time && e.event_time <= to)
        );
        let weather: Vec<_> = events
            .iter()
            .filter(|e| e.kind() == EventKind::Weather)
            .collect();
        assert_eq!(weather.len(), 7, "hours 04:00 to 10:00");
        // Every report is new: (station, last_reported) never repeats.
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            if let Event::StationStatus(s) = &e.event {
                assert!(
                    seen.insert((s.station_id.clone(), s.last_reported)),
                    "{s:?}"
                );
                assert_eq!(e.event_time, s.last_reported);
            }
        }
        assert!(seen.len() > 20 * 6, "only {} reports", seen.len());
        // Deterministic.
        let again: Vec<Envelope> = history(&small(), Timestamp(FROM), to).unwrap().collect();
        assert_eq!(events, again);
    }

    #[test]
    fn writes_plain_and_gzip_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let to = Timestamp(FROM).plus_minutes(120);
        for name in ["h.jsonl", "h.jsonl.gz"] {
            let path = dir.path().join(name);
            let summary = write_history(&small(), Timestamp(FROM), to, &path).unwrap();
            let file = File::open(&path).unwrap();
            let reader: Box<dyn BufRead> = if name.ends_with(".gz") {
                Box::new(BufReader::new(GzDecoder::new(file)))
            } else {
                Box::new(BufReader::new(file))
            };
            let lines: Vec<Envelope> = reader
                .lines()
                .map(|l| Envelope::decode(l.unwrap().as_bytes()).unwrap())
                .collect();
            assert_eq!(lines.len() as u64, summary.events);
            assert_eq!(summary.stations, 20);
            assert_eq!(summary.weather, 3);
            assert_eq!(summary.feed_heartbeats, 121);
            assert!(!dir.path().join(format!("{name}.partial")).exists());
        }
        assert!(write_history(&small(), to, Timestamp(FROM), &dir.path().join("x.jsonl")).is_err());
    }
}
