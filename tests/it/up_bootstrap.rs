//! `bikeshare up` with an empty registry: it trains a first model on a simulated backfill,
//! registers it, passes it through the gate, and the processor scores with it; a second run
//! trains nothing and resumes the city where it stopped, so predictions flow again; `--fresh`
//! starts clean.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Stdio;

use support::{bikeshare, ok, stream_records};

fn up(dir: &std::path::Path, duration: &str) -> String {
    up_with(dir, duration, &[])
}

fn up_with(dir: &std::path::Path, duration: &str, extra: &[&str]) -> String {
    let out = bikeshare(dir)
        .args([
            "up",
            "--duration",
            duration,
            "--summary-every",
            "600",
            "--catch-up",
            "2h",
        ])
        .args(extra)
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "60")
        .env("BIKESHARE_API__BIND", "127.0.0.1:0")
        .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
        .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
        .env("BIKESHARE_REGISTRY__POLL_INTERVAL_MS", "200")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "up failed: {stderr}");
    stderr
}

#[test]
fn up_bootstraps_a_production_model_and_scores_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = up(dir.path(), "20s");
    assert!(first.contains("training a first one"), "{first}");
    // The gate decides on the simulated test day; whichever way, the job runs with what
    // production names and says so (the simulated days depend on today's date).
    let promoted = first.contains("v1 promoted to production");
    assert!(
        promoted || first.contains("v1 refused for production"),
        "{first}"
    );
    // A refusal is said once, with the failed measure's numbers, and what scores instead.
    assert_eq!(
        first.matches("the gate refused the bootstrap").count(),
        usize::from(!promoted),
        "{first}"
    );
    if !promoted {
        assert!(
            first.contains("scoring with the net-flow baseline (baseline-netflow v1)")
                && first.contains(" vs "),
            "{first}"
        );
    }
    let (name, version) = if promoted {
        ("bikeshare-stockout", "1")
    } else {
        ("baseline-netflow", "1")
    };
    assert!(
        first.contains(&format!("model:       {name} v{version}")),
        "{first}"
    );

    let status = ok(bikeshare(dir.path()).args(["promote", "--status"]));
    assert!(status.contains("decisions (2)"), "{status}");
    let stages = if promoted {
        "staging,production"
    } else {
        "staging"
    };
    assert!(status.contains(stages), "{status}");

    let predictions = stream_records(dir.path(), "predictions");
    assert!(!predictions.is_empty());
    for p in &predictions {
        assert_eq!(p["model"]["name"], name, "{p}");
        assert_eq!(p["model"]["version"], version, "{p}");
    }

    // A second start resumes: the registry is not empty, so nothing is trained again
    // (whichever way the gate went); the city continues from its stored clock, so the
    // processor's watermark drops nothing as late and predictions flow again.
    let before = predictions.len();
    let second = up(dir.path(), "8s");
    assert!(!second.contains("training a first one"), "{second}");
    assert!(second.contains("city:        resuming at"), "{second}");
    assert!(!second.contains("WARNING"), "{second}");
    // Logs to a pipe carry no terminal colour codes.
    assert!(!second.contains('\u{1b}'), "{second}");
    // Every dead letter is counted by cause; none is late. (The weather producer's look-back
    // re-sends the hours it sent before the restart: duplicates, counted as such.)
    assert!(
        second.contains("dead letters: ingest 0, late 0, duplicate "),
        "{second}"
    );
    assert!(second.contains(", decode 0"), "{second}");
    assert!(
        second.contains(&format!("model:       {name} v{version}")),
        "{second}"
    );
    let status = ok(bikeshare(dir.path()).args(["promote", "--status"]));
    assert!(status.contains("decisions (2)"), "{status}");
    let after = stream_records(dir.path(), "predictions");
    assert!(
        after.len() > before,
        "no predictions after a restart: {before} before, {} after\n{second}",
        after.len()
    );
    let resumed_at = |out: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with("city:        resuming at "))
            .unwrap();
        line["city:        resuming at ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let last_first_run = predictions
        .iter()
        .filter_map(|p| p["as_of"].as_str())
        .max()
        .unwrap()
        .to_owned();
    assert!(
        resumed_at(&second).as_str() >= last_first_run.as_str(),
        "resumed at {} before the first run's last prediction {last_first_run}",
        resumed_at(&second)
    );

    // --fresh starts clean: the city starts `--catch-up` ago and the registry is empty again.
    let third = up_with(dir.path(), "3s", &["--fresh", "--no-bootstrap"]);
    assert!(third.contains("fresh:       removed"), "{third}");
    assert!(!third.contains("city:        resuming"), "{third}");
    assert!(third.contains("late 0"), "{third}");
}

/// A data directory with a stream but no city clock (an older version, or a replay) is
/// said to drop input, loudly, with the way to start clean.
#[test]
fn up_on_data_without_a_city_clock_says_so_and_how_to_start_clean() {
    let dir = tempfile::tempdir().unwrap();
    up_with(dir.path(), "3s", &["--no-bootstrap"]);
    std::fs::remove_file(dir.path().join("simulator").join("clock.json")).unwrap();
    let again = up_with(dir.path(), "3s", &["--no-bootstrap"]);
    assert!(again.contains("WARNING"), "{again}");
    assert!(again.contains("bikeshare up --fresh"), "{again}");
}

/// When the gate refuses the bootstrap, `up` says so once at start: the failed measure with
/// both numbers, and that the net-flow baseline scores. (A log-loss margin no model can beat
/// makes the refusal certain.)
#[test]
fn up_says_once_why_the_bootstrap_was_refused_and_what_scores() {
    let dir = tempfile::tempdir().unwrap();
    let out = bikeshare(dir.path())
        .args(["up", "--duration", "1s", "--summary-every", "600"])
        .args(["--catch-up", "2h"])
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "60")
        .env("BIKESHARE_REGISTRY__GATE__MARGINS__LOG_LOSS", "10")
        .env("BIKESHARE_API__BIND", "127.0.0.1:0")
        .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
        .env("BIKESHARE_SIMULATOR__BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "up failed: {err}");
    let refused: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("the gate refused the bootstrap"))
        .collect();
    assert_eq!(refused.len(), 1, "{err}");
    let line = refused[0];
    assert!(line.contains("v1 for production"), "{line}");
    assert!(line.contains("beats.empty.log_loss "), "{line}");
    assert!(
        line.contains(" vs ") && line.contains("must be lower by 10"),
        "{line}"
    );
    assert!(
        line.contains("scoring with the net-flow baseline (baseline-netflow v1)"),
        "{line}"
    );
    assert!(err.contains("model:       baseline-netflow v1"), "{err}");
}
