//! CloudWatch export: the process's metrics pushed with `PutMetricData` on an interval.
//!
//! [`Converter`] is the pure part: it turns one snapshot of the Prometheus recorder (read
//! with [`crate::samples`]) into CloudWatch data, per series, with the series' labels as
//! dimensions (plus the configured static ones, e.g. `environment`):
//!
//! - gauges: their value;
//! - counters: the increase since the previous push (a counter that went down was reset
//!   and counts from 0), so CloudWatch's `Sum` over a period is the count in that period;
//! - histograms: the observations since the previous push as `Values`/`Counts` (each
//!   bucket's upper bound, the `+Inf` bucket at the largest finite bound), which keeps
//!   CloudWatch's percentiles available; a histogram with no new observation sends nothing.
//!
//! Non-finite values are skipped (CloudWatch rejects them). [`CloudWatchExporter`] sends the
//! data in calls of at most [`MAX_DATA_PER_CALL`] metrics and under [`MAX_REQUEST_BYTES`],
//! retrying a failed call with [`Backoff`]; a call that still fails is logged and dropped —
//! metrics are best-effort and never hold the pipeline up.
//!
//! Everything but [`CloudWatchConfig`] and the limits speaks the SDK's types, so it is behind
//! this crate's `aws` feature (the CLI turns it on): a crate that only needs
//! [`crate::drift`] or the alert engine links no AWS SDK (decision 092).

use std::collections::BTreeMap;

use bikeshare_types::retry::Backoff;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

#[cfg(feature = "aws")]
mod push;
#[cfg(feature = "aws")]
pub use push::{CloudWatchExporter, Converter, Datum, DatumValue, PushError, PushReport, batches};

/// `PutMetricData`: at most 1000 metrics per request (since 2023; it was 20).
pub const MAX_DATA_PER_CALL: usize = 1000;
/// `PutMetricData`: at most 1 MB per HTTP POST; we stay well under it (the query protocol
/// spells every member name out).
pub const MAX_REQUEST_BYTES: usize = 800 * 1024;
/// At most 30 dimensions per metric.
pub const MAX_DIMENSIONS: usize = 30;
/// At most 150 distinct values per metric in `Values`/`Counts`.
pub const MAX_VALUES: usize = 150;
/// Dimension values: 1 to 1024 characters.
pub const MAX_DIMENSION_VALUE: usize = 1024;

/// `[cloudwatch]`: pushing the metrics to CloudWatch.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct CloudWatchConfig {
    /// Off by default; on in the AWS environments.
    pub enabled: bool,
    /// The CloudWatch namespace (the IAM policy limits `PutMetricData` to `bikeshare/<env>`).
    #[default("bikeshare")]
    pub namespace: String,
    /// How often to push.
    #[default(60_000)]
    pub interval_ms: u64,
    /// Dimensions added to every metric, e.g. `{ environment = "prod" }`.
    pub dimensions: BTreeMap<String, String>,
    /// 60 (standard) or 1 (high resolution).
    #[default(60)]
    pub storage_resolution: i32,
    /// Default: the standard AWS configuration's region.
    pub region: Option<String>,
    /// An emulator or VPC endpoint (or `AWS_ENDPOINT_URL_CLOUDWATCH`).
    pub endpoint_url: Option<String>,
    /// Per attempt.
    #[default(10_000)]
    pub timeout_ms: u64,
    #[default(Backoff::SHORT)]
    pub retry: Backoff,
}
