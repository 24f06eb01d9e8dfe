//! The GBFS poller against a real HTTP server on 127.0.0.1 (port 0), written here with axum.
//!
//! The server serves GBFS 2.3 files from a table of routes the test changes between polls,
//! counts hits and keeps request headers, and can misbehave on purpose: fail with a status,
//! hang, gzip, or send 50 MB. Time in the poller's data comes from a `ManualClock`; the tests
//! never assert on durations, only on what was emitted, requested and counted.

// Test helpers outside #[test] functions may unwrap too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bikeshare_producers::gbfs::client::reason;
use bikeshare_producers::gbfs::rules::rule;
use bikeshare_producers::gbfs::{ClientConfig, FeedKind, GbfsPoller, PollReport, PollerConfig};
use bikeshare_producers::output::MemoryOutput;
use bikeshare_types::contracts::{Envelope, Event};
use bikeshare_types::retry::Backoff;
use bikeshare_types::time::ManualClock;
use bikeshare_types::{Clock, SystemId, Timestamp};
use bytes::Bytes;
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;

#[derive(Debug, Clone)]
enum Route {
    Json {
        body: String,
        etag: Option<String>,
        last_modified: Option<String>,
        gzip: bool,
    },
    Status(u16),
    /// Answers `status` `failures` times, then like `then`.
    FailThen {
        failures: u32,
        status: u16,
        then: Box<Route>,
    },
    /// Never answers.
    Hang,
    /// Answers 200 and then one byte of its body every `every`, never finishing.
    Drip {
        every: Duration,
    },
    /// `bytes` of zeros, streamed in 64 KiB chunks; with or without `Content-Length`.
    Big {
        bytes: usize,
        content_length: bool,
    },
}

fn json_route(body: &Value) -> Route {
    Route::Json {
        body: body.to_string(),
        etag: None,
        last_modified: None,
        gzip: false,
    }
}

#[derive(Debug, Default)]
struct ServerState {
    routes: HashMap<String, Route>,
    hits: HashMap<String, u32>,
    headers: HashMap<String, Vec<HeaderMap>>,
}

#[derive(Debug, Clone)]
struct TestServer {
    base: String,
    state: Arc<Mutex<ServerState>>,
    /// Bytes of `Big` bodies the server produced (handed to hyper).
    big_produced: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(ServerState::default()));
        let big_produced = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(handle)
            .with_state((Arc::clone(&state), Arc::clone(&big_produced)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            state,
            big_produced,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), route);
    }

    fn hits(&self, path: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn request_headers(&self, path: &str) -> Vec<HeaderMap> {
        self.state
            .lock()
            .unwrap()
            .headers
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// A 2.3 system: discovery, system_information, station_information of `stations`
    /// (capacity 20 each) and a status with `status`.
    fn serve_system(&self, stations: &[&str], status: &[Value]) {
        self.set(
            "/gbfs.json",
            json_route(&discovery(self, "/station_status.json")),
        );
        self.set(
            "/system_information.json",
            json_route(&system_information()),
        );
        self.set(
            "/station_information.json",
            json_route(&station_information(stations)),
        );
        self.set(
            "/station_status.json",
            json_route(&station_status(60, status)),
        );
    }
}

type AppState = (Arc<Mutex<ServerState>>, Arc<AtomicUsize>);

async fn handle(State((state, big)): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    let route = {
        let mut s = state.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        s.headers
            .entry(path.clone())
            .or_default()
            .push(headers.clone());
        let Some(route) = s.routes.get(&path).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        // A FailThen counts its failures down in the table.
        if let Route::FailThen {
            failures,
            status,
            then,
        } = &route
        {
            let next = if *failures <= 1 {
                (**then).clone()
            } else {
                Route::FailThen {
                    failures: failures - 1,
                    status: *status,
                    then: then.clone(),
                }
            };
            s.routes.insert(path.clone(), next);
        }
        route
    };
    match route {
        Route::Json {
            body,
            etag,
            last_modified,
            gzip,
        } => {
            let matches = |name: header::HeaderName, value: &Option<String>| {
                value.is_some()
                    && headers.get(name).and_then(|h| h.to_str().ok()) == value.as_deref()
            };
            if matches(header::IF_NONE_MATCH, &etag)
                || matches(header::IF_MODIFIED_SINCE, &last_modified)
            {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let mut response_headers = HeaderMap::new();
            response_headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(e) = etag {
                response_headers.insert(header::ETAG, HeaderValue::from_str(&e).unwrap());
            }
            if let Some(m) = last_modified {
                response_headers.insert(header::LAST_MODIFIED, HeaderValue::from_str(&m).unwrap());
            }
            let bytes = if gzip {
                response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(body.as_bytes()).unwrap();
                enc.finish().unwrap()
            } else {
                body.into_bytes()
            };
            (response_headers, bytes).into_response()
        }
        Route::Status(code) | Route::FailThen { status: code, .. } => {
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Route::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Route::Drip { every } => {
            let stream = futures::stream::unfold((), move |()| async move {
                tokio::time::sleep(every).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
            });
            Response::new(Body::from_stream(stream))
        }
        Route::Big {
            bytes,
            content_length,
        } => {
            const CHUNK: usize = 64 * 1024;
            let stream = futures::stream::unfold(0usize, move |sent| {
                let big = Arc::clone(&big);
                async move {
                    if sent >= bytes {
                        return None;
                    }
                    let n = CHUNK.min(bytes - sent);
                    big.fetch_add(n, Ordering::SeqCst);
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(vec![b' '; n])),
                        sent + n,
                    ))
                }
            });
            let mut response = Response::new(Body::from_stream(stream));
            if content_length {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
            }
            response
        }
    }
}

