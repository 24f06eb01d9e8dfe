//! Event-time semantics of the processor on hand-built event sequences.

use bikeshare_stream_processor::processor::FeatureRow;
use bikeshare_stream_processor::{Emitted, Processor, ProcessorConfig, RejectReason};
use bikeshare_types::contracts::{
    Envelope, Event, FeedHeartbeat, Label, PredictionTrigger, StationInfo, StationStatus,
    SystemInfo,
};
use bikeshare_types::{StationId, SystemId, Timestamp};

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % (5 * MIN); // on the tick grid

fn sys() -> SystemId {
    SystemId::new("test")
}

fn env(t: i64, event: Event) -> Envelope {
    Envelope::new(sys(), "test", Timestamp(t), Timestamp(t), event)
}

fn status(id: &str, t: i64, bikes: u32, docks: u32) -> Envelope {
    env(
        t,
        Event::StationStatus(StationStatus {
            station_id: StationId::new(id),
            num_bikes_available: bikes,
            num_ebikes_available: None,
            num_bikes_disabled: Some(0),
            num_docks_available: Some(docks),
            num_docks_disabled: Some(0),
            is_installed: true,
            is_renting: true,
            is_returning: true,
            last_reported: Timestamp(t),
            vehicle_types_available: vec![],
        }),
    )
}

fn info(id: &str, lat: f64, lon: f64) -> Envelope {
    env(
        T0 - MIN,
        Event::StationInfo(StationInfo {
            station_id: StationId::new(id),
            name: id.into(),
            short_name: None,
            lat,
            lon,
            capacity: Some(20),
            region_id: None,
            is_virtual_station: false,
        }),
    )
}

fn heartbeat(t: i64) -> Envelope {
    env(
        t,
        Event::FeedHeartbeat(FeedHeartbeat {
            feed: "station_status".into(),
            last_updated: Timestamp(t),
            period_s: None,
        }),
    )
}

fn run(p: &mut Processor, events: Vec<Envelope>) -> Vec<Emitted> {
    let mut out = Vec::new();
    for e in events {
        p.process(e, &mut out);
    }
    out
}

/// What a consumer keeps: the last row of each prediction id, and the labels in order. The
/// row's revision is left out: it counts the id's rows, which depends on the arrival order
/// (an early row exists only for a report that waited), not the answer.
fn answers(out: &[Emitted]) -> (std::collections::BTreeMap<String, FeatureRow>, Vec<Label>) {
    let mut last = std::collections::BTreeMap::new();
    let mut labels = Vec::new();
    for e in out {
        match e {
            Emitted::Row(r) => {
                let answer = FeatureRow {
                    revision: 0,
                    ..r.clone()
                };
                last.insert(r.prediction_id.as_str().to_owned(), answer);
            }
            Emitted::Label(l) => labels.push(l.clone()),
            Emitted::Rejected { .. } => {}
        }
    }
    (last, labels)
}

fn rows(out: &[Emitted]) -> Vec<(String, i64, PredictionTrigger)> {
    out.iter()
        .filter_map(|e| match e {
            Emitted::Row(r) => Some((
                r.vector.station_id.to_string(),
                r.vector.as_of.millis() - T0,
                r.trigger,
            )),
            _ => None,
        })
        .collect()
}

/// What was rejected, why, at which event time (from `T0`).
fn rejected(out: &[Emitted]) -> Vec<(RejectReason, i64)> {
    out.iter()
        .filter_map(|e| match e {
            Emitted::Rejected { reason, envelope } => {
                Some((*reason, envelope.event_time.millis() - T0))
            }
            _ => None,
        })
        .collect()
}

fn in_order() -> ProcessorConfig {
    ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    }
}

