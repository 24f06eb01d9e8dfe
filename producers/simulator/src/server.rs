//! The simulator's HTTP server: the city as GBFS 2.3 and 3.0 feeds plus a
//! Meteostat-compatible weather endpoint.
//!
//! | Path | What |
//! |---|---|
//! | `/gbfs/{2.3,3.0}/gbfs.json` | auto-discovery (absolute URLs) |
//! | `/gbfs/{2.3,3.0}/{gbfs_versions,system_information,vehicle_types,station_information,station_status}.json` | the feeds |
//! | `/meteostat/api/stations/nearby?lat&lon&limit` | JSON API (needs `x-rapidapi-key`) |
//! | `/meteostat/api/stations/hourly?station&start&end` | JSON API, hours up to sim now |
//! | `/meteostat/bulk/hourly/{id}.csv.gz` | bulk hourly CSV, gzip |
//! | `/meteostat/bulk/stations/lite.json.gz` | bulk station list, gzip |
//! | `/healthz` | liveness, never needs a token |
//!
//! A background task follows the [`SimClock`]: whenever sim time passes a minute it steps
//! the city (on a blocking thread) and renders a new snapshot of every document, which
//! handlers read under a short lock (an `Arc` swap), so requests never wait for the city.
//! Static documents are rendered once (again only if the `ttl` changes); the bulk weather
//! file once per simulated hour.
//!
//! Documents carry a weak `ETag` (hash of the body) and `Last-Modified` (sim time);
//! `If-None-Match` (or `If-Modified-Since`) gives `304`. JSON is gzip-compressed when the
//! client accepts it; the `.gz` files are served as they are (`application/gzip`, no
//! `Content-Encoding`). Request bodies are limited to [`MAX_REQUEST_BODY`] bytes.
//!
//! The server binds `127.0.0.1:8070` by default. Bound beyond loopback it refuses to start
//! without a token (`token` or `BIKESHARE_SIM_TOKEN`); with a token, every request but
//! `/healthz` needs `Authorization: Bearer <token>` (the Meteostat routes also accept the
//! token as `x-rapidapi-key`, so an unmodified Meteostat client works).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_types::contracts::{StationInfo, SystemInfo};
use bikeshare_types::ids::deterministic_id;
use bikeshare_types::{SharedClock, Timestamp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use smart_default::SmartDefault;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use super::climate::Climate;
use super::feeds::{self, Feed, GbfsVersion, Header};
use super::meteostat::{self, WeatherStation};
use super::{City, CityConfig, SimClock, SimulatorError, TOKEN_ENV};

/// The largest request body accepted (the API has no bodies).
pub const MAX_REQUEST_BODY: usize = 1024;
/// The default bind address.
pub const DEFAULT_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8070);

/// The most days of weather history the bulk file may hold (it is rebuilt every sim hour).
pub const MAX_WEATHER_HISTORY_DAYS: u32 = 3660;

const JSON: &str = "application/json";
const GZIP: &str = "application/gzip";

const SERVER: Server = Server::new("the simulator", TOKEN_ENV);

/// How the simulator runs and serves. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    pub city: CityConfig,
    /// Simulated seconds per wall-clock second until sim time catches up with the wall.
    #[default(1.0)]
    pub time_scale: f64,
    /// Sim start; `None` is now. A start in the past runs fast until it catches up.
    pub start: Option<Timestamp>,
    #[default(DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Bearer token (else `BIKESHARE_SIM_TOKEN`); required when `bind` is not loopback.
    pub token: Option<Secret>,
    /// Base of the absolute URLs in `gbfs.json` (default `http://<bound address>`, loopback
    /// for a wildcard bind).
    pub public_base_url: Option<String>,
    /// Days of weather before the sim start in the bulk hourly file.
    #[default(30)]
    pub weather_history_days: u32,
    /// How often the background task looks at the sim clock, milliseconds.
    #[default(200)]
    pub tick_ms: u64,
}

/// One served document with its validators.
#[derive(Debug, Clone)]
struct Rendered {
    body: Bytes,
    etag: HeaderValue,
    last_modified: HeaderValue,
    last_modified_secs: i64,
    content_type: &'static str,
}

impl Rendered {
    fn new(body: Vec<u8>, modified: Timestamp, content_type: &'static str) -> Self {
        let etag = format!("W/\"{}\"", deterministic_id(&[&body]));
        let date = http_date(modified);
        Self {
            body: Bytes::from(body),
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("W/\"0\"")),
            last_modified: HeaderValue::from_str(&date)
                .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
            last_modified_secs: modified.secs(),
            content_type,
        }
    }
}

