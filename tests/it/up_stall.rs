//! `bikeshare up` stops within its documented bound when a component stalls (issue 14,
//! leftover 6; decision 082): here the model endpoint accepts connections and never answers,
//! so at the signal the processor is stuck in a scoring call. The processor is abandoned at
//! its shutdown grace period, the whole stop is bounded by `STOP_GRACES` (6) of them, and
//! `up` exits non-zero saying what did not stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{KillOnDrop, TestEnv, bikeshare, exit_within, sigterm};

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `up`'s shutdown grace in this test, and its bound: `STOP_GRACES` (src/commands/up.rs) of
/// them.
const GRACE: Duration = Duration::from_millis(1_500);
const STOP_GRACES: u32 = 6;

/// A model endpoint that accepts every connection and never answers (the connections are
/// held open until the test ends). Returns its address and the number of connections.
fn silent_endpoint() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    (addr, accepted)
}

#[test]
fn up_stops_within_its_bound_when_the_model_endpoint_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, accepted) = silent_endpoint();
    let child = bikeshare(dir.path())
        .args([
            "up",
            "--no-bootstrap",
            "--summary-every",
            "600",
            "--catch-up",
            "1h",
        ])
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "30")
        .env("BIKESHARE_API__BIND", "127.0.0.1:0")
        .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
        .env(
            "BIKESHARE_RUNNER__SHUTDOWN_GRACE_MS",
            GRACE.as_millis().to_string(),
        )
        .env("BIKESHARE_PREDICTOR__BACKEND", "sagemaker")
        .env(
            "BIKESHARE_PREDICTOR__SAGEMAKER__ENDPOINT_URL",
            format!("http://{addr}"),
        )
        // A call that would wait ten minutes: the stall outlasts any bound of `up`.
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__TIMEOUT_MS", "600000")
        .env("BIKESHARE_PREDICTOR__SAGEMAKER__BUDGET_MS", "600000")
        .emulator_credentials()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Drained as it comes: a full pipe would stall `up` itself.
    let mut pipe = child.0.stderr.take().unwrap();
    let drained = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = pipe.read_to_string(&mut all);
        all
    });
    // The processor is stuck once it has opened a connection to the endpoint.
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "up exited before scoring anything"
        );
        assert!(
            Instant::now() < deadline,
            "up never called the model endpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child.0);
    let signalled = Instant::now();
    let bound = GRACE * STOP_GRACES;
    // The bound, plus a little for the process to exit once `up` has returned.
    let status = exit_within(&mut child.0, bound + Duration::from_secs(3));
    let took = signalled.elapsed();
    let stderr = drained.join().unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("up still running {took:?} after SIGTERM (bound {bound:?}): {stderr}")
    });
    assert!(
        !status.success(),
        "a stop that abandoned a stalled processor is a failure: {stderr}"
    );
    assert!(
        stderr.contains("did not stop within its shutdown grace period"),
        "the error names what stalled: {stderr}"
    );
    assert!(
        took >= GRACE,
        "the processor was given its grace ({took:?})"
    );
    eprintln!("up stopped {took:?} after SIGTERM (bound {bound:?})");
}
