//! `bikeshare serve-model`: the SageMaker inference-container contract over HTTP.
//!
//! - `GET /ping`: 200 once a model is loaded (503 before).
//! - `POST /invocations`: the container contract SageMaker calls.
//! - `POST /endpoints/{name}/invocations`: the path the SageMaker *runtime* API
//!   (`InvokeEndpoint`) uses, so `aws-sdk-sagemakerruntime` pointed at this server through
//!   `endpoint_url` talks to it like to a real endpoint. Errors on this path are wrapped the
//!   way SageMaker wraps a container's: status 424, `x-amzn-ErrorType: ModelError`, a JSON
//!   body with `OriginalStatusCode` and `OriginalMessage` (the SDK reports a `ModelError`).
//!
//! Requests: many stations per request, one row each, the features in the model's schema
//! order (`feature_schema_id` of its card).
//!
//! - `text/csv`: one line per station, comma-separated numbers; an empty field (or `nan`)
//!   is a missing value. No header.
//! - `application/jsonlines`: one object per line, `{"station_id": "S1", "features": [3, null, 0.5, ...]}`
//!   (`station_id` optional, echoed back; `null` is a missing value).
//!
//! Responses, in the `Accept` type (default: the request's type): CSV lines `p_empty,p_full`,
//! or JSON lines `{"station_id": "S1", "p_empty": 0.12, "p_full": 0.01}`, one per input row in
//! order. Probabilities are printed as the shortest decimal that reads back as the same f32,
//! so a client gets exactly the in-process numbers.
//!
//! The response header `X-Amzn-SageMaker-Custom-Attributes` says which model answered:
//! `model=<name>;version=<v>;feature_schema_id=<id>` (SageMaker forwards it to the caller).
//! A request may send `feature_schema_id=<id>` in its custom attributes: another schema than
//! the model's is refused (400) instead of scoring shifted features.
//!
//! Payloads above 6 MB (SageMaker's limit; configurable) get 413. A bad row fails the whole
//! request with 400 and a message naming the row and column.
//!
//! The server binds 127.0.0.1:8080 by default. On any other address it refuses to start
//! without a token (`BIKESHARE_MODEL_TOKEN`); requests then carry it as
//! `Authorization: Bearer <token>` or, through the SageMaker API (whose `Authorization` is
//! the SigV4 signature), as `token=<token>` in the custom attributes.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bikeshare_runtime::http::{self, Secret, Server};
use bikeshare_stream_processor::Scorer;
use serde::{Deserialize, Serialize};

/// Environment variable holding the serving token (required beyond loopback).
pub const TOKEN_ENV: &str = "BIKESHARE_MODEL_TOKEN";
/// SageMaker's real-time payload limit.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Where SageMaker mounts the model.
pub const DEFAULT_MODEL_DIR: &str = "/opt/ml/model";
/// The custom-attributes header, request and response.
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

const SERVER: Server = Server::new("the model server", TOKEN_ENV);

/// Settings of the model server (`[serve_model]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    /// Bearer token; else `BIKESHARE_MODEL_TOKEN`. Required beyond loopback.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    /// The model directory (`card.json`, `empty.json`, `full.json`).
    pub model_dir: std::path::PathBuf,
    /// Largest request body, bytes.
    pub max_payload_bytes: usize,
    /// When set, `/endpoints/{name}/invocations` answers only this name.
    pub endpoint_name: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            model_dir: DEFAULT_MODEL_DIR.into(),
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            endpoint_name: None,
        }
    }
}

/// Why the server could not start.
pub type ServeError = http::ListenError;

/// The model being served, and what it answers in the custom-attributes header.
#[derive(Debug)]
pub struct ServedModel {
    scorer: Arc<dyn Scorer>,
    num_features: usize,
    attributes: HeaderValue,
}

impl ServedModel {
    /// Serves `scorer`, whose rows have `num_features` values.
    pub fn new(scorer: Arc<dyn Scorer>, num_features: usize) -> Self {
        let text = format!(
            "model={};version={};feature_schema_id={}",
            scorer.model().name,
            scorer.model().version,
            scorer.schema_id().0
        );
        // Header values must be visible ASCII; anything else is replaced, not refused.
        let safe: String = text
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        let attributes =
            HeaderValue::from_str(&safe).unwrap_or(HeaderValue::from_static("model=unknown"));
        Self {
            scorer,
            num_features,
            attributes,
        }
    }
    pub fn scorer(&self) -> &Arc<dyn Scorer> {
        &self.scorer
    }
}

/// The slot the server reads its model from (swappable while serving).
pub type ModelSlot = Arc<RwLock<Option<Arc<ServedModel>>>>;