/// Every document as of one simulated minute.
#[derive(Debug)]
struct Snapshot {
    sim_now: Timestamp,
    ttl: u32,
    gbfs: BTreeMap<(GbfsVersion, Feed), Rendered>,
    bulk_hourly: Rendered,
    bulk_hour: Timestamp,
}

/// What renders snapshots: the city's static records and where it is served.
#[derive(Debug, Clone)]
struct Renderer {
    base_url: String,
    language: String,
    system: SystemInfo,
    stations: Arc<Vec<StationInfo>>,
    climate: Climate,
    weather_from: Timestamp,
    static_modified: Timestamp,
}

impl Renderer {
    fn snapshot(
        &self,
        city: &City,
        ttl: u32,
        prev: Option<&Snapshot>,
    ) -> Result<Snapshot, SimulatorError> {
        let now = city.now();
        let reuse_static = prev.filter(|p| p.ttl == ttl);
        let statics = Header {
            last_updated: self.static_modified,
            ttl,
        };
        let live = Header {
            last_updated: now,
            ttl,
        };
        let statuses = city.station_status();
        let mut gbfs = BTreeMap::new();
        for v in GbfsVersion::ALL {
            for f in Feed::ALL {
                if f != Feed::StationStatus
                    && let Some(r) = reuse_static.and_then(|p| p.gbfs.get(&(v, f)))
                {
                    gbfs.insert((v, f), r.clone());
                    continue;
                }
                let body = match f {
                    Feed::Gbfs => feeds::gbfs(v, statics, &self.base_url, &self.language)?,
                    Feed::GbfsVersions => feeds::gbfs_versions(v, statics, &self.base_url)?,
                    Feed::SystemInformation => feeds::system_information(v, statics, &self.system)?,
                    Feed::VehicleTypes => feeds::vehicle_types(v, statics, &self.language)?,
                    Feed::StationInformation => {
                        feeds::station_information(v, statics, &self.stations, &self.language)?
                    }
                    Feed::StationStatus => feeds::station_status(v, live, &statuses)?,
                };
                let modified = if f == Feed::StationStatus {
                    now
                } else {
                    self.static_modified
                };
                gbfs.insert((v, f), Rendered::new(body, modified, JSON));
            }
        }
        let hour = now.floor_to(Timestamp::HOUR_MS);
        let (bulk_hourly, bulk_hour) = match prev {
            Some(p) if p.bulk_hour == hour => (p.bulk_hourly.clone(), hour),
            _ => {
                let hours = self.climate.hours(self.weather_from, now);
                let gz = meteostat::gzip(meteostat::bulk_hourly_csv(&hours).as_bytes())?;
                (Rendered::new(gz, hour, GZIP), hour)
            }
        };
        Ok(Snapshot {
            sim_now: now,
            ttl,
            gbfs,
            bulk_hourly,
            bulk_hour,
        })
    }
}

/// What handlers share.
#[derive(Debug, Clone)]
struct AppState {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    climate: Climate,
    station: Arc<WeatherStation>,
    lite: Arc<Rendered>,
}

