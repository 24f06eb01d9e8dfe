//! The embedded stream keeps `[stream.retention] hours` of event time, like Kinesis' retention
//! period, and never trims what a checkpointed consumer has not read: `process` trims its
//! output streams to the retention behind their newest record but leaves `events` whole while
//! the lake archiver has not read them; `lake write` then trims `events` behind both
//! consumers' checkpoints. Nothing trimmed was lost: the lake holds every row.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Envelope, Prediction};
use support::{History, bikeshare, lake_rows, ok, stream_records};

const HOUR: i64 = 3_600_000;

fn run(data: &Path, args: &[&str]) {
    ok(bikeshare(data)
        .env("BIKESHARE_STREAM__RETENTION__HOURS", "1")
        .args(args));
}

/// The `field` time of every record of `stream`, in stream order.
fn times(data: &Path, stream: &str, field: &str) -> Vec<i64> {
    stream_records(data, stream)
        .iter()
        .map(|r| {
            Timestamp::parse_rfc3339(r[field].as_str().unwrap())
                .unwrap()
                .millis()
        })
        .collect()
}

fn span(t: &[i64]) -> (i64, i64) {
    (*t.iter().min().unwrap(), *t.iter().max().unwrap())
}

#[test]
fn the_stream_keeps_its_retention_behind_every_consumer() {
    let history = History::simulate(20, 7, "2026-03-02T06:00:00Z", "2026-03-02T10:00:00Z");
    let data = history.replayed("data");
    let all_events = times(&data, "events", "event_time");
    let (first, last) = span(&all_events);
    assert!(last - first > 3 * HOUR, "{first}..{last}");

    // The processor reads every event; the archiver has read none.
    run(&data, &["process", "--until-caught-up"]);
    assert_eq!(
        times(&data, "events", "event_time").len(),
        all_events.len(),
        "events the archiver has not read were trimmed"
    );
    // Its outputs keep one hour of event time (and a few minutes of disorder).
    let predictions = times(&data, "predictions", "as_of");
    let (p0, p1) = span(&predictions);
    assert!(p1 - p0 <= HOUR + 10 * 60_000, "{} h kept", (p1 - p0) / HOUR);
    let in_lake = lake_rows::<Prediction>(&data);
    assert!(
        in_lake.len() > predictions.len() * 2,
        "{} in the lake, {} in the stream",
        in_lake.len(),
        predictions.len()
    );
    assert!(in_lake.iter().map(|p| p.as_of.millis()).min().unwrap() < p1 - 2 * HOUR);

    // Once the archiver has read them too, events older than an hour before both go.
    run(&data, &["lake", "write", "--until-caught-up"]);
    let kept = times(&data, "events", "event_time");
    let (e0, e1) = span(&kept);
    assert!(
        kept.len() < all_events.len() / 2,
        "{} of {}",
        kept.len(),
        all_events.len()
    );
    assert!(e1 - e0 <= HOUR + 10 * 60_000, "{e0}..{e1}");
    assert_eq!(e1, last, "the newest events stay");
    assert_eq!(
        lake_rows::<Envelope>(&data).len(),
        all_events.len(),
        "the lake has every event"
    );
}

#[test]
fn events_no_processor_has_read_are_kept() {
    let history = History::simulate(10, 3, "2026-03-02T06:00:00Z", "2026-03-02T09:00:00Z");
    let data = history.replayed("data");
    let all = times(&data, "events", "event_time").len();
    run(&data, &["lake", "write", "--until-caught-up"]);
    assert_eq!(times(&data, "events", "event_time").len(), all);
    assert_eq!(lake_rows::<Envelope>(&data).len(), all);
}
