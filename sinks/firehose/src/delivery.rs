//! [`DeliveryStream`]: records into one Firehose delivery stream, every one of them or an
//! error.
//!
//! A `put` splits the records into `PutRecordBatch` calls within the limits
//! ([`crate::batch`]) and sends each call until all its records are in:
//! - a partial failure (`FailedPutCount > 0`) re-sends *only* the records whose response
//!   entry carries an `ErrorCode` (entries answer records by position);
//! - a call refused whole for throughput or availability (`ServiceUnavailableException`,
//!   throttling, 5xx, a timeout or a broken connection) re-sends the whole call;
//! - each re-send waits a [`Backoff`] delay with full jitter; the count of retries restarts
//!   when a call made progress, and [`DeliveryConfig::max_elapsed`] bounds a call's time;
//! - anything else (the stream does not exist, access denied, an invalid argument) is not
//!   retried.
//!
//! When retries are spent the `put` returns [`FirehoseError::Undelivered`]: the caller (the
//! sink's checkpoint barrier) fails, the checkpoint is not stored, and a restart sends those
//! records again. Delivery into Firehose is therefore at-least-once: a record can arrive
//! twice (a crash after a call succeeded and before the checkpoint, or a response lost after
//! Firehose accepted the call), never zero times. Rows carry deterministic ids to dedupe by.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_firehose::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::retry::Backoff;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use crate::batch::{MAX_RECORD_BYTES, plan};

/// Why records did not reach Firehose.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// Retries spent (or time up) with records still refused.
    #[error(
        "{stream}: {records} records undelivered after {attempts} attempts over {elapsed:?}; last error: {last}"
    )]
    Undelivered {
        stream: String,
        records: usize,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    /// A refusal that retrying cannot fix (missing stream, access denied, invalid argument).
    #[error("{stream}: PutRecordBatch refused: {message}")]
    Rejected { stream: String, message: String },
    /// A record over the per-record limit reached the client (callers dead-letter those).
    #[error("{stream}: a record of {bytes} bytes is over the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge { stream: String, bytes: usize },
    /// The answer did not match the request.
    #[error("{stream}: {message}")]
    Protocol { stream: String, message: String },
}

impl Classify for FirehoseError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Undelivered { .. } | Self::Rejected { .. } | Self::Protocol { .. } => {
                ErrorClass::External
            }
            Self::RecordTooLarge { .. } => ErrorClass::Internal,
        }
    }
    fn retryable(&self) -> bool {
        matches!(self, Self::Undelivered { .. })
    }
}

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Delays between re-sends of one call; `max_retries` counts re-sends without progress.
    #[default(Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(5),
        max_retries: Some(10),
    })]
    pub backoff: Backoff,
    /// The longest one call may keep retrying, in milliseconds.
    #[default(120_000)]
    pub max_elapsed_ms: u64,
}

impl DeliveryConfig {
    pub fn max_elapsed(&self) -> Duration {
        Duration::from_millis(self.max_elapsed_ms)
    }
}

bikeshare_types::counters! {
    /// Counters of one delivery stream (or shared by several); cheap to read.
    pub struct DeliveryStats => /// A plain copy of [`DeliveryStats`].
    pub struct DeliverySnapshot {
        /// `PutRecordBatch` calls made, re-sends included.
        calls,
        records_delivered,
        bytes_delivered,
        /// Records refused (in a partial failure or a whole refused call) and sent again.
        records_retried,
        /// Calls refused whole and retried (throttling, unavailable, 5xx, network).
        calls_refused,
        /// Records given up on (the `put` returned an error).
        records_undelivered,
    }
}