impl AppState {
    fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

fn store(shared: &RwLock<Arc<Snapshot>>, snap: Snapshot) {
    let snap = Arc::new(snap);
    match shared.write() {
        Ok(mut g) => *g = snap,
        Err(poisoned) => *poisoned.into_inner() = snap,
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSimulator {
    addr: SocketAddr,
    base_url: String,
    stop: Arc<watch::Sender<bool>>,
    sync: mpsc::Sender<oneshot::Sender<Timestamp>>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    server: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    forwarder: Option<JoinHandle<()>>,
}

impl RunningSimulator {
    /// The address the server is bound to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base of every URL served (`public_base_url`, else `http://<local_addr>` with a
    /// wildcard address replaced by loopback).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The `gbfs.json` URL of `version`.
    pub fn gbfs_url(&self, version: GbfsVersion) -> String {
        feeds::feed_url(&self.base_url, version, Feed::Gbfs)
    }

    /// The Meteostat JSON API base (`.../meteostat/api`).
    pub fn meteostat_api_url(&self) -> String {
        format!("{}/meteostat/api", self.base_url)
    }

    /// The Meteostat bulk base (`.../meteostat/bulk`).
    pub fn meteostat_bulk_url(&self) -> String {
        format!("{}/meteostat/bulk", self.base_url)
    }

    /// The sim time of the documents being served.
    pub fn sim_now(&self) -> Timestamp {
        match self.snapshot.read() {
            Ok(g) => g.sim_now,
            Err(poisoned) => poisoned.into_inner().sim_now,
        }
    }

    /// Advances the city to the sim clock's now and publishes it before returning the sim
    /// time served (instead of waiting for the next tick).
    pub async fn sync(&self) -> Result<Timestamp, SimulatorError> {
        let (tx, rx) = oneshot::channel();
        self.sync
            .send(tx)
            .await
            .map_err(|_| SimulatorError::Internal("the simulation task has stopped".into()))?;
        rx.await
            .map_err(|_| SimulatorError::Internal("the simulation task has stopped".into()))
    }

    /// Stops serving (in-flight requests finish) and waits for the tasks.
    pub async fn stop(mut self) -> Result<(), SimulatorError> {
        self.stop.send_replace(true);
        self.join().await
    }

    /// Waits until the shutdown future given to [`serve`] completes and the server stopped.
    pub async fn wait(mut self) -> Result<(), SimulatorError> {
        self.join().await
    }

    async fn join(&mut self) -> Result<(), SimulatorError> {
        if let Some(h) = self.server.take() {
            h.await
                .map_err(|e| SimulatorError::Internal(e.to_string()))?;
        }
        self.stop.send_replace(true);
        if let Some(h) = self.ticker.take() {
            h.await
                .map_err(|e| SimulatorError::Internal(e.to_string()))?;
        }
        if let Some(h) = self.forwarder.take() {
            h.abort();
        }
        Ok(())
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(h) = self.forwarder.take() {
            h.abort();
        }
    }
}

/// Builds the city, binds `config.bind` and serves until `shutdown` completes or
/// [`RunningSimulator::stop`] is called. `wall` is the wall clock the sim clock follows.
pub async fn serve(
    config: SimulatorConfig,
    wall: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningSimulator, SimulatorError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    if let Some(url) = &config.public_base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(SimulatorError::Config {
            field: "public_base_url",
            message: format!("{url:?} is not an http(s) URL"),
        });
    }
    if config.weather_history_days > MAX_WEATHER_HISTORY_DAYS {
        return Err(SimulatorError::Config {
            field: "weather_history_days",
            message: format!("at most {MAX_WEATHER_HISTORY_DAYS}"),
        });
    }
    if config.tick_ms == 0 {
        return Err(SimulatorError::Config {
            field: "tick_ms",
            message: "must be at least 1".into(),
        });
    }
    config.city.validate()?;
    let clock = SimClock::new(wall, config.start, config.time_scale)?;

    let (listener, addr) = SERVER.bind(config.bind).await?;
    let base_url = config.public_base_url.as_deref().map_or_else(
        || format!("http://{}", url_addr(addr)),
        |u| u.trim_end_matches('/').to_owned(),
    );

    // Build the city and the first snapshot off the async threads (large cities take a while).
    let (start, caught_up) = clock.now_and_caught_up();
    let ttl = feeds::ttl_seconds(if caught_up { 1.0 } else { config.time_scale });
    let city_config = config.city.clone();
    let history_days = i64::from(config.weather_history_days);
    let url = base_url.clone();
    let (city, renderer, first) = tokio::task::spawn_blocking(move || {
        let city = City::new(city_config, start)?;
        let renderer = Renderer {
            base_url: url,
            language: city.config().language.clone(),
            system: city.system_information(),
            stations: Arc::new(city.station_information()),
            climate: city.climate().clone(),
            weather_from: city
                .now()
                .plus_millis(-history_days * 24 * Timestamp::HOUR_MS)
                .floor_to(24 * Timestamp::HOUR_MS),
            static_modified: city.now(),
        };
        let first = renderer.snapshot(&city, ttl, None)?;
        Ok::<_, SimulatorError>((city, renderer, first))
    })
    .await
    .map_err(|e| SimulatorError::Internal(e.to_string()))??;

    let station = Arc::new(WeatherStation::of_city(city.config()));
    let lite_body = meteostat::gzip(
        &serde_json::to_vec(&meteostat::lite_stations(&station)).map_err(|source| {
            SimulatorError::Render {
                what: "lite.json.gz",
                source,
            }
        })?,
    )?;
    let snapshot = Arc::new(RwLock::new(Arc::new(first)));
    let state = AppState {
        snapshot: snapshot.clone(),
        climate: renderer.climate.clone(),
        station,
        lite: Arc::new(Rendered::new(lite_body, city.now(), GZIP)),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let (sync_tx, sync_rx) = mpsc::channel(16);
    let tick = Duration::from_millis(config.tick_ms);
    let ticker = tokio::spawn(run_city(
        city,
        clock,
        renderer,
        snapshot.clone(),
        sync_rx,
        stop_rx.clone(),
        tick,
    ));
    let forwarder = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop_tx.send_replace(true);
        })
    };

