//! Criterion benchmarks of the processor's hot paths, each with its throughput:
//!
//! - `window/apply`: one report applied to a station's windows (5, 15, 30, 60 min and the
//!   label retention), in steady state (an hour of one-minute reports already held).
//! - `features/station`: the feature vector of one station with 8 neighbours.
//! - `process/station_event`: `Processor::process` for one station report plus scoring its
//!   row with the baseline, in a warm city of 1,000 stations reporting every minute.
//! - `process/station_event_on_arrival`: the same with the update trigger on and the default
//!   lateness (2 min): each report is scored when it arrives from a copy of its station (the
//!   early firing) and again at release.
//! - `decode/station_status`: `Envelope::decode` of a realistic station report.

// A benchmark whose setup fails has nothing to measure: stopping loudly is right.
#![allow(clippy::expect_used)]

use bikeshare_benches::{MinuteFeed, START_MS};
use bikeshare_runner::score;
use bikeshare_stream_processor::window::{Report, StationHistory};
use bikeshare_stream_processor::{BaselineScorer, Emitted, Processor, ProcessorConfig, Tz};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Envelope, Event};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const MIN: i64 = 60_000;
const WINDOWS: [i64; 4] = [5 * MIN, 15 * MIN, 30 * MIN, 60 * MIN];
/// Horizon + two ticks + lateness, as the processor keeps for labels.
const RETENTION: i64 = 30 * MIN + 2 * 5 * MIN + 2 * MIN;
/// The demand profile's hours are local: a zone with daylight saving.
const TZ: Option<Tz> = Some(Tz::America__Toronto);

fn report(minute: i64) -> Report {
    // A station that fills and drains with a period of 37 minutes.
    let phase = (minute % 37) as u16;
    let bikes = if phase < 19 { phase } else { 37 - phase };
    Report::new(
        START_MS + minute * MIN,
        bikes,
        Some(20 - bikes),
        true,
        true,
        true,
    )
}

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    const N: i64 = 1000;
    g.throughput(Throughput::Elements(N as u64));
    let mut warm = StationHistory::with_retention(&WINDOWS, RETENTION);
    for m in 0..120 {
        let _ = warm.apply(report(m), TZ);
    }
    g.bench_function("apply", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |h| {
                for m in 120..120 + N {
                    let _ = black_box(h.apply(report(m), TZ));
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("advance_to", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |h| {
                for m in 120..120 + N {
                    h.advance_to(START_MS + m * MIN, TZ);
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

/// A processor with `stations` stations after `minutes` minutes of reports.
fn warm_processor(stations: u32, minutes: usize) -> (Processor, MinuteFeed) {
    warm_processor_with(
        stations,
        minutes,
        ProcessorConfig {
            lateness_ms: 0,
            ..ProcessorConfig::default()
        },
    )
}

/// [`warm_processor`] with another config.
fn warm_processor_with(
    stations: u32,
    minutes: usize,
    config: ProcessorConfig,
) -> (Processor, MinuteFeed) {
    let mut feed = MinuteFeed::new(stations, 7, Timestamp(START_MS)).expect("city");
    let mut p = Processor::new(config);
    let mut out = Vec::new();
    let mut batch = feed.preamble();
    feed.reports(&mut batch);
    for _ in 0..minutes {
        for env in batch.drain(..) {
            p.process(env, &mut out);
            out.clear();
        }
        feed.step();
        feed.reports(&mut batch);
    }
    (p, feed)
}

fn features(c: &mut Criterion) {
    let (p, _) = warm_processor(300, 90);
    let system = bikeshare_types::SystemId::new("bench");
    let station = bikeshare_simulator::City::station_id(17);
    let mut g = c.benchmark_group("features");
    g.throughput(Throughput::Elements(1));
    g.bench_function("station", |b| {
        b.iter(|| black_box(p.station_features(&system, &station)));
    });
    g.finish();
}

fn process(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    for (name, config) in [
        (
            "station_event",
            ProcessorConfig {
                lateness_ms: 0,
                ..ProcessorConfig::default()
            },
        ),
        (
            "station_event_on_arrival",
            ProcessorConfig {
                score_on_arrival: true,
                ..ProcessorConfig::default()
            },
        ),
    ] {
        process_one(&mut g, name, config);
    }
    g.finish();
}

fn process_one(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    config: ProcessorConfig,
) {
    const STATIONS: u32 = 1000;
    let (mut p, mut feed) = warm_processor_with(STATIONS, 70, config);
    let scorer = BaselineScorer::new(p.schema(), 30);
    g.throughput(Throughput::Elements(u64::from(STATIONS)));
    let mut out = Vec::new();
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                // The next minute's reports (ticks and labels happen along the way).
                feed.step();
                let mut batch = Vec::with_capacity(STATIONS as usize + 1);
                feed.reports(&mut batch);
                batch
            },
            |batch| {
                for env in batch {
                    p.process(env, &mut out);
                    for e in out.drain(..) {
                        if let Emitted::Row(row) = e {
                            black_box(score(&scorer, &row));
                        }
                    }
                }
            },
            BatchSize::PerIteration,
        );
    });
}

fn decode(c: &mut Criterion) {
    let feed = MinuteFeed::new(10, 7, Timestamp(START_MS)).expect("city");
    let mut batch = Vec::new();
    feed.reports(&mut batch);
    let env = batch
        .into_iter()
        .find(|e| matches!(e.event, Event::StationStatus(_)))
        .expect("a status");
    let env = Envelope::new(
        env.system_id,
        "https://example.org/gbfs/station_status.json",
        env.event_time,
        env.ingest_time,
        env.event,
    );
    let bytes = env.encode();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("station_status", |b| {
        b.iter(|| black_box(Envelope::decode(black_box(&bytes))))
    });
    // What the JSON-lines replay runs (decision 100): a station report as written is scanned
    // without serde; the text's UTF-8 was checked once when the line was read.
    let text = std::str::from_utf8(&bytes).expect("encode writes UTF-8");
    g.bench_function("station_status_str", |b| {
        b.iter(|| black_box(Envelope::decode_str(black_box(text))))
    });
    // What `decode` did before decision 097, and still does for an envelope whose keys are
    // not in the written order: the derived deserializer, which buffers for `flatten`.
    g.bench_function("station_status_any_order", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Envelope>(black_box(&bytes))))
    });
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("station_status_bytes", |b| {
        b.iter(|| black_box(Envelope::decode(black_box(&bytes))))
    });
    g.finish();
}

criterion_group!(benches, window, features, process, decode);
criterion_main!(benches);