fn discovery(server: &TestServer, status_path: &str) -> Value {
    json!({"last_updated": NOW - 600, "ttl": 60, "version": "2.3", "data": {"en": {"feeds": [
        {"name": "system_information", "url": server.url("/system_information.json")},
        {"name": "station_information", "url": server.url("/station_information.json")},
        // Relative URLs are resolved against gbfs.json.
        {"name": "station_status", "url": status_path.trim_start_matches('/')}
    ]}}})
}

fn system_information() -> Value {
    json!({"last_updated": NOW - 600, "ttl": 3600, "version": "2.3", "data": {
        "system_id": "test", "language": "en", "name": "Test Bikes", "timezone": "America/New_York"
    }})
}

fn station_information(ids: &[&str]) -> Value {
    let stations: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"station_id": id, "name": format!("Station {id}"), "capacity": 20,
                   "lat": 42.35 + i as f64 / 100.0, "lon": -71.06})
        })
        .collect();
    json!({"last_updated": NOW - 300, "ttl": 3600, "version": "2.3", "data": {"stations": stations}})
}

fn report(id: &str, bikes: i64, last_reported: i64) -> Value {
    json!({"station_id": id, "num_bikes_available": bikes, "num_docks_available": 10,
           "is_installed": true, "is_renting": true, "is_returning": true,
           "last_reported": last_reported})
}

fn station_status(ttl: u32, stations: &[Value]) -> Value {
    json!({"last_updated": NOW - 30, "ttl": ttl, "version": "2.3", "data": {"stations": stations}})
}

fn config() -> PollerConfig {
    PollerConfig {
        min_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(60),
        client: ClientConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
            retry: Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
                max_retries: Some(0),
            },
            ..ClientConfig::default()
        },
        ..PollerConfig::default()
    }
}

fn poller(server: &TestServer, config: PollerConfig) -> (GbfsPoller, ManualClock) {
    let clock = ManualClock::new(Timestamp::from_secs(NOW));
    let poller = GbfsPoller::new(
        SystemId::new("test"),
        &server.url("/gbfs.json"),
        config,
        Arc::new(clock.clone()),
    )
    .unwrap();
    (poller, clock)
}