#[test]
fn updates_then_ticks_on_the_grid_for_quiet_stations() {
    let mut p = Processor::new(in_order());
    let out = run(
        &mut p,
        vec![
            env(
                T0 - MIN,
                Event::SystemInfo(SystemInfo {
                    system_id: sys(),
                    name: "t".into(),
                    timezone: "America/Toronto".into(),
                    language: None,
                    gbfs_version: "3.0".into(),
                }),
            ),
            info("a", 43.0, -79.0),
            info("b", 43.001, -79.0),
            status("a", T0 + MIN, 5, 15),
            status("b", T0 + 2 * MIN, 0, 20),
            heartbeat(T0 + 11 * MIN),
        ],
    );
    let r = rows(&out);
    assert_eq!(
        r,
        vec![
            ("a".into(), MIN, PredictionTrigger::Update),
            ("b".into(), 2 * MIN, PredictionTrigger::Update),
            ("a".into(), 5 * MIN, PredictionTrigger::Tick),
            ("b".into(), 5 * MIN, PredictionTrigger::Tick),
            ("a".into(), 10 * MIN, PredictionTrigger::Tick),
            ("b".into(), 10 * MIN, PredictionTrigger::Tick),
        ]
    );
    // Neighbour features: b sees a as its neighbour, and b is empty.
    let schema = p.schema().clone();
    let row_b = out.iter().find_map(|e| match e {
        Emitted::Row(r) if r.vector.station_id.as_str() == "b" => Some(r.clone()),
        _ => None,
    });
    let vb = row_b.unwrap().vector.values;
    assert_eq!(vb[schema.index("nb_count").unwrap()], Some(1.0));
    assert_eq!(vb[schema.index("nb_bikes").unwrap()], Some(5.0));
    assert_eq!(vb[schema.index("is_empty").unwrap()], Some(1.0));
}

/// An information feed's heartbeat (one per read, at the read time).
fn info_heartbeat(feed: &str, t: i64) -> Envelope {
    env(
        t,
        Event::FeedHeartbeat(FeedHeartbeat {
            feed: feed.into(),
            last_updated: Timestamp(t),
            period_s: Some(3600),
        }),
    )
}

#[test]
fn information_feed_heartbeats_change_nothing_the_processor_emits() {
    let history = || {
        vec![
            status("a", T0 + MIN, 5, 15),
            status("b", T0 + 3 * MIN, 0, 20),
            status("a", T0 + 12 * MIN, 4, 16),
            heartbeat(T0 + 20 * MIN),
        ]
    };
    let plain = run(&mut Processor::new(in_order()), history());
    // Read times far ahead of the status history (a read seconds after a replayed hour) and
    // far behind it: neither may tick the watermark on, nor be rejected as late.
    let mut with_beats = history();
    with_beats.insert(1, info_heartbeat("station_information", T0 + 600 * MIN));
    with_beats.insert(3, info_heartbeat("system_information", T0 - 600 * MIN));
    with_beats.push(info_heartbeat("station_information", T0 - 600 * MIN));
    let beaten = run(&mut Processor::new(in_order()), with_beats);
    assert!(!plain.is_empty());
    assert_eq!(answers(&plain), answers(&beaten));
    assert_eq!(rows(&plain), rows(&beaten));
    assert!(
        !beaten.iter().any(|e| matches!(e, Emitted::Rejected { .. })),
        "a heartbeat is not a late event"
    );
}

#[test]
fn a_report_sent_again_after_the_watermark_passed_it_is_a_duplicate_not_late() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_ms: 2 * MIN,
        ..ProcessorConfig::default()
    });
    let out = run(
        &mut p,
        vec![
            status("a", T0 + MIN, 5, 15),
            status("a", T0 + 3 * MIN, 4, 16),
            status("b", T0 + 2 * MIN, 7, 13),
            heartbeat(T0 + 20 * MIN),
            // A producer restarted and sent its last reports again...
            status("a", T0 + 3 * MIN, 4, 16),
            status("b", T0 + 2 * MIN, 7, 13),
            // ...but this one was never seen (other state at a's time): late.
            status("a", T0 + 3 * MIN, 9, 11),
        ],
    );
    assert_eq!(
        rejected(&out),
        vec![
            (RejectReason::Duplicate, 3 * MIN),
            (RejectReason::Duplicate, 2 * MIN),
            (RejectReason::Late, 3 * MIN)
        ]
    );
}

