//! The alert loop runs inside the real job: `bikeshare ingest --simulator` over a city whose
//! clock all but stands still (a millionth of real time) reads a `station_status` whose
//! `last_updated` never moves: no news, so after two of its periods (one second each, the
//! poller's bound) the default `feed_stale` rule fires: a `WARN` line in the job's log, and
//! one Slack-style message to the webhook given in `BIKESHARE_ALERTS__WEBHOOK__URL`, whose URL
//! never appears in the log. (A city merely catching up is not stale: its news keeps coming.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use bikeshare_testkit::lines::line_channel;
use support::{TestEnv, bikeshare};

/// A one-route HTTP/1.1 receiver on 127.0.0.1: every POST body goes to the channel.
fn receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/services/T0/B0/SECRET-TOKEN",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                let _ = tx.send(v);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, rx)
}

#[test]
fn a_stale_feed_fires_in_the_running_job_to_the_log_and_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let (url, bodies) = receiver();
    let mut child = bikeshare(dir.path())
        .args(["ingest", "--simulator", "--duration", "90s"])
        .env("BIKESHARE_SIMULATOR__TIME_SCALE", "0.000001")
        .env("BIKESHARE_GBFS__MIN_INTERVAL_MS", "500")
        .env("BIKESHARE_GBFS__MAX_INTERVAL_MS", "1000")
        .env("BIKESHARE_SIMULATOR__CITY__STATIONS", "20")
        .env("BIKESHARE_ALERTS__INTERVAL_MS", "200")
        .env("BIKESHARE_ALERTS__WEBHOOK__URL", &url)
        .env("RUST_LOG", "warn")
        .spawn_reading_stderr();
    let log_rx = line_channel(child.stderr.take().unwrap());

    let body = bodies.recv_timeout(Duration::from_secs(60));
    // Ten more evaluations while it keeps firing: no second message for the episode.
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    let log: Vec<String> = log_rx.try_iter().collect();
    let body =
        body.unwrap_or_else(|_| panic!("no webhook message; the job said:\n{}", log.join("\n")));

    let text = body["text"].as_str().unwrap();
    assert!(text.contains("[FIRING] warning feed_stale"), "{text}");
    assert!(text.contains("station_status of"), "{text}");
    assert!(body["blocks"].is_array(), "{body}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("alerts:") && l.contains("log, webhook")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains("feed_stale")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("SECRET-TOKEN")),
        "the webhook URL leaked into the log"
    );
    // One episode, one message: nothing more arrives while it keeps firing.
    assert!(
        bodies
            .try_iter()
            .all(|b| !b["text"].as_str().unwrap_or("").contains("[FIRING]")),
        "a second firing message for the same episode"
    );
}
