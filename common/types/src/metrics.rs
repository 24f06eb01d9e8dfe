//! Every metric the project emits: its name, kind, unit, labels and meaning, in one place.
//!
//! Components record through the typed functions below (never through `metrics::counter!`
//! with a literal name), so a name or a label cannot drift from this table. The `metrics`
//! facade does nothing until a recorder is installed: `bikeshare-monitor` installs the
//! Prometheus one (`/metrics`) and pushes the same samples to CloudWatch when asked.
//! [`ALL`] is the table the README prints and the compliance test checks against.
//!
//! Labels are few and bounded: system ids, feed and event kinds, dead-letter rules (a
//! fixed vocabulary), shard ids, endpoint names; never station ids or free text.

use metrics::{Unit, counter, gauge, histogram};

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Which command records a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `ingest` (and `up`): the GBFS and weather producers.
    Ingest,
    /// `process` (and `up`): the stream processor and its monitors.
    Process,
    /// The model endpoint client (serving).
    Serving,
    /// The alerting loop (any command that runs it).
    Alerts,
    /// `api` (and `up`): the subscription API.
    Api,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The Prometheus name (counters end in `_total`, durations in `_seconds`).
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub component: Component,
    pub presence: Presence,
}

/// When a metric appears in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Once its component has done its first unit of work (the compliance test demands it).
    Always,
    /// Only once what it counts happens (errors, lease moves, a labelled window, a baseline).
    OnEvent,
}

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, $unit:ident, [$($l:literal),*], $comp:ident, $pres:ident, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: MetricDef = MetricDef {
                name: $name,
                kind: Kind::$kind,
                unit: Unit::$unit,
                labels: &[$($l),*],
                help: $help,
                component: Component::$comp,
                presence: Presence::$pres,
            };
        )*
        /// Every metric, in the order of the README table.
        pub const ALL: &[MetricDef] = &[$($id),*];
    };
}