#[test]
fn late_events_are_rejected_with_a_reason_and_duplicates_counted() {
    let mut p = Processor::new(ProcessorConfig {
        lateness_ms: 2 * MIN,
        ..ProcessorConfig::default()
    });
    let out = run(
        &mut p,
        vec![
            status("a", T0 + 10 * MIN, 5, 15),
            status("b", T0 + 9 * MIN, 5, 15), // out of order, within the bound
            status("c", T0 + 7 * MIN, 5, 15), // older than the watermark (T0+8m)
            status("a", T0 + 10 * MIN, 5, 15), // duplicate of a's report
            heartbeat(T0 + 30 * MIN),
        ],
    );
    assert_eq!(
        rejected(&out),
        vec![
            (RejectReason::Late, 7 * MIN),
            (RejectReason::Duplicate, 10 * MIN)
        ]
    );
    let updates: Vec<_> = rows(&out)
        .into_iter()
        .filter(|r| r.2 == PredictionTrigger::Update)
        .collect();
    assert_eq!(
        updates,
        vec![
            ("b".into(), 9 * MIN, PredictionTrigger::Update),
            ("a".into(), 10 * MIN, PredictionTrigger::Update)
        ],
        "applied in event-time order, not arrival order"
    );
    let s = p.stats();
    assert_eq!((s.late, s.duplicates), (1, 1));
}

#[test]
fn every_prediction_is_labelled_once_its_horizon_has_passed() {
    let mut p = Processor::new(in_order());
    let mut events = vec![status("a", T0 + MIN, 2, 18)];
    events.push(status("a", T0 + 20 * MIN, 0, 20)); // empty 19 min after the first prediction
    events.push(status("a", T0 + 40 * MIN, 6, 14));
    events.push(heartbeat(T0 + 120 * MIN));
    let out = run(&mut p, events);
    let mut predicted: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Emitted::Row(r) => Some(r.prediction_id.clone()),
            _ => None,
        })
        .collect();
    let labels: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Emitted::Label(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    // Every prediction whose horizon ended by the last tick (T0+120m) has its label.
    let due: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Emitted::Row(r) if r.vector.as_of.millis() + 30 * MIN <= T0 + 120 * MIN => {
                Some(r.prediction_id.clone())
            }
            _ => None,
        })
        .collect();
    let mut labelled: Vec<_> = labels.iter().map(|l| l.prediction_id.clone()).collect();
    labelled.sort();
    let mut due_sorted = due.clone();
    due_sorted.sort();
    assert_eq!(labelled, due_sorted);
    predicted.sort();
    predicted.dedup();
    assert_eq!(
        predicted.len(),
        rows(&out).len(),
        "prediction ids are unique"
    );
    let first = labels
        .iter()
        .find(|l| l.as_of.millis() == T0 + MIN)
        .unwrap();
    assert!(first.went_empty && !first.empty_at_as_of && first.observations == 1);
    let at_40 = labels
        .iter()
        .find(|l| l.as_of.millis() == T0 + 40 * MIN)
        .unwrap();
    assert!(!at_40.went_empty && at_40.observations == 0);
    let at_20 = labels
        .iter()
        .find(|l| l.as_of.millis() == T0 + 20 * MIN)
        .unwrap();
    assert!(
        at_20.went_empty && at_20.empty_at_as_of,
        "empty at as_of and still empty just after"
    );
}

/// The update trigger (`score_on_arrival`): with a two-minute lateness, a report is scored in the same
/// call that takes it, not when the watermark passes it; its release adds no second row when
/// nothing changed, and a correction (same id) when an earlier report arrived after it.
/// The prediction ids of the rows and of the labels in `out`, each sorted.
fn row_and_label_ids(out: &[Emitted], due_by: i64) -> (Vec<String>, Vec<String>) {
    let mut due = Vec::new();
    let mut labelled = Vec::new();
    for e in out {
        match e {
            Emitted::Row(r) if r.vector.as_of.millis() + 30 * MIN <= due_by => {
                due.push(r.prediction_id.as_str().to_owned());
            }
            Emitted::Label(l) => labelled.push(l.prediction_id.as_str().to_owned()),
            _ => {}
        }
    }
    due.sort();
    due.dedup();
    labelled.sort();
    (due, labelled)
}

