//! [`SageMakerPredictor`]: the endpoint client itself, on `aws-sdk-sagemakerruntime`
//! (feature `sagemaker-endpoint`; see the parent module for what it does).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use bikeshare_runtime::aws::{SdkConfig, caller_retries};
use bikeshare_stream_processor::{Predictor, Scored, Scorer, Scores};
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef, ScoredBy};
use bikeshare_types::metrics;

use super::{
    CallError, Circuit, EndpointConfig, EndpointStats, Fallback, TOKEN_ENV, decode_csv, encode_csv,
};

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
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
            && theirs != self.schema_id.as_str()
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
