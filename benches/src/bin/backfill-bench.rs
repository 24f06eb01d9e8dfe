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
//! read from `/proc` until it exits) per input event, and its CPU seconds (user + system, from
//! `/proc/self/stat` once it is reaped), and events per CPU-second. Run it for two history
//! lengths: memory bounded by stations × window span stays flat, memory that holds the
//! history grows with it. `--runs 3` reports each run, then the median runs by wall time and
//! by CPU time; `--keep-in DIR` keeps the history and prints the command (to profile it).
//!
//! `--one-core` pins the child (not this process) to one CPU, the first this process may
//! use, so its reader and processor threads share that core (and its tokio runtime, seeing
//! one CPU, starts one worker): wall time is then CPU time, the "events per second per core"
//! of the issue's target. Unpinned, the reader decodes on the second core while the
//! processor runs (about 12 % less wall time on 2 cores), but on these machines two busy
//! cores each run slower (the decoder's own functions took about twice as long in a
//! profile, decision 103), so the whole process's CPU-seconds overstate the work.
//!
//! `--against OLD` (repeatable) runs other builds on the same input, each once in every
//! round (the order rotating from round to round), and prints each build's medians and its
//! CPU-seconds over the first build's in each round, with the median of those paired ratios:
//! on a shared machine whose speed drifts by a fifth within an hour, only runs of the same
//! round compare.

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
    /// Rounds of runs on the same input (each build once a round); the medians come last.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Other builds of `bikeshare` to run on the same input, one run each in every round.
    #[arg(long)]
    against: Vec<PathBuf>,
    /// Write the history (and the rows) into this directory and keep them, e.g. to profile
    /// the printed command (default: a temporary directory, removed at the end).
    #[arg(long)]
    keep_in: Option<PathBuf>,
    /// Pin the backfill to one CPU (wall time = CPU time: events per second per core).
    #[arg(long)]
    one_core: bool,
}

/// The CPU a pinned child runs on, and the CPUs this process may use.
struct Pin {
    cpu: usize,
    one: rustix::thread::CpuSet,
    allowed: rustix::thread::CpuSet,
}

impl Pin {
    /// The first CPU this process may run on.
    fn first_cpu() -> anyhow::Result<Self> {
        use rustix::thread::{CpuSet, sched_getaffinity};
        let allowed = sched_getaffinity(None).context("reading this process's CPUs")?;
        let cpu = (0..CpuSet::MAX_CPU)
            .find(|&c| allowed.is_set(c))
            .context("this process may run on no CPU")?;
        let mut one = CpuSet::new();
        one.set(cpu);
        Ok(Self { cpu, one, allowed })
    }

    /// Spawns `command` on the one CPU: this thread is pinned while it forks (a child
    /// inherits its parent thread's CPUs), then gets all its CPUs back.
    fn spawn(&self, command: &mut Command) -> anyhow::Result<std::process::Child> {
        use rustix::thread::sched_setaffinity;
        sched_setaffinity(None, &self.one)
            .with_context(|| format!("pinning to CPU {}", self.cpu))?;
        let child = command.spawn();
        sched_setaffinity(None, &self.allowed).context("unpinning the bench")?;
        Ok(child?)
    }
}

/// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on every Linux architecture
/// this runs on).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user, system) of this process's reaped children, from `/proc/self/stat`
/// (`cutime`, `cstime`): after a child is waited for, its whole CPU time is in there.
fn children_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `cutime` and `cstime` are fields 16 and 17 of the line, 14 and 15 after `comm`.
    let tick = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / USER_HZ);
    Some((tick(13)?, tick(14)?))
}

