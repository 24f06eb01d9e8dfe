//! Golden test: a fixed simulated history gives a fixed feature file.
//!
//! A small simulated city (fixed seed, fixed date, three hours) is replayed through the
//! [`Processor`] and every output — feature rows (every value, `f32` printed with `{:?}`,
//! which round-trips exactly; an empty field is an explicit missing value), labels and
//! rejections — is written as one line. The default config's lines (lateness 2 min: through
//! the reorder buffer) must equal the committed file byte for byte, so any optimisation of
//! windows, features, labels or the reorder buffer that changes a single bit of output fails
//! here. The history is in event-time order, so the in-order config (`lateness_ms = 0`: the
//! fast path that skips the buffer) and the update trigger (`score_on_arrival`: each report
//! scored on arrival, then again at release when that row differs) must give the same
//! *answers*: the last row of each prediction, every label and rejection. Each is run straight through and with a
//! snapshot–restore at several points, which must not change a line either.
//!
//! Regenerate after an *intended* change of outputs with
//! `BLESS=1 cargo test -p bikeshare-stream-processor --test it golden_features`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use bikeshare_simulator::{CityConfig, history};
use bikeshare_stream_processor::{Emitted, Processor, ProcessorConfig};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Envelope, PredictionTrigger};

/// 2024-06-05 11:00 UTC (07:00 in Toronto, a Wednesday: the morning peak).
const FROM_MS: i64 = 1_717_585_200_000;
const HOURS: i64 = 3;

fn city() -> CityConfig {
    CityConfig {
        system_id: "golden".into(),
        seed: 20240605,
        stations: 11,
        // Small and busy, so the windows see arrivals, departures, empties and fulls.
        radius_km: 1.0,
        capacity_min: 6,
        capacity_max: 15,
        trips_per_station_per_day: 120.0,
        heartbeat_minutes: 20,
        ..CityConfig::default()
    }
}

pub(crate) fn events() -> Vec<Envelope> {
    let from = Timestamp(FROM_MS);
    let to = Timestamp(FROM_MS + HOURS * Timestamp::HOUR_MS);
    history(&city(), from, to).expect("valid city").collect()
}

fn line(out: &mut String, e: &Emitted) {
    match e {
        Emitted::Row(r) => {
            let trigger = match r.trigger {
                PredictionTrigger::Update => "update",
                PredictionTrigger::Tick => "tick",
            };
            let v = &r.vector;
            write!(out, "row,{},{},{trigger}", v.as_of.millis(), v.station_id).unwrap();
            for x in &v.values {
                match x {
                    Some(x) => write!(out, ",{x:?}").unwrap(),
                    None => out.push(','),
                }
            }
        }
        Emitted::Label(l) => write!(
            out,
            "label,{},{},{},{},{},{},{}",
            l.as_of.millis(),
            l.station_id,
            u8::from(l.went_empty),
            u8::from(l.went_full),
            u8::from(l.empty_at_as_of),
            u8::from(l.full_at_as_of),
            l.observations
        )
        .unwrap(),
        Emitted::Rejected { reason, envelope } => write!(
            out,
            "rejected,{},{},{}",
            envelope.event_time.millis(),
            reason.as_str(),
            envelope.event_id
        )
        .unwrap(),
    }
    out.push('\n');
}

/// The golden text of `config` over the history; with `restore_at`, the processor is
/// snapshotted and restored after that many events.
fn render(config: &ProcessorConfig, restore_at: Option<usize>) -> String {
    let mut p = Processor::new(config.clone());
    let mut out = String::new();
    writeln!(
        out,
        "# golden outputs of the stream processor; see tests/golden_features.rs"
    )
    .unwrap();
    writeln!(out, "# schema_id={}", p.schema().id().0).unwrap();
    writeln!(
        out,
        "# config tick_ms={} windows={:?} horizon_minutes={}",
        config.tick_ms, config.window_minutes, config.horizon_minutes
    )
    .unwrap();
    let names: Vec<&str> = p.schema().names().collect();
    writeln!(out, "# kind=row,as_of,station,trigger,{}", names.join(",")).unwrap();
    writeln!(
        out,
        "# kind=label,as_of,station,went_empty,went_full,empty_at_as_of,full_at_as_of,observations"
    )
    .unwrap();
    writeln!(out, "# kind=rejected,event_time,reason,event_id").unwrap();
    let mut emitted = Vec::new();
    for (i, env) in events().into_iter().enumerate() {
        if restore_at == Some(i) {
            let bytes = p.snapshot().unwrap();
            p = Processor::restore(&bytes).unwrap();
        }
        p.process(env, &mut emitted);
        for e in emitted.drain(..) {
            line(&mut out, &e);
        }
    }
    p.drain(&mut emitted);
    for e in emitted.drain(..) {
        line(&mut out, &e);
    }
    out
}

const GOLDEN: &str = "tests/golden/features.csv";

/// The last row line of each (as_of, station), and the other lines in order.
fn answers(text: &str) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut last = std::collections::BTreeMap::new();
    let mut other = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = l.splitn(4, ',');
        match (f.next(), f.next(), f.next()) {
            (Some("row"), Some(as_of), Some(station)) => {
                last.insert(format!("{as_of},{station}"), l.to_owned());
            }
            _ => other.push(l.to_owned()),
        }
    }
    (last, other)
}

/// Checks `got` against the golden file at `path` line by line and returns the file's text;
/// with `BLESS` set, writes `got` there instead (after an intended change of outputs).
pub(crate) fn assert_golden(path: &std::path::Path, got: &str) -> String {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, got).unwrap();
        return got.to_owned();
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    if got != want {
        let (n, (g, w)) = got
            .lines()
            .zip(want.lines())
            .enumerate()
            .find(|(_, (g, w))| g != w)
            .unwrap_or((
                got.lines().count().min(want.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "{} differs at line {}:\n  got:  {g}\n  want: {w}\n({} lines vs {} expected; \
             BLESS=1 regenerates it after an intended change)",
            path.display(),
            n + 1,
            got.lines().count(),
            want.lines().count()
        );
    }
    want
}

fn check(config: &ProcessorConfig) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let got = render(config, None);
    if *config != ProcessorConfig::default() {
        let want = render(&ProcessorConfig::default(), None);
        assert!(
            answers(&got) == answers(&want),
            "{config:?} answers differently from the default config"
        );
        for at in [1, events().len() / 2] {
            assert!(
                render(config, Some(at)) == got,
                "snapshot and restore after {at} events changed the outputs"
            );
        }
        return;
    }
    let want = assert_golden(&path, &got);
    let events = events().len();
    for at in [1, events / 3, events / 2, events - 1] {
        assert!(
            render(config, Some(at)) == want,
            "snapshot and restore after {at} events changed the outputs"
        );
    }
}

#[test]
fn default_config_gives_the_golden_outputs() {
    check(&ProcessorConfig::default());
}

#[test]
fn the_update_trigger_gives_the_golden_answers() {
    check(&ProcessorConfig {
        score_on_arrival: true,
        ..ProcessorConfig::default()
    });
}

#[test]
fn in_order_config_gives_the_golden_answers() {
    check(&ProcessorConfig {
        lateness_ms: 0,
        ..ProcessorConfig::default()
    });
}