fn statuses(events: &[Envelope]) -> Vec<(String, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StationStatus(s) => Some((s.station_id.to_string(), s.num_bikes_available)),
            _ => None,
        })
        .collect()
}

fn count_kind(events: &[Envelope], kind: &str) -> usize {
    events.iter().filter(|e| e.kind().as_str() == kind).count()
}

fn reasons(report: &PollReport) -> Vec<&'static str> {
    report.errors.iter().map(|e| e.reason()).collect()
}

#[tokio::test]
async fn discovery_then_every_feed_becomes_events_and_dead_letters() {
    let server = TestServer::start().await;
    server.serve_system(
        &["a", "b", "c"],
        &[
            report("a", 3, NOW - 60),
            report("b", -1, NOW - 60),
            report("c", 5, NOW - 90),
        ],
    );
    let (mut poller, clock) = poller(&server, config());
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);

    let events = out.take_events();
    assert_eq!(count_kind(&events, "system_info"), 1);
    assert_eq!(count_kind(&events, "station_info"), 3);
    // One for station_status, one per information feed read.
    assert_eq!(count_kind(&events, "feed_heartbeat"), 3);
    assert_eq!(
        statuses(&events),
        [("a".to_owned(), 3), ("c".to_owned(), 5)]
    );
    let status_url = server.url("/station_status.json");
    for e in &events {
        assert_eq!(e.system_id.as_str(), "test");
        assert_eq!(e.ingest_time, clock.now());
        match &e.event {
            Event::StationStatus(s) => {
                assert_eq!(e.event_time, s.last_reported);
                assert_eq!(e.source, status_url);
            }
            Event::StationInfo(_) => assert_eq!(e.event_time, Timestamp::from_secs(NOW - 300)),
            Event::SystemInfo(info) => {
                assert_eq!(info.timezone, "America/New_York");
                assert_eq!(info.gbfs_version, "2.3");
                assert_eq!(e.event_time, Timestamp::from_secs(NOW - 600));
            }
            Event::FeedHeartbeat(hb) if hb.feed == "station_status" => {
                assert_eq!(hb.last_updated, Timestamp::from_secs(NOW - 30));
                assert_eq!(e.event_time, hb.last_updated);
                // The feed's ttl (60 s), within the poller's bounds: its freshness clock.
                assert_eq!(hb.period_s, Some(60));
            }
            Event::FeedHeartbeat(hb) => {
                // Information feeds: news is the read itself, their period their ttl (1 h).
                assert!(
                    ["system_information", "station_information"].contains(&hb.feed.as_str()),
                    "{hb:?}"
                );
                assert_eq!((e.event_time, hb.last_updated), (clock.now(), clock.now()));
                assert_eq!(hb.period_s, Some(3600));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let dead = out.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].rule, rule::COUNTS_NEGATIVE);
    assert_eq!(dead[0].source, status_url);
    let raw: Value = serde_json::from_str(&dead[0].raw).unwrap();
    assert_eq!(raw["station_id"], "b");
    let stats = poller.stats().snapshot();
    assert_eq!(
        (stats.polls, stats.events, stats.dead_letters, stats.errors),
        (1, 9, 1, 0),
        "1 system, 3 stations, 2 statuses, 3 heartbeats"
    );
}

#[tokio::test]
async fn preferred_language_picks_its_feed_list() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[report("a", 1, NOW - 60)]);
    let mut d = discovery(&server, "/station_status.json");
    d["data"]["fr"] = json!({"feeds": [
        {"name": "station_status", "url": server.url("/fr/station_status.json")}
    ]});
    server.set("/gbfs.json", json_route(&d));
    server.set(
        "/fr/station_status.json",
        json_route(&station_status(60, &[report("a", 7, NOW - 60)])),
    );
    let (mut poller, _) = poller(
        &server,
        PollerConfig {
            language: Some("fr".into()),
            ..config()
        },
    );
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(server.hits("/fr/station_status.json"), 1);
    assert_eq!(server.hits("/station_status.json"), 0);
    assert_eq!(statuses(&out.take_events()), [("a".to_owned(), 7)]);
}