/// What one run of the child measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall_secs: f64,
    cpu_secs: f64,
    user_secs: f64,
    sys_secs: f64,
    peak_kib: u64,
    rows_bytes: u64,
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
    let temp = tempfile::tempdir()?;
    let dir = match &args.keep_in {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let input = dir.join("history.jsonl");
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
    let output = dir.join("rows.parquet");
    let data_dir = dir.join("data");
    println!(
        "backfill-bench: {} stations x {} min: {events} events ({:.0} MiB of JSON lines)",
        args.stations,
        args.minutes,
        bytes as f64 / (1 << 20) as f64
    );
    if args.keep_in.is_some() {
        println!(
            "command: {} --data-dir {} backfill --format jsonl --system-id bench {} -o {}",
            bikeshare.display(),
            data_dir.display(),
            input.display(),
            output.display()
        );
    }
    let pin = if args.one_core {
        let pin = Pin::first_cpu()?;
        println!(
            "the backfill runs pinned to CPU {}: its threads share one core",
            pin.cpu
        );
        Some(pin)
    } else {
        None
    };
    let builds: Vec<PathBuf> = std::iter::once(bikeshare.clone())
        .chain(args.against.iter().cloned())
        .collect();
    for b in &builds[1..] {
        if !b.exists() {
            bail!("{} not found", b.display());
        }
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); builds.len()];
    for round in 0..args.runs.max(1) {
        // Each build once, starting from another one each round (no build always first).
        for k in 0..builds.len() {
            let b = (round + k) % builds.len();
            let (build, kept) = (&builds[b], &mut runs[b]);
            let run = run_once(build, pin.as_ref(), &data_dir, &input, &output)?;
            let what = if builds.len() > 1 {
                format!("run of {}", build.display())
            } else {
                "run".to_owned()
            };
            report(&what, &run, events);
            kept.push(run);
        }
    }
    // Each other build's CPU-seconds over the first's in the same round, before the runs are
    // sorted: paired, so the machine's drift from round to round cancels.
    let round_ratios: Vec<Vec<f64>> = runs
        .iter()
        .skip(1)
        .map(|other| {
            other
                .iter()
                .zip(&runs[0])
                .map(|(o, first)| o.cpu_secs / first.cpu_secs.max(f64::EPSILON))
                .collect()
        })
        .collect();
    for (build, kept) in builds.iter().zip(&mut runs) {
        let of = if builds.len() > 1 {
            format!(" of {}", build.display())
        } else {
            String::new()
        };
        if kept.len() > 1 {
            // The median run by wall time (the upper one of an even count), and by CPU time
            // (on a shared machine the two are often different runs).
            kept.sort_by(|a, b| a.wall_secs.total_cmp(&b.wall_secs));
            report(&format!("median{of}"), &kept[kept.len() / 2], events);
            kept.sort_by(|a, b| a.cpu_secs.total_cmp(&b.cpu_secs));
            report(&format!("median by CPU{of}"), &kept[kept.len() / 2], events);
        }
    }
    for (build, ratios) in builds.iter().skip(1).zip(&round_ratios) {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{}: {:.2}x the CPU-seconds of {} (median of the rounds' ratios, in round order: {})",
            build.display(),
            sorted[sorted.len() / 2],
            bikeshare.display(),
            shown.join(", ")
        );
    }
    drop(temp);
    Ok(())
}

fn run_once(
    bikeshare: &std::path::Path,
    pin: Option<&Pin>,
    data_dir: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
) -> anyhow::Result<Run> {
    let _ = std::fs::remove_dir_all(data_dir);
    let before = children_cpu_secs().context("reading /proc/self/stat")?;
    let started = Instant::now();
    let mut command = Command::new(bikeshare);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["backfill", "--format", "jsonl", "--system-id", "bench"])
        .arg(input)
        .arg("-o")
        .arg(output);
    let mut child = match pin {
        Some(pin) => pin.spawn(&mut command),
        None => command.spawn().map_err(anyhow::Error::from),
    }
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
    let after = children_cpu_secs().context("reading /proc/self/stat")?;
    let (user_secs, sys_secs) = (after.0 - before.0, after.1 - before.1);
    Ok(Run {
        wall_secs: wall.as_secs_f64(),
        cpu_secs: user_secs + sys_secs,
        user_secs,
        sys_secs,
        peak_kib,
        rows_bytes: std::fs::metadata(output)?.len(),
    })
}

fn report(what: &str, run: &Run, events: u64) {
    let events = events as f64;
    println!(
        concat!(
            "{}: wall {:.2} s, {:.0} events/s (whole process), ",
            "CPU {:.2} s (user {:.2} + sys {:.2}), {:.0} events per CPU-second, ",
            "peak RSS {:.0} MiB ({:.0} B per input event), rows file {:.1} MiB"
        ),
        what,
        run.wall_secs,
        events / run.wall_secs,
        run.cpu_secs,
        run.user_secs,
        run.sys_secs,
        events / run.cpu_secs.max(f64::EPSILON),
        run.peak_kib as f64 / 1024.0,
        run.peak_kib as f64 * 1024.0 / events,
        run.rows_bytes as f64 / (1 << 20) as f64
    );
}