    let app = router(state, token.map(Arc::new));
    let mut stop_serving = stop_rx;
    let server = SERVER.spawn(listener, app, async move {
        let _ = stop_serving.wait_for(|stop| *stop).await;
    });
    tracing::info!(%addr, %base_url, sim_start = %start, time_scale = config.time_scale, "simulator serving");

    Ok(RunningSimulator {
        addr,
        base_url,
        stop: stop_tx,
        sync: sync_tx,
        snapshot,
        server: Some(server),
        ticker: Some(ticker),
        forwarder: Some(forwarder),
    })
}

/// The address to put in URLs: a wildcard bind (`0.0.0.0`, `::`) is reached on loopback
/// from this machine; other machines need `public_base_url`.
fn url_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Follows the sim clock: steps the city and publishes snapshots.
async fn run_city(
    mut city: City,
    clock: SimClock,
    renderer: Renderer,
    shared: Arc<RwLock<Arc<Snapshot>>>,
    mut sync_rx: mpsc::Receiver<oneshot::Sender<Timestamp>>,
    mut stop: watch::Receiver<bool>,
    tick: Duration,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut ack = None;
        tokio::select! {
            _ = interval.tick() => {}
            Some(tx) = sync_rx.recv() => ack = Some(tx),
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let (now, caught_up) = clock.now_and_caught_up();
        let ttl = feeds::ttl_seconds(if caught_up { 1.0 } else { clock.time_scale() });
        let prev = match shared.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if now.floor_to(Timestamp::MINUTE_MS) > city.now() || ttl != prev.ttl {
            let r = renderer.clone();
            let stepped = tokio::task::spawn_blocking(move || {
                city.advance_to(now);
                let snap = r.snapshot(&city, ttl, Some(&prev));
                (city, snap)
            })
            .await;
            match stepped {
                Ok((c, Ok(snap))) => {
                    city = c;
                    store(&shared, snap);
                }
                Ok((c, Err(e))) => {
                    city = c;
                    tracing::error!(error = %bikeshare_types::error::chain(&e), "cannot render the simulator's feeds");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the simulation step failed; serving the last snapshot");
                    break;
                }
            }
        }
        if let Some(tx) = ack {
            let _ = tx.send(city.now());
        }
    }
}

fn router(state: AppState, token: Option<Arc<Secret>>) -> Router {
    let gbfs = Router::new().route("/gbfs/{version}/{file}", get(gbfs_file));
    let api = Router::new()
        .route("/meteostat/api/stations/nearby", get(meteostat_nearby))
        .route("/meteostat/api/stations/hourly", get(meteostat_hourly))
        .route_layer(from_fn(require_rapidapi_key));
    let bulk = Router::new()
        .route("/meteostat/bulk/hourly/{file}", get(bulk_hourly))
        .route("/meteostat/bulk/stations/lite.json.gz", get(bulk_stations));
    let mut app = gbfs.merge(api).layer(CompressionLayer::new()).merge(bulk);
    if let Some(token) = token {
        app = app.route_layer(from_fn_with_state(token, require_token));
    }
    app.route("/healthz", get(|| async { "ok" }))
        .layer(RequestBodyLimitLayer::new(MAX_REQUEST_BODY))
        .with_state(state)
}

