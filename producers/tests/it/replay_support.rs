//! What the replay tests share: a replay of recorded files into memory, and the checks every
//! replay must pass.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bikeshare_producers::output::MemoryOutput;
use bikeshare_producers::replay::{ReplayConfig, ReplaySource, ReplayStats, Replayer};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{DeadLetter, Envelope, Event, StationStatus};
use bikeshare_types::time::ManualClock;

/// Replays `source` as system `city` in `time_zone`, on a clock at 2026-01-01, and prints
/// the stats, the time taken and the dead letters by rule. The first event, the time zone's
/// `SystemInfo`, is checked and left out of the events returned (the stats count it).
pub async fn replay(
    source: ReplaySource,
    time_zone: &str,
) -> (ReplayStats, Vec<Envelope>, Vec<DeadLetter>) {
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap());
    let config = ReplayConfig::new("city".into()).with_time_zone(time_zone);
    let replayer = Replayer::new(config, Arc::new(clock)).unwrap();
    let out = MemoryOutput::default();
    let started = std::time::Instant::now();
    let stats = replayer.run(&source, &out).await.unwrap();
    let elapsed = started.elapsed();
    let dead = out.take_dead_letters();
    let mut by_rule = BTreeMap::new();
    for d in &dead {
        *by_rule.entry(d.rule.clone()).or_insert(0) += 1;
    }
    eprintln!("{stats:?} in {elapsed:.2?}; dead letters by rule: {by_rule:?}");
    let mut events = out.take_events();
    assert!(
        matches!(&events.first().unwrap().event, Event::SystemInfo(i) if i.timezone == time_zone),
        "the time zone comes first"
    );
    events.remove(0);
    (stats, events, dead)
}

/// Events come out in event-time order, none counted out of order.
pub fn assert_event_time_order(stats: &ReplayStats, events: &[Envelope]) {
    assert!(
        events
            .windows(2)
            .all(|w| w[0].event_time <= w[1].event_time),
        "event-time order"
    );
    assert_eq!(stats.out_of_order, 0);
}

/// The station reports among `events`.
pub fn statuses(events: &[Envelope]) -> Vec<&StationStatus> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StationStatus(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// No station's report is emitted twice in a row unchanged.
pub fn assert_no_report_repeated(statuses: &[&StationStatus]) {
    let mut last = HashMap::new();
    for s in statuses {
        assert_ne!(
            last.insert(&s.station_id, *s),
            Some(*s),
            "repeated report of {}",
            s.station_id
        );
    }
}