struct App {
    model: ModelSlot,
    token: Option<Secret>,
    endpoint_name: Option<String>,
}

/// A running model server.
#[derive(Debug)]
pub struct RunningServer {
    server: http::Running,
    model: ModelSlot,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
    pub fn url(&self) -> String {
        self.server.url()
    }
    /// Replaces the served model (in-flight requests finish with the old one).
    pub fn set_model(&self, model: Option<Arc<ServedModel>>) {
        if let Ok(mut m) = self.model.write() {
            *m = model;
        }
    }
    pub async fn wait(self) {
        self.server.wait().await;
    }
    /// Stops listening and closes idle connections (requests in flight finish), then
    /// returns: from then on clients find nobody at the address.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.server.wait().await;
    }
}

/// Serves `model` until `shutdown` resolves.
pub async fn serve(
    config: &ServeConfig,
    model: Option<Arc<ServedModel>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, ServeError> {
    let token = SERVER.token_for_bind(config.bind, config.token.as_ref())?;
    let slot: ModelSlot = Arc::new(RwLock::new(model));
    let app = Arc::new(App {
        model: slot.clone(),
        token,
        endpoint_name: config.endpoint_name.clone(),
    });
    let router = Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .route("/endpoints/{name}/invocations", post(endpoint_invocations))
        .layer(DefaultBodyLimit::max(config.max_payload_bytes))
        .with_state(app);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    };
    Ok(RunningServer {
        server: SERVER.start(config.bind, "", router, shutdown).await?,
        model: slot,
        stop,
    })
}

async fn ping(State(app): State<Arc<App>>) -> StatusCode {
    match app.model.read().map(|m| m.is_some()) {
        Ok(true) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A request the container refuses, with the status it answers.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// As the container contract answers it: the status and the message as text.
    fn container(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
    /// As the SageMaker runtime API answers a container's error: 424 `ModelError`. Failures
    /// of the API itself (auth, size, unknown endpoint) keep their status with an error type.
    fn runtime(self) -> Response {
        let (status, kind, body) = match self.status {
            StatusCode::BAD_REQUEST
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::NOT_ACCEPTABLE
            | StatusCode::INTERNAL_SERVER_ERROR => (
                StatusCode::FAILED_DEPENDENCY,
                "ModelError",
                serde_json::json!({
                    "message": format!(
                        "Received client error ({}) from primary with message \"{}\".",
                        self.status.as_u16(),
                        self.message
                    ),
                    "OriginalStatusCode": self.status.as_u16(),
                    "OriginalMessage": self.message,
                }),
            ),
            StatusCode::SERVICE_UNAVAILABLE => (
                self.status,
                "ModelNotReadyException",
                serde_json::json!({ "message": self.message }),
            ),
            StatusCode::NOT_FOUND | StatusCode::PAYLOAD_TOO_LARGE => (
                self.status,
                "ValidationError",
                serde_json::json!({ "message": self.message }),
            ),
            _ => (
                self.status,
                "AccessDeniedException",
                serde_json::json!({ "message": self.message }),
            ),
        };
        (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::HeaderName::from_static("x-amzn-errortype"), kind),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

async fn invocations(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match invoke(&app, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.container(),
    }
}

async fn endpoint_invocations(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(expected) = &app.endpoint_name
        && *expected != name
    {
        return Refusal::new(
            StatusCode::NOT_FOUND,
            format!("Endpoint {name} not found (this server serves {expected})."),
        )
        .runtime();
    }
    match invoke(&app, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.runtime(),
    }
}

/// The request and response formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

impl Format {
    fn parse(media: &str) -> Option<Self> {
        let m = media
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match m.as_str() {
            "text/csv" => Some(Self::Csv),
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => {
                Some(Self::JsonLines)
            }
            _ => None,
        }
    }
    fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::JsonLines => "application/jsonlines",
        }
    }
}

/// `k=v` pairs of a custom-attributes value (`;` or `,` separated).
fn attribute<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    attrs.split([';', ',']).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

async fn invoke(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let attrs = headers
        .get(CUSTOM_ATTRIBUTES)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(token) = &app.token {
        let in_attrs = attribute(attrs, "token").is_some_and(|t| token.matches(t.as_bytes()));
        if !http::bearer_matches(token, headers) && !in_attrs {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a token is required: Authorization: Bearer <token>, or token=<token> in \
                 the custom attributes",
            ));
        }
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body exceeds the payload limit; send fewer stations per request",
            )
        } else {
            Refusal::bad(format!("reading the request body: {e}"))
        }
    })?;
    let model = app
        .model
        .read()
        .ok()
        .and_then(|m| m.clone())
        .ok_or_else(|| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "no model is loaded"))?;
    if let Some(theirs) = attribute(attrs, "feature_schema_id")
        && theirs != model.scorer.schema_id().as_str()
    {
        return Err(Refusal::bad(format!(
            "the request's features are of schema {theirs}, the model's of {}",
            model.scorer.schema_id().0
        )));
    }
    let input = match headers.get(header::CONTENT_TYPE) {
        None => Format::Csv,
        Some(v) => v.to_str().ok().and_then(Format::parse).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {v:?} is not supported: send text/csv or application/jsonlines"
                ),
            )
        })?,
    };
    let output = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => input,
        Some(a) if a.trim().is_empty() || a.contains("*/*") => input,
        Some(a) => a.split(',').find_map(Format::parse).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("cannot answer {a:?}: accept text/csv or application/jsonlines"),
            )
        })?,
    };
    // Parsing and scoring are CPU work: off the I/O threads.
    let answer = tokio::task::spawn_blocking(move || score_body(&model, &body, input, output))
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let (text, attributes) = answer;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(output.content_type()),
            ),
            (
                header::HeaderName::from_static(CUSTOM_ATTRIBUTES),
                attributes,
            ),
        ],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    #[serde(default)]
    station_id: Option<serde_json::Value>,
    features: Vec<Option<f32>>,
}

