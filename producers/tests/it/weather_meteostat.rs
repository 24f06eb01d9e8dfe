//! The weather producer against a Meteostat look-alike served on 127.0.0.1:0: the JSON API
//! (with the RapidAPI headers checked) and the bulk files (gzip), nearest-station lookup,
//! mapping with nulls, de-duplication across polls, dead letters for impossible values, a
//! missing key, failures and recovery.

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_producers::output::MemoryOutput;
use bikeshare_producers::weather::{
    ApiKey, MeteostatClient, PollStats, WeatherConfig, WeatherError, WeatherMode, WeatherProducer,
    WeatherSystem,
};
use bikeshare_types::contracts::{Envelope, Event, WeatherObs};
use bikeshare_types::error::Classify;
use bikeshare_types::retry::Backoff;
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SystemId, Timestamp};
use serde_json::{Value, json};

const KEY: &str = "test-key-123";

/// What the fake Meteostat serves, and what it saw.
#[derive(Debug, Default)]
struct Fake {
    hourly_rows: Vec<Value>,
    bulk_csv: String,
    /// Upcoming hourly requests (API or bulk) answered with HTTP 500.
    fail_next: usize,
    /// Upcoming hourly requests answered with a body that is not JSON.
    garbage_next: usize,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn key_ok(headers: &HeaderMap) -> bool {
    headers.get("x-rapidapi-key").is_some_and(|v| v == KEY)
        && headers
            .get("x-rapidapi-host")
            .is_some_and(|v| v == "meteostat.p.rapidapi.com")
}

fn log(fake: &Shared, what: String) {
    fake.lock().unwrap().requests.push(what);
}

/// Logs a JSON API request as `what key=value ...` (the `keys` of its query): the answer when
/// it comes without the API key.
fn refused_api_request(
    fake: &Shared,
    headers: &HeaderMap,
    what: &str,
    query: &HashMap<String, String>,
    keys: &[&str],
) -> Option<Response> {
    let pairs: Vec<String> = keys.iter().map(|k| format!("{k}={}", query[*k])).collect();
    log(fake, format!("{what} {}", pairs.join(" ")));
    (!key_ok(headers)).then(|| StatusCode::UNAUTHORIZED.into_response())
}

async fn nearby(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let keys = ["lat", "lon", "limit"];
    if let Some(refused) = refused_api_request(&fake, &headers, "nearby", &q, &keys) {
        return refused;
    }
    let body = json!({"meta": {}, "data": [{"id": "72509", "name": {"en": "Boston"}, "distance": 1234.5}]});
    axum::Json(body).into_response()
}

/// A failure the fake was told to give, if any.
fn injected_failure(fake: &Shared) -> Option<Response> {
    let mut f = fake.lock().unwrap();
    if f.fail_next > 0 {
        f.fail_next -= 1;
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "upstream hiccup").into_response());
    }
    if f.garbage_next > 0 {
        f.garbage_next -= 1;
        return Some((StatusCode::OK, "<html>maintenance</html>").into_response());
    }
    None
}