#[tokio::test]
async fn etag_and_last_modified_make_unchanged_feeds_cost_a_304() {
    let server = TestServer::start().await;
    server.serve_system(
        &["a", "b"],
        &[report("a", 1, NOW - 60), report("b", 2, NOW - 60)],
    );
    let status = station_status(60, &[report("a", 1, NOW - 60), report("b", 2, NOW - 60)]);
    server.set(
        "/station_status.json",
        Route::Json {
            body: status.to_string(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            gzip: false,
        },
    );
    let modified = "Tue, 14 Nov 2023 22:00:00 GMT".to_owned();
    server.set(
        "/station_information.json",
        Route::Json {
            body: station_information(&["a", "b"]).to_string(),
            etag: None,
            last_modified: Some(modified.clone()),
            gzip: false,
        },
    );
    // Information feeds due at every poll, so both kinds of validators are exercised.
    let cfg = PollerConfig {
        info_min_interval: Duration::ZERO,
        info_max_interval: Duration::ZERO,
        ..config()
    };
    let (mut poller, clock) = poller(&server, cfg);
    let out = MemoryOutput::default();
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(
        out.take_events().len(),
        1 + 2 + 2 + 3,
        "with a heartbeat per feed"
    );
    clock.advance_millis(5_000);

    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert!(r.not_modified.contains(&FeedKind::StationStatus), "{r:?}");
    assert!(
        r.not_modified.contains(&FeedKind::StationInformation),
        "{r:?}"
    );
    // A 304 emits no data, but the information feeds say they were read, so a reader of the
    // stream sees them alive; station_status, whose last_updated did not move, says nothing
    // (a feed stuck on old data goes stale).
    let beats: Vec<(String, Timestamp)> = out
        .take_events()
        .into_iter()
        .map(|e| match e.event {
            Event::FeedHeartbeat(hb) => (hb.feed, hb.last_updated),
            other => panic!("a 304 emitted {other:?}"),
        })
        .collect();
    assert_eq!(
        beats,
        [
            ("system_information".to_owned(), clock.now()),
            ("station_information".to_owned(), clock.now())
        ]
    );
    let sent = server.request_headers("/station_status.json");
    assert_eq!(sent.len(), 2);
    assert!(sent[0].get(header::IF_NONE_MATCH).is_none());
    assert_eq!(sent[1].get(header::IF_NONE_MATCH).unwrap(), "\"v1\"");
    let sent = server.request_headers("/station_information.json");
    assert_eq!(
        sent[1].get(header::IF_MODIFIED_SINCE).unwrap(),
        modified.as_str()
    );
    assert!(poller.stats().snapshot().not_modified >= 2);

    // A new representation (new ETag) is read again, and only the change is emitted.
    let changed = station_status(60, &[report("a", 1, NOW - 60), report("b", 4, NOW - 20)]);
    server.set(
        "/station_status.json",
        Route::Json {
            body: changed.to_string(),
            etag: Some("\"v2\"".into()),
            last_modified: None,
            gzip: false,
        },
    );
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(statuses(&out.take_events()), [("b".to_owned(), 4)]);
}

#[tokio::test]
async fn status_ttl_sets_the_next_poll_within_bounds() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[report("a", 1, NOW - 60)]);
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    for (ttl, expected) in [(7, 7), (0, 1), (3600, 60)] {
        server.set(
            "/station_status.json",
            json_route(&station_status(ttl, &[report("a", 1, NOW - 60)])),
        );
        let r = poller.poll_once(&out).await;
        assert!(r.is_ok(), "{:?}", r.errors);
        assert_eq!(r.next_poll_in, Duration::from_secs(expected), "ttl {ttl}");
    }
    // A failed status poll is retried after the minimum interval.
    server.set("/station_status.json", Route::Status(503));
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [reason::STATUS]);
    assert_eq!(r.next_poll_in, Duration::from_secs(1));
}