defs! {
    EVENTS_OUT = "bikeshare_events_out_total", Counter, Count, ["source", "system", "kind"], Ingest, Always,
        "Events a producer published, per producer (`gbfs`, `weather`), system and event kind.";
    FEED_ERRORS = "bikeshare_feed_errors_total", Counter, Count, ["system", "feed", "reason"], Ingest, OnEvent,
        "Failed reads of a GBFS feed, per reason (`http_status`, `timeout`, a schema rule, ...).";
    FEED_AGE = "bikeshare_feed_age_seconds", Gauge, Seconds, ["system", "feed"], Ingest, Always,
        "Data freshness: now minus the feed's newest news (`station_status`: its newest `last_updated`; information feeds: their newest successful read, `304` included; `weather`: its newest observed hour).";
    FEED_SILENCE_PERIODS = "bikeshare_feed_silence_periods", Gauge, Count, ["system", "feed"], Ingest, Always,
        "Time since the feed last brought news (a newer `last_updated`, a read of an information feed, a new weather hour), in the feed's own periods (its GBFS `ttl` within the poller's bounds; 1 h for weather): above 2, the feed has stopped.";
    DEAD_LETTERS = "bikeshare_dead_letters_total", Counter, Count, ["component", "reason"], Ingest, OnEvent,
        "Records sent to the dead-letter stream, per component (`ingest`, `processor`) and rule.";
    EVENTS_IN = "bikeshare_events_in_total", Counter, Count, ["system", "kind"], Process, Always,
        "Events the processor read and decoded, per system and event kind.";
    PREDICTIONS = "bikeshare_predictions_total", Counter, Count, ["system"], Process, Always,
        "Predictions the processor published.";
    PREDICTIONS_RATE = "bikeshare_predictions_per_second", Gauge, CountPerSecond, [], Process, Always,
        "Predictions published per second over the last sampling interval.";
    LABELS = "bikeshare_labels_total", Counter, Count, ["system"], Process, Always,
        "Labels (what happened after a prediction) the processor published.";
    WATERMARK_LAG = "bikeshare_watermark_lag_seconds", Gauge, Seconds, ["system"], Process, Always,
        "Wall clock minus the system's event-time watermark.";
    SHARD_BEHIND = "bikeshare_shard_millis_behind_latest", Gauge, Milliseconds, ["stream", "shard"], Process, Always,
        "`MillisBehindLatest` of the last read of the shard (Kinesis' figure; the embedded stream computes the same).";
    SHARD_ITERATOR_AGE = "bikeshare_shard_iterator_age_seconds", Gauge, Seconds, ["stream", "shard"], Process, Always,
        "Now minus the arrival time of the last record read from the shard.";
    CHECKPOINT_AGE = "bikeshare_checkpoint_age_seconds", Gauge, Seconds, [], Process, Always,
        "Time since the last stored checkpoint.";
    CHECKPOINT_DURATION = "bikeshare_checkpoint_duration_seconds", Histogram, Seconds, [], Process, Always,
        "Time to flush the sinks and store a checkpoint.";
    PROCESSING_LATENCY = "bikeshare_processing_latency_seconds", Histogram, Seconds, ["stream"], Process, Always,
        "Arrival of a record on the stream to its outputs published (one sample per shard batch, its oldest record).";
    INFERENCE_LATENCY = "bikeshare_inference_latency_seconds", Histogram, Seconds, ["model"], Process, Always,
        "Time to score one batch of feature rows, divided by its rows (in-process model or endpoint).";
    STATIONS_TRACKED = "bikeshare_stations_tracked", Gauge, Count, [], Process, Always,
        "Stations whose state the processor holds.";
    LEASE_CHANGES = "bikeshare_lease_changes_total", Counter, Count, ["owner"], Process, OnEvent,
        "Shard leases gained or lost by this consumer instance.";
    MODEL_ROC_AUC = "bikeshare_model_roc_auc", Gauge, Count, ["system", "target"], Process, OnEvent,
        "Live ROC-AUC over the quality window, from the processor's own labels (`target`: empty, full).";
    MODEL_PR_AUC = "bikeshare_model_pr_auc", Gauge, Count, ["system", "target"], Process, OnEvent,
        "Live PR-AUC (average precision) over the quality window.";
    MODEL_BRIER = "bikeshare_model_brier", Gauge, Count, ["system", "target"], Process, OnEvent,
        "Live Brier score over the quality window (lower is better).";
    MODEL_CALIBRATION_ERROR = "bikeshare_model_calibration_error", Gauge, Count, ["system", "target"], Process, OnEvent,
        "Live expected calibration error (10 bins) over the quality window.";
    MODEL_LABELLED = "bikeshare_model_labelled", Gauge, Count, ["system", "target"], Process, OnEvent,
        "Labelled predictions in the quality window.";
    FEATURE_DRIFT = "bikeshare_feature_drift_distance", Gauge, Count, ["feature"], Process, OnEvent,
        "Distance between the recent and the baseline distribution of a feature (L-infinity between CDFs).";
    DRIFT_VIOLATIONS = "bikeshare_drift_violations", Gauge, Count, ["check"], Process, OnEvent,
        "Constraint violations in the last data-quality window, per check type.";
    FIREHOSE_RECORDS = "bikeshare_firehose_records_total", Counter, Count, ["stream", "outcome"], Process, OnEvent,
        "Records sent to a Firehose delivery stream, per outcome: `delivered`, `retried` (refused and sent again), `too_large` (over 1,000 KiB: dead-lettered), `undelivered` (retries spent: the checkpoint waits).";
    ENDPOINT_REQUESTS = "bikeshare_endpoint_requests_total", Counter, Count, ["endpoint"], Serving, OnEvent,
        "Requests to a model endpoint.";
    ENDPOINT_ERRORS = "bikeshare_endpoint_errors_total", Counter, Count, ["endpoint", "reason"], Serving, OnEvent,
        "Failed model endpoint calls, per reason (`timeout`, `throttled`, `model_error`, `http_5xx`, ...).";
    ENDPOINT_FALLBACKS = "bikeshare_endpoint_fallbacks_total", Counter, Count, ["endpoint", "reason"], Serving, OnEvent,
        "Predictions made by the fallback model because the endpoint failed or was open-circuited.";
    ENDPOINT_LATENCY = "bikeshare_endpoint_latency_seconds", Histogram, Seconds, ["endpoint"], Serving, OnEvent,
        "Duration of a model endpoint call.";
    AWS_CALL_FAILURES = "bikeshare_aws_call_failures_total", Counter, Count, ["service", "reason"], Process, OnEvent,
        "AWS calls that got no answer, per service (the SigV4 signing name: `kinesis`, `dynamodb`, `s3`, `firehose`, `sagemaker`, ...) and reason: `timeout` (abandoned at a connect, attempt or operation timeout: a stalled dependency) or `connection` (refused, reset).";
    ALERTS_FIRING = "bikeshare_alerts_firing", Gauge, Count, ["rule"], Alerts, OnEvent,
        "Alerts firing now (1) or not (0), per rule.";
    ALERT_NOTIFICATIONS = "bikeshare_alert_notifications_total", Counter, Count, ["channel", "outcome"], Alerts, OnEvent,
        "Notifications sent (`outcome`: sent, failed) per channel (`webhook`, `sns`).";
    SUBSCRIPTIONS_OPEN = "bikeshare_subscriptions_open", Gauge, Count, [], Api, OnEvent,
        "Prediction subscriptions (server-sent event streams) open now, against `api.max_subscriptions`.";
    SUBSCRIPTIONS_REFUSED = "bikeshare_subscriptions_refused_total", Counter, Count, ["reason"], Api, OnEvent,
        "Subscriptions refused, per reason: `client` (429: the client address holds its share) or `full` (503: every slot is taken).";
    UNREADABLE_FORWARDED = "bikeshare_api_unreadable_forwarded_total", Counter, Count, [], Api, OnEvent,
        "Requests from a trusted proxy whose `X-Forwarded-For` names no client, counted as the proxy's own address (a proxy that does not set the header: every client behind it shares one share).";
}

