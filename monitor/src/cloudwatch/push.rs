//! The SDK side of [the CloudWatch export](super), behind the `aws` feature: snapshots to
//! `MetricDatum`s ([`Converter`]), batches under the request limits, and `PutMetricData`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use bikeshare_types::metrics::{self as m, Kind};
use bikeshare_types::retry::Failure;
use bikeshare_types::{SharedClock, Timestamp};
use metrics::Unit;

use super::{
    CloudWatchConfig, MAX_DATA_PER_CALL, MAX_DIMENSION_VALUE, MAX_DIMENSIONS, MAX_REQUEST_BYTES,
    MAX_VALUES,
};
use crate::samples::Sample;

/// One CloudWatch metric datum, before it becomes the SDK's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub unit: StandardUnit,
    pub value: DatumValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatumValue {
    Single(f64),
    /// Parallel `Values` and `Counts`.
    Distribution {
        values: Vec<f64>,
        counts: Vec<f64>,
    },
}

impl Datum {
    /// A rough size in the query protocol, for batching under the request limit.
    fn approx_bytes(&self) -> usize {
        let dims: usize = self
            .dimensions
            .iter()
            .map(|(k, v)| 80 + k.len() + v.len())
            .sum();
        let values = match &self.value {
            DatumValue::Single(_) => 40,
            DatumValue::Distribution { values, .. } => values.len() * 90,
        };
        120 + self.name.len() + dims + values
    }

    /// The SDK's `MetricDatum`.
    pub fn to_sdk(&self, at: Timestamp, storage_resolution: i32) -> MetricDatum {
        let dims = self
            .dimensions
            .iter()
            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
            .collect();
        let b = MetricDatum::builder()
            .metric_name(&self.name)
            .set_dimensions(Some(dims))
            .unit(self.unit.clone())
            .timestamp(DateTime::from_millis(at.millis()))
            .storage_resolution(storage_resolution);
        match &self.value {
            DatumValue::Single(v) => b.value(*v),
            DatumValue::Distribution { values, counts } => b
                .set_values(Some(values.clone()))
                .set_counts(Some(counts.clone())),
        }
        .build()
    }
}

fn unit_of(unit: Unit) -> StandardUnit {
    match unit {
        Unit::Seconds => StandardUnit::Seconds,
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::Microseconds => StandardUnit::Microseconds,
        Unit::Bytes => StandardUnit::Bytes,
        Unit::CountPerSecond => StandardUnit::CountSecond,
        Unit::Percent => StandardUnit::Percent,
        Unit::Count => StandardUnit::Count,
        _ => StandardUnit::None,
    }
}

type SeriesKey = (String, BTreeMap<String, String>);

/// Snapshots to CloudWatch data; remembers counters and histogram buckets between pushes.
#[derive(Debug, Default)]
pub struct Converter {
    static_dimensions: BTreeMap<String, String>,
    counters: HashMap<SeriesKey, f64>,
    /// Per histogram series: cumulative count per bucket bound.
    buckets: HashMap<SeriesKey, Vec<(f64, f64)>>,
}

impl Converter {
    pub fn new(static_dimensions: BTreeMap<String, String>) -> Self {
        Self {
            static_dimensions,
            ..Self::default()
        }
    }

    fn dimensions(&self, labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut dims: BTreeMap<String, String> = self.static_dimensions.clone();
        for (k, v) in labels {
            if !v.is_empty() {
                dims.insert(k.clone(), v.chars().take(MAX_DIMENSION_VALUE).collect());
            }
        }
        dims.into_iter().take(MAX_DIMENSIONS).collect()
    }

