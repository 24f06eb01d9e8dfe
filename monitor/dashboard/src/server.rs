//! The dashboard's HTTP server: the page, its vendored assets and the JSON it polls.
//!
//! - `GET /`: the page; `GET /assets/…`: Leaflet and uPlot, vendored from their npm packages
//!   and embedded in the binary ([`assets`]).
//! - `GET /api/config`: what the page needs to start (base tiles, thresholds, links).
//! - `GET /api/state?since=<version>`: the panels, and the stations changed since `version`
//!   (all of them without `since`); long-polls until something changed (`wait_ms`, at most
//!   25 s). Every JSON answer is gzip-compressed when the client accepts it and carries an
//!   `ETag` (`If-None-Match` gets `304`).
//! - `GET /api/history?after=<ms>`: the process-wide samples after `after`.
//! - `GET /api/station?system=<id>&id=<id>`: one station's drill-down.
//! - `GET /grafana-dashboard.json`: the Grafana dashboard of the same metrics.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_types::{StationId, SystemId, Timestamp};
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use bikeshare_stream_processor::quality::QualityReport;

use crate::assets;
use crate::state::{
    AlertRuleInfo, AlertsState, DashboardState, Freshness, HistorySample, JobInfo, PredictionPoint,
    ReportPoint, Settings, ShardLag, StationKey,
};

/// Environment variable holding the dashboard token (required beyond loopback).
pub const TOKEN_ENV: &str = "BIKESHARE_DASHBOARD_TOKEN";
/// The most stations sent to the map (the riskiest first): every station of the GBFS
/// systems catalogue (~225k) fits.
pub const MAX_MAP_STATIONS: usize = 250_000;
/// Stale stations listed (their count is always given).
pub const MAX_STALE_LISTED: usize = 50;
/// Neighbours shown in a station's drill-down.
pub const NEIGHBOURS: usize = 6;

const SERVER: Server = Server::new("the dashboard", TOKEN_ENV);

const GRAFANA_JSON: &str = include_str!("../../../infra/monitoring/grafana-dashboard.json");

/// Settings of the dashboard server (`[dashboard]`).
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct DashboardConfig {
    #[default(SocketAddr::from(([127, 0, 0, 1], 8088)))]
    pub bind: SocketAddr,
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// Rows of the top-N table.
    #[default(15)]
    pub top_n: usize,
    /// Base map tiles, an `{z}/{x}/{y}` URL template (Leaflet's `L.tileLayer`). Empty (the
    /// default): no tiles, stations on a plain background, and the page works offline.
    /// In production, a tile service you are allowed to load at your traffic (Amazon
    /// Location Service maps, or a self-hosted tile server); not the public OpenStreetMap
    /// servers, whose usage policy forbids heavy and production use.
    pub tile_url: String,
    /// The attribution the tile provider requires, shown on the map.
    pub tile_attribution: String,
    /// The deepest zoom the tiles offer.
    #[default(19)]
    pub tile_max_zoom: u8,
    /// Risk below this is drawn neutral (grey): the base rate is a few percent, and colour
    /// should single out the stations that matter.
    #[default(0.1)]
    pub risk_neutral_below: f32,
    /// Quality figures over fewer positives than this are greyed, with a note.
    #[default(30)]
    pub min_positives: usize,
    /// A prediction older than this behind its system's newest one is stale (seconds).
    #[default(1800)]
    pub stale_after_secs: u64,
    /// History kept for the charts and each station's drill-down (hours).
    #[default(6)]
    pub history_hours: u64,
    /// One process-wide sample this often (ms).
    #[default(10_000)]
    pub sample_every_ms: u64,
}

impl DashboardConfig {
    /// What the state keeps, from these settings.
    pub fn settings(&self) -> Settings {
        Settings {
            history_ms: i64::try_from(self.history_hours.clamp(1, 72))
                .unwrap_or(6)
                .saturating_mul(Timestamp::HOUR_MS),
            sample_every_ms: self.sample_every_ms.max(100),
            stale_after_ms: i64::try_from(self.stale_after_secs.max(1))
                .unwrap_or(1800)
                .saturating_mul(1000),
        }
    }
}

