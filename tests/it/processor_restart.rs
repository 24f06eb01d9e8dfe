//! Kill-and-restore equivalence: the processor SIGKILLed at random points and restarted from
//! its checkpoint emits the same predictions and labels (compared by id and content) as an
//! uninterrupted run over the same input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{bikeshare, ok, simulated_history, stream_records};

/// Output records of `stream`, keyed by their id field; duplicates must be identical.
fn outputs(data_dir: &Path, stream: &str, id_field: &str) -> BTreeMap<String, serde_json::Value> {
    let mut map = BTreeMap::new();
    for v in stream_records(data_dir, stream) {
        let id = v[id_field].as_str().unwrap().to_owned();
        if let Some(prev) = map.insert(id.clone(), v.clone()) {
            assert_eq!(
                prev, v,
                "{stream}: record {id} re-emitted with different content"
            );
        }
    }
    map
}

#[test]
fn sigkilled_processor_restarts_from_its_checkpoint_with_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let history = simulated_history(
        dir.path(),
        80,
        11,
        "2026-03-02T06:00:00Z",
        "2026-03-02T14:00:00Z",
    );
    let straight = dir.path().join("straight");
    let killed = dir.path().join("killed");
    for d in [&straight, &killed] {
        ok(bikeshare(d).args(["replay", "--format", "jsonl", history.to_str().unwrap()]));
    }

    let timer = Instant::now();
    ok(bikeshare(&straight).args(["process", "--until-caught-up"]));
    // Kill points are fractions of the uninterrupted run's duration, so they land mid-run
    // however fast this machine is.
    let full_run = timer.elapsed();

    // Kill at pseudo-random points until a run finishes by itself.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut kills = 0;
    let started = Instant::now();
    loop {
        let mut child = bikeshare(&killed)
            .args(["process", "--until-caught-up"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let fraction = 0.15 + 0.2 * (seed % 1000) as f64 / 1000.0;
        let wait = full_run.mul_f64(fraction).max(Duration::from_millis(20));
        let deadline = Instant::now() + wait;
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match finished {
            Some(status) => {
                assert!(status.success(), "restarted processor failed");
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no run finished after {kills} kills"
        );
    }
    assert!(
        kills >= 2,
        "the processor was killed only {kills} times: the input is too small to test restarts"
    );

    let (p1, p2) = (
        outputs(&straight, "predictions", "prediction_id"),
        outputs(&killed, "predictions", "prediction_id"),
    );
    let (l1, l2) = (
        outputs(&straight, "labels", "prediction_id"),
        outputs(&killed, "labels", "prediction_id"),
    );
    assert!(
        p1.len() > 1000 && l1.len() > 500,
        "too few outputs: {} predictions, {} labels",
        p1.len(),
        l1.len()
    );
    assert_eq!(p1.len(), p2.len(), "predictions after {kills} kills");
    assert!(p1 == p2, "predictions differ after {kills} kills");
    assert_eq!(l1.len(), l2.len(), "labels after {kills} kills");
    assert!(l1 == l2, "labels differ after {kills} kills");
}
