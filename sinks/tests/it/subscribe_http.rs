//! The subscription API over real HTTP: resume through reconnects with no gap and no repeat,
//! filters, `from=latest`, and the token rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_sinks::subscribe::{ApiError, SubscribeConfig, serve};
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_types::{SharedClock, SystemClock};
use eventsource_stream::Eventsource;
use futures::StreamExt;

fn prediction(i: usize) -> PutRecord {
    let station = format!("s{}", i % 5);
    let body = serde_json::json!({
        "schema_version": 1, "prediction_id": format!("p{i:04}"), "system_id": "city",
        "station_id": station, "p_empty": 0.1, "p_full": 0.2,
    });
    PutRecord::new(
        format!("city/{station}"),
        serde_json::to_vec(&body).unwrap(),
    )
}

/// An embedded `predictions` stream of `shards` shards in `dir`.
async fn predictions_stream(dir: &std::path::Path, shards: u32) -> EmbeddedStream {
    EmbeddedStream::open(dir.join("s.db"), "predictions", shards)
        .await
        .unwrap()
}

async fn write(stream: &EmbeddedStream, range: std::ops::Range<usize>) {
    let records: Vec<PutRecord> = range.map(prediction).collect();
    stream.put_records(&records).await.unwrap();
}

/// Reads `n` SSE events (id, prediction_id) from a response, or fails after 10 s.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(String, String)> {
    let mut events = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let e = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        out.push((e.id, v["prediction_id"].as_str().unwrap().to_owned()));
    }
    out
}

/// The status of `GET url`, with `token` as its bearer token when given.
async fn status(url: &str, token: Option<&str>) -> reqwest::StatusCode {
    let request = reqwest::Client::new().get(url);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap().status()
}

async fn setup() -> (tempfile::TempDir, EmbeddedStream, String) {
    let dir = tempfile::tempdir().unwrap();
    let stream = predictions_stream(dir.path(), 2).await;
    let clock: SharedClock = Arc::new(SystemClock);
    let api = serve(
        SubscribeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 20,
            ..SubscribeConfig::default()
        },
        Arc::new(stream.clone()),
        clock,
        std::future::pending(),
    )
    .await
    .unwrap();
    (dir, stream, api.url())
}

#[tokio::test]
async fn a_subscriber_resumes_after_reconnects_with_no_gap_and_no_repeat() {
    let (_dir, stream, url) = setup().await;
    write(&stream, 0..30).await;
    let client = reqwest::Client::new();
    let mut seen: Vec<String> = Vec::new();
    let mut last_id: Option<String> = None;
    // Three connections, each reading part of the stream, with more written in between.
    for (take, more) in [(10, 30..45), (20, 45..60), (30, 60..60)] {
        let mut req = client.get(format!("{url}?from=earliest"));
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = read_events(resp, take).await;
        last_id = events.last().map(|e| e.0.clone());
        seen.extend(events.into_iter().map(|e| e.1));
        write(&stream, more).await;
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no prediction delivered twice");
    let expected: BTreeSet<String> = (0..60).map(|i| format!("p{i:04}")).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "none missing"
    );
}

#[tokio::test]
async fn filters_and_latest() {
    let (_dir, stream, url) = setup().await;
    write(&stream, 0..20).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{url}?from=earliest&system=city&station=s3"))
        .send()
        .await
        .unwrap();
    let events = read_events(resp, 4).await;
    assert_eq!(
        events.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["p0003", "p0008", "p0013", "p0018"]
    );

    // `latest` (the default): only what is written after subscribing, on every shard.
    let resp = client.get(url.clone()).send().await.unwrap();
    write(&stream, 20..30).await;
    let mut got: Vec<String> = read_events(resp, 10)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    got.sort();
    assert_eq!(
        got,
        (20..30).map(|i| format!("p{i:04}")).collect::<Vec<_>>()
    );

    assert_eq!(status(&format!("{url}?after=garbage"), None).await, 400);
    assert_eq!(status(&format!("{url}?from=yesterday"), None).await, 400);
}

#[tokio::test]
async fn beyond_loopback_a_token_is_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let stream = predictions_stream(dir.path(), 1).await;
    let clock: SharedClock = Arc::new(SystemClock);
    let open = SubscribeConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        token: None,
        ..SubscribeConfig::default()
    };
    // SAFETY of the check: the env var is not set in tests.
    assert!(std::env::var(bikeshare_sinks::subscribe::TOKEN_ENV).is_err());
    let err = serve(
        open,
        Arc::new(stream.clone()),
        clock.clone(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ApiError::TokenRequired { .. }), "{err}");

    let with_token = SubscribeConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: Some("s3cret-token".into()),
        ..SubscribeConfig::default()
    };
    let api = serve(with_token, Arc::new(stream), clock, std::future::pending())
        .await
        .unwrap();
    assert_eq!(status(&api.url(), None).await, 401);
    assert_eq!(status(&api.url(), Some("wrong-token!")).await, 401);
    assert_eq!(status(&api.url(), Some("s3cret-token")).await, 200);
}

#[tokio::test]
async fn shutdown_ends_open_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let stream = predictions_stream(dir.path(), 1).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = serve(
        SubscribeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..SubscribeConfig::default()
        },
        Arc::new(stream),
        Arc::new(SystemClock),
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    let resp = reqwest::Client::new().get(api.url()).send().await.unwrap();
    let mut body = resp.bytes_stream();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), api.wait())
        .await
        .expect("server stops with a subscriber connected");
    // The stream ends instead of hanging.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok());
}
