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

/// One subscription request from `peer`'s point of view, with these `X-Forwarded-For` lines.
async fn subscribe_as(
    client: &reqwest::Client,
    url: &str,
    forwarded: &[&str],
) -> reqwest::Response {
    let mut req = client.get(url);
    for f in forwarded {
        req = req.header("x-forwarded-for", *f);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_gets_its_own_share() {
    // The test client plays the load balancer: every request comes from 127.0.0.1.
    let (_dir, _stream, url, _) = api(SubscribeConfig {
        max_subscriptions: 10,
        max_per_client: 1,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..SubscribeConfig::default()
    })
    .await;
    let proxy = reqwest::Client::new();
    let a = subscribe_as(&proxy, &url, &["203.0.113.1"]).await;
    assert_eq!(a.status(), 200);
    let b = subscribe_as(&proxy, &url, &["203.0.113.2"]).await;
    assert_eq!(b.status(), 200, "another client through the same proxy");
    // The proxy appends the address it was reached from; what the client wrote to its left
    // is not read: client 1 again, whatever it claims.
    let a_again = subscribe_as(&proxy, &url, &["198.51.100.7, 203.0.113.1"]).await;
    assert_eq!(
        a_again.status(),
        429,
        "rightmost entry: client 1 holds its share"
    );
    let a_lines = subscribe_as(&proxy, &url, &["198.51.100.8", "203.0.113.1"]).await;
    assert_eq!(a_lines.status(), 429, "the last of several header lines");
    // A client at an IPv6 address, and one the proxy wrote with a port.
    let c = subscribe_as(&proxy, &url, &["2001:db8::1"]).await;
    assert_eq!(c.status(), 200);
    let d = subscribe_as(&proxy, &url, &["192.0.2.4:51000"]).await;
    assert_eq!(d.status(), 200);

    // No header, or one that names no address: the proxy's own address is the client, so
    // those requests share one quota (and nothing panics).
    let none = subscribe_as(&proxy, &url, &[]).await;
    assert_eq!(none.status(), 200, "no header: counted as the proxy");
    for bad in ["not an address", "203.0.113.9,", "", "unknown"] {
        let r = subscribe_as(&proxy, &url, &[bad]).await;
        assert_eq!(
            r.status(),
            429,
            "{bad:?}: counted as the proxy, which holds its share"
        );
    }
    drop((a, b, c, d, none));
}

#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    for trusted in [vec![], vec!["10.0.0.0/8".parse().unwrap()]] {
        let (_dir, _stream, url, _) = api(SubscribeConfig {
            max_subscriptions: 10,
            max_per_client: 1,
            trusted_proxies: trusted.clone(),
            ..SubscribeConfig::default()
        })
        .await;
        let client = reqwest::Client::new();
        let a = subscribe_as(&client, &url, &["203.0.113.1"]).await;
        assert_eq!(a.status(), 200);
        let spoofed = subscribe_as(&client, &url, &["203.0.113.2"]).await;
        assert_eq!(
            spoofed.status(),
            429,
            "trusted {trusted:?}: 127.0.0.1 is not a trusted proxy, its header is ignored"
        );
        drop(a);
    }
}

#[tokio::test]
async fn trusted_proxies_read_from_configuration() {
    let c: SubscribeConfig = serde_json::from_value(serde_json::json!({
        "trusted_proxies": ["10.0.0.0/8", "fd00::/8"]
    }))
    .unwrap();
    assert_eq!(c.trusted_proxies.len(), 2);
    assert!(
        serde_json::from_value::<SubscribeConfig>(
            serde_json::json!({ "trusted_proxies": ["10.0.0.0/33"] })
        )
        .is_err(),
        "a range that is no range is refused when read"
    );
    assert!(SubscribeConfig::default().trusted_proxies.is_empty());
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

/// This test process's value of the Prometheus sample whose line starts with `sample` (name
/// and labels), 0 when absent; a recorder is installed on first use.
fn metric(sample: &str) -> f64 {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    });
    handle
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn open_and_refused_subscriptions_and_unreadable_forwarded_headers_are_counted() {
    const OPEN: &str = "bikeshare_subscriptions_open";
    const BY_CLIENT: &str = r#"bikeshare_subscriptions_refused_total{reason="client"}"#;
    const FULL: &str = r#"bikeshare_subscriptions_refused_total{reason="full"}"#;
    const UNREADABLE: &str = "bikeshare_api_unreadable_forwarded_total";
    let before = (metric(BY_CLIENT), metric(FULL), metric(UNREADABLE));
    // Relative to what this process had open (nextest runs each test alone in a process).
    let before_open = metric(OPEN);
    let open = |n: f64| metric(OPEN) == before_open + n;
    let (_dir, stream, url, _) = api(SubscribeConfig {
        max_subscriptions: 3,
        max_per_client: 2,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..SubscribeConfig::default()
    })
    .await;
    let proxy = reqwest::Client::new();
    let a = subscribe_as(&proxy, &url, &["203.0.113.1"]).await;
    let b = subscribe_as(&proxy, &url, &["203.0.113.1"]).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert!(open(2.0), "{} open", metric(OPEN));
    let c = subscribe_as(&proxy, &url, &["203.0.113.1"]).await;
    assert_eq!(c.status(), 429);
    // A header that names no client: counted, and the proxy's address subscribes.
    let d = subscribe_as(&proxy, &url, &["not an address"]).await;
    assert_eq!(d.status(), 200);
    assert!(open(3.0), "{} open", metric(OPEN));
    let e = subscribe_as(&proxy, &url, &["203.0.113.2"]).await;
    assert_eq!(e.status(), 503);
    assert_eq!(
        (metric(BY_CLIENT), metric(FULL), metric(UNREADABLE)),
        (before.0 + 1.0, before.1 + 1.0, before.2 + 1.0)
    );
    assert!(open(3.0), "refusals hold no slot: {} open", metric(OPEN));

    // Subscribers that leave are no longer counted (a record makes the server notice).
    drop((a, b));
    let mut i = 0;
    eventually("two subscribers gone from the gauge", || {
        i += 1;
        let stream = stream.clone();
        async move {
            stream
                .put_records(&[prediction("city", "s0", i)])
                .await
                .unwrap();
            open(1.0).then_some(())
        }
    })
    .await;
    drop(d);
}