/// Why the server could not start.
pub type DashboardError = http::ListenError;

/// The columns of a station row (`StateView::stations`, `top`, `stale`): compact, so 50,000
/// stations fit in one answer. Times are ms since the epoch (UTC).
pub const STATION_COLUMNS: [&str; 13] = [
    "system_id",
    "station_id",
    "name",
    "lat",
    "lon",
    "capacity",
    "bikes",
    "docks",
    "last_reported",
    "p_empty",
    "p_full",
    "trend",
    "as_of",
];

/// One station, serialised as a row of [`STATION_COLUMNS`].
#[derive(Debug, Clone, PartialEq)]
pub struct StationRow {
    pub system_id: String,
    pub station_id: String,
    pub name: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub capacity: Option<u32>,
    pub bikes: Option<u32>,
    pub docks: Option<u32>,
    pub last_reported: Option<i64>,
    pub p_empty: Option<f64>,
    pub p_full: Option<f64>,
    pub trend: Option<f64>,
    pub as_of: Option<i64>,
}

impl StationRow {
    /// The larger of `p_empty` and `p_full` (0 without a prediction).
    pub fn risk(&self) -> f64 {
        self.p_empty.unwrap_or(0.0).max(self.p_full.unwrap_or(0.0))
    }
}

impl Serialize for StationRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            &self.system_id,
            &self.station_id,
            &self.name,
            self.lat,
            self.lon,
            self.capacity,
            self.bikes,
            self.docks,
            self.last_reported,
            self.p_empty,
            self.p_full,
            self.trend,
            self.as_of,
        )
            .serialize(s)
    }
}

#[derive(Debug, Serialize)]
pub struct SystemView {
    pub system_id: String,
    #[serde(flatten)]
    pub freshness: Freshness,
    /// Seconds from the newest event time to now (data age).
    pub data_age_s: f64,
    /// The newest prediction's `as_of` (ms): staleness is judged against it.
    pub newest_prediction_ms: Option<i64>,
    /// The newest station report's event time (ms): a report's age is judged against it.
    pub newest_report_ms: Option<i64>,
}

/// Live quality of one system.
#[derive(Debug, Serialize)]
pub struct SystemQuality {
    pub system_id: String,
    pub report: QualityReport,
}

/// Median and 99th percentile.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
}

/// The model-health panel.
#[derive(Debug, Serialize)]
pub struct ModelHealth {
    pub model: Option<bikeshare_types::contracts::ModelRef>,
    pub scored_by: BTreeMap<&'static str, u64>,
    pub quality: Vec<SystemQuality>,
    /// Where the quality comes from: the predictions and labels streams.
    pub quality_source: &'static str,
    /// Figures over fewer positives than this are not to be trusted.
    pub min_positives: usize,
    /// The latest drift evaluation (none until a drift monitor reports one).
    pub drift: Option<serde_json::Value>,
}

/// The system-health panel.
#[derive(Debug, Serialize)]
pub struct SystemHealth {
    pub events_per_s: f64,
    pub predictions_per_s: f64,
    pub last_prediction_age_s: Option<f64>,
    pub millis_behind_latest: Option<f64>,
    /// Now minus [`Self::watermark_ms`], seconds.
    pub watermark_lag_s: Option<f64>,
    /// The newest station report's event time (the oldest over systems), ms.
    pub watermark_ms: Option<i64>,
    pub processing_latency_ms: Option<Percentiles>,
    pub inference_latency_us: Option<Percentiles>,
    pub dead_letters: BTreeMap<String, u64>,
    pub dead_letters_total: u64,
    pub fallbacks: u64,
    pub unavailable: u64,
}

/// Freshness of one feed of one system.
#[derive(Debug, Serialize)]
pub struct FeedView {
    pub system_id: String,
    pub feed: String,
    pub newest_event_time: Timestamp,
    pub age_s: f64,
    /// Since the feed last brought news (see `freshness`).
    pub silence_s: f64,
    pub events: u64,
    /// The feed's own period (see `freshness`): stale after two of them without news.
    pub period_s: u32,
    pub stale: bool,
}

