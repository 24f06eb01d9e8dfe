//! The processor's [`Predictor`] backed by a SageMaker endpoint (`aws-sdk-sagemakerruntime`
//! `InvokeEndpoint`), or anything speaking its API, such as `bikeshare serve-model`.
//!
//! - **Batching**: the rows of one runner step go out as CSV, at most
//!   [`EndpointConfig::max_batch_rows`] per call, with `feature_schema_id=<id>` in the custom
//!   attributes (the server refuses another schema); the answer's custom attributes name the
//!   model that scored (`model=..;version=..;feature_schema_id=..`).
//! - **Timeout** per attempt, **bounded retries** with backoff and full jitter
//!   ([`bikeshare_types::retry::Backoff`]) for what can pass (connection failures, timeouts,
//!   5xx, throttling); a model error for bad input is not retried. The SDK's own retries are
//!   off: one retry owner.
//! - **Circuit breaker**: after [`EndpointConfig::breaker_failures`] failed calls in a row
//!   the circuit opens and batches go to the fallback at once; after
//!   [`EndpointConfig::breaker_open_ms`] one call probes the endpoint (no retries): success
//!   closes the circuit, failure opens it again.
//! - **Fallback** ([`Fallback`]): the in-process model (predictions `scored_by: fallback`,
//!   `model` = the in-process model), or predictions marked `unavailable` (NaN probabilities).
//!
//! - **Budget**: one `predict` (one runner step) spends at most
//!   [`EndpointConfig::budget_ms`] on the endpoint, whatever the number of chunks, attempts
//!   and delays; chunks left when it is spent go to the fallback (without counting against
//!   the endpoint). Keep it under a third of the runner's lease duration, so leases are
//!   renewed in time while an endpoint hangs.
//!
//! So the pipeline never waits on a dead endpoint for longer than the budget per step while
//! the circuit is closed, and not at all once it is open.
//!
//! - **Metrics** (`bikeshare_types::metrics`, label `endpoint` = the endpoint's name): every
//!   attempt counts in `bikeshare_endpoint_requests_total` with its duration in
//!   `bikeshare_endpoint_latency_seconds`; a failed one in `bikeshare_endpoint_errors_total`
//!   by [`CallError::reason`]; every row scored by the fallback (or marked unavailable) in
//!   `bikeshare_endpoint_fallbacks_total`, by why (`error`, `open_circuit`, `budget`). The
//!   `endpoint_error_rate` and `endpoint_fallback_rate` alerts read them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use bikeshare_runtime::aws::{SdkConfig, caller_retries};
use bikeshare_stream_processor::{Predictor, Scored, Scorer, Scores};
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef, ScoredBy};
use bikeshare_types::metrics;
use bikeshare_types::retry::Backoff;
use serde::{Deserialize, Serialize};

/// Environment variable with the token for a `serve-model` beyond loopback.
pub const TOKEN_ENV: &str = crate::serve::TOKEN_ENV;

/// What to do with a batch the endpoint did not score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Score it with the processor's in-process model.
    InProcess,
    /// Publish its predictions marked unavailable.
    Unavailable,
}

