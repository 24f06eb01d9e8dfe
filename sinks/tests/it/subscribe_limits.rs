//! The subscription API's limits and client errors over real HTTP: a cap on open
//! subscriptions (503 + `Retry-After`, `/healthz` still answering), a per-client cap (429),
//! an out-of-range cursor (400), and unknown systems or stations (404, never for a station
//! predicted a moment before the request).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bikeshare_embedded::EmbeddedStream;
use bikeshare_sinks::subscribe::{SubscribeConfig, serve};
use bikeshare_stream::{PutRecord, StreamWriter};
use bikeshare_types::SystemClock;

fn prediction(system: &str, station: &str, i: usize) -> PutRecord {
    let body = serde_json::json!({
        "schema_version": 2, "prediction_id": format!("p{i:04}"), "system_id": system,
        "station_id": station, "p_empty": 0.1, "p_full": 0.2,
    });
    PutRecord::new(
        format!("{system}/{station}"),
        serde_json::to_vec(&body).unwrap(),
    )
}

async fn api(config: SubscribeConfig) -> (tempfile::TempDir, EmbeddedStream, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let stream = EmbeddedStream::open(dir.path().join("s.db"), "predictions", 2)
        .await
        .unwrap();
    let api = serve(
        SubscribeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            poll_interval_ms: 20,
            ..config
        },
        Arc::new(stream.clone()),
        Arc::new(SystemClock),
        std::future::pending(),
    )
    .await
    .unwrap();
    let health = format!("http://{}/healthz", api.local_addr());
    (dir, stream, api.url(), health)
}

/// Repeats `attempt` every 50 ms until it returns `Some`, for at most 10 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn beyond_the_cap_a_subscriber_gets_503_with_retry_after_and_health_still_answers() {
    let (_dir, stream, url, health) = api(SubscribeConfig {
        max_subscriptions: 3,
        max_per_client: 100,
        retry_after_secs: 7,
        ..SubscribeConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let mut open = Vec::new();
    for _ in 0..3 {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "7");
    let h = client.get(&health).send().await.unwrap();
    assert_eq!(h.status(), 200, "/healthz answers while saturated");

    // A subscriber that leaves frees its slot.
    drop(open.pop());
    let mut i = 0;
    let admitted = eventually("a slot freed by a subscriber that left", || {
        i += 1;
        let (client, url, stream) = (client.clone(), url.clone(), stream.clone());
        async move {
            // A record to send makes the server notice the closed connection.
            stream
                .put_records(&[prediction("city", "s0", i)])
                .await
                .unwrap();
            let resp = client.get(&url).send().await.unwrap();
            (resp.status() == 200).then_some(resp)
        }
    })
    .await;
    drop(admitted);
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share() {
    let (_dir, _stream, url, _) = api(SubscribeConfig {
        max_subscriptions: 10,
        max_per_client: 2,
        ..SubscribeConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let a = client.get(&url).send().await.unwrap();
    let b = client.get(&url).send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = client.get(&url).send().await.unwrap();
    assert_eq!(c.status(), 429);
    assert!(c.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_well_formed_cursor_beyond_the_stream_is_a_client_error() {
    let (_dir, stream, url, _) = api(SubscribeConfig::default()).await;
    stream
        .put_records(&[prediction("city", "s0", 0), prediction("city", "s1", 1)])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let resp = client
            .get(&url)
            .header("Last-Event-ID", format!("0;{shard}=999999"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{shard}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("cursor"), "{body}");
    }
}

#[tokio::test]
async fn unknown_systems_and_stations_are_404_and_a_new_station_becomes_known() {
    let (_dir, stream, url, _) = api(SubscribeConfig::default()).await;
    let records: Vec<PutRecord> = (0..10)
        .map(|i| prediction("city", &format!("s{}", i % 5), i))
        .collect();
    stream.put_records(&records).await.unwrap();
    let client = reqwest::Client::new();
    let status = |query: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let resp = client.get(format!("{url}?{query}")).send().await.unwrap();
            (resp.status().as_u16(), resp)
        }
    };
    // At once: the API reads to the stream's end before it refuses a filter.
    let (code, resp) = status("system=nowhere").await;
    assert_eq!(code, 404);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("nowhere") && body.contains("city"),
        "names the system and the known ones: {body}"
    );
    assert_eq!(status("system=city&station=s3").await.0, 200);
    assert_eq!(status("station=s4").await.0, 200);
    assert_eq!(status("system=city&station=s99").await.0, 404);
    assert_eq!(status("station=s99").await.0, 404);

    // A station predicted a moment ago is known at once.
    stream
        .put_records(&[prediction("city", "s99", 99)])
        .await
        .unwrap();
    assert_eq!(status("system=city&station=s99").await.0, 200);
}
