//! A stalled AWS dependency — a listener that accepts connections and never answers, as a
//! frozen kinesis-mock does — is an error within the configured timeouts, logged and counted
//! in `bikeshare_aws_call_failures_total`; and `bikeshare process`, blocked on it, stops
//! within its shutdown grace period after SIGTERM. Without a stall, SIGTERM stops it cleanly
//! with a final checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, TestEnv};

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bikeshare_aws::{KinesisConfig, KinesisStreams};
use bikeshare_runtime::aws::{Timeouts, emulator_loader};
use bikeshare_stream::StreamReader;
use bikeshare_types::metrics::AWS_CALL_FAILURES;

/// Accepts every connection and holds it open without a byte of answer. Returns its address
/// and the number of connections accepted so far.
fn stalled_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, accepted)
}

/// A log sink for a `tracing` subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_kinesis_is_an_error_within_the_timeouts_logged_and_counted() {
    let recorder = bikeshare_monitor::exporter::install().unwrap();
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    // A current-thread runtime: the subscriber sees every event of the call.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (addr, accepted) = stalled_listener();
    let timeouts = Timeouts {
        connect_timeout_ms: 1_000,
        attempt_timeout_ms: 400,
        operation_timeout_ms: 800,
    };
    let sdk = emulator_loader(&format!("http://{addr}"), timeouts)
        .load()
        .await;
    let streams = KinesisStreams::with_sdk_config(&sdk, &KinesisConfig::default());
    let stream = streams.stream("events").await.unwrap();
    // Without timeouts the call never returns: the guard turns a hang into a failure.
    let result = tokio::time::timeout(Duration::from_secs(60), stream.list_shards())
        .await
        .expect("the call to a stalled endpoint never returned: no timeout applies");
    let err = result.expect_err("a stalled endpoint cannot answer");
    assert!(accepted.load(Ordering::SeqCst) >= 1, "the call reached it");
    let text = format!("{err:#}");
    assert!(text.contains("timeout"), "{text}");

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("AWS call abandoned unanswered"))
        .unwrap_or_else(|| panic!("nothing logged: {logged}"));
    assert!(
        line.contains("WARN") && line.contains("service=kinesis"),
        "{line}"
    );

    let timeouts_counted: f64 = bikeshare_monitor::samples::parse(&recorder.render())
        .iter()
        .filter(|s| {
            s.name == AWS_CALL_FAILURES.name
                && s.label("service") == Some("kinesis")
                && s.label("reason") == Some("timeout")
        })
        .map(|s| s.value)
        .sum();
    assert!(timeouts_counted >= 1.0, "{timeouts_counted}");
}

#[test]
fn process_blocked_on_a_stalled_kinesis_stops_within_its_grace_period_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, accepted) = stalled_listener();
    // Timeouts far longer than the grace period: only the grace period can end the run.
    let mut child = support::bikeshare(dir.path())
        .arg("process")
        .env("BIKESHARE_STREAM__BACKEND", "kinesis")
        .env(
            "BIKESHARE_STREAM__KINESIS__ENDPOINT_URL",
            format!("http://{addr}"),
        )
        .env("BIKESHARE_AWS__ATTEMPT_TIMEOUT_MS", "600000")
        .env("BIKESHARE_AWS__OPERATION_TIMEOUT_MS", "600000")
        .env("BIKESHARE_RUNNER__SHUTDOWN_GRACE_MS", "1000")
        .env("BIKESHARE_LAKE__ENABLED", "false")
        .emulator_credentials()
        .spawn_reading_stderr();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(l);
        }
    });
    let started = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "process never called Kinesis: {:?}",
            lines.lock().unwrap()
        );
        assert!(child.try_wait().unwrap().is_none(), "process exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Blocked in a call that would last 10 minutes.
    support::sigterm(&child);
    let status = support::exit_within(&mut child, Duration::from_secs(60))
        .expect("process did not stop within a minute of SIGTERM while Kinesis stalled");
    std::thread::sleep(Duration::from_millis(100));
    let text = lines.lock().unwrap().join("\n");
    assert!(!status.success(), "a forced stop is a failure: {text}");
    assert!(text.contains("shutdown grace period"), "{text}");
    assert_eq!(
        text.matches("did not stop within its shutdown grace period")
            .count(),
        1,
        "said once on stderr: {text}"
    );
}

#[test]
fn sigterm_stops_a_healthy_process_cleanly_with_a_final_checkpoint() {
    let history = support::History::simulate(5, 2, "2026-04-07T06:00:00Z", "2026-04-07T06:30:00Z");
    let data = history.replayed("data");
    // No periodic checkpoint during the test: a checkpoint newer than those stored before
    // the signal (taking a shard may store one) is the final one.
    let mut child = support::KillOnDrop(
        support::bikeshare(&data)
            .arg("process")
            .env("BIKESHARE_RUNNER__CHECKPOINT_INTERVAL_MS", "3600000")
            .env("BIKESHARE_RUNNER__SHUTDOWN_GRACE_MS", "30000")
            .env("BIKESHARE_LAKE__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !has_predictions(&data) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no predictions"
        );
        assert!(child.try_wait().unwrap().is_none(), "process exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let checkpoints = data.join("checkpoints/processor");
    let newest = || newest_epoch(&checkpoints);
    let before = newest();
    support::sigterm(&child);
    let status = support::exit_within(&mut child, Duration::from_secs(60)).expect("did not stop");
    assert!(status.success(), "{status:?}");
    let after = newest();
    assert!(
        after.is_some() && after > before,
        "a final checkpoint is stored: newest epoch {before:?} before SIGTERM, {after:?} after"
    );
}

/// The newest epoch of the stored checkpoints (`checkpoint-<epoch>.bin`) under `dir`, at
/// any depth.
fn newest_epoch(dir: &std::path::Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.is_dir() {
                return newest_epoch(&p);
            }
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")?
                .strip_suffix(".bin")?
                .parse::<u64>()
                .ok()
        })
        .max()
}

/// Whether the predictions stream of `data` holds a record yet (it may not exist yet).
fn has_predictions(data: &std::path::Path) -> bool {
    support::bikeshare(data)
        .args(["tail", "--stream", "predictions", "--from-start"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}
