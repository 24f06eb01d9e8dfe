//! The Prometheus recorder and the `/metrics` endpoint.
//!
//! [`install`] puts the Prometheus recorder of `metrics-exporter-prometheus` behind the
//! `metrics` facade once per process (durations get histogram buckets, everything else is
//! as recorded) and registers every help text of [`bikeshare_types::metrics::ALL`].
//! [`serve`] answers `GET /metrics` in the text exposition format from our own axum server:
//! 127.0.0.1 by default; any other address requires a bearer token
//! ([`TOKEN_ENV`], the rule of [`bikeshare_runtime::http::Server::token_for_bind`]).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bikeshare_runtime::http::{self, ListenError, Secret, Server};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// Environment variable holding the `/metrics` token (required beyond loopback).
pub const TOKEN_ENV: &str = "BIKESHARE_METRICS_TOKEN";

const SERVER: Server = Server::new("/metrics", TOKEN_ENV);

/// Bucket bounds (seconds) of every `_seconds` histogram: 100 µs to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Settings of the `/metrics` endpoint (`[metrics]` in the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    #[default(true)]
    pub enabled: bool,
    /// Where to listen; port 0 picks a free port (printed at start).
    #[default(SocketAddr::from(([127, 0, 0, 1], 9464)))]
    pub bind: SocketAddr,
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// No token beyond loopback, or the address cannot be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("installing the Prometheus recorder: {0}")]
    Install(String),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, ExporterError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| ExporterError::Install(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            bikeshare_types::metrics::describe_all();
            let _ = HANDLE.set(handle.clone());
            Ok(handle)
        }
        // Another thread won the race: use its handle.
        Err(_) => HANDLE
            .get()
            .cloned()
            .ok_or_else(|| ExporterError::Install("another recorder is installed".into())),
    }
}

/// The installed recorder's handle, if any.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// A running `/metrics` server; its `url` is `/metrics`.
pub type RunningExporter = http::Running;

struct App {
    handle: PrometheusHandle,
    token: Option<Secret>,
}

/// Installs the recorder and serves `/metrics` until `shutdown` resolves. Histograms are
/// compacted every 5 s.
pub async fn serve(
    config: &MetricsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningExporter, ExporterError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    let handle = install()?;
    let (listener, addr) = SERVER.bind(config.bind).await?;
    let app = std::sync::Arc::new(App {
        handle: handle.clone(),
        token,
    });
    let router = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(4 * 1024))
        .with_state(app);
    let task = tokio::spawn(async move {
        let upkeep = async {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        };
        tokio::select! {
            () = SERVER.serve(listener, router, shutdown) => {}
            () = upkeep => {}
        }
    });
    Ok(http::Running::new(addr, "/metrics", task))
}

async fn render(State(app): State<std::sync::Arc<App>>, headers: HeaderMap) -> Response {
    if !http::authorised(app.token.as_ref(), &headers) {
        return http::unauthorised();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.handle.render(),
    )
        .into_response()
}
