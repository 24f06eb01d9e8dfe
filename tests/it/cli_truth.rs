//! The CLI tells the truth: a command that fails exits non-zero and says why once; `ingest`
//! publishes under the feed's own system id and refuses an unreachable URL; the producers send
//! the simulator's token; `subscribe` reads SSE the way the spec says (UTF-8 across chunks, CR
//! and CRLF, `retry:`), gives up after its retry budget, and names an unknown station.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{bikeshare, stream_records};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `c`, which must fail; its error line: exactly one, starting `bikeshare:`.
fn the_error(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "expected a failure: {}", stderr(&o));
    let text = stderr(&o);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("bikeshare: "))
        .collect();
    assert_eq!(lines.len(), 1, "the error is printed once: {text}");
    lines[0].to_owned()
}

/// The events of `data_dir` hold both station status (GBFS) and weather.
fn assert_gbfs_and_weather_published(data_dir: &Path) {
    let events = stream_records(data_dir, "events");
    let kinds: std::collections::BTreeSet<&str> =
        events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains("station_status") && kinds.contains("weather"),
        "GBFS and weather both published: {kinds:?}"
    );
}

/// A URL on 127.0.0.1 where nothing listens.
fn dead_url(path: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}{path}")
}

#[test]
fn a_replay_of_only_bad_records_fails_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("some.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n4,5,6\n7,8,9\n10,11,12\n").unwrap();
    let error = the_error(bikeshare(dir.path()).args([
        "replay",
        "--format",
        "jsonl",
        csv.to_str().unwrap(),
    ]));
    assert!(
        error.contains("nothing replayed") && error.contains("5 dead letters"),
        "{error}"
    );
}

#[test]
fn ingest_of_an_unreachable_feed_fails_naming_the_url_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let url = dead_url("/gbfs.json");
    let error = the_error(
        bikeshare(dir.path())
            .args(["ingest", "--gbfs-url", &url, "--duration", "30s"])
            .env("BIKESHARE_GBFS__CLIENT__RETRY__BASE", "10")
            .env("BIKESHARE_GBFS__CLIENT__RETRY__MAX", "50"),
    );
    assert!(error.contains(&url) && error.contains("connect"), "{error}");
}

/// Serves the simulated city in this process (optionally with a token) until dropped.
struct Sim {
    running: Option<bikeshare_simulator::RunningSimulator>,
    _rt: tokio::runtime::Runtime,
}

fn simulator(system_id: &str, token: Option<&str>) -> Sim {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = bikeshare_simulator::SimulatorConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.city.system_id = system_id.into();
    config.city.stations = 10;
    config.token = token.map(Into::into);
    let clock: bikeshare_types::SharedClock = Arc::new(bikeshare_types::SystemClock);
    let running = rt
        .block_on(bikeshare_simulator::serve(
            config,
            clock,
            std::future::pending(),
        ))
        .unwrap();
    Sim {
        running: Some(running),
        _rt: rt,
    }
}

#[test]
fn ingest_publishes_under_the_feeds_own_system_id_unless_told_otherwise() {
    let sim = simulator("testville", None);
    let url = sim
        .running
        .as_ref()
        .unwrap()
        .gbfs_url(bikeshare_simulator::GbfsVersion::V2_3);
    for (flags, expected) in [(vec![], "testville"), (vec!["--system-id", "mine"], "mine")] {
        let dir = tempfile::tempdir().unwrap();
        let out = bikeshare(dir.path())
            .args(["ingest", "--gbfs-url", &url, "--duration", "2s"])
            .args(&flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let events = stream_records(dir.path(), "events");
        assert!(!events.is_empty());
        assert!(
            events.iter().all(|e| e["system_id"] == expected),
            "every event under {expected:?}: {:?}",
            events.first()
        );
    }
}

#[test]
fn with_a_simulator_token_the_producers_send_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = bikeshare(dir.path())
        .args(["ingest", "--simulator", "--weather", "--duration", "6s"])
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "10")
        .env("BIKESHARE_SIM_TOKEN", "sim-token-for-tests")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("sim-token-for-tests"),
        "the token is never printed"
    );
    assert_gbfs_and_weather_published(dir.path());
}

/// A one-connection-at-a-time HTTP server that answers each connection with the next
/// script: a list of body pieces written (and flushed) one by one, so they arrive as separate
/// network reads. Returns the `Last-Event-ID` each request carried.
fn sse_server(
    scripts: Vec<Vec<Vec<u8>>>,
) -> (String, std::thread::JoinHandle<Vec<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/predictions", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for script in scripts {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            seen.push(
                head.lines()
                    .find_map(|l| l.strip_prefix("last-event-id:"))
                    .map(|v| v.trim().to_owned()),
            );
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .unwrap();
            for piece in script {
                conn.write_all(&piece).unwrap();
                conn.flush().unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        seen
    });
    (url, handle)
}