/// Every route but `/healthz`: the bearer token (surrounding spaces ignored), or on the
/// Meteostat routes the token as `x-rapidapi-key`.
async fn require_token(State(token): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = http::bearer_token(headers).is_some_and(|t| token.matches(t.trim().as_bytes()));
    let meteostat_key = req.uri().path().starts_with("/meteostat/")
        && headers
            .get("x-rapidapi-key")
            .is_some_and(|k| token.matches(k.as_bytes()));
    if bearer || meteostat_key {
        next.run(req).await
    } else {
        let mut resp = error_response(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

async fn require_rapidapi_key(req: Request, next: Next) -> Response {
    if req.headers().contains_key("x-rapidapi-key") {
        next.run(req).await
    } else {
        error_response(StatusCode::UNAUTHORIZED, "missing x-rapidapi-key header")
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

fn json_response(value: &Value) -> Response {
    axum::Json(value).into_response()
}

fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not found")
}

/// HTTP-date (IMF-fixdate) of `t`.
fn http_date(t: Timestamp) -> String {
    t.to_datetime()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn etag_matches(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let strip = |s: &str| s.trim().trim_start_matches("W/").to_owned();
    let Ok(ours) = etag.to_str().map(strip) else {
        return false;
    };
    header
        .to_str()
        .map(|h| {
            h.split(',')
                .any(|tag| tag.trim() == "*" || strip(tag) == ours)
        })
        .unwrap_or(false)
}

/// The document, or `304 Not Modified` when the client's validators match.
fn respond(doc: &Rendered, req: &HeaderMap) -> Response {
    let not_modified = match req.get(IF_NONE_MATCH) {
        Some(tags) => etag_matches(tags, &doc.etag),
        None => req
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|since| doc.last_modified_secs <= since.timestamp()),
    };
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(doc.body.clone()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(doc.content_type));
        r
    };
    resp.headers_mut().insert(ETAG, doc.etag.clone());
    resp.headers_mut()
        .insert(LAST_MODIFIED, doc.last_modified.clone());
    resp
}

async fn gbfs_file(
    State(app): State<AppState>,
    Path((version, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (Some(v), Some(f)) = (GbfsVersion::parse(&version), Feed::from_file_name(&file)) else {
        return not_found();
    };
    let snap = app.snapshot();
    match snap.gbfs.get(&(v, f)) {
        Some(doc) => respond(doc, &headers),
        None => not_found(),
    }
}

#[derive(Debug, Deserialize)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    limit: Option<u32>,
}

async fn meteostat_nearby(State(app): State<AppState>, Query(q): Query<NearbyQuery>) -> Response {
    if !(-90.0..=90.0).contains(&q.lat) || !(-180.0..=180.0).contains(&q.lon) {
        return error_response(StatusCode::BAD_REQUEST, "lat/lon out of range");
    }
    json_response(&meteostat::nearby(
        &app.station,
        q.lat,
        q.lon,
        q.limit.unwrap_or(10),
    ))
}

#[derive(Debug, Deserialize)]
struct HourlyQuery {
    station: String,
    start: String,
    end: String,
}

async fn meteostat_hourly(State(app): State<AppState>, Query(q): Query<HourlyQuery>) -> Response {
    let (from, to) = match meteostat::hourly_range(&q.start, &q.end) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let now = app.snapshot().sim_now;
    let hours = if q.station == app.station.id {
        app.climate.hours(from, to.min(now))
    } else {
        Vec::new()
    };
    json_response(&meteostat::hourly(&hours, now))
}

async fn bulk_hourly(
    State(app): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    if file.strip_suffix(".csv.gz") != Some(app.station.id.as_str()) {
        return not_found();
    }
    respond(&app.snapshot().bulk_hourly, &headers)
}

async fn bulk_stations(State(app): State<AppState>, headers: HeaderMap) -> Response {
    respond(&app.lite, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching() {
        let ours = HeaderValue::from_static("W/\"abc\"");
        for (h, m) in [
            ("W/\"abc\"", true),
            ("\"abc\"", true),
            ("\"x\", W/\"abc\"", true),
            ("*", true),
            ("\"x\"", false),
        ] {
            assert_eq!(etag_matches(&HeaderValue::from_static(h), &ours), m, "{h}");
        }
    }

    #[test]
    fn http_dates() {
        let t = Timestamp::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let parsed = chrono::DateTime::parse_from_rfc2822(&http_date(t)).unwrap();
        assert_eq!(parsed.timestamp(), t.secs());
    }

    #[test]
    fn config_defaults_and_redacted_debug() {
        let c: SimulatorConfig =
            serde_json::from_str(r#"{"token": "s3cret", "time_scale": 60}"#).unwrap();
        assert_eq!(c.bind, DEFAULT_BIND);
        assert_eq!(c.time_scale, 60.0);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(serde_json::from_str::<SimulatorConfig>(r#"{"tme_scale": 60}"#).is_err());
    }
}
