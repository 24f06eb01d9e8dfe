//! `bikeshare backfill` end to end, whole process: events per second and peak memory on a
//! generated history of one-minute reports (issue 15 item 1's second half).
//!
//! ```text
//! cargo build --release -p bikeshare -p bikeshare-benches --bin bikeshare --bin backfill-bench
//! $CARGO_TARGET_DIR/release/backfill-bench --stations 10000 --minutes 60
//! $CARGO_TARGET_DIR/release/backfill-bench --stations 10000 --minutes 120
//! ```
//!
//! Writes the simulator's city (every station reporting every minute, [`MinuteFeed`]) as JSON
//! lines of envelopes (what `simulate --backfill` writes and `backfill --format jsonl` reads)
//! into a temporary directory, then runs the real `bikeshare backfill` on it into a Parquet
//! rows file and reports its wall time, events per second (the child runs the processor on
//! one thread; decoding and writing are on the same process), and its peak RSS (`VmHWM`,
//! read from `/proc` until it exits) per input event. Run it for two history lengths: memory
//! bounded by stations × window span stays flat, memory that holds the history grows with it.

#![allow(clippy::print_stdout)]

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bikeshare_benches::{MinuteFeed, START_MS};
use bikeshare_types::Timestamp;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Runs bikeshare backfill on a generated history; reports events/s and peak RSS")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    stations: u32,
    /// Minutes of one-minute reports.
    #[arg(long, default_value_t = 60)]
    minutes: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The bikeshare binary (default: `release/bikeshare` beside this one).
    #[arg(long)]
    bikeshare: Option<PathBuf>,
}

/// `VmHWM` of a process, in KiB (`None` once it is gone).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bikeshare = match args.bikeshare {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no directory of this binary")?
            .join("bikeshare"),
    };
    if !bikeshare.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p bikeshare",
            bikeshare.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("history.jsonl");
    let mut feed = MinuteFeed::new(args.stations, args.seed, Timestamp(START_MS))?;
    let mut events = 0u64;
    let mut bytes = 0u64;
    {
        let mut w = BufWriter::new(std::fs::File::create(&input)?);
        let mut batch = feed.preamble();
        for minute in 0..args.minutes {
            if minute > 0 {
                feed.step();
            }
            feed.reports(&mut batch);
            for env in batch.drain(..) {
                let line = env.encode();
                bytes += line.len() as u64 + 1;
                w.write_all(&line)?;
                w.write_all(b"\n")?;
                events += 1;
            }
        }
        w.flush()?;
    }
    let output = dir.path().join("rows.parquet");
    let data_dir = dir.path().join("data");
    let started = Instant::now();
    let mut child = Command::new(&bikeshare)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["backfill", "--format", "jsonl", "--system-id", "bench"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .spawn()
        .with_context(|| format!("running {}", bikeshare.display()))?;
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_kib(child.id()) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    if !status.success() {
        bail!("bikeshare backfill failed: {status}");
    }
    let secs = wall.as_secs_f64();
    println!(
        "backfill-bench: {} stations x {} min: {events} events ({:.0} MiB of JSON lines)",
        args.stations,
        args.minutes,
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "wall {secs:.2} s, {:.0} events/s (whole process), peak RSS {:.0} MiB ({:.0} B per input event), rows file {:.1} MiB",
        events as f64 / secs,
        peak_kib as f64 / 1024.0,
        peak_kib as f64 * 1024.0 / events as f64,
        std::fs::metadata(&output)?.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}
