//! `probe`: a system's own id from `system_information`, errors that name the URL and the
//! cause when it cannot be read, and a bearer token sent only to its own origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bikeshare_producers::gbfs::{Bearer, PollerConfig, ProbeError, probe};
use bikeshare_types::retry::Backoff;
use bikeshare_types::{SharedClock, SystemClock};
use serde_json::json;

/// Serves GBFS 2.3 `gbfs.json` and `system_information.json`; with a token, only to requests
/// that carry it. Keeps each request's `Authorization` header.
async fn server(token: Option<&'static str>) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let gbfs = json!({"last_updated": 1_700_000_000, "ttl": 60, "version": "2.3",
        "data": {"en": {"feeds": [
            {"name": "system_information", "url": format!("{base}/system_information.json")},
            {"name": "station_status", "url": format!("{base}/station_status.json")}]}}});
    let info = json!({"last_updated": 1_700_000_000, "ttl": 60, "version": "2.3",
        "data": {"system_id": "bcycle_madison", "language": "en", "name": "Madison BCycle",
                 "timezone": "America/Chicago"}});
    let answer = move |body: serde_json::Value| {
        move |State(seen): State<Arc<Mutex<Vec<Option<String>>>>>, headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(auth.clone());
            if let Some(t) = token
                && auth.as_deref() != Some(format!("Bearer {t}").as_str())
            {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            axum::Json(body).into_response()
        }
    };
    let app: Router = Router::new()
        .route("/gbfs.json", get(answer(gbfs)))
        .route("/system_information.json", get(answer(info)))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("{base}/gbfs.json"), seen)
}

fn config() -> PollerConfig {
    let mut c = PollerConfig::default();
    c.client.retry = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
        max_retries: Some(2),
    };
    c
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[tokio::test]
async fn the_system_id_is_the_feeds_own() {
    let (url, _) = server(None).await;
    let p = probe(&url, &config(), &clock()).await.unwrap();
    assert_eq!(p.system_id, "bcycle_madison");
    assert_eq!(p.name, "Madison BCycle");
    assert_eq!(p.version, "2.3");
}

#[tokio::test]
async fn an_unreachable_url_is_an_error_naming_it_and_the_cause() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/gbfs.json");
    let err = probe(&url, &config(), &clock()).await.unwrap_err();
    let text = bikeshare_types::error::chain(&err).to_string();
    assert!(
        matches!(err, ProbeError::Fetch { retries: 2, .. }),
        "{text}"
    );
    assert!(text.contains(&url), "names the URL: {text}");
    assert!(text.contains("connect"), "names the cause: {text}");

    let (url, _) = server(None).await;
    let missing = url.replace("gbfs.json", "nothing.json");
    let err = probe(&missing, &config(), &clock()).await.unwrap_err();
    let text = bikeshare_types::error::chain(&err).to_string();
    assert!(text.contains("404") && text.contains(&missing), "{text}");
}

#[tokio::test]
async fn a_bearer_token_is_sent_to_its_origin_only() {
    let (url, seen) = server(Some("sim-token")).await;
    let err = probe(&url, &config(), &clock()).await.unwrap_err();
    assert!(
        bikeshare_types::error::chain(&err)
            .to_string()
            .contains("401")
    );

    let mut with = config();
    with.client.bearer = Bearer::for_origin_of(&url, "sim-token");
    assert_eq!(
        probe(&url, &with, &clock()).await.unwrap().system_id,
        "bcycle_madison"
    );

    // The same token, scoped to another origin, is not sent here.
    let (other, other_seen) = server(None).await;
    let mut elsewhere = config();
    elsewhere.client.bearer = Bearer::for_origin_of(&url, "sim-token");
    probe(&other, &elsewhere, &clock()).await.unwrap();
    assert!(other_seen.lock().unwrap().iter().all(Option::is_none));
    assert!(
        seen.lock()
            .unwrap()
            .contains(&Some("Bearer sim-token".into()))
    );
}