/// The definition of `name` (a Prometheus family name; `_bucket`, `_sum`, `_count` of a
/// histogram resolve to it).
pub fn lookup(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|d| d.name == name).or_else(|| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find_map(|base| {
                ALL.iter()
                    .find(|d| d.name == base && d.kind == Kind::Histogram)
            })
    })
}

/// Registers help texts and units with the installed recorder (call once, after installing).
pub fn describe_all() {
    for d in ALL {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.unit, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.unit, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.unit, d.help),
        }
    }
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

// --- ingest -------------------------------------------------------------------------------

pub fn events_out(source: &'static str, system: &str, kind: &'static str, n: u64) {
    counter!(EVENTS_OUT.name, "source" => source, "system" => system.to_owned(), "kind" => kind)
        .increment(n);
}

pub fn feed_error(system: &str, feed: &'static str, reason: &'static str) {
    counter!(FEED_ERRORS.name, "system" => system.to_owned(), "feed" => feed, "reason" => reason)
        .increment(1);
}

/// `age_ms`: now minus the time of the feed's newest news; `silence_ms`: now minus when that
/// news arrived; `period_ms`: how often news is due.
pub fn feed_age(system: &str, feed: &'static str, age_ms: i64, silence_ms: i64, period_ms: i64) {
    gauge!(FEED_AGE.name, "system" => system.to_owned(), "feed" => feed).set(secs(age_ms));
    gauge!(FEED_SILENCE_PERIODS.name, "system" => system.to_owned(), "feed" => feed)
        .set(silence_ms as f64 / period_ms.max(1) as f64);
}

/// `component`: `ingest` or `processor`; `reason`: the dead letter's rule.
pub fn dead_letters(component: &'static str, reason: &str, n: u64) {
    counter!(DEAD_LETTERS.name, "component" => component, "reason" => reason.to_owned())
        .increment(n);
}

// --- process ------------------------------------------------------------------------------

pub fn events_in(system: &str, kind: &'static str, n: u64) {
    counter!(EVENTS_IN.name, "system" => system.to_owned(), "kind" => kind).increment(n);
}

pub fn predictions(system: &str, n: u64) {
    counter!(PREDICTIONS.name, "system" => system.to_owned()).increment(n);
}

pub fn predictions_rate(per_second: f64) {
    gauge!(PREDICTIONS_RATE.name).set(per_second);
}

pub fn labels(system: &str, n: u64) {
    counter!(LABELS.name, "system" => system.to_owned()).increment(n);
}

pub fn watermark_lag(system: &str, lag_ms: i64) {
    gauge!(WATERMARK_LAG.name, "system" => system.to_owned()).set(secs(lag_ms));
}

pub fn shard_position(
    stream: &str,
    shard: &str,
    behind_ms: Option<i64>,
    iterator_age_ms: Option<i64>,
) {
    if let Some(b) = behind_ms {
        gauge!(SHARD_BEHIND.name, "stream" => stream.to_owned(), "shard" => shard.to_owned())
            .set(b as f64);
    }
    if let Some(a) = iterator_age_ms {
        gauge!(SHARD_ITERATOR_AGE.name, "stream" => stream.to_owned(), "shard" => shard.to_owned())
            .set(secs(a));
    }
}

pub fn checkpoint_age(age: std::time::Duration) {
    gauge!(CHECKPOINT_AGE.name).set(age.as_secs_f64());
}

pub fn checkpoint_duration(d: std::time::Duration) {
    histogram!(CHECKPOINT_DURATION.name).record(d.as_secs_f64());
}

pub fn processing_latency(stream: &'static str, latency_ms: i64) {
    histogram!(PROCESSING_LATENCY.name, "stream" => stream).record(secs(latency_ms.max(0)));
}

pub fn inference_latency(model: &str, per_row: std::time::Duration) {
    histogram!(INFERENCE_LATENCY.name, "model" => model.to_owned()).record(per_row.as_secs_f64());
}