/// Settings of the endpoint client (`[predictor.sagemaker]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointConfig {
    pub endpoint_name: String,
    /// AWS region (else the standard AWS configuration).
    pub region: Option<String>,
    /// Endpoint URL override, e.g. `http://127.0.0.1:8080` for `bikeshare serve-model`.
    pub endpoint_url: Option<String>,
    /// Rows per `InvokeEndpoint` call (keep a call under the 6 MB payload limit: ~75
    /// features × ~8 bytes × 1,000 rows ≈ 0.6 MB).
    pub max_batch_rows: usize,
    /// Per attempt, ms.
    pub timeout_ms: u64,
    /// The most one runner step spends on the endpoint, ms (all chunks, attempts, delays).
    pub budget_ms: u64,
    pub retry: Backoff,
    /// Failed calls in a row that open the circuit.
    pub breaker_failures: u32,
    /// How long the circuit stays open before a probe, ms.
    pub breaker_open_ms: u64,
    pub fallback: Fallback,
    /// Token for a `serve-model` beyond loopback (sent as `token=` in the custom
    /// attributes); else `BIKESHARE_MODEL_TOKEN`.
    #[serde(skip_serializing)]
    pub token: Option<String>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("endpoint_name", &self.endpoint_name)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("max_batch_rows", &self.max_batch_rows)
            .field("timeout_ms", &self.timeout_ms)
            .field("budget_ms", &self.budget_ms)
            .field("retry", &self.retry)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_ms", &self.breaker_open_ms)
            .field("fallback", &self.fallback)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            endpoint_name: "bikeshare-stockout".into(),
            region: None,
            endpoint_url: None,
            max_batch_rows: 1000,
            timeout_ms: 1000,
            budget_ms: 3000,
            retry: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_secs(1),
                max_retries: Some(2),
            },
            breaker_failures: 3,
            breaker_open_ms: 10_000,
            fallback: Fallback::InProcess,
            token: None,
        }
    }
}

/// Why one call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{message}")]
    Endpoint {
        message: String,
        retryable: bool,
        /// The metric's `reason` label (see [`CallError::reason`]).
        reason: &'static str,
    },
    #[error("the endpoint's answer: {0}")]
    Answer(String),
    #[error("the circuit is open")]
    Open,
    #[error("the step's time budget is spent")]
    Budget,
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Endpoint { retryable, .. } => *retryable,
            Self::Answer(_) | Self::Open | Self::Budget => false,
        }
    }

    /// A bounded name for metrics: `timeout`, `connection` (refused, reset, no answer),
    /// `throttled` (429), `model_error` (the model refused the input), `http_4xx`,
    /// `http_5xx`, `bad_answer` (an answer that is not one score per row, or of another
    /// feature schema); for rows that went to the fallback without a call: `open_circuit`,
    /// `budget`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Endpoint { reason, .. } => reason,
            Self::Answer(_) => "bad_answer",
            Self::Open => "open_circuit",
            Self::Budget => "budget",
        }
    }
}

/// State of the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// The next call is the probe.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Counters of the endpoint client.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub calls: AtomicU64,
    pub failed_calls: AtomicU64,
    pub retries: AtomicU64,
    pub rows_endpoint: AtomicU64,
    pub rows_fallback: AtomicU64,
    pub rows_unavailable: AtomicU64,
    pub circuit_opened: AtomicU64,
}

/// A [`Predictor`] over a SageMaker endpoint.
#[derive(Debug)]
pub struct SageMakerPredictor {
    client: aws_sdk_sagemakerruntime::Client,
    config: EndpointConfig,
    token: Option<String>,
    schema_id: FeatureSchemaId,
    breaker: Mutex<Breaker>,
    stats: Arc<EndpointStats>,
}

