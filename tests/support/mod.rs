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

/// An emulator's endpoint from `var` (`BIKESHARE_TEST_KINESIS_ENDPOINT`,
/// `BIKESHARE_TEST_MOTO_ENDPOINT`, set by `scripts/test.sh`). Without it the test is
/// skipped, except in CI (`CI=true`), where a missing emulator is a failure.
pub fn emulator(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: {var} is not set in CI; run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: {var} is not set (run scripts/test.sh, or \
                 scripts/emulators.sh cargo test --test {test})"
            );
            None
        }
    }
}
