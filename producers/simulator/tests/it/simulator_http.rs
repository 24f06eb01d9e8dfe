//! The simulator over real HTTP on 127.0.0.1:0, driven by a manual wall clock.

// Test helpers outside #[test] functions may unwrap too (clippy.toml allows it in tests).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

use bikeshare_runtime::http::ListenError;
use bikeshare_simulator::{
    CityConfig, GbfsVersion, RunningSimulator, SimulatorConfig, SimulatorError, TOKEN_ENV, serve,
};
use bikeshare_types::Timestamp;
use bikeshare_types::time::ManualClock;
use flate2::read::GzDecoder;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, ETAG, IF_MODIFIED_SINCE, LAST_MODIFIED,
};
use serde_json::Value;

/// 2024-06-04 12:00 UTC (a Tuesday, 08:00 in Toronto).
const WALL: i64 = 1_717_502_400_000;
const STATIONS: usize = 30;

fn config() -> SimulatorConfig {
    SimulatorConfig {
        city: CityConfig {
            stations: STATIONS as u32,
            ..CityConfig::default()
        },
        bind: "127.0.0.1:0".parse().unwrap(),
        // The background task only moves when the test calls `sync`.
        tick_ms: 3_600_000,
        ..SimulatorConfig::default()
    }
}

/// A simulator a day behind a manual wall clock, running 60 times faster.
async fn start() -> (RunningSimulator, ManualClock) {
    let wall = ManualClock::new(Timestamp(WALL));
    let cfg = SimulatorConfig {
        time_scale: 60.0,
        start: Some(Timestamp(WALL).plus_minutes(-24 * 60)),
        ..config()
    };
    let sim = serve(cfg, Arc::new(wall.clone()), std::future::pending())
        .await
        .unwrap();
    (sim, wall)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// GET `url` with `headers` (name, value).
async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `If-None-Match: tag`, as headers of [`get`].
fn if_none_match(tag: &str) -> [(&'static str, &str); 1] {
    [("if-none-match", tag)]
}

async fn get_json(url: &str) -> Value {
    let resp = get(url, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK, "{url}");
    assert_eq!(resp.headers()["content-type"], "application/json", "{url}");
    resp.json().await.unwrap()
}

fn feed_urls(version: GbfsVersion, gbfs: &Value) -> Vec<(String, String)> {
    let feeds = match version {
        GbfsVersion::V2_3 => &gbfs["data"]["en"]["feeds"],
        GbfsVersion::V3_0 => &gbfs["data"]["feeds"],
    };
    feeds
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[tokio::test]
async fn discovery_leads_to_every_feed_in_both_versions() {
    let (sim, _wall) = start().await;
    for version in [GbfsVersion::V2_3, GbfsVersion::V3_0] {
        let gbfs = get_json(&sim.gbfs_url(version)).await;
        assert_eq!(gbfs["version"], version.as_str());
        let urls = feed_urls(version, &gbfs);
        let names: BTreeSet<&str> = urls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "gbfs_versions",
                "station_information",
                "station_status",
                "system_information",
                "vehicle_types"
            ])
        );
        for (name, url) in &urls {
            assert!(
                url.starts_with(&format!("{}/gbfs/{}/", sim.base_url(), version.as_str())),
                "{url}"
            );
            let doc = get_json(url).await;
            assert_eq!(doc["version"], version.as_str(), "{name}");
            assert_eq!(doc["ttl"], 1, "60 s / time scale 60");
            match name.as_str() {
                "station_information" | "station_status" => {
                    assert_eq!(doc["data"]["stations"].as_array().unwrap().len(), STATIONS)
                }
                "system_information" => {
                    assert_eq!(doc["data"]["system_id"], "sim-city");
                    assert_eq!(doc["data"]["timezone"], "America/Toronto");
                }
                "gbfs_versions" => {
                    let versions: Vec<&str> = doc["data"]["versions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v["version"].as_str().unwrap())
                        .collect();
                    assert_eq!(versions, ["2.3", "3.0"]);
                }
                _ => {}
            }
        }
        let status = get_json(&urls.iter().find(|(n, _)| n == "station_status").unwrap().1).await;
        let first = &status["data"]["stations"][0];
        match version {
            GbfsVersion::V2_3 => {
                assert!(status["last_updated"].is_i64() && first["last_reported"].is_i64());
                assert!(first["num_bikes_available"].is_u64());
            }
            GbfsVersion::V3_0 => {
                assert!(status["last_updated"].is_string() && first["last_reported"].is_string());
                assert!(first["num_vehicles_available"].is_u64());
            }
        }
    }
    for missing in ["2.3/free_bike_status.json", "1.1/gbfs.json"] {
        let missing = get(&format!("{}/gbfs/{missing}", sim.base_url()), &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn conditional_requests_get_304_until_the_feed_changes() {
    let (sim, wall) = start().await;
    let url = format!("{}/gbfs/3.0/station_status.json", sim.base_url());
    let first = get(&url, &[]).await;
    let header = |name| first.headers()[name].to_str().unwrap().to_owned();
    let (etag, modified) = (header(ETAG), header(LAST_MODIFIED));
    assert!(etag.starts_with("W/\""));

    let again = get(&url, &if_none_match(&etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let again = get(&url, &[(IF_MODIFIED_SINCE.as_str(), &modified)]).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let other = get(&url, &if_none_match("\"something-else\"")).await;
    assert_eq!(other.status(), StatusCode::OK);

    // Ten sim minutes later the feed is new.
    wall.advance_millis(10_000);
    sim.sync().await.unwrap();
    let changed = get(&url, &if_none_match(&etag)).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()[ETAG], etag);

    // Static feeds keep their validators.
    let info = format!("{}/gbfs/2.3/station_information.json", sim.base_url());
    let tag = get(&info, &[]).await.headers()[ETAG].clone();
    wall.advance_millis(10_000);
    sim.sync().await.unwrap();
    let same = get(&info, &if_none_match(tag.to_str().unwrap())).await;
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn json_is_gzipped_when_the_client_accepts_it() {
    let (sim, _wall) = start().await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let url = format!("{}/gbfs/2.3/station_information.json", sim.base_url());
    let zipped = raw
        .get(&url)
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()[CONTENT_ENCODING], "gzip");
    let body = zipped.bytes().await.unwrap();
    let mut text = String::new();
    GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["data"]["stations"].as_array().unwrap().len(), STATIONS);
    assert!(body.len() < text.len());

    let plain = raw.get(&url).send().await.unwrap();
    assert!(plain.headers().get(CONTENT_ENCODING).is_none());
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain, doc);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn status_advances_when_the_sim_clock_moves() {
    let (sim, wall) = start().await;
    let url = format!("{}/gbfs/2.3/station_status.json", sim.base_url());
    let before = get_json(&url).await;
    let t0 = before["last_updated"].as_i64().unwrap();
    assert_eq!(
        t0 * 1000,
        WALL - 24 * Timestamp::HOUR_MS,
        "starts a day behind"
    );

    // One wall minute is one sim hour at scale 60.
    wall.advance_millis(60_000);
    let now = sim.sync().await.unwrap();
    assert_eq!(now.millis(), WALL - 23 * Timestamp::HOUR_MS);
    let after = get_json(&url).await;
    assert_eq!(after["last_updated"].as_i64().unwrap(), t0 + 3600);
    let reported = |doc: &Value| -> Vec<i64> {
        doc["data"]["stations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["last_reported"].as_i64().unwrap())
            .collect()
    };
    let (r0, r1) = (reported(&before), reported(&after));
    assert!(r0.iter().zip(&r1).all(|(a, b)| a <= b));
    assert!(
        r0.iter().zip(&r1).filter(|(a, b)| a < b).count() > STATIONS / 2,
        "most stations reported in an hour"
    );
    assert!(r1.iter().all(|&r| r <= t0 + 3600));

    // Once caught up with the wall clock, sim time is wall time and the ttl is 60 s.
    wall.advance_millis(Timestamp::HOUR_MS);
    let now = sim.sync().await.unwrap();
    assert_eq!(now, Timestamp(WALL + 61 * Timestamp::MINUTE_MS));
    let caught_up = get_json(&url).await;
    assert_eq!(
        caught_up["last_updated"].as_i64().unwrap() * 1000,
        WALL + 61 * Timestamp::MINUTE_MS
    );
    assert_eq!(caught_up["ttl"], 60);
    assert_eq!(sim.sim_now(), now);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn meteostat_endpoints_answer_the_exact_shapes() {
    let (sim, _wall) = start().await;
    let api = sim.meteostat_api_url();
    let key = ("x-rapidapi-key", "anything");

    let nearby_url = format!("{api}/stations/nearby?lat=43.7&lon=-79.4&limit=3");
    let unauthorized = get(&nearby_url, &[]).await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let nearby: Value = get(&nearby_url, &[key]).await.json().await.unwrap();
    assert_eq!(keys(&nearby), BTreeSet::from(["data", "meta"]));
    assert_eq!(nearby["meta"], serde_json::json!({}));
    let station = &nearby["data"][0];
    assert_eq!(keys(station), BTreeSet::from(["distance", "id", "name"]));
    assert_eq!(station["id"], "SIM01");
    assert_eq!(station["name"], serde_json::json!({"en": "Sim City"}));
    assert!(station["distance"].as_f64().unwrap() > 1000.0);

    // Sim now is 2024-06-03 12:00 UTC: the 4th has no hours yet.
    let hourly_url = format!("{api}/stations/hourly?station=SIM01&start=2024-06-02&end=2024-06-04");
    let unauthorized = get(&hourly_url, &[]).await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    let hourly: Value = get(&hourly_url, &[key]).await.json().await.unwrap();
    assert_eq!(keys(&hourly), BTreeSet::from(["data", "meta"]));
    assert_eq!(hourly["meta"]["generated"], "2024-06-03 12:00:00");
    let rows = hourly["data"].as_array().unwrap();
    assert_eq!(rows.len(), 24 + 13, "2nd 00:00 to 3rd 12:00");
    assert_eq!(rows[0]["time"], "2024-06-02 00:00:00");
    assert_eq!(rows.last().unwrap()["time"], "2024-06-03 12:00:00");
    let fields = BTreeSet::from([
        "coco", "dwpt", "prcp", "pres", "rhum", "snow", "temp", "time", "tsun", "wdir", "wpgt",
        "wspd",
    ]);
    for row in rows {
        assert_eq!(keys(row), fields);
        assert!(row["temp"].is_f64() && row["coco"].is_u64() && row["snow"].is_null());
    }
    let backwards = format!("{api}/stations/hourly?station=SIM01&start=2024-06-05&end=2024-06-01");
    let bad = get(&backwards, &[key]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let bulk = sim.meteostat_bulk_url();
    let gz = get(&format!("{bulk}/hourly/SIM01.csv.gz"), &[]).await;
    assert_eq!(gz.status(), StatusCode::OK);
    assert!(
        gz.headers().get(CONTENT_ENCODING).is_none(),
        "a gzip file, not a gzip encoding"
    );
    let mut csv = String::new();
    GzDecoder::new(&gz.bytes().await.unwrap()[..])
        .read_to_string(&mut csv)
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        30 * 24 + 13,
        "30 days of history up to sim now"
    );
    for line in &lines {
        assert_eq!(line.split(',').count(), 13, "{line}");
    }
    let last: Vec<&str> = lines.last().unwrap().split(',').collect();
    assert_eq!(
        (last[0], last[1], last[6], last[9], last[11]),
        ("2024-06-03", "12", "", "", "")
    );
    assert!(last[2].parse::<f64>().is_ok() && last[12].parse::<u8>().is_ok());
    assert!(!lines[0].starts_with("date"), "no header");

    let lite = get(&format!("{bulk}/stations/lite.json.gz"), &[]).await;
    let mut text = String::new();
    GzDecoder::new(&lite.bytes().await.unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let stations: Value = serde_json::from_str(&text).unwrap();
    let s = &stations[0];
    assert_eq!(
        keys(s),
        BTreeSet::from(["country", "id", "location", "name", "timezone"])
    );
    assert_eq!(
        keys(&s["location"]),
        BTreeSet::from(["elevation", "latitude", "longitude"])
    );
    assert_eq!(
        (s["id"].as_str(), s["country"].as_str()),
        (Some("SIM01"), Some("CA"))
    );
    assert_eq!(s["timezone"], "America/Toronto");

    let unknown = get(&format!("{bulk}/hourly/72509.csv.gz"), &[]).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn beyond_loopback_a_token_is_required() {
    let wall = Arc::new(ManualClock::new(Timestamp(WALL)));
    let open = SimulatorConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        token: None,
        ..config()
    };
    if std::env::var_os(TOKEN_ENV).is_none() {
        let err = serve(open.clone(), wall.clone(), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SimulatorError::Listen(ListenError::TokenRequired { .. })
            ),
            "{err}"
        );
    } else {
        eprintln!("{TOKEN_ENV} is set: skipping the refusal check");
    }

    let guarded = SimulatorConfig {
        token: Some("s3cret".into()),
        ..open
    };
    let sim = serve(guarded, wall, std::future::pending()).await.unwrap();
    let base = sim.base_url().to_owned();
    assert_eq!(
        base,
        format!("http://127.0.0.1:{}", sim.local_addr().port())
    );
    let url = format!("{base}/gbfs/3.0/gbfs.json");
    let bearer = |token| [(AUTHORIZATION.as_str(), token)];
    assert_eq!(get(&url, &[]).await.status(), StatusCode::UNAUTHORIZED);
    let wrong = get(&url, &bearer("Bearer nope")).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = get(&url, &bearer("Bearer s3cret")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    // A Meteostat client sends the token as its API key.
    let nearby = format!("{base}/meteostat/api/stations/nearby?lat=43.7&lon=-79.4");
    let ok = get(&nearby, &[("x-rapidapi-key", "s3cret")]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let health = get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(health.status(), StatusCode::OK);
    sim.stop().await.unwrap();
}

#[tokio::test]
async fn public_base_url_and_shutdown() {
    let wall = Arc::new(ManualClock::new(Timestamp(WALL)));
    let cfg = SimulatorConfig {
        public_base_url: Some("https://sim.example.org/".into()),
        ..config()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let sim = serve(cfg, wall, async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    assert_eq!(
        sim.gbfs_url(GbfsVersion::V3_0),
        "https://sim.example.org/gbfs/3.0/gbfs.json"
    );
    let local = format!("http://{}/gbfs/3.0/gbfs.json", sim.local_addr());
    let gbfs = get_json(&local).await;
    for (_, url) in feed_urls(GbfsVersion::V3_0, &gbfs) {
        assert!(
            url.starts_with("https://sim.example.org/gbfs/3.0/"),
            "{url}"
        );
    }
    // The shutdown future stops the server.
    tx.send(()).unwrap();
    sim.wait().await.unwrap();
    assert!(client().get(&local).send().await.is_err());
}
