//! No secret reaches a log, at any level: `bikeshare process` scoring through `bikeshare
//! serve-model` with `BIKESHARE_MODEL_TOKEN` set, both at `RUST_LOG=trace`, never print the
//! token. The SDK sends it in the SageMaker custom-attributes header, which the SDK's own
//! wire trace (request headers, the SigV4 canonical request) would print; the log filter caps
//! those targets whatever `RUST_LOG` says (`src/telemetry.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, TestEnv};

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A value that appears nowhere else: any occurrence in a log is the token.
const TOKEN: &str = "tok-9f3c2a7e51b84d06-never-log-me";

#[test]
fn process_and_serve_model_never_log_the_model_token_at_trace_level() {
    let history = support::History::simulate(6, 5, "2026-04-07T06:00:00Z", "2026-04-07T06:40:00Z");
    let dir = history.dir();
    let model_dir = dir.join("model");
    support::synthetic_model(&model_dir, "7", 5, 3);
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server_log = dir.join("serve-model.log");
    let mut server = support::bikeshare(dir)
        .args(["serve-model", "--model-dir"])
        .arg(&model_dir)
        .args(["--bind", &addr.to_string()])
        .env("RUST_LOG", "trace")
        .env("BIKESHARE_MODEL_TOKEN", TOKEN)
        .stdout(std::fs::File::create(dir.join("serve-model.out")).unwrap())
        .stderr(std::fs::File::create(&server_log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve-model did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let data = history.replayed("data");
    let out = support::bikeshare(&data)
        .args(["process", "--until-caught-up"])
        .env("RUST_LOG", "trace")
        .env("BIKESHARE_MODEL_TOKEN", TOKEN)
        .env("BIKESHARE_PREDICTOR__BACKEND", "sagemaker")
        .env(
            "BIKESHARE_PREDICTOR__SAGEMAKER__ENDPOINT_URL",
            format!("http://{addr}"),
        )
        .env("BIKESHARE_LAKE__ENABLED", "false")
        .emulator_credentials()
        .output()
        .unwrap();
    server.kill().unwrap();
    let _ = server.wait();
    let mut server_text = String::new();
    std::fs::File::open(&server_log)
        .unwrap()
        .read_to_string(&mut server_text)
        .unwrap();
    let process_text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "process failed: {process_text:.3000}");

    // The token was used: the server requires it, and it scored every prediction.
    let predictions = support::stream_records(&data, "predictions");
    assert!(!predictions.is_empty());
    for p in &predictions {
        assert_eq!(p["scored_by"], "endpoint", "{p}");
    }
    // The logs really are verbose: the SDK's own targets log up to their cap (`debug`).
    assert!(
        process_text
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("aws_smithy_runtime")),
        "no debug lines from the SDK: {process_text:.3000}"
    );
    assert!(!server_text.is_empty(), "serve-model logged nothing");
    for (who, text) in [("process", &process_text), ("serve-model", &server_text)] {
        let n = text.matches(TOKEN).count();
        let first = text.lines().find(|l| l.contains(TOKEN)).unwrap_or("");
        assert_eq!(n, 0, "{who} logged the token {n} times, e.g.: {first:.400}");
    }
}
