//! End-to-end replay benchmark: a simulated day of one-minute updates for every station,
//! through the full [`Processor`], the [`BaselineScorer`] and an in-memory sink, on one thread.
//!
//! ```text
//! cargo run --release -p bikeshare-benches --bin replay-bench -- --stations 250000 --hours 24
//! ```
//!
//! For each input event the clock starts when the event is taken from the input and stops
//! when everything it caused is in the sink: the processor's outputs, every row scored into
//! a `Prediction`, predictions and labels handed to [`MemorySinks`]. The durations go into an
//! HDR histogram (p50/p99/p99.9/max). Generating the input (stepping the simulator, building
//! the envelopes) is outside the clock; so is emptying the sink once a simulated minute (a
//! real sink ships its batches away; keeping a day of predictions would need tens of GB).
//!
//! Memory: peak RSS (`VmHWM`), the RSS growth from before the processor existed to the end
//! divided by stations, and the processor's snapshot size divided by stations.

#![allow(clippy::print_stdout)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bikeshare_benches::{MinuteFeed, START_MS};
use bikeshare_runner::score;
use bikeshare_sinks::memory::MemorySinks;
use bikeshare_stream::sink::Sinks;
use bikeshare_stream_processor::{BaselineScorer, Emitted, Processor, ProcessorConfig};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{Envelope, PredictionTrigger};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(
    about = "Replays a simulated day through the processor and reports throughput, latency and memory"
)]
struct Args {
    /// Stations in the simulated city (one system).
    #[arg(long, default_value_t = 250_000)]
    stations: u32,
    /// Simulated hours (every station reports every minute).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Allowed lateness of the processor, ms (default: the processor's default).
    #[arg(long)]
    lateness_ms: Option<i64>,
    /// Simulator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Score each report on arrival (the processor's update trigger) instead of when the
    /// watermark passes it.
    #[arg(long)]
    score_on_arrival: bool,
}

/// Runs a future that is ready at once (the in-memory sink never waits).
fn ready<T>(f: impl Future<Output = T>) -> anyhow::Result<T> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => bail!("the in-memory sink did not complete at once"),
    }
}

/// A field of `/proc/self/status` in bytes (Linux; 0 elsewhere).
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ProcessorConfig::default();
    if let Some(l) = args.lateness_ms {
        config.lateness_ms = l;
    }
    config.score_on_arrival = args.score_on_arrival;
    let minutes = (args.hours * 60.0).round() as u64;
    let mut feed = MinuteFeed::new(args.stations, args.seed, Timestamp(START_MS))
        .context("building the simulated city")?;
    let stations = feed.stations();

    let rss_before = proc_status_bytes("VmRSS:");
    let mut processor = Processor::new(config.clone());
    let scorer = BaselineScorer::new(processor.schema(), config.horizon_minutes);
    let sinks = MemorySinks::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    let mut emitted: Vec<Emitted> = Vec::new();
    let (mut events, mut predictions, mut labels, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    // How far the input had gone past a report when its update row came out (event time):
    // 0 when reports are scored on arrival; the lateness when they wait for the watermark.
    let mut delay = Histogram::<u64>::new_with_bounds(1, 86_400_000, 3)?;
    let mut newest = i64::MIN;
    let mut busy = Duration::ZERO;
    let wall = Instant::now();

    let mut run = |batch: Vec<Envelope>,
                   processor: &mut Processor,
                   hist: &mut Histogram<u64>|
     -> anyhow::Result<()> {
        for env in batch {
            newest = newest.max(env.event_time.millis());
            let start = Instant::now();
            processor.process(env, &mut emitted);
            let (mut preds, mut labs) = (Vec::new(), Vec::new());
            for e in emitted.drain(..) {
                match e {
                    Emitted::Row(row) => {
                        if row.trigger == PredictionTrigger::Update {
                            let behind = (newest - row.vector.as_of.millis()).max(0);
                            delay.record(u64::try_from(behind).unwrap_or(0).max(1))?;
                        }
                        preds.push(score(&scorer, &row));
                    }
                    Emitted::Label(l) => labs.push(l),
                    Emitted::Rejected { .. } => rejected += 1,
                }
            }
            predictions += preds.len() as u64;
            labels += labs.len() as u64;
            if !preds.is_empty() {
                ready(sinks.predictions(preds))??;
            }
            if !labs.is_empty() {
                ready(sinks.labels(labs))??;
            }
            let took = start.elapsed();
            busy += took;
            events += 1;
            hist.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1))?;
        }
        Ok(())
    };

    let mut batch = feed.preamble();
    feed.reports(&mut batch);
    run(batch, &mut processor, &mut hist)?;
    for _ in 0..minutes {
        feed.step();
        let mut batch = Vec::with_capacity(stations + 1);
        feed.reports(&mut batch);
        run(batch, &mut processor, &mut hist)?;
        // A real sink ships its batches away: empty the in-memory one (outside the clock).
        drop(std::mem::take(
            &mut *sinks
                .predictions
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?,
        ));
        drop(std::mem::take(
            &mut *sinks
                .labels
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?,
        ));
    }
    let wall = wall.elapsed();
    let rss_after = proc_status_bytes("VmRSS:");
    let hwm = proc_status_bytes("VmHWM:");
    let snapshot = processor.snapshot()?;
    let stats = processor.stats();

    let per_s = events as f64 / busy.as_secs_f64();
    let q = |p: f64| Duration::from_nanos(hist.value_at_quantile(p));
    println!(
        "replay-bench: {stations} stations, {minutes} simulated minutes, lateness {} ms, score on arrival {}, seed {}",
        config.lateness_ms, config.score_on_arrival, args.seed
    );
    println!(
        "events            {events} ({} applied, {rejected} rejected)",
        stats.applied
    );
    println!(
        "predictions       {predictions} ({} rows), labels {labels}, ticks {}",
        stats.rows, stats.ticks
    );
    println!(
        "busy time         {:.2} s (wall {:.2} s incl. generating the input)",
        busy.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "throughput        {:.0} events/s per core (one thread)",
        per_s
    );
    println!(
        "mean per event    {:.0} ns",
        busy.as_nanos() as f64 / events.max(1) as f64
    );
    println!(
        "latency           p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        q(0.50),
        q(0.99),
        q(0.999),
        Duration::from_nanos(hist.max())
    );
    let dq = |p: f64| delay.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "report -> row     p50 {:.0} s  p99 {:.0} s  max {:.0} s of event time ({} update rows)",
        dq(0.50),
        dq(0.99),
        delay.max() as f64 / 1000.0,
        delay.len()
    );
    println!("peak memory       VmHWM {:.1} MiB", mib(hwm));
    println!(
        "state per station {:.0} B by RSS growth ({:.1} MiB), {:.0} B by snapshot ({:.1} MiB)",
        rss_after.saturating_sub(rss_before) as f64 / stations as f64,
        mib(rss_after.saturating_sub(rss_before)),
        snapshot.len() as f64 / stations as f64,
        mib(snapshot.len() as u64)
    );
    Ok(())
}
