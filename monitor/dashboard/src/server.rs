//! The dashboard's HTTP server: the page and the JSON snapshot it long-polls
//! (`/api/state?newer_than=<as_of>` answers once a newer prediction exists).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_types::Timestamp;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use bikeshare_stream_processor::quality::QualityReport;

use crate::state::{DashboardState, Freshness};

/// Environment variable holding the dashboard token (required beyond loopback).
pub const TOKEN_ENV: &str = "BIKESHARE_DASHBOARD_TOKEN";
/// The most stations drawn on the map (the riskiest first).
pub const MAX_MAP_STATIONS: usize = 5000;

const SERVER: Server = Server::new("the dashboard", TOKEN_ENV);

const PAGE: &str = include_str!("../assets/index.html");

/// Settings of the dashboard server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DashboardConfig {
    pub bind: SocketAddr,
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// Rows of the top-N table.
    pub top_n: usize,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8088)),
            token: None,
            top_n: 15,
        }
    }
}

/// Why the server could not start.
pub type DashboardError = http::ListenError;

/// A station on the map or in the table.
#[derive(Debug, Clone, Serialize)]
pub struct StationView {
    pub system_id: String,
    pub station_id: String,
    pub name: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub p_empty: f32,
    pub p_full: f32,
    pub risk: f32,
    /// Risk now minus risk at the previous prediction.
    pub trend: Option<f32>,
    pub as_of: Timestamp,
}

#[derive(Debug, Serialize)]
pub struct SystemView {
    pub system_id: String,
    #[serde(flatten)]
    pub freshness: Freshness,
    /// Seconds from the newest event time to now (data age).
    pub data_age_s: f64,
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
    pub scored_by: std::collections::BTreeMap<&'static str, u64>,
    pub quality: Vec<SystemQuality>,
    /// Where the quality comes from: the predictions and labels streams.
    pub quality_source: &'static str,
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
    /// The largest data age (now minus newest event time) over systems.
    pub watermark_lag_s: Option<f64>,
    pub processing_latency_ms: Option<Percentiles>,
    pub inference_latency_us: Option<Percentiles>,
    pub dead_letters: std::collections::BTreeMap<String, u64>,
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
    pub events: u64,
}

/// The snapshot `GET /api/state` returns.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub generated_at: Timestamp,
    pub model_health: ModelHealth,
    pub system_health: SystemHealth,
    pub feeds: Vec<FeedView>,
    pub systems: Vec<SystemView>,
    pub stations: Vec<StationView>,
    pub top: Vec<StationView>,
}

#[derive(Debug, Deserialize)]
struct Params {
    top: Option<usize>,
    /// Long polling: answer once a prediction newer than this `as_of` exists...
    newer_than: Option<String>,
    /// ...or after this long (at most 25 s).
    wait_ms: Option<u64>,
}

struct App {
    state: Arc<DashboardState>,
    token: Option<Secret>,
    top_n: usize,
}

/// A running dashboard server; its `url` is the page.
pub type RunningDashboard = http::Running;

/// Serves the dashboard until `shutdown` resolves.
pub async fn serve(
    config: DashboardConfig,
    state: Arc<DashboardState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningDashboard, DashboardError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    let app = Arc::new(App {
        state,
        token,
        top_n: config.top_n.clamp(1, 500),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/api/state", get(snapshot))
        .route("/healthz", get(|| async { "ok" }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 * 1024))
        .with_state(app);
    SERVER.start(config.bind, "/", router, shutdown).await
}

/// The page holds no data; with a token, open it as `/#token=<token>` and its requests carry
/// the token (a URL fragment never reaches the server or its logs).
async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn snapshot(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    if let Some(since) = p.newer_than.as_deref().and_then(Timestamp::parse_rfc3339) {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(p.wait_ms.unwrap_or(10_000).min(25_000));
        while app
            .state
            .newest_as_of
            .load(std::sync::atomic::Ordering::Relaxed)
            <= since.millis()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    axum::Json(build_snapshot(
        &app.state,
        p.top.unwrap_or(app.top_n).clamp(1, 500),
    ))
    .into_response()
}

/// The snapshot of `state` now.
pub fn build_snapshot(state: &DashboardState, top_n: usize) -> Snapshot {
    let now = state.clock.now();
    let mut stations: Vec<StationView> = state
        .risk
        .iter()
        .map(|r| {
            let (system, station) = r.key();
            let meta = state.stations.get(&(system.clone(), station.clone()));
            let p = &r.value().prediction;
            let risk = p.p_empty.max(p.p_full);
            StationView {
                system_id: system.to_string(),
                station_id: station.to_string(),
                name: meta.as_ref().map(|m| m.name.clone()),
                lat: meta.as_ref().map(|m| m.lat),
                lon: meta.as_ref().map(|m| m.lon),
                p_empty: p.p_empty,
                p_full: p.p_full,
                risk,
                trend: r.value().previous_risk.map(|prev| risk - prev),
                as_of: p.as_of,
            }
        })
        .collect();
    stations.sort_by(|a, b| {
        OrderedFloat(b.risk)
            .cmp(&OrderedFloat(a.risk))
            .then_with(|| a.station_id.cmp(&b.station_id))
    });
    stations.truncate(MAX_MAP_STATIONS);
    let top = stations.iter().take(top_n).cloned().collect();
    let mut systems: Vec<SystemView> = state
        .freshness
        .iter()
        .map(|f| SystemView {
            system_id: f.key().to_string(),
            freshness: *f.value(),
            data_age_s: (now.millis() - f.value().newest_event_time.millis()) as f64 / 1000.0,
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
        .map(|e| FeedView {
            system_id: e.key().0.to_string(),
            feed: e.key().1.clone(),
            newest_event_time: e.value().0,
            age_s: (now.millis() - e.value().0.millis()) as f64 / 1000.0,
            events: e.value().1,
        })
        .collect();
    feeds.sort_by(|a, b| (&a.system_id, &a.feed).cmp(&(&b.system_id, &b.feed)));
    let per_s = |r: &std::sync::Mutex<crate::state::RateCounter>| {
        r.lock().map(|r| r.per_minute(now.millis())).unwrap_or(0) as f64 / 60.0
    };
    Snapshot {
        generated_at: now,
        model_health: ModelHealth {
            model: state.model.lock().ok().and_then(|m| m.clone()),
            scored_by: scored_by.clone(),
            quality,
            quality_source: "predictions joined with labels",
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
            millis_behind_latest: state.runner.get().map(|r| {
                r.millis_behind_latest
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
            }),
            watermark_lag_s: systems.iter().map(|s| s.data_age_s).reduce(f64::max),
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
        feeds,
        systems,
        stations,
        top,
    }
}