/// Parses, scores and formats one request body.
fn score_body(
    model: &ServedModel,
    body: &[u8],
    input: Format,
    output: Format,
) -> Result<(String, HeaderValue), Refusal> {
    use std::fmt::Write;
    let text = std::str::from_utf8(body)
        .map_err(|e| Refusal::bad(format!("the body is not UTF-8: {e}")))?;
    let n = model.num_features;
    let mut values: Vec<Option<f32>> = Vec::with_capacity(n);
    let mut out = String::with_capacity(body.len() / 8 + 64);
    let mut rows = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let row = i + 1;
        values.clear();
        let mut station_id = None;
        match input {
            Format::Csv => {
                for (j, field) in line.split(',').enumerate() {
                    let f = field.trim().trim_matches('"').trim();
                    let v = if f.is_empty() || f.eq_ignore_ascii_case("nan") {
                        None
                    } else {
                        match f.parse::<f32>() {
                            Ok(x) if x.is_finite() => Some(x),
                            _ => {
                                return Err(Refusal::bad(format!(
                                    "row {row}, column {}: {f:?} is not a finite number (leave \
                                     the field empty for a missing value)",
                                    j + 1
                                )));
                            }
                        }
                    };
                    values.push(v);
                }
            }
            Format::JsonLines => {
                let r: JsonRow = serde_json::from_str(line).map_err(|e| {
                    Refusal::bad(format!(
                        "row {row}: expected {{\"station_id\": ..., \"features\": [numbers or \
                         null]}}: {e}"
                    ))
                })?;
                if let Some((j, _)) = r
                    .features
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.is_some_and(|x| !x.is_finite()))
                {
                    return Err(Refusal::bad(format!(
                        "row {row}, feature {}: not a finite number",
                        j + 1
                    )));
                }
                values.extend_from_slice(&r.features);
                station_id = r.station_id;
            }
        }
        if values.len() != n {
            return Err(Refusal::bad(format!(
                "row {row} has {} features; the model's schema ({}) has {n}",
                values.len(),
                model.scorer.schema_id().0
            )));
        }
        let s = model.scorer.score(&values);
        let _ = match output {
            Format::Csv => writeln!(out, "{},{}", s.p_empty, s.p_full),
            Format::JsonLines => {
                let obj = match station_id {
                    Some(id) => serde_json::json!({
                        "station_id": id, "p_empty": s.p_empty, "p_full": s.p_full
                    }),
                    None => serde_json::json!({ "p_empty": s.p_empty, "p_full": s.p_full }),
                };
                writeln!(out, "{obj}")
            }
        };
        rows += 1;
    }
    if rows == 0 {
        return Err(Refusal::bad("the request has no rows"));
    }
    Ok((out, model.attributes.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_custom_attributes() {
        assert_eq!(Format::parse("text/csv; charset=utf-8"), Some(Format::Csv));
        assert_eq!(
            Format::parse("application/JSONLINES"),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::parse("application/json"), None);
        assert_eq!(
            attribute("a=1;feature_schema_id=fs1-x, token=t", "token"),
            Some("t")
        );
        assert_eq!(
            attribute("a=1;feature_schema_id=fs1-x", "feature_schema_id"),
            Some("fs1-x")
        );
        assert_eq!(attribute("", "token"), None);
    }
}