/// Whether the job keeps up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No event seen yet.
    Waiting,
    /// Event time close to the wall clock and no backlog on the stream.
    RealTime,
    /// A backlog on the stream, or event time (of reports or of predictions) running faster
    /// than the wall clock (a replay being processed, or a simulator catching up).
    CatchingUp,
    /// Event time far behind the wall clock and not closing in: historical data, or input
    /// that stopped.
    Behind,
}

/// [`Mode`] and the figures it was judged from.
#[derive(Debug, Clone, Serialize)]
pub struct ModeView {
    pub mode: Mode,
    /// Event time gained per wall-clock second over the last samples (1 = real time).
    pub speed: Option<f64>,
}

/// Event time within this of the wall clock is real time.
pub const REAL_TIME_LAG_S: f64 = 600.0;
/// A stream backlog above this is catching up.
pub const BACKLOG_MS: f64 = 60_000.0;

/// One sample of event-time progress: wall ms, newest report ms, newest prediction ms.
pub type Progress = (i64, Option<i64>, Option<i64>);

/// Judges the mode from the stream backlog, the watermark lag and how fast event time
/// moved over the last samples (`recent`, oldest first); of reports and predictions, the
/// faster gives the speed.
pub fn judge_mode(
    millis_behind_latest: Option<f64>,
    watermark_lag_s: Option<f64>,
    recent: &[Progress],
) -> ModeView {
    let speed_of = |pick: fn(&Progress) -> Option<i64>| {
        let points: Vec<(i64, i64)> = recent
            .iter()
            .filter_map(|r| pick(r).map(|v| (r.0, v)))
            .collect();
        match (points.first(), points.last()) {
            (Some(a), Some(b)) if b.0 - a.0 >= 1000 => {
                Some((b.1 - a.1) as f64 / (b.0 - a.0) as f64)
            }
            _ => None,
        }
    };
    let speed = match (speed_of(|r| r.1), speed_of(|r| r.2)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mode = match watermark_lag_s {
        None => Mode::Waiting,
        Some(_) if millis_behind_latest.is_some_and(|b| b > BACKLOG_MS) => Mode::CatchingUp,
        Some(lag) if lag <= REAL_TIME_LAG_S => Mode::RealTime,
        Some(_) if speed.is_some_and(|s| s > 1.5) => Mode::CatchingUp,
        Some(_) => Mode::Behind,
    };
    ModeView { mode, speed }
}

/// Uptime, restarts and the links of the ops panel.
#[derive(Debug, Serialize)]
pub struct ProcessView {
    pub started_at: Timestamp,
    pub uptime_s: f64,
    pub job: Option<JobInfo>,
    pub metrics_url: Option<String>,
    pub grafana_url: &'static str,
}

/// The ops panel.
#[derive(Debug, Serialize)]
pub struct OpsView {
    pub mode: ModeView,
    pub shards: Vec<ShardLag>,
    pub checkpoint_age_s: Option<f64>,
    pub alerts: AlertsState,
    pub alert_rules: Vec<AlertRuleInfo>,
    pub process: ProcessView,
}

/// What `GET /api/state` returns.
#[derive(Debug, Serialize)]
pub struct StateView {
    /// Send it back as `since` to get only what changed after this answer.
    pub version: u64,
    /// Whether `stations` holds every station (else only those changed since `since`).
    pub full: bool,
    pub generated_at: Timestamp,
    pub stale_after_s: f64,
    pub columns: [&'static str; 13],
    pub stations: Vec<StationRow>,
    pub stations_total: usize,
    /// The riskiest stations among those with a fresh prediction.
    pub top: Vec<StationRow>,
    /// Stations whose newest prediction is stale, the most recent first.
    pub stale: Vec<StationRow>,
    pub stale_total: usize,
    pub model_health: ModelHealth,
    pub system_health: SystemHealth,
    pub ops: OpsView,
    pub feeds: Vec<FeedView>,
    pub systems: Vec<SystemView>,
}

/// What `GET /api/config` returns.
#[derive(Debug, Serialize)]
pub struct PageConfig {
    pub tile_url: String,
    pub tile_attribution: String,
    pub tile_max_zoom: u8,
    pub risk_neutral_below: f32,
    pub min_positives: usize,
    pub top_n: usize,
    pub history_hours: u64,
    pub columns: [&'static str; 13],
}

/// A neighbour in a station's drill-down.
#[derive(Debug, Serialize)]
pub struct Neighbour {
    pub distance_m: f64,
    pub station: StationRow,
}

/// What `GET /api/station` returns.
#[derive(Debug, Serialize)]
pub struct StationDetail {
    pub station: StationRow,
    pub stale: bool,
    pub is_renting: Option<bool>,
    pub is_returning: Option<bool>,
    pub reports: Vec<ReportPoint>,
    pub predictions: Vec<PredictionPoint>,
    pub neighbours: Vec<Neighbour>,
}

#[derive(Debug, Deserialize)]
struct StateParams {
    top: Option<usize>,
    /// Only the stations changed after this version; long-polls until there are some...
    since: Option<u64>,
    /// ...or for this long (at most 25 s; default 10 s).
    wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    after: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct StationParams {
    system: String,
    id: String,
}

struct App {
    state: Arc<DashboardState>,
    token: Option<Secret>,
    config: DashboardConfig,
}

/// A running dashboard server; its `url` is the page.
pub type RunningDashboard = http::Running;

/// The dashboard's routes over `state` (without the listener: tests can call them).
pub fn router(
    config: DashboardConfig,
    state: Arc<DashboardState>,
    token: Option<Secret>,
) -> Router {
    let mut config = config;
    config.top_n = config.top_n.clamp(1, 500);
    let app = Arc::new(App {
        state,
        token,
        config,
    });
    Router::new()
        .route("/", get(page))
        .route("/assets/{*path}", get(asset))
        .route("/api/config", get(page_config))
        .route("/api/state", get(state_view))
        .route("/api/history", get(history))
        .route("/api/station", get(station))
        .route("/grafana-dashboard.json", get(grafana))
        .route("/healthz", get(|| async { "ok" }))
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .with_state(app)
}

/// Serves the dashboard until `shutdown` resolves.
pub async fn serve(
    config: DashboardConfig,
    state: Arc<DashboardState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningDashboard, DashboardError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    let bind = config.bind;
    SERVER
        .start(bind, "/", router(config, state, token), shutdown)
        .await
}

/// A body with an `ETag` (a hash of the bytes); `304` when the client holds it already.
fn with_etag(
    headers: &HeaderMap,
    content_type: &'static str,
    body: Vec<u8>,
    cache: &'static str,
) -> Response {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    let etag = format!("\"{:016x}\"", h.finish());
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn json<T: Serialize>(headers: &HeaderMap, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with_etag(headers, "application/json", body, "no-cache"),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: cannot encode an answer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The page holds no data; with a token, open it as `/#token=<token>` and its requests carry
/// the token (a URL fragment never reaches the server or its logs).
async fn page(headers: HeaderMap) -> Response {
    with_etag(
        &headers,
        "text/html; charset=utf-8",
        assets::PAGE.as_bytes().to_vec(),
        "no-cache",
    )
}

async fn asset(headers: HeaderMap, Path(path): Path<String>) -> Response {
    match assets::find(&path) {
        Some((content_type, bytes)) => {
            with_etag(&headers, content_type, bytes.to_vec(), "no-cache")
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn grafana(headers: HeaderMap) -> Response {
    with_etag(
        &headers,
        "application/json",
        GRAFANA_JSON.as_bytes().to_vec(),
        "no-cache",
    )
}

async fn page_config(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    let c = &app.config;
    json(
        &headers,
        &PageConfig {
            tile_url: c.tile_url.clone(),
            tile_attribution: c.tile_attribution.clone(),
            tile_max_zoom: c.tile_max_zoom,
            risk_neutral_below: c.risk_neutral_below,
            min_positives: c.min_positives,
            top_n: c.top_n,
            history_hours: c.history_hours,
            columns: STATION_COLUMNS,
        },
    )
}

async fn state_view(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<StateParams>,
) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    let since = known_version(p.since, app.state.version());
    if let Some(since) = since {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(p.wait_ms.unwrap_or(10_000).min(25_000));
        while app.state.version() <= since && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let view = build_state(
        &app.state,
        p.top.unwrap_or(app.config.top_n).clamp(1, 500),
        app.config.min_positives,
        since,
    );
    json(&headers, &view)
}

async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<HistoryParams>,
) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    let after = p.after.unwrap_or(i64::MIN);
    let samples: Vec<HistorySample> = app
        .state
        .history
        .lock()
        .map(|h| h.iter().filter(|s| s.t > after).cloned().collect())
        .unwrap_or_default();
    json(&headers, &samples)
}

async fn station(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<StationParams>,
) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    let key = (SystemId::new(p.system), StationId::new(p.id));
    match station_detail(&app.state, &key) {
        Some(d) => json(&headers, &d),
        None => (StatusCode::NOT_FOUND, "no such station").into_response(),
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// The row of one station, from whatever the state holds about it.
pub fn station_row(state: &DashboardState, key: &StationKey) -> StationRow {
    let meta = state.stations.get(key);
    let report = state.reports.get(key).and_then(|r| r.latest);
    let risk = state.risk.get(key);
    let p = risk.as_ref().map(|r| &r.prediction);
    let trend = risk.as_ref().and_then(|r| {
        r.previous_risk
            .map(|prev| f64::from(r.prediction.p_empty.max(r.prediction.p_full) - prev))
    });
    StationRow {
        system_id: key.0.to_string(),
        station_id: key.1.to_string(),
        name: meta.as_ref().map(|m| m.name.clone()),
        lat: meta.as_ref().map(|m| round(m.lat, 6)),
        lon: meta.as_ref().map(|m| round(m.lon, 6)),
        capacity: meta.as_ref().and_then(|m| m.capacity),
        bikes: report.map(|r| r.bikes),
        docks: report.and_then(|r| r.docks),
        last_reported: report.map(|r| r.t),
        p_empty: p.map(|p| round(f64::from(p.p_empty), 4)),
        p_full: p.map(|p| round(f64::from(p.p_full), 4)),
        trend: trend.map(|t| round(t, 4)),
        as_of: p.map(|p| p.as_of.millis()),
    }
}

/// `since` if this process can have issued it: a version above the current one comes from an
/// earlier process (a page open across a restart), and gets a full answer, not a wait for a
/// version this process may never reach and then a delta against stations it never sent.
fn known_version(since: Option<u64>, version: u64) -> Option<u64> {
    since.filter(|&s| s <= version)
}

/// The state now; with `since`, only the stations changed after it.
pub fn build_state(
    state: &DashboardState,
    top_n: usize,
    min_positives: usize,
    since: Option<u64>,
) -> StateView {
    let now = state.clock.now();
    // The version first: a change racing this build is sent again next time, never lost.
    let version = state.version();
    let changed = state.changed_since(since.unwrap_or(0));
    let mut stations: Vec<StationRow> =
        changed.iter().map(|(k, _)| station_row(state, k)).collect();
    stations.sort_by(|a, b| {
        OrderedFloat(b.risk())
            .cmp(&OrderedFloat(a.risk()))
            .then_with(|| (&a.system_id, &a.station_id).cmp(&(&b.system_id, &b.station_id)))
    });
    stations.truncate(MAX_MAP_STATIONS);

    // Top-N from fresh predictions only; stale ones listed apart.
    let mut fresh: Vec<(OrderedFloat<f32>, StationKey)> = Vec::new();
    let mut stale: Vec<(i64, StationKey)> = Vec::new();
    for r in state.risk.iter() {
        let p = &r.value().prediction;
        if state.is_stale(&p.system_id, p.as_of) {
            stale.push((p.as_of.millis(), r.key().clone()));
        } else {
            fresh.push((OrderedFloat(p.p_empty.max(p.p_full)), r.key().clone()));
        }
    }
    fresh.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top = fresh
        .iter()
        .take(top_n)
        .map(|(_, k)| station_row(state, k))
        .collect();
    stale.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let stale_total = stale.len();
    let stale = stale
        .iter()
        .take(MAX_STALE_LISTED)
        .map(|(_, k)| station_row(state, k))
        .collect();

    let mut systems: Vec<SystemView> = state
        .freshness
        .iter()
        .map(|f| SystemView {
            system_id: f.key().to_string(),
            freshness: *f.value(),
            data_age_s: (now.millis() - f.value().newest_event_time.millis()) as f64 / 1000.0,
            newest_prediction_ms: state.newest_as_of_by_system.get(f.key()).map(|v| *v),
            newest_report_ms: state
                .feeds
                .get(&(f.key().clone(), "station_status".to_owned()))
                .map(|e| e.newest.millis()),
        })
        .collect();
    systems.sort_by(|a, b| a.system_id.cmp(&b.system_id));
    let quality = state
        .quality
        .lock()
        .map(|q| {
            q.iter()
                .map(|(id, lq)| SystemQuality {
                    system_id: id.to_string(),
                    report: lq.summary(&state.quality_config),
                })
                .collect()
        })
        .unwrap_or_default();
    let scored_by = state
        .scored_by
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let dead_letters = state
        .dead_letters
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut feeds: Vec<FeedView> = state
        .feeds
        .iter()
        .map(|e| {
            let seen = e.value();
            FeedView {
                system_id: e.key().0.to_string(),
                feed: e.key().1.clone(),
                newest_event_time: seen.newest,
                age_s: seen.age_ms(now) as f64 / 1000.0,
                silence_s: seen.silence_ms(now) as f64 / 1000.0,
                events: seen.events,
                period_s: seen.period_s(),
                stale: seen.is_stale(now),
            }
        })
        .collect();
    feeds.sort_by(|a, b| (&a.system_id, &a.feed).cmp(&(&b.system_id, &b.feed)));
    let per_s = |r: &std::sync::Mutex<crate::state::RateCounter>| {
        r.lock().map(|r| r.per_minute(now.millis())).unwrap_or(0) as f64 / 60.0
    };
    let ops = state.ops.lock().map(|o| o.clone()).unwrap_or_default();
    let millis_behind_latest = ops
        .shards
        .iter()
        .filter_map(|s| s.millis_behind_latest)
        .reduce(f64::max)
        .or_else(|| {
            state.runner.get().map(|r| {
                r.millis_behind_latest
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
            })
        });
    let watermark_ms = state.watermark_ms();
    let watermark_lag_s = watermark_ms.map(|w| (now.millis() - w) as f64 / 1000.0);
    let recent: Vec<Progress> = state
        .history
        .lock()
        .map(|h| {
            let n = h.len();
            h.iter()
                .skip(n.saturating_sub(7))
                .map(|s| (s.t, s.newest_event_ms, s.newest_prediction_ms))
                .collect()
        })
        .unwrap_or_default();
    StateView {
        version,
        full: since.is_none(),
        generated_at: now,
        stale_after_s: state.settings.stale_after_ms as f64 / 1000.0,
        columns: STATION_COLUMNS,
        stations,
        stations_total: state.station_count(),
        top,
        stale,
        stale_total,
        model_health: ModelHealth {
            model: state.model.lock().ok().and_then(|m| m.clone()),
            scored_by: scored_by.clone(),
            quality,
            quality_source: "predictions joined with labels",
            min_positives,
            drift: state.drift.lock().ok().and_then(|d| d.clone()),
        },
        system_health: SystemHealth {
            events_per_s: per_s(&state.events_rate),
            predictions_per_s: per_s(&state.predictions_rate),
            last_prediction_age_s: state
                .newest_prediction_arrival
                .lock()
                .ok()
                .and_then(|t| *t)
                .map(|t| (now.millis() - t.millis()) as f64 / 1000.0),
            millis_behind_latest,
            watermark_lag_s,
            watermark_ms,
            processing_latency_ms: state
                .runner
                .get()
                .and_then(|r| r.processing_latency.quantiles([0.5, 0.99]))
                .map(|[p50, p99]| Percentiles {
                    p50: p50 * 1e3,
                    p99: p99 * 1e3,
                }),
            inference_latency_us: state
                .runner
                .get()
                .and_then(|r| r.inference_latency.quantiles([0.5, 0.99]))
                .map(|[p50, p99]| Percentiles {
                    p50: p50 * 1e6,
                    p99: p99 * 1e6,
                }),
            dead_letters_total: dead_letters.values().sum(),
            dead_letters,
            fallbacks: scored_by.get("fallback").copied().unwrap_or(0),
            unavailable: scored_by.get("unavailable").copied().unwrap_or(0),
        },
        ops: OpsView {
            mode: judge_mode(millis_behind_latest, watermark_lag_s, &recent),
            shards: ops.shards,
            checkpoint_age_s: ops.checkpoint_age_s,
            alerts: state.alerts.lock().map(|a| a.clone()).unwrap_or_default(),
            alert_rules: state.alert_rules.get().cloned().unwrap_or_default(),
            process: ProcessView {
                started_at: state.started_at,
                uptime_s: (now.millis() - state.started_at.millis()) as f64 / 1000.0,
                job: state.job.get().cloned(),
                metrics_url: state.metrics_url.get().cloned(),
                grafana_url: "/grafana-dashboard.json",
            },
        },
        feeds,
        systems,
    }
}

/// Distance in metres between two points (haversine).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * h.sqrt().asin()
}

/// One station's drill-down: its reports and predictions (with labels) over the kept
/// history, and its nearest neighbours in the same system.
pub fn station_detail(state: &DashboardState, key: &StationKey) -> Option<StationDetail> {
    let known = state.stations.contains_key(key)
        || state.risk.contains_key(key)
        || state.reports.contains_key(key);
    if !known {
        return None;
    }
    let at = state.stations.get(key).map(|m| (m.lat, m.lon));
    let mut neighbours: Vec<(f64, StationKey)> = match at {
        Some(at) => state
            .stations
            .iter()
            .filter(|e| e.key().0 == key.0 && e.key() != key)
            .map(|e| {
                (
                    distance_m(at, (e.value().lat, e.value().lon)),
                    e.key().clone(),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    neighbours.sort_by(|a, b| a.0.total_cmp(&b.0));
    let reports = state.reports.get(key);
    let risk = state.risk.get(key);
    Some(StationDetail {
        station: station_row(state, key),
        stale: risk
            .as_ref()
            .is_some_and(|r| state.is_stale(&key.0, r.prediction.as_of)),
        is_renting: reports.as_ref().map(|r| r.is_renting),
        is_returning: reports.as_ref().map(|r| r.is_returning),
        reports: reports
            .as_ref()
            .map(|r| r.history.iter().copied().collect())
            .unwrap_or_default(),
        predictions: risk
            .as_ref()
            .map(|r| r.history.iter().copied().collect())
            .unwrap_or_default(),
        neighbours: neighbours
            .into_iter()
            .take(NEIGHBOURS)
            .map(|(d, k)| Neighbour {
                distance_m: d.round(),
                station: station_row(state, &k),
            })
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_version_from_an_earlier_process_gets_a_full_answer() {
        use bikeshare_types::time::ManualClock;
        // This process started at t = 5,000 s: its versions start there.
        let clock = Arc::new(ManualClock::new(Timestamp(5_000_000)));
        let state = DashboardState::new(
            clock,
            bikeshare_stream_processor::quality::QualityConfig::default(),
        );
        let v = state.version();
        assert_eq!(v, 5_000_000);
        assert_eq!(known_version(Some(v), v), Some(v));
        assert_eq!(known_version(None, v), None);
        // A busy earlier process had gone further: answered in full, not waited on. (A quieter
        // one started earlier, so its versions are below every change of this process: the
        // delta holds every station.)
        assert_eq!(known_version(Some(v + 1_000), v), None);
    }

    #[test]
    fn the_mode_follows_backlog_lag_and_speed() {
        assert_eq!(judge_mode(None, None, &[]).mode, Mode::Waiting);
        assert_eq!(judge_mode(Some(10.0), Some(30.0), &[]).mode, Mode::RealTime);
        assert_eq!(
            judge_mode(Some(120_000.0), Some(30.0), &[]).mode,
            Mode::CatchingUp
        );
        // A simulator six hours back running 60x: event time gains 60 s per second.
        let fast = [(0, Some(0), None), (10_000, Some(600_000), None)];
        let v = judge_mode(Some(0.0), Some(6.0 * 3600.0), &fast);
        assert_eq!(v.mode, Mode::CatchingUp);
        assert!((v.speed.unwrap() - 60.0).abs() < 1e-9);
        // A replay of 2021 published at once: its reports stand still, but its predictions
        // race ahead while a processor works through it...
        let processing = [
            (0, Some(0), Some(-1_000_000)),
            (10_000, Some(0), Some(9_000_000)),
        ];
        let v = judge_mode(None, Some(1.8e8), &processing);
        assert_eq!(v.mode, Mode::CatchingUp);
        assert!((v.speed.unwrap() - 1000.0).abs() < 1e-9);
        // ...and once it is done, far behind and not moving.
        let still = [(0, Some(0), Some(0)), (10_000, Some(0), Some(0))];
        assert_eq!(
            judge_mode(Some(0.0), Some(1.8e8), &still).mode,
            Mode::Behind
        );
    }

    fn prediction(station: &str, as_of_min: i64, p: f32) -> bikeshare_types::contracts::Prediction {
        bikeshare_testkit::envelopes::prediction(
            "c",
            station,
            Timestamp(as_of_min * 60_000),
            p,
            0.0,
        )
    }

    #[test]
    fn the_top_n_takes_fresh_predictions_and_deltas_only_changed_stations() {
        let clock = Arc::new(bikeshare_types::time::ManualClock::new(Timestamp(0)));
        let state = DashboardState::new(
            clock,
            bikeshare_stream_processor::quality::QualityConfig::default(),
        );
        // "old" was the riskiest, but stopped reporting an hour before the others.
        state.apply_prediction(prediction("old", 0, 0.99), Timestamp(0));
        for (i, p) in [0.5, 0.3, 0.2].into_iter().enumerate() {
            state.apply_prediction(prediction(&format!("s{i}"), 60, p), Timestamp(0));
        }
        let full = build_state(&state, 2, 30, None);
        assert!(full.full);
        assert_eq!(full.stations.len(), 4);
        let top: Vec<&str> = full.top.iter().map(|r| r.station_id.as_str()).collect();
        assert_eq!(top, ["s0", "s1"]);
        assert_eq!(full.stale_total, 1);
        assert_eq!(full.stale[0].station_id, "old");
        // Only what changed after the version held.
        state.apply_prediction(prediction("s2", 65, 0.9), Timestamp(0));
        let delta = build_state(&state, 2, 30, Some(full.version));
        assert!(!delta.full);
        assert_eq!(delta.stations.len(), 1);
        assert_eq!(delta.stations[0].station_id, "s2");
        assert!(delta.version > full.version);
        assert_eq!(delta.top[0].station_id, "s2");
        // Rows serialise in the order of STATION_COLUMNS.
        let row = serde_json::to_value(&delta.stations[0]).unwrap_or_default();
        assert_eq!(row.as_array().map(Vec::len), Some(STATION_COLUMNS.len()));
        assert_eq!(row[1], "s2");
        assert_eq!(row[9], 0.9);
    }

    #[test]
    fn distances_are_metres() {
        // One degree of latitude is about 111 km.
        let d = distance_m((42.0, -71.0), (43.0, -71.0));
        assert!((d - 111_195.0).abs() < 100.0, "{d}");
    }
}