pub fn stations_tracked(n: usize) {
    gauge!(STATIONS_TRACKED.name).set(n as f64);
}

pub fn lease_changes(owner: &str, n: u64) {
    counter!(LEASE_CHANGES.name, "owner" => owner.to_owned()).increment(n);
}

/// Live quality of one system and target (`empty` or `full`); `None` values are not set.
pub fn model_quality(
    system: &str,
    target: &'static str,
    labelled: usize,
    roc_auc: Option<f64>,
    pr_auc: Option<f64>,
    brier: Option<f64>,
    calibration_error: Option<f64>,
) {
    let l = || [("system", system.to_owned()), ("target", target.to_owned())];
    gauge!(MODEL_LABELLED.name, &l()).set(labelled as f64);
    for (def, v) in [
        (MODEL_ROC_AUC, roc_auc),
        (MODEL_PR_AUC, pr_auc),
        (MODEL_BRIER, brier),
        (MODEL_CALIBRATION_ERROR, calibration_error),
    ] {
        if let Some(v) = v {
            gauge!(def.name, &l()).set(v);
        }
    }
}

pub fn feature_drift(feature: &str, distance: f64) {
    gauge!(FEATURE_DRIFT.name, "feature" => feature.to_owned()).set(distance);
}

/// `outcome`: `delivered`, `retried`, `too_large` or `undelivered` (see [`FIREHOSE_RECORDS`]).
pub fn firehose_records(stream: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(FIREHOSE_RECORDS.name, "stream" => stream.to_owned(), "outcome" => outcome)
            .increment(n);
    }
}

/// `check`: a Model Monitor constraint check type (`baseline_drift_check`, ...).
pub fn drift_violations(check: &'static str, n: usize) {
    gauge!(DRIFT_VIOLATIONS.name, "check" => check).set(n as f64);
}

// --- serving ------------------------------------------------------------------------------

pub fn endpoint_request(endpoint: &str, latency: std::time::Duration) {
    counter!(ENDPOINT_REQUESTS.name, "endpoint" => endpoint.to_owned()).increment(1);
    histogram!(ENDPOINT_LATENCY.name, "endpoint" => endpoint.to_owned())
        .record(latency.as_secs_f64());
}

pub fn endpoint_error(endpoint: &str, reason: &'static str) {
    counter!(ENDPOINT_ERRORS.name, "endpoint" => endpoint.to_owned(), "reason" => reason)
        .increment(1);
}

/// `n` predictions made by the fallback because of `reason`.
pub fn endpoint_fallbacks(endpoint: &str, reason: &'static str, n: u64) {
    counter!(ENDPOINT_FALLBACKS.name, "endpoint" => endpoint.to_owned(), "reason" => reason)
        .increment(n);
}

// --- AWS calls ----------------------------------------------------------------------------

/// `service`: the SigV4 signing name; `reason`: `timeout` or `connection`.
pub fn aws_call_failure(service: &str, reason: &'static str) {
    counter!(AWS_CALL_FAILURES.name, "service" => service.to_owned(), "reason" => reason)
        .increment(1);
}

// --- alerts -------------------------------------------------------------------------------

pub fn alert_firing(rule: &str, firing: bool) {
    gauge!(ALERTS_FIRING.name, "rule" => rule.to_owned()).set(f64::from(u8::from(firing)));
}

/// `outcome`: `sent` or `failed`.
pub fn alert_notification(channel: &'static str, outcome: &'static str) {
    counter!(ALERT_NOTIFICATIONS.name, "channel" => channel, "outcome" => outcome).increment(1);
}

// --- subscription API ------------------------------------------------------------------

/// A subscription opened (`+1`) or closed (`-1`): the gauge moves by steps, so that
/// subscriptions closing at once never leave it at a stale count.
pub fn subscriptions_open_step(step: i8) {
    gauge!(SUBSCRIPTIONS_OPEN.name).increment(f64::from(step));
}

/// `reason`: `client` or `full`.
pub fn subscription_refused(reason: &'static str) {
    counter!(SUBSCRIPTIONS_REFUSED.name, "reason" => reason).increment(1);
}

pub fn unreadable_forwarded() {
    counter!(UNREADABLE_FORWARDED.name).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "duplicate {}", d.name);
            assert!(d.name.starts_with("bikeshare_"), "{}", d.name);
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            if d.unit == Unit::Seconds {
                assert!(d.name.ends_with("_seconds"), "{}", d.name);
            }
        }
        assert_eq!(
            lookup("bikeshare_checkpoint_duration_seconds_bucket").map(|d| d.name),
            Some(CHECKPOINT_DURATION.name)
        );
        assert!(lookup("bikeshare_stations_tracked_count").is_none());
    }
}