impl SageMakerPredictor {
    /// A client from the shared AWS configuration (region and endpoint from `config` win),
    /// for rows of `schema_id`.
    pub fn new(sdk: &SdkConfig, config: EndpointConfig, schema_id: FeatureSchemaId) -> Self {
        // The SDK bounds each attempt too (its own timeout error, its connection watch);
        // `attempt` also races it against the step's budget.
        let sdk = caller_retries(
            sdk,
            config.endpoint_url.as_deref(),
            config.region.as_deref(),
            Some(Duration::from_millis(config.timeout_ms.max(1))),
        );
        let token = config
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty());
        Self {
            client: aws_sdk_sagemakerruntime::Client::new(&sdk),
            config,
            token,
            schema_id,
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
            }),
            stats: Arc::new(EndpointStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    pub fn circuit(&self) -> Circuit {
        let Ok(b) = self.breaker.lock() else {
            return Circuit::Open;
        };
        match b.open_until {
            None => Circuit::Closed,
            Some(t) if Instant::now() < t => Circuit::Open,
            Some(_) => Circuit::HalfOpen,
        }
    }

    fn record(&self, ok: bool) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        if ok {
            if b.open_until.is_some() {
                tracing::info!(endpoint = %self.config.endpoint_name, "endpoint back: circuit closed");
            }
            b.failures = 0;
            b.open_until = None;
            return;
        }
        self.stats.failed_calls.fetch_add(1, Ordering::Relaxed);
        b.failures = b.failures.saturating_add(1);
        let probe_failed = b.open_until.is_some();
        if probe_failed || b.failures >= self.config.breaker_failures.max(1) {
            if !probe_failed {
                self.stats.circuit_opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    endpoint = %self.config.endpoint_name,
                    failures = b.failures,
                    "endpoint failing: circuit open, scoring with the fallback"
                );
            }
            b.open_until =
                Some(Instant::now() + Duration::from_millis(self.config.breaker_open_ms));
        }
    }

    /// One batch through the endpoint, guarded by the breaker, with retries, until
    /// `deadline`.
    async fn call(
        &self,
        rows: &[&[Option<f32>]],
        deadline: Instant,
    ) -> Result<(Vec<Scores>, ModelRef), CallError> {
        let probe = match self.circuit() {
            Circuit::Open => return Err(CallError::Open),
            Circuit::HalfOpen => true,
            Circuit::Closed => false,
        };
        if Instant::now() >= deadline {
            return Err(CallError::Budget);
        }
        let body = encode_csv(rows);
        let mut attempt = 0u32;
        let result = loop {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(Instant::now());
            let started = Instant::now();
            let r = self.attempt(body.clone(), rows.len(), left).await;
            metrics::endpoint_request(&self.config.endpoint_name, started.elapsed());
            if let Err(e) = &r {
                metrics::endpoint_error(&self.config.endpoint_name, e.reason());
            }
            match r {
                Err(e) if e.retryable() && !probe => {
                    let delay = self.config.retry.delay(attempt, &mut rand::rng());
                    let left = deadline.saturating_duration_since(Instant::now());
                    let Some(delay) = delay.filter(|d| *d < left) else {
                        break Err(e);
                    };
                    tracing::debug!(error = %e, attempt, "endpoint call failed; retrying");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                other => break other,
            }
        };
        self.record(result.is_ok());
        result
    }

    async fn attempt(
        &self,
        body: String,
        rows: usize,
        left: Duration,
    ) -> Result<(Vec<Scores>, ModelRef), CallError> {
        let mut attrs = format!("feature_schema_id={}", self.schema_id.0);
        if let Some(t) = &self.token {
            attrs.push_str(";token=");
            attrs.push_str(t);
        }
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1))
            .min(left)
            .max(Duration::from_millis(1));
        let send = self
            .client
            .invoke_endpoint()
            .endpoint_name(&self.config.endpoint_name)
            .content_type("text/csv")
            .accept("text/csv")
            .custom_attributes(attrs)
            .body(Blob::new(body))
            .send();
        let out = match tokio::time::timeout(timeout, send).await {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(out)) => out,
        };
        let model =
            self.answering_model(out.custom_attributes(), out.invoked_production_variant())?;
        let scores = decode_csv(out.body().map(|b| b.as_ref()).unwrap_or_default(), rows)
            .map_err(CallError::Answer)?;
        Ok((scores, model))
    }

    /// The model named by the answer's custom attributes, refusing another feature schema.
    fn answering_model(
        &self,
        attrs: Option<&str>,
        variant: Option<&str>,
    ) -> Result<ModelRef, CallError> {
        let get = |k: &str| {
            attrs.and_then(|a| {
                a.split([';', ',']).find_map(|kv| {
                    let (key, v) = kv.split_once('=')?;
                    (key.trim() == k).then(|| v.trim().to_owned())
                })
            })
        };
        if let Some(theirs) = get("feature_schema_id")
            && theirs != self.schema_id.0
        {
            return Err(CallError::Answer(format!(
                "the endpoint's model was trained on feature schema {theirs}, the processor \
                 computes {}",
                self.schema_id.0
            )));
        }
        Ok(match get("model") {
            Some(name) => ModelRef {
                name,
                version: get("version").unwrap_or_else(|| "unknown".into()),
            },
            None => self.endpoint_model(variant.unwrap_or("unknown")),
        })
    }

    /// The endpoint itself as the model, when no model is named.
    fn endpoint_model(&self, version: &str) -> ModelRef {
        ModelRef {
            name: format!("sagemaker:{}", self.config.endpoint_name),
            version: version.to_owned(),
        }
    }

    /// Scores `rows` with the fallback because of `why` (a [`CallError::reason`]).
    fn fallback(
        &self,
        rows: &[&[Option<f32>]],
        local: &Arc<dyn Scorer>,
        why: &'static str,
        out: &mut Vec<Scored>,
    ) {
        let why = if why == "open_circuit" || why == "budget" {
            why
        } else {
            "error"
        };
        metrics::endpoint_fallbacks(&self.config.endpoint_name, why, rows.len() as u64);
        match self.config.fallback {
            Fallback::InProcess => {
                self.stats
                    .rows_fallback
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                out.extend(rows.iter().map(|r| Scored {
                    scores: local.score(r),
                    model: local.model().clone(),
                    scored_by: ScoredBy::Fallback,
                }));
            }
            Fallback::Unavailable => {
                self.stats
                    .rows_unavailable
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                let model = self.endpoint_model("unavailable");
                out.extend(rows.iter().map(|_| Scored {
                    scores: Scores {
                        p_empty: f32::NAN,
                        p_full: f32::NAN,
                    },
                    model: model.clone(),
                    scored_by: ScoredBy::Unavailable,
                }));
            }
        }
    }
}