    /// The data of one snapshot: the documented metrics only.
    pub fn convert(&mut self, samples: &[Sample]) -> Vec<Datum> {
        let mut out = Vec::new();
        // Histogram buckets of this snapshot, per series (labels without `le`).
        let mut hist: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples {
            let Some(def) = m::lookup(&s.name) else {
                continue;
            };
            match def.kind {
                Kind::Gauge if s.value.is_finite() => out.push(Datum {
                    name: def.name.into(),
                    dimensions: self.dimensions(&s.labels),
                    unit: unit_of(def.unit),
                    value: DatumValue::Single(s.value),
                }),
                Kind::Counter if s.value.is_finite() => {
                    let key = (s.name.clone(), s.labels.clone());
                    let prev = self.counters.insert(key, s.value).unwrap_or(0.0);
                    let delta = if s.value >= prev {
                        s.value - prev
                    } else {
                        s.value
                    };
                    out.push(Datum {
                        name: def.name.into(),
                        dimensions: self.dimensions(&s.labels),
                        unit: StandardUnit::Count,
                        value: DatumValue::Single(delta),
                    });
                }
                Kind::Histogram if s.name.ends_with("_bucket") => {
                    let Some(le) = s.label("le").and_then(|l| match l {
                        "+Inf" => Some(f64::INFINITY),
                        l => l.parse::<f64>().ok(),
                    }) else {
                        continue;
                    };
                    let mut labels = s.labels.clone();
                    labels.remove("le");
                    hist.entry((def.name.to_owned(), labels))
                        .or_default()
                        .push((le, s.value));
                }
                _ => {}
            }
        }
        for ((name, labels), mut cumulative) in hist {
            cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
            let prev = self
                .buckets
                .insert((name.clone(), labels.clone()), cumulative.clone());
            let per_bucket = |c: &[(f64, f64)]| -> Vec<(f64, f64)> {
                let mut last = 0.0;
                c.iter()
                    .map(|(le, n)| {
                        let d = (n - last).max(0.0);
                        last = *n;
                        (*le, d)
                    })
                    .collect()
            };
            let now = per_bucket(&cumulative);
            let before: HashMap<u64, f64> = prev
                .as_deref()
                .map(per_bucket)
                .unwrap_or_default()
                .into_iter()
                .map(|(le, n)| (le.to_bits(), n))
                .collect();
            // A total that went down means the recorder restarted: count from 0.
            let total = |c: &[(f64, f64)]| c.last().map_or(0.0, |x| x.1);
            let reset = prev
                .as_deref()
                .is_some_and(|p| total(p) > total(&cumulative));
            let largest_finite = cumulative
                .iter()
                .rev()
                .map(|x| x.0)
                .find(|le| le.is_finite())
                .unwrap_or(0.0);
            let (mut values, mut counts) = (Vec::new(), Vec::new());
            for (le, n) in now {
                let d = if reset {
                    n
                } else {
                    n - before.get(&le.to_bits()).copied().unwrap_or(0.0)
                };
                if d > 0.0 {
                    values.push(if le.is_finite() { le } else { largest_finite });
                    counts.push(d);
                }
            }
            if values.is_empty() {
                continue;
            }
            let unit = m::lookup(&name).map_or(StandardUnit::None, |d| unit_of(d.unit));
            let dimensions = self.dimensions(&labels);
            // More than 150 buckets: split into several data of the same metric.
            for (v, c) in values.chunks(MAX_VALUES).zip(counts.chunks(MAX_VALUES)) {
                out.push(Datum {
                    name: name.clone(),
                    dimensions: dimensions.clone(),
                    unit: unit.clone(),
                    value: DatumValue::Distribution {
                        values: v.to_vec(),
                        counts: c.to_vec(),
                    },
                });
            }
        }
        out
    }
}