/// Error codes (of a whole call) that a later retry can get past.
const RETRYABLE_CODES: &[&str] = &[
    "ServiceUnavailableException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "RequestLimitExceeded",
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// One delivery stream.
#[derive(Debug, Clone)]
pub struct DeliveryStream {
    client: aws_sdk_firehose::Client,
    name: String,
    config: DeliveryConfig,
    stats: Arc<DeliveryStats>,
}

/// What happened to one call's records.
enum Answer {
    /// Indices (into the call) of records refused, with the first error.
    Partial(Vec<usize>, String),
    /// The whole call refused, retryably.
    Refused(String),
}

impl DeliveryStream {
    pub fn new(
        client: aws_sdk_firehose::Client,
        name: impl Into<String>,
        config: DeliveryConfig,
        stats: Arc<DeliveryStats>,
    ) -> Self {
        Self {
            client,
            name: name.into(),
            config,
            stats,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &Arc<DeliveryStats> {
        &self.stats
    }

    /// Delivers every record (each at most [`MAX_RECORD_BYTES`]; callers set larger ones
    /// aside first), in calls within the limits, or returns an error (see the module docs).
    pub async fn put(&self, records: &[Bytes]) -> Result<(), FirehoseError> {
        let p = plan(records.iter().map(Bytes::len));
        if let Some(&i) = p.oversized.first() {
            return Err(FirehoseError::RecordTooLarge {
                stream: self.name.clone(),
                bytes: records[i].len(),
            });
        }
        for batch in p.batches {
            let call: Vec<Bytes> = batch.into_iter().map(|i| records[i].clone()).collect();
            self.send_call(call).await?;
        }
        Ok(())
    }

    /// One call's records, re-sending the refused ones until none are left.
    async fn send_call(&self, mut pending: Vec<Bytes>) -> Result<(), FirehoseError> {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut retries_without_progress = 0u32;
        loop {
            attempts += 1;
            let (refused, last) = match self.call(&pending).await? {
                Answer::Partial(failed, first) => {
                    let delivered = pending.len() - failed.len();
                    let bytes: usize = pending.iter().map(Bytes::len).sum::<usize>()
                        - failed.iter().map(|&i| pending[i].len()).sum::<usize>();
                    self.delivered(delivered, bytes);
                    if failed.is_empty() {
                        return Ok(());
                    }
                    if delivered > 0 {
                        retries_without_progress = 0;
                    }
                    let refused: Vec<Bytes> =
                        failed.into_iter().map(|i| pending[i].clone()).collect();
                    (refused, first)
                }
                Answer::Refused(message) => {
                    self.stats.calls_refused.incr();
                    (std::mem::take(&mut pending), message)
                }
            };
            let delay = self
                .config
                .backoff
                .delay(retries_without_progress, &mut rand::rng())
                .filter(|d| started.elapsed() + *d <= self.config.max_elapsed());
            let Some(delay) = delay else {
                self.stats.records_undelivered.add(refused.len());
                bikeshare_types::metrics::firehose_records(
                    &self.name,
                    "undelivered",
                    refused.len() as u64,
                );
                return Err(FirehoseError::Undelivered {
                    stream: self.name.clone(),
                    records: refused.len(),
                    attempts,
                    elapsed: started.elapsed(),
                    last,
                });
            };
            self.stats.records_retried.add(refused.len());
            bikeshare_types::metrics::firehose_records(&self.name, "retried", refused.len() as u64);
            tracing::warn!(
                stream = %self.name,
                refused = refused.len(),
                attempt = attempts,
                ?delay,
                error = %last,
                "firehose: re-sending refused records"
            );
            tokio::time::sleep(delay).await;
            retries_without_progress += 1;
            pending = refused;
        }
    }

    fn delivered(&self, records: usize, bytes: usize) {
        self.stats.records_delivered.add(records);
        self.stats.bytes_delivered.add(bytes);
        bikeshare_types::metrics::firehose_records(&self.name, "delivered", records as u64);
    }

    async fn call(&self, records: &[Bytes]) -> Result<Answer, FirehoseError> {
        let entries = records
            .iter()
            .map(|r| {
                Record::builder()
                    .data(Blob::new(r.to_vec()))
                    .build()
                    .map_err(|e| FirehoseError::Protocol {
                        stream: self.name.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.stats.calls.incr();
        let answer = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.name)
            .set_records(Some(entries))
            .send()
            .await;
        match answer {
            Ok(out) => {
                let responses = out.request_responses();
                if out.failed_put_count() == 0 {
                    return Ok(Answer::Partial(Vec::new(), String::new()));
                }
                if responses.len() != records.len() {
                    return Err(FirehoseError::Protocol {
                        stream: self.name.clone(),
                        message: format!(
                            "PutRecordBatch answered {} entries for {} records",
                            responses.len(),
                            records.len()
                        ),
                    });
                }
                let mut first = String::new();
                let failed: Vec<usize> = responses
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(i, r)| {
                        if first.is_empty() {
                            first = format!(
                                "{}: {}",
                                r.error_code().unwrap_or_default(),
                                r.error_message().unwrap_or_default()
                            );
                        }
                        i
                    })
                    .collect();
                if failed.len() != usize::try_from(out.failed_put_count()).unwrap_or(0) {
                    tracing::warn!(
                        stream = %self.name,
                        failed_put_count = out.failed_put_count(),
                        entries_with_error = failed.len(),
                        "firehose: FailedPutCount disagrees with the entries; trusting the entries"
                    );
                }
                Ok(Answer::Partial(failed, first))
            }
            Err(e) => {
                let retryable = match &e {
                    SdkError::TimeoutError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ResponseError(_) => true,
                    SdkError::ServiceError(s) => {
                        let status = s.raw().status().as_u16();
                        status >= 500
                            || status == 429
                            || e.code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                    }
                    _ => false,
                };
                let message = format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    bikeshare_types::error::chain(&e)
                );
                if retryable {
                    Ok(Answer::Refused(message))
                } else {
                    Err(FirehoseError::Rejected {
                        stream: self.name.clone(),
                        message,
                    })
                }
            }
        }
    }
}
