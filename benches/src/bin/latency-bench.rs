//! Arrival → publish latency of the live job: runs the real `bikeshare up` (the simulated city,
//! its producers, the embedded stream, the processor with the app's default configuration) in
//! a temporary data directory, then reads its streams and measures, for every station report,
//! how long after the report was written to the `events` stream its update prediction was
//! written to the `predictions` stream (both stream arrival stamps, wall clock).
//!
//! ```text
//! cargo build --release -p bikeshare -p bikeshare-benches --bin bikeshare --bin latency-bench
//! target/release/latency-bench --station-count 5000 --duration 150 --warmup 20
//! ```
//!
//! The city starts `--catch-up` in the past and replays it at 60× before it runs in real
//! time; reports written in the first `--warmup` seconds (the catch-up burst, the bootstrap)
//! are left out. `--watermark` runs the processor without the update trigger
//! (`BIKESHARE_PROCESSOR__SCORE_ON_ARRIVAL=false`), for comparison: its reports wait for the
//! watermark (`lateness_ms`, 2 minutes of event time).
//!
//! What is measured is the whole path a subscriber sees: the runner's read of the stream
//! (it polls every 200 ms when idle), processing, scoring and the publisher's batching
//! (linger 50 ms). Ticks are not counted: they follow the watermark by design.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use bikeshare_embedded::EmbeddedStream;
use bikeshare_stream::{StartPosition, StreamReader, StreamRecord};
use bikeshare_types::contracts::{Envelope, Event, Prediction, PredictionTrigger};
use bikeshare_types::{StationId, SystemId, Timestamp};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(about = "Runs `bikeshare up` and reports arrival → publish latency percentiles")]
struct Args {
    /// The `bikeshare` binary (default: next to this one).
    #[arg(long)]
    bikeshare: Option<PathBuf>,
    /// Stations in the simulated city.
    #[arg(long, default_value_t = 1000)]
    station_count: u32,
    /// Wall-clock seconds `up` runs.
    #[arg(long, default_value_t = 150)]
    duration: u64,
    /// How far in the past the city starts (replayed at 60× first).
    #[arg(long, default_value = "10m")]
    catch_up: String,
    /// Reports written in the first this many seconds are not measured.
    #[arg(long, default_value_t = 40)]
    warmup: i64,
    /// Without the update trigger (the watermark decides), for comparison.
    #[arg(long)]
    watermark: bool,
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// Every record of stream `name` in the embedded stream at `db`, shard by shard.
async fn read_all(db: &Path, name: &str) -> anyhow::Result<Vec<StreamRecord>> {
    let stream = EmbeddedStream::open_existing(db, name)
        .await
        .with_context(|| format!("opening stream {name} in {}", db.display()))?;
    let mut out = Vec::new();
    for shard in stream.list_shards().await? {
        let mut cursor = stream.open(&shard.id, StartPosition::TrimHorizon).await?;
        loop {
            let batch = cursor.next_batch(10_000).await?;
            if batch.records.is_empty() {
                break;
            }
            out.extend(batch.records);
        }
    }
    Ok(out)
}

/// A station report, and the update prediction it triggers: `(system, station, event time)`.
type Key = (String, String, i64);

fn key(system: &SystemId, station: &StationId, at: Timestamp) -> Key {
    (
        system.as_str().to_owned(),
        station.as_str().to_owned(),
        at.millis(),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.bikeshare {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of this executable")?
            .join("bikeshare"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release --bin bikeshare) or give --bikeshare",
            bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    let duration = format!("{}s", args.duration);
    let stations = args.station_count.to_string();
    let mut up = Command::new(&bin);
    up.args([
        "up",
        "--fresh",
        "--no-bootstrap",
        "--station-count",
        &stations,
        "--catch-up",
        &args.catch_up,
        "--duration",
        &duration,
    ])
    .env("BIKESHARE_DATA_DIR", &dir)
    .env("BIKESHARE_API__BIND", "127.0.0.1:0")
    .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
    .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
    .env("BIKESHARE_METRICS__BIND", "127.0.0.1:0")
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    if args.watermark {
        up.env("BIKESHARE_PROCESSOR__SCORE_ON_ARRIVAL", "false");
    }
    eprintln!(
        "latency-bench: bikeshare up, {} stations, {} s, data in {}",
        args.station_count,
        args.duration,
        dir.display()
    );
    let status = up.status().context("running bikeshare up")?;
    if !status.success() {
        bail!("bikeshare up failed: {status}");
    }

    let db = dir.join("stream.db");
    let events = read_all(&db, "events").await?;
    let predictions = read_all(&db, "predictions").await?;
    let first = events
        .iter()
        .map(|r| r.arrival.millis())
        .min()
        .context("no event was written")?;
    let from = first + args.warmup * 1000;
    // Each report's arrival on the events stream (the first, if it was sent twice).
    let mut arrived: HashMap<Key, i64> = HashMap::new();
    for r in &events {
        let Ok(env) = Envelope::decode(&r.data) else {
            continue;
        };
        if let Event::StationStatus(s) = &env.event {
            arrived
                .entry(key(&env.system_id, &s.station_id, env.event_time))
                .or_insert(r.arrival.millis());
        }
    }
    // Each update prediction's first publication (a correction, if any, comes later).
    let mut published: HashMap<Key, i64> = HashMap::new();
    let (mut updates, mut ticks, mut rows) = (0u64, 0u64, 0u64);
    for r in &predictions {
        let Ok(p) = serde_json::from_slice::<Prediction>(&r.data) else {
            continue;
        };
        rows += 1;
        if p.trigger == PredictionTrigger::Tick {
            ticks += 1;
            continue;
        }
        updates += 1;
        published
            .entry(key(&p.system_id, &p.station_id, p.as_of))
            .or_insert(r.arrival.millis());
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let (mut measured, mut unpublished) = (0u64, 0u64);
    for (key, at) in &arrived {
        if *at < from {
            continue;
        }
        match published.get(key) {
            Some(p) => {
                hist.record(u64::try_from(p - at).unwrap_or(0).max(1))?;
                measured += 1;
            }
            None => unpublished += 1,
        }
    }
    if measured == 0 {
        bail!("no report after the warm-up was published: run longer or with more stations");
    }
    let q = |p: f64| hist.value_at_quantile(p);
    println!(
        "latency-bench: bikeshare up, {} stations, {} s wall, warm-up {} s, update trigger {}",
        args.station_count,
        args.duration,
        args.warmup,
        if args.watermark {
            "off"
        } else {
            "on (default)"
        }
    );
    println!(
        "predictions       {rows} rows ({updates} update, {ticks} tick) for {} reports",
        arrived.len()
    );
    println!(
        "measured          {measured} reports after the warm-up ({unpublished} not published by the stop)"
    );
    println!(
        "arrival -> publish p50 {} ms  p90 {} ms  p99 {} ms  max {} ms (wall clock)",
        q(0.50),
        q(0.90),
        q(0.99),
        hist.max()
    );
    Ok(())
}
