//! The processor's [`Predictor`](bikeshare_stream_processor::Predictor) backed by a SageMaker endpoint (`aws-sdk-sagemakerruntime`
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
//! **Feature `sagemaker-endpoint`** (off by default; the CLI turns it on): the client itself,
//! `SageMakerPredictor` (`endpoint/client.rs`), the one part of this crate that links the
//! AWS SDK (`aws-sdk-sagemakerruntime`, and `aws-config` through `bikeshare-runtime/aws`;
//! decision 098). What stays without it: its settings ([`EndpointConfig`], read by the CLI's
//! configuration), [`CallError`]'s reasons, and the CSV codec ([`encode_csv`],
//! [`decode_csv`]) that `serve-model`'s tests and `serve-bench` speak.
//!
//! - **Metrics** (`bikeshare_types::metrics`, label `endpoint` = the endpoint's name): every
//!   attempt counts in `bikeshare_endpoint_requests_total` with its duration in
//!   `bikeshare_endpoint_latency_seconds`; a failed one in `bikeshare_endpoint_errors_total`
//!   by [`CallError::reason`]; every row scored by the fallback (or marked unavailable) in
//!   `bikeshare_endpoint_fallbacks_total`, by why (`error`, `open_circuit`, `budget`). The
//!   `endpoint_error_rate` and `endpoint_fallback_rate` alerts read them.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bikeshare_stream_processor::Scores;
use bikeshare_types::retry::Backoff;
use serde::{Deserialize, Serialize};

#[cfg(feature = "sagemaker-endpoint")]
mod client;
#[cfg(feature = "sagemaker-endpoint")]
pub use client::SageMakerPredictor;

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
    /// Whether another attempt can help: timeouts, connection failures, 5xx and throttling.
    pub fn retryable(&self) -> bool {
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