#[tokio::test]
async fn run_polls_at_the_ttl_until_shutdown() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[report("a", 1, NOW - 60)]);
    let cfg = PollerConfig {
        min_interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(20),
        ..config()
    };
    let (poller, _) = poller(&server, cfg);
    let stats = poller.stats();
    let out = Arc::new(MemoryOutput::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(poller.run(out.clone(), async {
        let _ = stopped.await;
    }));
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while server.hits("/station_status.json") < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the poller did not poll again");
    stop.send(()).unwrap();
    let final_stats = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert!(final_stats.polls >= 3, "{final_stats:?}");
    assert_eq!(final_stats, stats.snapshot());
    assert_eq!(
        server.hits("/gbfs.json"),
        1,
        "discovery is read at its own TTL"
    );
    assert_eq!(
        statuses(&out.take_events()).len(),
        1,
        "an unchanged report is emitted once"
    );
}

#[tokio::test]
async fn gzip_bodies_are_decoded() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    let body = station_status(60, &[report("a", 9, NOW - 60)]).to_string();
    server.set(
        "/station_status.json",
        Route::Json {
            body,
            etag: None,
            last_modified: None,
            gzip: true,
        },
    );
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(statuses(&out.take_events()), [("a".to_owned(), 9)]);
    let sent = server.request_headers("/station_status.json");
    let accept = sent[0]
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(accept.contains("gzip"), "Accept-Encoding: {accept:?}");
}

#[tokio::test]
async fn a_slow_drip_feed_is_cut_at_the_fetch_deadline_retries_included() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    server.set("/gbfs.json", json_route(&discovery(&server, "/drip")));
    // A byte every 50 ms passes the 300 ms read timeout for ever; each attempt would end at
    // the 2 s request timeout and be retried three times (8 s) without the deadline.
    server.set(
        "/drip",
        Route::Drip {
            every: Duration::from_millis(50),
        },
    );
    let mut cfg = config();
    cfg.client.request_timeout = Duration::from_secs(2);
    cfg.client.retry.max_retries = Some(3);
    cfg.client.fetch_deadline = Duration::from_millis(700);
    let (mut poller, _) = poller(&server, cfg);
    let out = MemoryOutput::default();
    // The guard only keeps a broken build from hanging CI.
    let r = tokio::time::timeout(Duration::from_secs(30), poller.poll_once(&out))
        .await
        .expect("poll_once is bounded");
    assert_eq!(reasons(&r), [reason::TIMEOUT]);
    let message = bikeshare_types::error::chain(&r.errors[0]);
    assert!(message.contains("fetch deadline of 0.7s"), "{message}");
    assert_eq!(
        server.hits("/drip"),
        1,
        "the deadline spans the retries: one attempt, cut"
    );
    assert_eq!(statuses(&out.take_events()), []);
}

#[tokio::test]
async fn a_hanging_feed_times_out_and_the_others_still_flow() {
    let server = TestServer::start().await;
    server.serve_system(&["a", "b"], &[]);
    server.set("/gbfs.json", json_route(&discovery(&server, "/hang")));
    server.set("/hang", Route::Hang);
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    // The guard only keeps a broken build from hanging CI; the read timeout is 300 ms.
    let r = tokio::time::timeout(Duration::from_secs(30), poller.poll_once(&out))
        .await
        .expect("poll_once must be bounded by the read timeout");
    assert_eq!(reasons(&r), [reason::TIMEOUT]);
    assert_eq!(r.errors[0].feed(), FeedKind::StationStatus);
    assert_eq!(
        out.take_events().len(),
        1 + 2 + 2,
        "system and station information (and their heartbeats) still emitted"
    );
    let stats = poller.stats().snapshot();
    assert_eq!(stats.errors, 1);
    assert_eq!(stats.errors_by_reason.get(reason::TIMEOUT), Some(&1));
}

