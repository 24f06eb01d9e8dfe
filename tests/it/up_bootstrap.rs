//! `bikeshare up` with an empty registry: it trains a first model on a simulated backfill,
//! registers it, passes it through the gate, and the processor scores with it; a second run
//! finds it in production and trains nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Stdio;

use support::{bikeshare, ok, stream_records};

fn up(dir: &std::path::Path, duration: &str) -> String {
    let out = bikeshare(dir)
        .args([
            "up",
            "--duration",
            duration,
            "--summary-every",
            "600",
            "--stations",
            "60",
            "--history",
            "2h",
        ])
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

    // A second start: a promoted model is found and no training happens; after a refusal
    // the job tries again.
    let second = up(dir.path(), "3s");
    assert_eq!(
        !second.contains("training a first one"),
        promoted,
        "{second}"
    );
    if promoted {
        assert!(
            second.contains("model:       bikeshare-stockout v1"),
            "{second}"
        );
    }
}