async fn hourly(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let keys = ["station", "start", "end"];
    if let Some(refused) = refused_api_request(&fake, &headers, "hourly", &q, &keys) {
        return refused;
    }
    if let Some(failure) = injected_failure(&fake) {
        return failure;
    }
    let rows = fake.lock().unwrap().hourly_rows.clone();
    axum::Json(json!({"meta": {"generated": "2024-04-06 12:00:00"}, "data": rows})).into_response()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

async fn bulk_stations(State(fake): State<Shared>) -> Response {
    log(&fake, "bulk stations".into());
    let list = json!([
        {"id": "FAR01", "name": {"en": "Far away"}, "country": "US",
         "location": {"latitude": 40.64, "longitude": -73.78, "elevation": 4}, "timezone": "America/New_York"},
        {"id": "SIM01", "name": {"en": "Simulated City"}, "country": "CA",
         "location": {"latitude": 43.65, "longitude": -79.38, "elevation": 90}, "timezone": "America/Toronto"}
    ]);
    let body = gzip(list.to_string().as_bytes());
    ([(header::CONTENT_TYPE, "application/gzip")], body).into_response()
}

async fn bulk_hourly(State(fake): State<Shared>, Path(file): Path<String>) -> Response {
    log(&fake, format!("bulk hourly {file}"));
    if let Some(failure) = injected_failure(&fake) {
        return failure;
    }
    if file != "SIM01.csv.gz" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = gzip(fake.lock().unwrap().bulk_csv.as_bytes());
    ([(header::CONTENT_TYPE, "application/gzip")], body).into_response()
}

/// Serves the fake on 127.0.0.1:0 and returns its base URL.
async fn serve(fake: Shared) -> String {
    let app = Router::new()
        .route("/stations/nearby", get(nearby))
        .route("/stations/hourly", get(hourly))
        .route("/bulk/stations/lite.json.gz", get(bulk_stations))
        .route("/bulk/hourly/{file}", get(bulk_hourly))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(mode: WeatherMode, base: &str) -> WeatherConfig {
    WeatherConfig {
        mode,
        api_base: base.to_owned(),
        bulk_base: format!("{base}/bulk"),
        lookback_hours: 24,
        timeout_secs: 5,
        retry: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
            max_retries: Some(3),
        },
        ..WeatherConfig::default()
    }
}

/// What a poll should count: events, dead letters, systems failed.
fn poll_stats(events: usize, dead_letters: usize, systems_failed: usize) -> PollStats {
    PollStats {
        events,
        dead_letters,
        systems_failed,
    }
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn system(id: &str, lat: f64, lon: f64) -> WeatherSystem {
    WeatherSystem {
        system_id: SystemId::new(id),
        lat,
        lon,
    }
}

fn producer(
    config: WeatherConfig,
    key: Option<&str>,
    systems: Vec<WeatherSystem>,
    clock: &ManualClock,
) -> WeatherProducer {
    let client = MeteostatClient::new(&config, key.map(ApiKey::new)).unwrap();
    WeatherProducer::with_client(config, client, systems, Arc::new(clock.clone()))
}

/// Serves `fake`; a producer of Boston's weather in API mode, with the key, its clock at
/// 12:30 on 6 April 2024.
async fn boston_over_api(fake: &Shared) -> (ManualClock, WeatherProducer) {
    let base = serve(fake.clone()).await;
    let clock = ManualClock::new(at("2024-04-06T12:30:00Z"));
    let config = config(WeatherMode::Api, &base);
    let p = producer(
        config,
        Some(KEY),
        vec![system("boston", 42.36, -71.06)],
        &clock,
    );
    (clock, p)
}

fn weather(events: &[Envelope]) -> Vec<(&str, &WeatherObs)> {
    events
        .iter()
        .map(|e| match &e.event {
            Event::Weather(w) => (e.system_id.as_str(), w),
            other => panic!("not weather: {other:?}"),
        })
        .collect()
}

fn requests(fake: &Shared, prefix: &str) -> Vec<String> {
    let f = fake.lock().unwrap();
    f.requests
        .iter()
        .filter(|r| r.starts_with(prefix))
        .cloned()
        .collect()
}

fn api_row(time: &str, temp: Value) -> Value {
    json!({"time": time, "temp": temp, "dwpt": null, "rhum": 70, "prcp": 0.0, "snow": null,
           "wdir": 180, "wspd": 11.2, "wpgt": null, "pres": 1015.0, "tsun": null, "coco": 3})
}

#[tokio::test]
async fn api_mode_finds_the_station_maps_rows_and_emits_each_hour_once() {
    let fake = Shared::default();
    fake.lock().unwrap().hourly_rows = vec![
        api_row("2024-04-05 11:00:00", json!(1.0)), // before the lookback
        api_row("2024-04-06 10:00:00", json!(8.3)),
        json!({"time": "2024-04-06 11:00:00", "temp": null, "dwpt": null, "rhum": null, "prcp": null,
               "snow": null, "wdir": null, "wspd": null, "wpgt": null, "pres": null, "tsun": null, "coco": null}),
        api_row("2024-04-06 12:00:00", json!(9.1)),
        api_row("2024-04-06 13:00:00", json!(9.5)), // a forecast until 13:00 is past
    ];
    let base = serve(fake.clone()).await;
    let clock = ManualClock::new(at("2024-04-06T12:30:00Z"));
    let systems = vec![
        system("boston", 42.36, -71.06),
        system("cambridge", 42.37, -71.11),
    ];
    let mut p = producer(config(WeatherMode::Api, &base), Some(KEY), systems, &clock);
    let out = MemoryOutput::default();

    let stats = p.poll_once(&out).await.unwrap();
    assert_eq!(stats, poll_stats(6, 0, 0));
    let events = out.take_events();
    let got = weather(&events);
    let hours: Vec<_> = got.iter().map(|(s, w)| (*s, w.observed_at)).collect();
    assert_eq!(
        hours,
        [
            ("boston", at("2024-04-06T10:00:00Z")),
            ("boston", at("2024-04-06T11:00:00Z")),
            ("boston", at("2024-04-06T12:00:00Z")),
            ("cambridge", at("2024-04-06T10:00:00Z")),
            ("cambridge", at("2024-04-06T11:00:00Z")),
            ("cambridge", at("2024-04-06T12:00:00Z")),
        ]
    );
    let full = got[0].1;
    assert_eq!(full.weather_station, "72509");
    assert_eq!(full.temperature_c, Some(8.3));
    assert_eq!(full.humidity_pct, Some(70.0));
    assert_eq!(full.precipitation_mm, Some(0.0));
    assert_eq!(full.wind_speed_kmh, Some(11.2));
    assert_eq!(full.condition, Some(3));
    let nulls = got[1].1;
    assert_eq!(
        (
            nulls.temperature_c,
            nulls.humidity_pct,
            nulls.precipitation_mm,
            nulls.wind_speed_kmh,
            nulls.condition
        ),
        (None, None, None, None, None)
    );
    for e in &events {
        assert_eq!(e.source, "meteostat:api");
        assert_eq!(e.ingest_time, at("2024-04-06T12:30:00Z"));
        let Event::Weather(w) = &e.event else {
            unreachable!()
        };
        assert_eq!(e.event_time, w.observed_at);
    }
    assert_ne!(
        events[0].event_id, events[3].event_id,
        "same hour, another system"
    );
    assert_eq!(
        p.stations()
            .filter_map(|(_, s)| s)
            .filter(|s| s.id == "72509")
            .count(),
        2
    );

    // One station lookup per system, one hourly request per station and poll.
    assert_eq!(
        requests(&fake, "nearby"),
        [
            "nearby lat=42.36 lon=-71.06 limit=1",
            "nearby lat=42.37 lon=-71.11 limit=1"
        ]
    );
    assert_eq!(
        requests(&fake, "hourly"),
        ["hourly station=72509 start=2024-04-05 end=2024-04-06"]
    );

    // The same hours again: nothing new. An hour later the 13:00 row is past: one new hour.
    assert_eq!(p.poll_once(&out).await.unwrap().events, 0);
    assert!(out.take_events().is_empty());
    clock.advance_millis(3_600_000);
    assert_eq!(p.poll_once(&out).await.unwrap().events, 2);
    let events = out.take_events();
    let hours: Vec<_> = weather(&events)
        .iter()
        .map(|(s, w)| (*s, w.observed_at))
        .collect();
    assert_eq!(
        hours,
        [
            ("boston", at("2024-04-06T13:00:00Z")),
            ("cambridge", at("2024-04-06T13:00:00Z"))
        ]
    );
    assert_eq!(
        requests(&fake, "nearby").len(),
        2,
        "stations are looked up once"
    );
}

#[tokio::test]
async fn impossible_values_are_dead_lettered_once_with_the_raw_row() {
    let fake = Shared::default();
    fake.lock().unwrap().hourly_rows = vec![
        api_row("2024-04-06 08:00:00", json!(75.0)),
        json!({"time": "2024-04-06 09:00:00", "temp": 5.0, "rhum": 120, "prcp": 0, "wspd": 3, "coco": 2}),
        json!({"time": "2024-04-06 10:00:00", "temp": 5.0, "rhum": 50, "prcp": -1.0, "wspd": 3, "coco": 2}),
        json!({"time": "2024-04-06 11:00:00", "temp": 5.0, "rhum": 50, "prcp": 0, "wspd": 3, "coco": 30}),
        api_row("2024-04-06 12:00:00", json!(6.0)),
    ];
    let (_clock, mut p) = boston_over_api(&fake).await;
    let out = MemoryOutput::default();

    let stats = p.poll_once(&out).await.unwrap();
    assert_eq!((stats.events, stats.dead_letters), (1, 4));
    let dead = out.take_dead_letters();
    assert!(
        dead.iter()
            .all(|d| d.rule == "weather.range" && d.system_id.as_str() == "boston")
    );
    for (d, needle) in dead.iter().zip(["75.0", "120", "-1.0", "30"]) {
        let raw: Value = serde_json::from_str(&d.raw).unwrap();
        assert!(raw.get("time").is_some(), "the raw row: {}", d.raw);
        assert!(d.raw.contains(needle), "{} should show {needle}", d.raw);
    }
    assert!(
        dead[0].message.contains("temperature 75"),
        "{}",
        dead[0].message
    );
    assert_eq!(weather(&out.take_events())[0].1.temperature_c, Some(6.0));

    let again = p.poll_once(&out).await.unwrap();
    assert_eq!((again.events, again.dead_letters), (0, 0));
}

#[tokio::test]
async fn bulk_mode_uses_the_station_list_and_the_gzip_csv() {
    let fake = Shared::default();
    fake.lock().unwrap().bulk_csv = "\
        2019-01-01,0,-3.0,,80,0.0,,,10.0,,,,2\n\
        2024-04-06,9,4.4,1.0,81,0.3,,200,13.0,,1009.9,,8\n\
        2024-04-06,10,,,,,,,,,,,\n\
        2024-04-06,11,4.9,,150,,,,,,,,\n\
        2024-04-06,12,5.2,,75,0.0,,,9.0,,,,1\n"
        .to_owned();
    let base = serve(fake.clone()).await;
    let clock = ManualClock::new(at("2024-04-06T12:30:00Z"));
    let mut p = producer(
        config(WeatherMode::Bulk, &base),
        None,
        vec![system("toronto", 43.66, -79.39)],
        &clock,
    );
    let out = MemoryOutput::default();

    let stats = p.poll_once(&out).await.unwrap();
    assert_eq!(stats, poll_stats(3, 1, 0));
    let events = out.take_events();
    let got = weather(&events);
    let first = got[0].1;
    assert_eq!(
        (first.weather_station.as_str(), first.observed_at),
        ("SIM01", at("2024-04-06T09:00:00Z"))
    );
    assert_eq!(
        (
            first.temperature_c,
            first.humidity_pct,
            first.precipitation_mm,
            first.wind_speed_kmh,
            first.condition
        ),
        (Some(4.4), Some(81.0), Some(0.3), Some(13.0), Some(8))
    );
    assert_eq!(got[1].1.temperature_c, None);
    assert_eq!(got[2].1.observed_at, at("2024-04-06T12:00:00Z"));
    assert!(events.iter().all(|e| e.source == "meteostat:bulk"));
    let dead = out.take_dead_letters();
    assert_eq!(
        (dead[0].rule.as_str(), dead[0].raw.as_str()),
        ("weather.range", "2024-04-06,11,4.9,,150,,,,,,,,")
    );
    let chosen: Vec<_> = p
        .stations()
        .filter_map(|(_, s)| s.map(|s| s.id.clone()))
        .collect();
    assert_eq!(chosen, ["SIM01"]);

    fake.lock()
        .unwrap()
        .bulk_csv
        .push_str("2024-04-06,13,5.5,,70,,,,,,,,\n");
    assert_eq!(
        p.poll_once(&out).await.unwrap().events,
        0,
        "13:00 is not past yet"
    );
    clock.advance_millis(3_600_000);
    let stats = p.poll_once(&out).await.unwrap();
    assert_eq!((stats.events, stats.dead_letters), (1, 0));
    assert_eq!(
        requests(&fake, "bulk stations").len(),
        1,
        "the station list is fetched once"
    );
    assert_eq!(requests(&fake, "bulk hourly SIM01.csv.gz").len(), 3);
}

#[tokio::test]
async fn api_mode_without_a_key_is_a_clear_error() {
    let config = config(WeatherMode::Api, "http://127.0.0.1:9");
    let err = MeteostatClient::new(&config, None).unwrap_err();
    assert!(matches!(err, WeatherError::MissingApiKey));
    assert!(err.to_string().contains("METEOSTAT_API_KEY"), "{err}");
    assert!(!err.retryable());

    // A bulk-mode client has no key; asking it for the API fails the same way, without a request.
    let bulk = MeteostatClient::new(
        &WeatherConfig {
            mode: WeatherMode::Bulk,
            ..config
        },
        None,
    )
    .unwrap();
    let err = bulk.nearby_station(42.0, -71.0).await.unwrap_err();
    assert!(matches!(err, WeatherError::MissingApiKey), "{err}");
}

#[tokio::test]
async fn failures_are_retried_and_a_later_poll_recovers() {
    let fake = Shared::default();
    fake.lock().unwrap().hourly_rows = vec![api_row("2024-04-06 12:00:00", json!(6.0))];
    let (clock, mut p) = boston_over_api(&fake).await;
    let out = MemoryOutput::default();

    // A 500 and a malformed body, then an answer: one poll, retried inside the client.
    {
        let mut f = fake.lock().unwrap();
        f.fail_next = 1;
        f.garbage_next = 1;
    }
    assert_eq!(p.poll_once(&out).await.unwrap().events, 1);
    assert_eq!(requests(&fake, "hourly").len(), 3);

    // Failing beyond the retries: the system fails this poll, and the next poll recovers.
    fake.lock()
        .unwrap()
        .hourly_rows
        .push(api_row("2024-04-06 13:00:00", json!(7.0)));
    clock.advance_millis(3_600_000);
    fake.lock().unwrap().fail_next = 4;
    let stats = p.poll_once(&out).await.unwrap();
    assert_eq!(stats, poll_stats(0, 0, 1));
    assert_eq!(
        requests(&fake, "hourly").len(),
        3 + 4,
        "first try and 3 retries"
    );
    assert_eq!(p.poll_once(&out).await.unwrap().events, 1);
}

#[tokio::test]
async fn client_errors_name_the_cause() {
    let fake = Shared::default();
    fake.lock().unwrap().hourly_rows = (0..50)
        .map(|h| api_row("2024-04-06 12:00:00", json!(h)))
        .collect();
    let base = serve(fake.clone()).await;
    let day = chrono::NaiveDate::from_ymd_opt(2024, 4, 6).unwrap();

    let wrong_key =
        MeteostatClient::new(&config(WeatherMode::Api, &base), Some(ApiKey::new("nope"))).unwrap();
    let err = wrong_key.hourly("72509", day, day).await.unwrap_err();
    assert!(
        matches!(err, WeatherError::Status { status: 401, .. }),
        "{err}"
    );
    assert!(!err.retryable());
    assert_eq!(requests(&fake, "hourly").len(), 1, "a 401 is not retried");

    let small = WeatherConfig {
        max_body_bytes: 512,
        ..config(WeatherMode::Api, &base)
    };
    let capped = MeteostatClient::new(&small, Some(ApiKey::new(KEY))).unwrap();
    let err = capped.hourly("72509", day, day).await.unwrap_err();
    assert!(
        matches!(err, WeatherError::TooLarge { limit: 512, .. }),
        "{err}"
    );

    fake.lock().unwrap().garbage_next = 10;
    let client =
        MeteostatClient::new(&config(WeatherMode::Api, &base), Some(ApiKey::new(KEY))).unwrap();
    let err = client.hourly("72509", day, day).await.unwrap_err();
    assert!(matches!(err, WeatherError::Malformed { .. }), "{err}");
    assert!(
        !format!("{err:?} {client:?}").contains(KEY),
        "the key is never shown"
    );
}

#[test]
fn producer_futures_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let config = WeatherConfig {
        mode: WeatherMode::Bulk,
        ..WeatherConfig::default()
    };
    let mut p = producer(config, None, vec![], &ManualClock::default());
    let out = MemoryOutput::default();
    assert_send(&p.poll_once(&out));
    assert_send(&p.run(&out, std::future::pending()));
}

#[tokio::test]
async fn run_polls_until_shutdown() {
    let fake = Shared::default();
    fake.lock().unwrap().hourly_rows = vec![api_row("2024-04-06 12:00:00", json!(6.0))];
    let (_clock, p) = boston_over_api(&fake).await;
    let out = MemoryOutput::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = async {
        while out.events.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(()).unwrap();
    };
    let run = p.run(&out, async {
        let _ = stopped.await;
    });
    let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(run, watcher)
    })
    .await
    .expect("run stops on shutdown");
    result.unwrap();
    assert_eq!(out.take_events().len(), 1);
}