#[tokio::test]
async fn server_errors_are_retried_and_the_feed_recovers() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    let ok = json_route(&station_status(60, &[report("a", 2, NOW - 60)]));

    // No retries: the poll fails, is counted, and the next poll recovers.
    server.set(
        "/station_status.json",
        Route::FailThen {
            failures: 1,
            status: 500,
            then: Box::new(ok.clone()),
        },
    );
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [reason::STATUS]);
    assert_eq!(r.errors[0].to_string(), "station_status: fetch failed");
    assert!(statuses(&out.take_events()).is_empty());
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(statuses(&out.take_events()), [("a".to_owned(), 2)]);
    assert_eq!(server.hits("/station_status.json"), 2);

    // With retries (exponential backoff, full jitter) one poll rides out two 5xx.
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    server.set(
        "/station_status.json",
        Route::FailThen {
            failures: 2,
            status: 503,
            then: Box::new(ok),
        },
    );
    let mut cfg = config();
    cfg.client.retry.max_retries = Some(3);
    let (mut poller, _) = self::poller(&server, cfg);
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(server.hits("/station_status.json"), 3);
    assert_eq!(statuses(&out.take_events()), [("a".to_owned(), 2)]);

    // A 4xx is not retried.
    server.set("/station_status.json", Route::Status(404));
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [reason::STATUS]);
    assert_eq!(r.errors[0].to_string(), "station_status: fetch failed");
    assert_eq!(
        server.hits("/station_status.json"),
        4,
        "one request, no retries"
    );
}

#[tokio::test]
async fn a_50_mb_response_is_refused_early() {
    const FIFTY_MB: usize = 50 * 1000 * 1000;
    for content_length in [false, true] {
        let server = TestServer::start().await;
        server.serve_system(&["a"], &[]);
        server.set(
            "/station_status.json",
            Route::Big {
                bytes: FIFTY_MB,
                content_length,
            },
        );
        // Default client settings: a 10 MiB cap.
        let cfg = PollerConfig {
            client: ClientConfig::default(),
            ..config()
        };
        let (mut poller, _) = poller(&server, cfg);
        let out = MemoryOutput::default();
        let r = poller.poll_once(&out).await;
        assert_eq!(
            reasons(&r),
            [rule::TOO_LARGE],
            "content_length {content_length}"
        );
        let produced = server.big_produced.load(Ordering::SeqCst);
        eprintln!("content_length {content_length}: the server produced {produced} bytes");
        assert!(
            produced < FIFTY_MB,
            "the client read the whole body ({produced} bytes, content_length {content_length})"
        );
        assert_eq!(
            poller
                .stats()
                .snapshot()
                .errors_by_reason
                .get(rule::TOO_LARGE),
            Some(&1)
        );
    }
}

#[tokio::test]
async fn only_changed_reports_are_emitted_and_bad_records_dead_lettered_once() {
    let server = TestServer::start().await;
    let bad = report("x", -3, NOW - 60);
    let set_status = |reports: Vec<Value>| {
        server.set(
            "/station_status.json",
            json_route(&station_status(60, &reports)),
        );
    };
    server.serve_system(&["a", "b", "c", "x"], &[]);
    set_status(vec![
        report("a", 1, NOW - 60),
        report("b", 2, NOW - 60),
        report("c", 3, NOW - 60),
        bad.clone(),
    ]);
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();

    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(statuses(&out.take_events()).len(), 3);
    assert_eq!(out.take_dead_letters().len(), 1);

    assert!(poller.poll_once(&out).await.is_ok());
    assert!(out.take_events().is_empty(), "same content, nothing new");
    assert!(
        out.take_dead_letters().is_empty(),
        "the same bad record is not dead-lettered again"
    );

    set_status(vec![
        report("a", 1, NOW - 60),
        report("b", 5, NOW - 10),
        report("c", 3, NOW - 60),
        bad,
    ]);
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(statuses(&out.take_events()), [("b".to_owned(), 5)]);

    // A new last_reported alone is a new report.
    set_status(vec![
        report("a", 1, NOW - 5),
        report("b", 5, NOW - 10),
        report("c", 3, NOW - 60),
    ]);
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok());
    let events = out.take_events();
    assert_eq!(statuses(&events), [("a".to_owned(), 1)]);
    assert_eq!(events[0].event_time, Timestamp::from_secs(NOW - 5));
    assert_eq!(
        poller.stats().snapshot().events,
        1 + 4 + 3 + 1 + 1 + 1 + 2,
        "one status heartbeat (the feed's last_updated never moved), two for the first read of \
         the information feeds (not due again since)"
    );
}

