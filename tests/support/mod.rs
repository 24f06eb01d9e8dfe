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
        .env("BIKESHARE_RUNNER__BATCH", "50")
        .env("BIKESHARE_METRICS__BIND", "127.0.0.1:0")
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
        "--stations",
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

/// Every record of `stream` as JSON.
pub fn stream_records(data_dir: &Path, stream: &str) -> Vec<serde_json::Value> {
    ok(bikeshare(data_dir).args(["tail", "--stream", stream, "--from-start"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