#[test]
fn subscribe_reads_utf8_split_across_chunks_cr_and_crlf_and_retry() {
    let cafe = "{\"station\":\"café\"}".as_bytes().to_vec();
    let split = cafe.iter().position(|&b| b == 0xC3).unwrap() + 1;
    let (url, server) = sse_server(vec![
        vec![
            b": keep-alive\r\n\r\nretry: 1234\r\nid: 1\r\nevent: prediction\r\ndata: ".to_vec(),
            cafe[..split].to_vec(), // half of "é"
            [&cafe[split..], b"\r\n\r\n".as_slice()].concat(),
            b"id: 2\rdata: {\"n\":2}\r\r".to_vec(),
            // A lone CR ends a line only once the next byte is not LF: more bytes follow.
            b": keep-alive\n\n".to_vec(),
        ],
        // After the close: resumed after event 2.
        vec![b"id: 3\ndata: {\"n\":3}\n\n".to_vec()],
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = bikeshare(dir.path())
        .args(["subscribe", "--url", &url, "-n", "3", "--retries", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["{\"station\":\"café\"}", "{\"n\":2}", "{\"n\":3}"]
    );
    assert_eq!(server.join().unwrap(), [None, Some("2".to_owned())]);
    assert!(
        stderr(&out).contains("retry_in_ms=1234"),
        "waits as the server's retry: says: {}",
        stderr(&out)
    );
}

#[test]
fn subscribe_gives_up_after_its_retry_budget() {
    let dir = tempfile::tempdir().unwrap();
    let url = dead_url("/v1/predictions");
    let error =
        the_error(bikeshare(dir.path()).args(["subscribe", "--url", &url, "--retries", "2"]));
    assert!(
        error.contains(&url) && error.contains("gave up after 2 retries"),
        "{error}"
    );
}

#[test]
fn subscribe_to_an_unknown_station_ends_with_a_clear_message() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = rt.block_on(async {
        use bikeshare_stream::StreamWriter;
        let stream =
            bikeshare_embedded::EmbeddedStream::open(dir.path().join("p.db"), "predictions", 1)
                .await
                .unwrap();
        let body = serde_json::json!({"system_id": "city", "station_id": "s0", "p_empty": 0.1});
        stream
            .put_records(&[bikeshare_stream::PutRecord::new(
                "city/s0",
                serde_json::to_vec(&body).unwrap(),
            )])
            .await
            .unwrap();
        bikeshare_sinks::subscribe::serve(
            bikeshare_sinks::subscribe::SubscribeConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                poll_interval_ms: 20,
                ..Default::default()
            },
            Arc::new(stream),
            Arc::new(bikeshare_types::SystemClock),
            std::future::pending(),
        )
        .await
        .unwrap()
    });
    let error = the_error(bikeshare(dir.path()).args([
        "subscribe",
        "--url",
        &api.url(),
        "--system-id",
        "city",
        "--station-id",
        "nowhere",
        "--wait-for-station",
        "2s",
    ]));
    assert!(
        error.contains("unknown station") && error.contains("nowhere"),
        "{error}"
    );
}

#[test]
fn the_global_data_dir_flag_overrides_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    // BIKESHARE_DATA_DIR (set by the helper) points at `dir`; the flag wins.
    let error = the_error(
        bikeshare(dir.path())
            .args(["--data-dir", elsewhere.to_str().unwrap()])
            .args(["tail", "--stream", "events", "--from-start"]),
    );
    assert!(
        error.contains(elsewhere.to_str().unwrap()),
        "reads the stream under --data-dir: {error}"
    );
}

#[test]
fn up_with_a_simulator_token_publishes_gbfs_and_weather() {
    let dir = tempfile::tempdir().unwrap();
    let out = bikeshare(dir.path())
        .args([
            "up",
            "--no-bootstrap",
            "--duration",
            "10s",
            "--summary-every",
            "600",
            "--catch-up",
            "1h",
            "--station-count",
            "10",
        ])
        .env("BIKESHARE_SIM_TOKEN", "sim-token-for-tests")
        .env("BIKESHARE_API__BIND", "127.0.0.1:0")
        .env("BIKESHARE_DASHBOARD__BIND", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sim-token-for-tests"));
    assert_gbfs_and_weather_published(dir.path());
}
