//! The image's entrypoint (`docker/entrypoint.sh`) against a temporary `/opt/ml` tree, with
//! the `bikeshare` binary built here (no container runtime needed): SageMaker's training
//! contract (`train`: the `train` channel, hyperparameters.json, the model to /opt/ml/model,
//! the reason to /opt/ml/output/failure, metric lines a regex reads) and its inference contract
//! (`serve`: /opt/ml/model on port 8080 by default, `GET /ping`, `POST /invocations`), and the
//! pass-through of every other command with `BIKESHARE_CONFIG`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{
    BIN, KillOnDrop, TestEnv, backfill, http, listening_url, ok, port_of, simulated_history,
    synthetic_model, wait_for_ping,
};

fn entrypoint(sm_root: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/entrypoint.sh"))
        .env("SM_ROOT", sm_root)
        .env("BIKESHARE_BIN", BIN)
        .env("BIKESHARE_DATA_DIR", sm_root.join("scratch"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Backfilled training rows of a small simulated city (three days, ten stations).
fn rows(dir: &Path) -> PathBuf {
    let history = simulated_history(dir, 10, 3, "2026-03-02T00:00:00Z", "2026-03-05T00:00:00Z");
    let rows = dir.join("rows.csv");
    ok(&mut backfill(dir, "jsonl", &history, &rows));
    rows
}

/// A SageMaker training job's `/opt/ml` tree at `dir/name`: [`rows`] in the `train` channel
/// and `hyperparameters` (JSON) in its config.
fn training_job(dir: &Path, name: &str, hyperparameters: &str) -> PathBuf {
    let rows = rows(dir);
    let ml = dir.join(name);
    std::fs::create_dir_all(ml.join("input/data/train")).unwrap();
    std::fs::create_dir_all(ml.join("input/config")).unwrap();
    std::fs::copy(&rows, ml.join("input/data/train/rows.csv")).unwrap();
    std::fs::write(
        ml.join("input/config/hyperparameters.json"),
        hyperparameters,
    )
    .unwrap();
    ml
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn train_follows_the_sagemaker_training_contract() {
    let dir = tempfile::tempdir().unwrap();
    // SageMaker sends every hyperparameter as a string.
    let hyperparameters = r#"{"max_rounds": "4", "nthread": "1"}"#;
    let ml = training_job(dir.path(), "ml", hyperparameters);
    let out = entrypoint(&ml).arg("train").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!ml.join("output/failure").exists());
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ml.join("model/card.json")).unwrap())
            .unwrap();
    assert!(ml.join("model/empty.json").is_file() && ml.join("model/full.json").is_file());
    assert_eq!(
        card["params"]["max_rounds"], 4,
        "hyperparameters.json applied"
    );
    // Each metric line is the card's number, read the way a SageMaker metric regex reads it.
    for target in ["empty", "full"] {
        for metric in ["pr_auc", "roc_auc", "log_loss", "brier"] {
            let prefix = format!("metric {target}_{metric}=");
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {stdout}"));
            let value: f64 = line[prefix.len()..].parse().unwrap();
            let want = card["evaluation"]["model"][target][metric]
                .as_f64()
                .unwrap();
            assert!((value - want).abs() < 1e-12, "{line} vs {want}");
        }
    }
}

#[test]
fn train_writes_the_failure_reason() {
    let dir = tempfile::tempdir().unwrap();
    // No channel at all.
    let ml = dir.path().join("ml");
    let out = entrypoint(&ml).arg("train").output().unwrap();
    assert!(!out.status.success());
    let reason = std::fs::read_to_string(ml.join("output/failure")).unwrap();
    assert!(reason.contains("input/data/train"), "{reason}");

    // A hyperparameter the trainer refuses: the failure names it.
    let ml = training_job(dir.path(), "ml2", "{\"max_rounds\": \"many\"}");
    let out = entrypoint(&ml).arg("train").output().unwrap();
    assert!(!out.status.success());
    let reason = std::fs::read_to_string(ml.join("output/failure")).unwrap();
    assert!(reason.contains("bikeshare train failed"), "{reason}");
    assert!(reason.to_lowercase().contains("max_rounds"), "{reason}");
    assert!(!ml.join("model/card.json").exists());
}

#[test]
fn serve_follows_the_sagemaker_inference_contract() {
    let dir = tempfile::tempdir().unwrap();
    let ml = dir.path().join("ml");
    let schema = synthetic_model(&ml.join("model"), "3", 10, 4);
    // In SageMaker it binds 0.0.0.0:8080 (with BIKESHARE_MODEL_TOKEN); here loopback, on a port
    // of the system's choosing, read back from what the server prints.
    let mut server = KillOnDrop(
        entrypoint(&ml)
            .arg("serve")
            .env("SAGEMAKER_BIND_TO_ADDRESS", "127.0.0.1")
            .env("SAGEMAKER_BIND_TO_PORT", "0")
            .spawn_reading_stderr(),
    );
    let port = port_of(&listening_url(&mut server.0));
    wait_for_ping(&mut server.0, port, Duration::from_secs(30));
    let row: Vec<String> = (0..schema.len()).map(|i| (i % 5).to_string()).collect();
    let body = format!("{}\n{}\n", row.join(","), row.join(","));
    let answer = http(
        port,
        &format!(
            "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let payload = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(
        payload.trim().lines().count(),
        2,
        "one answer per row: {payload}"
    );
}

#[test]
fn other_commands_pass_through_with_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = entrypoint(dir.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(text(&out).0.starts_with("bikeshare "), "{:?}", text(&out));
    let missing = dir.path().join("nowhere.toml");
    let out = entrypoint(dir.path())
        .env("BIKESHARE_CONFIG", &missing)
        .args(["lake", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains(missing.to_str().unwrap()),
        "{:?}",
        text(&out)
    );
}

/// `docker/base-images.sh` on an env file with `lines`: (success, stdout, stderr).
fn base_images(dir: &Path, name: &str, lines: &str) -> (bool, String, String) {
    let file = dir.join(name);
    std::fs::write(&file, lines).unwrap();
    let out = Command::new("sh")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/base-images.sh"))
        .arg(&file)
        .env_remove("BIKESHARE_RESOLVE_BASE_IMAGES")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    (out.status.success(), stdout, stderr)
}

#[test]
fn base_images_are_pinned_by_a_recorded_digest_and_never_by_a_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ("ab".repeat(32), "cd".repeat(32));
    let (ok, stdout, stderr) = base_images(
        dir.path(),
        "pinned.env",
        &format!(
            "# reviewed\nRUST_IMAGE_TAG=rust:1.95-bookworm\nRUST_IMAGE_DIGEST=sha256:{a}\n\
             RUNTIME_IMAGE_TAG=debian:bookworm-slim\nRUNTIME_IMAGE_DIGEST=sha256:{b}\n"
        ),
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "RUST_IMAGE=rust:1.95-bookworm@sha256:{a}\n\
             RUNTIME_IMAGE=debian:bookworm-slim@sha256:{b}\n"
        )
    );
    let runtime =
        format!("RUNTIME_IMAGE_TAG=debian:bookworm-slim\nRUNTIME_IMAGE_DIGEST=sha256:{b}\n");
    let zeros = "0".repeat(64);
    for (name, rust, says) in [
        (
            "placeholder.env",
            format!("RUST_IMAGE_TAG=rust:1.95-bookworm\nRUST_IMAGE_DIGEST=sha256:{zeros}\n"),
            "placeholder",
        ),
        (
            "unrecorded.env",
            "RUST_IMAGE_TAG=rust:1.95-bookworm\nRUST_IMAGE_DIGEST=\n".to_owned(),
            "no digest recorded for rust:1.95-bookworm",
        ),
        (
            "short.env",
            "RUST_IMAGE_TAG=rust:1.95-bookworm\nRUST_IMAGE_DIGEST=sha256:abc\n".to_owned(),
            "not sha256:<64 hex digits>",
        ),
        (
            "tagged.env",
            format!("RUST_IMAGE_TAG=rust:1.95-bookworm@sha256:{a}\nRUST_IMAGE_DIGEST=sha256:{a}\n"),
            "the tag alone",
        ),
    ] {
        let (ok, stdout, stderr) = base_images(dir.path(), name, &format!("{rust}{runtime}"));
        assert!(!ok, "{name}: {stdout}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    // The repository's own file: either both images pinned, or a refusal to build.
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/base-images.env");
    let (ok, stdout, stderr) = base_images(
        dir.path(),
        "repository.env",
        &std::fs::read_to_string(repo).unwrap(),
    );
    if ok {
        assert_eq!(stdout.lines().count(), 2, "{stdout}");
        assert!(stdout.lines().all(|l| l.contains("@sha256:")), "{stdout}");
        assert!(!stdout.contains(&zeros), "{stdout}");
    } else {
        assert!(stderr.contains("no digest recorded"), "{stderr}");
    }
}