#[tokio::test]
async fn unknown_stations_refresh_station_information_once() {
    let server = TestServer::start().await;
    server.serve_system(
        &["a"],
        &[report("a", 1, NOW - 60), report("n", 2, NOW - 60)],
    );
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();

    // First poll: information was read in this very poll, so "n" is dead-lettered at once.
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(server.hits("/station_information.json"), 1);
    let dead = out.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].rule, rule::STATION_UNKNOWN);
    out.take_events();

    // The operator adds "n": the next status poll re-reads station_information and emits it.
    server.set(
        "/station_information.json",
        json_route(&station_information(&["a", "n"])),
    );
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(server.hits("/station_information.json"), 2);
    let events = out.take_events();
    assert_eq!(
        count_kind(&events, "station_info"),
        1,
        "only the new station's information"
    );
    assert_eq!(statuses(&events), [("n".to_owned(), 2)]);

    // "z" is unknown even after a refresh: dead-lettered, and not refreshed for again.
    server.set(
        "/station_status.json",
        json_route(&station_status(
            60,
            &[
                report("a", 1, NOW - 60),
                report("n", 2, NOW - 60),
                report("z", 1, NOW - 60),
            ],
        )),
    );
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(server.hits("/station_information.json"), 3);
    assert_eq!(out.take_dead_letters().len(), 1);
    assert!(poller.poll_once(&out).await.is_ok());
    assert_eq!(
        server.hits("/station_information.json"),
        3,
        "one refresh per unknown station"
    );
}

#[tokio::test]
async fn unusable_feeds_are_counted_and_read_again() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    server.set(
        "/station_status.json",
        Route::Json {
            body: "{\"last_updated\": ".into(),
            etag: Some("\"bad\"".into()),
            last_modified: None,
            gzip: false,
        },
    );
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [rule::JSON]);

    server.set(
        "/station_status.json",
        Route::Json {
            body: station_status(60, &[report("a", 4, NOW - 60)]).to_string(),
            etag: Some("\"bad\"".into()),
            last_modified: None,
            gzip: false,
        },
    );
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    let sent = server.request_headers("/station_status.json");
    assert!(
        sent[1].get(header::IF_NONE_MATCH).is_none(),
        "a failed body's ETag is not reused"
    );
    assert_eq!(statuses(&out.take_events()), [("a".to_owned(), 4)]);

    // Unknown version: a whole-feed error with its rule, never a panic.
    let mut v4 = station_status(60, &[report("a", 4, NOW - 60)]);
    v4["version"] = json!("4.0");
    server.set("/station_status.json", json_route(&v4));
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [rule::VERSION]);
    let stats = poller.stats().snapshot();
    assert_eq!(stats.errors, 2);
    assert_eq!(stats.errors_by_reason.get(rule::JSON), Some(&1));
}