#[async_trait::async_trait]
impl Predictor for SageMakerPredictor {
    async fn predict(&self, rows: &[&[Option<f32>]], local: &Arc<dyn Scorer>) -> Vec<Scored> {
        let mut out = Vec::with_capacity(rows.len());
        let deadline = Instant::now() + Duration::from_millis(self.config.budget_ms);
        for chunk in rows.chunks(self.config.max_batch_rows.max(1)) {
            match self.call(chunk, deadline).await {
                Ok((scores, model)) => {
                    self.stats
                        .rows_endpoint
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    out.extend(scores.into_iter().map(|scores| Scored {
                        scores,
                        model: model.clone(),
                        scored_by: ScoredBy::Endpoint,
                    }));
                }
                Err(e) => {
                    if !matches!(e, CallError::Open | CallError::Budget) {
                        tracing::warn!(
                            endpoint = %self.config.endpoint_name,
                            error = %e,
                            rows = chunk.len(),
                            fallback = ?self.config.fallback,
                            "endpoint call failed; using the fallback"
                        );
                    }
                    self.fallback(chunk, local, e.reason(), &mut out);
                }
            }
        }
        out
    }
}

/// What an SDK error means for retrying.
fn classify(e: &SdkError<InvokeEndpointError>) -> CallError {
    let (message, retryable, reason) = match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let err = s.err();
            let detail = match err {
                InvokeEndpointError::ModelError(m) => format!(
                    "model error (original status {:?}): {}",
                    m.original_status_code(),
                    m.original_message().or(m.message()).unwrap_or("")
                ),
                other => format!(
                    "{}: {}",
                    other.code().unwrap_or("error"),
                    other.message().unwrap_or("")
                ),
            };
            let retryable = match err {
                InvokeEndpointError::ModelError(m) => m
                    .original_status_code()
                    .is_none_or(|c| c >= 500 || c == 429),
                InvokeEndpointError::ValidationError(_) => false,
                InvokeEndpointError::InternalFailure(_)
                | InvokeEndpointError::ServiceUnavailable(_)
                | InvokeEndpointError::ModelNotReadyException(_)
                | InvokeEndpointError::InternalDependencyException(_) => true,
                _ => status >= 500 || status == 429,
            };
            let original = match err {
                InvokeEndpointError::ModelError(m) => {
                    m.original_status_code().and_then(|c| u16::try_from(c).ok())
                }
                _ => None,
            };
            let reason = match original.unwrap_or(status) {
                429 => "throttled",
                s if s >= 500 => "http_5xx",
                _ if matches!(err, InvokeEndpointError::ModelError(_)) => "model_error",
                _ => "http_4xx",
            };
            (format!("HTTP {status}, {detail}"), retryable, reason)
        }
        SdkError::TimeoutError(_) => (
            format!("{e}: {:?}", std::error::Error::source(e)),
            true,
            "timeout",
        ),
        SdkError::DispatchFailure(d) => (
            format!("{e}: {:?}", std::error::Error::source(e)),
            true,
            if d.is_timeout() {
                "timeout"
            } else {
                "connection"
            },
        ),
        SdkError::ResponseError(_) => (
            format!("{e}: {:?}", std::error::Error::source(e)),
            true,
            "connection",
        ),
        _ => (e.to_string(), false, "other"),
    };
    CallError::Endpoint {
        message,
        retryable,
        reason,
    }
}