/// Splits data into `PutMetricData` calls within the count and size limits.
pub fn batches(data: &[Datum]) -> Vec<&[Datum]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, d) in data.iter().enumerate() {
        let b = d.approx_bytes();
        if i > start && (i - start == MAX_DATA_PER_CALL || bytes + b > MAX_REQUEST_BYTES) {
            out.push(&data[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

/// Why a push failed (after retries).
#[derive(Debug, thiserror::Error)]
#[error("PutMetricData to {namespace}: {message}")]
pub struct PushError {
    pub namespace: String,
    pub message: String,
}

/// Pushes snapshots to CloudWatch.
#[derive(Debug)]
pub struct CloudWatchExporter {
    client: aws_sdk_cloudwatch::Client,
    config: CloudWatchConfig,
    converter: Converter,
}

/// What one push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    pub data: usize,
    pub calls: usize,
    pub failed_calls: usize,
}

impl CloudWatchExporter {
    /// An exporter from the shared SDK configuration, with `config`'s region and endpoint.
    pub fn new(sdk: &aws_config::SdkConfig, config: CloudWatchConfig) -> Self {
        let sdk = bikeshare_runtime::aws::caller_retries(
            sdk,
            config.endpoint_url.as_deref(),
            config.region.as_deref(),
            Some(Duration::from_millis(config.timeout_ms.max(1))),
        );
        Self {
            client: aws_sdk_cloudwatch::Client::new(&sdk),
            converter: Converter::new(config.dimensions.clone()),
            config,
        }
    }

    pub fn client(&self) -> &aws_sdk_cloudwatch::Client {
        &self.client
    }

    /// Converts `samples` and sends them, stamped `at`. Failed calls are logged and counted
    /// in the report, not returned: the next push goes on.
    pub async fn push(&mut self, samples: &[Sample], at: Timestamp) -> PushReport {
        let data = self.converter.convert(samples);
        let mut report = PushReport {
            data: data.len(),
            ..PushReport::default()
        };
        for batch in batches(&data) {
            report.calls += 1;
            let sdk: Vec<MetricDatum> = batch
                .iter()
                .map(|d| d.to_sdk(at, self.config.storage_resolution))
                .collect();
            if let Err(e) = self.put(sdk).await {
                report.failed_calls += 1;
                tracing::warn!(error = %e, metrics = batch.len(), "CloudWatch push dropped");
            }
        }
        report
    }

    async fn put(&self, data: Vec<MetricDatum>) -> Result<(), PushError> {
        let call = || async {
            let err = match self
                .client
                .put_metric_data()
                .namespace(&self.config.namespace)
                .set_metric_data(Some(data.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let (retryable, error) = match &err {
                SdkError::ServiceError(s) => (
                    s.raw().status().is_server_error()
                        || s.err().code().is_some_and(|c| c.contains("Throttl")),
                    format!(
                        "{}: {}",
                        s.err().code().unwrap_or("error"),
                        s.err().message().unwrap_or_default()
                    ),
                ),
                SdkError::TimeoutError(_)
                | SdkError::DispatchFailure(_)
                | SdkError::ResponseError(_) => (true, bikeshare_types::error::chain(&err)),
                other => (false, bikeshare_types::error::chain(other)),
            };
            Err(Failure { error, retryable })
        };
        self.config
            .retry
            .retry(call, tokio::time::sleep, |_, _, _| {})
            .await
            .map_err(|g| PushError {
                namespace: self.config.namespace.clone(),
                message: format!("{} (after {} attempts)", g.error, g.attempts),
            })
    }

    /// Pushes the installed recorder's snapshot every `interval_ms` until `stop` resolves,
    /// and once more then (the last counts of a stopping job).
    pub async fn run(
        mut self,
        source: crate::alerts::SampleSource,
        clock: SharedClock,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut every =
            tokio::time::interval(Duration::from_millis(self.config.interval_ms.max(1000)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            let stopping = tokio::select! {
                () = &mut stop => true,
                _ = every.tick() => false,
            };
            let r = self.push(&source(), clock.now()).await;
            tracing::debug!(?r, "CloudWatch push");
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::parse;

    fn single(d: &Datum) -> f64 {
        match d.value {
            DatumValue::Single(v) => v,
            DatumValue::Distribution { .. } => panic!("not single"),
        }
    }

    #[test]
    fn gauges_counter_deltas_and_histogram_deltas() {
        let mut c = Converter::new([("environment".to_owned(), "test".to_owned())].into());
        let first = parse(
            "bikeshare_stations_tracked 12\n\
             bikeshare_events_in_total{system=\"a\",kind=\"status\"} 100\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"0.1\"} 2\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"1\"} 3\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 4\n\
             bikeshare_checkpoint_duration_seconds_sum 9.5\n\
             bikeshare_checkpoint_duration_seconds_count 4\n\
             not_ours 1\nbikeshare_watermark_lag_seconds{system=\"a\"} NaN\n",
        );
        let d = c.convert(&first);
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0].name, "bikeshare_stations_tracked");
        assert_eq!(single(&d[0]), 12.0);
        assert_eq!(d[0].dimensions, [("environment".into(), "test".into())]);
        assert_eq!(single(&d[1]), 100.0, "a new counter counts from 0");
        assert_eq!(
            d[1].dimensions,
            [
                ("environment".to_owned(), "test".to_owned()),
                ("kind".into(), "status".into()),
                ("system".into(), "a".into())
            ]
        );
        assert_eq!(d[2].unit, StandardUnit::Seconds);
        assert_eq!(
            d[2].value,
            DatumValue::Distribution {
                values: vec![0.1, 1.0, 1.0],
                counts: vec![2.0, 1.0, 1.0]
            }
        );
        let second = parse(
            "bikeshare_events_in_total{system=\"a\",kind=\"status\"} 130\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"0.1\"} 2\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"1\"} 5\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 6\n",
        );
        let d = c.convert(&second);
        assert_eq!(single(&d[0]), 30.0);
        assert_eq!(
            d[1].value,
            DatumValue::Distribution {
                values: vec![1.0],
                counts: vec![2.0]
            }
        );
        // Nothing new in the histogram: no datum; a reset counter counts from 0.
        let third = parse(
            "bikeshare_events_in_total{system=\"a\",kind=\"status\"} 7\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"0.1\"} 2\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"1\"} 5\n\
             bikeshare_checkpoint_duration_seconds_bucket{le=\"+Inf\"} 6\n",
        );
        let d = c.convert(&third);
        assert_eq!(d.len(), 1);
        assert_eq!(single(&d[0]), 7.0);
    }

    #[test]
    fn batches_respect_the_count_limit() {
        let d = Datum {
            name: "bikeshare_stations_tracked".into(),
            dimensions: vec![],
            unit: StandardUnit::Count,
            value: DatumValue::Single(1.0),
        };
        let data = vec![d; 2500];
        let b = batches(&data);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert!(batches(&[]).is_empty());
    }
}