#[tokio::test]
async fn thousands_of_bad_records_in_one_read_are_summarised_beyond_a_cap_per_rule() {
    use bikeshare_producers::gbfs::poller::DEAD_LETTERS_PER_RULE;
    let server = TestServer::start().await;
    let ids: Vec<String> = (0..2_000).map(|i| format!("s{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut reports: Vec<Value> = ids.iter().map(|id| report(id, -1, NOW - 60)).collect();
    reports.push(report("s0", 3, NOW - 60)); // and one duplicate id
    server.serve_system(&id_refs, &reports);
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    poller.poll_once(&out).await;
    let letters = out.take_dead_letters();
    let negative: Vec<_> = letters
        .iter()
        .filter(|d| d.rule == rule::COUNTS_NEGATIVE)
        .collect();
    assert_eq!(
        negative.len(),
        DEAD_LETTERS_PER_RULE + 1,
        "the first ones and a summary"
    );
    let summary = negative.last().unwrap();
    let raw: Value = serde_json::from_str(&summary.raw).unwrap();
    assert_eq!(raw["records_not_listed"], 2_000 - DEAD_LETTERS_PER_RULE);
    assert!(
        summary.message.contains("1900 more records"),
        "{}",
        summary.message
    );
    // Every record is counted, summarised or not; other rules keep their own letters.
    assert!(letters.iter().any(|d| d.rule != rule::COUNTS_NEGATIVE));
    assert_eq!(
        poller.stats().snapshot().dead_letters,
        (letters.len() - 1 + 2_000 - DEAD_LETTERS_PER_RULE) as u64
    );
    // The same broken content read again adds nothing.
    poller.poll_once(&out).await;
    assert!(out.take_dead_letters().is_empty());
}

#[tokio::test]
async fn a_feed_that_stays_broken_is_dead_lettered_once_an_hour_not_once_a_poll() {
    let server = TestServer::start().await;
    server.serve_system(&["a"], &[]);
    server.set("/station_status.json", Route::Status(404));
    let (mut poller, clock) = poller(&server, config());
    let out = MemoryOutput::default();
    let status_url = server.url("/station_status.json");
    // `n` polls, `step_s` apart: the dead letters they published.
    macro_rules! polls {
        ($n:expr, $step_s:expr) => {{
            let mut letters = Vec::new();
            for _ in 0..$n {
                clock.advance_millis($step_s * 1000);
                poller.poll_once(&out).await;
                letters.extend(out.take_dead_letters());
            }
            letters
        }};
    }
    // Ten polls over ten minutes of a 404: one record in the stream, naming the feed's URL,
    // the reason and since when.
    let first = polls!(10, 60);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].source, status_url);
    assert_eq!(first[0].rule, reason::STATUS);
    assert!(first[0].message.contains("404"), "{}", first[0].message);
    let raw: Value = serde_json::from_str(&first[0].raw).unwrap();
    assert_eq!(raw["feed"], "station_status");
    // Still broken an hour on: reminded once; then the reason changes: at once.
    assert_eq!(polls!(60, 60).len(), 1);
    server.set(
        "/station_status.json",
        Route::Json {
            body: "{\"last_updated\": ".into(),
            etag: None,
            last_modified: None,
            gzip: false,
        },
    );
    let changed = polls!(3, 10);
    assert_eq!(
        changed.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(),
        [rule::JSON]
    );
    // Recovered, then broken again: a new failure, recorded at once.
    server.set(
        "/station_status.json",
        json_route(&station_status(60, &[report("a", 4, NOW - 60)])),
    );
    assert!(polls!(1, 10).is_empty());
    server.set("/station_status.json", Route::Status(404));
    assert_eq!(polls!(2, 10).len(), 1);
}

#[tokio::test]
async fn discovery_problems_are_reported_not_fatal() {
    let server = TestServer::start().await;
    let (mut poller, _) = poller(&server, config());
    let out = MemoryOutput::default();
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), [reason::STATUS], "404 on gbfs.json");
    assert_eq!(r.errors[0].feed(), FeedKind::Discovery);
    assert_eq!(r.next_poll_in, Duration::from_secs(1));

    let mut d = discovery(&server, "/station_status.json");
    d["data"]["en"]["feeds"] =
        json!([{"name": "system_information", "url": server.url("/system_information.json")}]);
    server.set("/gbfs.json", json_route(&d));
    let r = poller.poll_once(&out).await;
    assert_eq!(reasons(&r), ["gbfs.feed.missing"]);

    server.serve_system(&["a"], &[report("a", 1, NOW - 60)]);
    let r = poller.poll_once(&out).await;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(statuses(&out.take_events()).len(), 1);
}