/// Rows as CSV lines: the shortest decimal of each f32 (read back exactly), empty = missing.
pub fn encode_csv(rows: &[&[Option<f32>]]) -> String {
    let mut s = String::with_capacity(rows.len() * rows.first().map_or(0, |r| r.len() * 6));
    for row in rows {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            if let Some(x) = v {
                let _ = write!(s, "{x}");
            }
        }
        s.push('\n');
    }
    s
}

/// `p_empty,p_full` lines, exactly `rows` of them, each a probability.
pub fn decode_csv(body: &[u8], rows: usize) -> Result<Vec<Scores>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut out = Vec::with_capacity(rows);
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut parts = line.split(',').map(|p| p.trim().parse::<f32>());
        let (Some(Ok(p_empty)), Some(Ok(p_full)), None) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("line {}: expected p_empty,p_full: {line:?}", i + 1));
        };
        if !(0.0..=1.0).contains(&p_empty) || !(0.0..=1.0).contains(&p_full) {
            return Err(format!("line {}: not probabilities: {line:?}", i + 1));
        }
        out.push(Scores { p_empty, p_full });
    }
    if out.len() != rows {
        return Err(format!("{} rows scored, {rows} sent", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_f32_exactly_and_answers_are_checked() {
        let a = [
            Some(0.1f32),
            None,
            Some(1e-7),
            Some(-3.5),
            Some(16_777_217.0),
        ];
        let b = [
            None,
            None,
            Some(f32::MIN_POSITIVE),
            Some(0.0),
            Some(2.0 / 3.0),
        ];
        let text = encode_csv(&[&a, &b]);
        let back: Vec<Vec<Option<f32>>> = text
            .lines()
            .map(|l| {
                l.split(',')
                    .map(|f| (!f.is_empty()).then(|| f.parse::<f32>().unwrap()))
                    .collect()
            })
            .collect();
        assert_eq!(back, [a.to_vec(), b.to_vec()]);

        assert_eq!(
            decode_csv(b"0.5,0.25\n0,1\n", 2).unwrap(),
            [
                Scores {
                    p_empty: 0.5,
                    p_full: 0.25
                },
                Scores {
                    p_empty: 0.0,
                    p_full: 1.0
                }
            ]
        );
        assert!(decode_csv(b"0.5,0.25\n", 2).is_err());
        assert!(decode_csv(b"0.5,1.25\n", 1).is_err());
        assert!(decode_csv(b"0.5\n", 1).is_err());
        assert!(decode_csv(b"NaN,0.1\n", 1).is_err());
    }
}