#[test]
fn drain_labels_every_prediction_whose_horizon_the_input_covers() {
    // Reports every 3 minutes for 80 minutes, then the input ends (a bounded replay), off
    // the tick grid: the last event is at T0 + 79 min, the last tick at T0 + 75 min.
    for config in [ProcessorConfig::default(), in_order()] {
        let mut p = Processor::new(config);
        let events: Vec<_> = (0..27)
            .map(|k| status("a", T0 + MIN + k * 3 * MIN, 5 + (k % 3) as u32, 15))
            .collect();
        let last = T0 + MIN + 26 * 3 * MIN;
        let mut out = run(&mut p, events);
        p.drain(&mut out);
        let (due, labelled) = row_and_label_ids(&out, last);
        assert!(due.len() > 10, "{} rows due", due.len());
        // Every row whose 30 minutes end by the last event time has its label (before the
        // label flush, those between the last tick and the last event had none); no row
        // whose horizon reaches past the input is labelled.
        assert_eq!(labelled, due);
    }
}

#[test]
fn without_a_time_zone_the_local_time_features_are_missing_not_utc() {
    let zone = |tz: Option<&str>| {
        let mut p = Processor::new(in_order());
        let mut events = Vec::new();
        if let Some(tz) = tz {
            events.push(env(
                T0 - MIN,
                Event::SystemInfo(SystemInfo {
                    system_id: sys(),
                    name: "t".into(),
                    timezone: tz.into(),
                    language: None,
                    gbfs_version: "3.0".into(),
                }),
            ));
        }
        events.push(status("a", T0 + MIN, 5, 15));
        let out = run(&mut p, events);
        let row = out
            .iter()
            .find_map(|e| match e {
                Emitted::Row(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        let schema = p.schema();
        ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "is_weekend"]
            .map(|f| row.vector.values[schema.index(f).unwrap()])
    };
    assert_eq!(zone(None), [None; 5]);
    let utc = zone(Some("UTC"));
    let boston = zone(Some("America/New_York"));
    assert!(utc.iter().all(Option::is_some) && boston.iter().all(Option::is_some));
    // 2023-11-14 22:1x UTC is 17:1x in Boston: the hour differs, the day does not.
    assert_ne!(utc[0], boston[0]);
    assert_eq!(utc[2], boston[2]);
}

#[test]
fn a_report_is_scored_on_arrival_and_corrected_only_when_its_inputs_changed() {
    let cfg = ProcessorConfig {
        score_on_arrival: true,
        ..ProcessorConfig::default()
    };
    assert!(cfg.lateness_ms >= 2 * MIN);
    let mut p = Processor::new(cfg.clone());
    let mut out = Vec::new();
    p.process(status("a", T0, 10, 10), &mut out);
    // Each report, as it arrives, yields its own update row at once.
    for (i, t) in [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
        .into_iter()
        .enumerate()
    {
        let mut now = Vec::new();
        p.process(status("a", t, 9 - i as u32, 11 + i as u32), &mut now);
        let updates: Vec<_> = rows(&now)
            .into_iter()
            .filter(|r| r.2 == PredictionTrigger::Update)
            .collect();
        assert_eq!(
            updates,
            [("a".to_owned(), t - T0, PredictionTrigger::Update)]
        );
        out.extend(now);
    }
    let mut rest = Vec::new();
    p.drain(&mut rest);
    assert!(
        rows(&rest).iter().all(|r| r.2 != PredictionTrigger::Update),
        "a release with unchanged inputs emits no second row: {:?}",
        rows(&rest)
    );

    // An earlier report of the same station arriving after a later one changes the later
    // one's inputs: its release emits a correction with the same prediction id.
    let mut q = Processor::new(cfg.clone());
    let mut out = Vec::new();
    q.process(status("a", T0, 10, 10), &mut out);
    q.process(status("a", T0 + 2 * MIN, 8, 12), &mut out);
    q.process(status("a", T0 + MIN, 2, 18), &mut out);
    q.drain(&mut out);
    let at_2: Vec<&FeatureRow> = out
        .iter()
        .filter_map(|e| match e {
            Emitted::Row(r) if r.vector.as_of.millis() == T0 + 2 * MIN => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(at_2.len(), 2, "early row, then the correction");
    assert_eq!(at_2[0].prediction_id, at_2[1].prediction_id);
    assert_ne!(at_2[0].vector.values, at_2[1].vector.values);
    assert_eq!(
        (at_2[0].revision, at_2[1].revision),
        (0, 1),
        "the correction's revision"
    );
}

#[test]
fn a_processor_restored_from_a_snapshot_continues_identically() {
    let events: Vec<Envelope> = (0..200)
        .map(|i| {
            status(
                &format!("s{}", i % 7),
                T0 + i * 37_000,
                ((i * 13) % 21) as u32,
                20 - ((i * 13) % 21) as u32,
            )
        })
        .collect();
    let cfg = ProcessorConfig {
        lateness_ms: MIN,
        ..ProcessorConfig::default()
    };
    let mut straight = Processor::new(cfg.clone());
    let expected = run(&mut straight, events.clone());
    for cut in [1, 57, 133, 199] {
        let mut first = Processor::new(cfg.clone());
        let mut got = run(&mut first, events[..cut].to_vec());
        let bytes = first.snapshot().unwrap();
        let mut restored = Processor::restore(&bytes).unwrap();
        assert_eq!(restored, first, "snapshot round trip");
        got.extend(run(&mut restored, events[cut..].to_vec()));
        assert_eq!(got, expected, "cut at {cut}");
    }
}

mod out_of_order {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arrival order shuffled within the lateness bound (each event arrives before any
        /// event whose time plus jitter is later, jitter < lateness) changes nothing in the
        /// answers: the reorder buffer applies the same events in the same order, so the last
        /// row of every prediction id (the on-time one; an update may have been scored earlier,
        /// on arrival) and every label are the same.
        #[test]
        fn shuffles_within_the_lateness_bound_give_identical_outputs(
            steps in prop::collection::vec((0u8..6, 1i64..90_000, 0u32..21, 0i64..120_000), 5..150),
            lateness in 0i64..180_000,
            score_on_arrival: bool,
        ) {
            let mut t = T0;
            let mut events = Vec::new();
            for (station, gap, bikes, jitter) in steps {
                t += gap;
                events.push((status(&format!("s{station}"), t, bikes, 20 - bikes), jitter % (lateness + 1)));
            }
            let in_order: Vec<Envelope> = events.iter().map(|(e, _)| e.clone()).collect();
            let mut shuffled = events.clone();
            shuffled.sort_by_key(|(e, j)| (e.event_time.millis() + j, e.event_time.millis()));
            let shuffled: Vec<Envelope> = shuffled.into_iter().map(|(e, _)| e).collect();

            let cfg = ProcessorConfig { lateness_ms: lateness + 1, score_on_arrival, ..ProcessorConfig::default() };
            let mut a = Processor::new(cfg.clone());
            let mut out_a = run(&mut a, in_order);
            a.drain(&mut out_a);
            let mut b = Processor::new(cfg);
            let mut out_b = run(&mut b, shuffled);
            b.drain(&mut out_b);
            prop_assert_eq!(b.stats().late, 0);
            prop_assert_eq!(answers(&out_a), answers(&out_b));
            prop_assert!(revisions_count_up(&out_a) && revisions_count_up(&out_b));
        }
    }

    /// Each prediction id's rows, in emission order, are revisions 0, 1, ... (contract 3).
    fn revisions_count_up(out: &[Emitted]) -> bool {
        let mut next = std::collections::BTreeMap::<String, u32>::new();
        out.iter().all(|e| match e {
            Emitted::Row(r) => {
                let n = next.entry(r.prediction_id.as_str().to_owned()).or_insert(0);
                let counted = r.revision == *n;
                *n += 1;
                counted
            }
            _ => true,
        })
    }
}
