//! Helpers shared by the end-to-end tests: run the real `bikeshare` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_bikeshare");

/// `bikeshare` with its data directory in `data_dir`, quick checkpoints and small reads.
pub fn bikeshare(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("BIKESHARE_DATA_DIR", data_dir)
        .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "30")
        .env("BIKESHARE_LAKE__CHECKPOINT_INTERVAL_MS", "10")
        .env("BIKESHARE_RUNNER__BATCH", "50")
        .env("BIKESHARE_METRICS__BIND", "127.0.0.1:0")
        // No fixed ports: tests run in parallel.
        .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Runs to completion, asserting success; returns stdout.
pub fn ok(c: &mut Command) -> String {
    let out = c.output().expect("run bikeshare");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A child process killed (and reaped) when dropped, so a test that panics never leaves a job
/// running behind it.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A simulated history of `stations` stations over `[start, until)` as envelope JSON lines.
pub fn simulated_history(
    dir: &Path,
    stations: u32,
    seed: u64,
    start: &str,
    until: &str,
) -> std::path::PathBuf {
    let history = dir.join("history.jsonl");
    ok(bikeshare(dir).args([
        "simulate",
        "--backfill",
        history.to_str().unwrap(),
        "--station-count",
        &stations.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--until",
        until,
    ]));
    history
}

/// Replays `history` (envelope JSON lines, e.g. [`simulated_history`]) into the event stream
/// of `data_dir`.
pub fn replay(data_dir: &Path, history: &Path) {
    ok(bikeshare(data_dir).args(["replay", "--format", "jsonl", history.to_str().unwrap()]));
}

/// Every record of `stream` as JSON.
pub fn stream_records(data_dir: &Path, stream: &str) -> Vec<serde_json::Value> {
    ok(bikeshare(data_dir).args(["tail", "--stream", stream, "--from-start"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An emulator's endpoint from `var` (`BIKESHARE_TEST_KINESIS_ENDPOINT`,
/// `BIKESHARE_TEST_MOTO_ENDPOINT`, set by `scripts/test.sh`). Without it the test is
/// skipped, except in CI (`CI=true`), where a missing emulator is a failure.
pub use bikeshare_testkit::emulators::env_or_skip as emulator;

/// The state and CPU time (user + system) of a process, from `/proc/<pid>/stat`. Kill points
/// are measured in the CPU time of the process itself, not in wall time, so a machine busy with
/// other tests moves them little. (In wall time, an uninterrupted run slowed by other tests
/// set kill points that a later, faster run outran: it was never killed.)
fn cpu_time(pid: u32) -> Option<(char, std::time::Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux the tests run on.
    Some((state, std::time::Duration::from_millis(ticks * 10)))
}

/// Runs `bikeshare <args>` in `data_dir` to the end, as [`ok`] does, and returns its output and
/// the CPU time it used (the measure [`run_with_kills`] places its kill points by), read from
/// the process itself just before it is reaped (so other tests' processes never count).
#[allow(clippy::zombie_processes)] // reaped by try_wait or wait below
pub fn ok_with_cpu_time(data_dir: &Path, args: &[&str]) -> (String, std::time::Duration) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = bikeshare(data_dir)
        .args(args)
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .spawn()
        .unwrap();
    let mut used = std::time::Duration::ZERO;
    let status = loop {
        match cpu_time(child.id()) {
            // Exited, not yet reaped: its times are final.
            Some(('Z', t)) => {
                used = t;
                break child.wait().unwrap();
            }
            Some((_, t)) => used = t,
            None => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(
        status.success(),
        "{args:?} failed: {}",
        std::fs::read_to_string(err.path()).unwrap_or_default()
    );
    (std::fs::read_to_string(out.path()).unwrap(), used)
}

/// Runs `bikeshare <args>` in `data_dir` and SIGKILLs it as soon as `kill_now(pid)` says so;
/// returns whether it was killed (`false`: it finished first, successfully).
#[allow(clippy::zombie_processes)] // every child is reaped: by try_wait, or wait after kill
pub fn run_and_kill_when(
    data_dir: &Path,
    args: &[&str],
    mut kill_now: impl FnMut(u32) -> bool,
) -> bool {
    let mut child = bikeshare(data_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{args:?} failed");
            return false;
        }
        if kill_now(child.id()) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// [`run_and_kill_when`] the process has used `kill_at` of CPU time.
pub fn run_and_kill_at(data_dir: &Path, args: &[&str], kill_at: std::time::Duration) -> bool {
    // Unreadable only between the child's exit and try_wait: poll again.
    run_and_kill_when(data_dir, args, |pid| {
        cpu_time(pid).is_some_and(|(_, used)| used >= kill_at)
    })
}

/// Bytes of the embedded stream of `data_dir` (its database and write-ahead log): grows as
/// records are published.
pub fn stream_bytes(data_dir: &Path) -> u64 {
    ["stream.db", "stream.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Runs `bikeshare <args>` in `data_dir` again and again, SIGKILLing it at pseudo-random
/// fractions (5–30 %) of `full_run`, the CPU time of an uninterrupted run
/// ([`ok_with_cpu_time`]), until one run finishes by itself; returns the kills. For commands
/// that resume (each run has less left to do).
pub fn run_with_kills(
    data_dir: &Path,
    args: &[&str],
    full_run: std::time::Duration,
    mut seed: u64,
) -> usize {
    use std::time::{Duration, Instant};
    let mut kills = 0;
    let started = Instant::now();
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Early enough that a restarted run, which has less left to do than the first,
        // is still killed mid-run: between 5 % and 30 % of an uninterrupted run.
        let fraction = 0.05 + 0.25 * (seed % 1000) as f64 / 1000.0;
        let kill_at = full_run.mul_f64(fraction).max(Duration::from_millis(20));
        if !run_and_kill_at(data_dir, args, kill_at) {
            return kills;
        }
        kills += 1;
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{args:?}: no run finished after {kills} kills"
        );
    }
}

/// Every row of `T`'s dataset in the local lake of `data_dir`.
pub fn lake_rows<T: bikeshare_lake::LakeRecord>(data_dir: &Path) -> Vec<T> {
    let store =
        bikeshare_lake::open_store(&bikeshare_lake::LakeConfig::default(), data_dir).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bikeshare_lake::catalog::read_dataset::<T>(&store))
        .unwrap()
}
