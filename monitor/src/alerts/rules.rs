//! Alert rules: a documented metric, a label matcher, a comparison held for a while.
//!
//! A [`Rule`] reads one metric of [`bikeshare_types::metrics::ALL`] — its value (gauges) or
//! its per-second rate over a window (counters) — per label set, compares it with a
//! threshold, and may demand a guard on a second metric with the same labels (live quality
//! is judged only with enough labels). [`default_rules`] are the rules the project ships;
//! [`Rule::promql`] writes the same rule in PromQL for `infra/monitoring/prometheus-rules.yml`.

use std::collections::BTreeMap;
use std::fmt;

use bikeshare_types::metrics::{self as m, Kind, MetricDef};
use serde::{Deserialize, Serialize};

/// How bad it is when a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison of an observed value with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparator {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Comparator {
    /// `value op threshold`; NaN never holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }
}

/// A condition on a second metric with the same labels (`and on(labels)` in PromQL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    pub metric: String,
    pub op: Comparator,
    pub threshold: f64,
}

/// One alert rule (`[[alerts.rules]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique, snake_case (`feed_stale`): the `rule` label of `bikeshare_alerts_firing`.
    pub name: String,
    /// A metric of the table in `common::metrics` (its family name).
    pub metric: String,
    /// Exact label values a series must have (others are ignored).
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    /// Counters: compare the per-second rate over this many seconds, not the value.
    #[serde(default)]
    pub rate_secs: Option<u64>,
    pub op: Comparator,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (0: at once).
    #[serde(default)]
    pub for_secs: u64,
    pub severity: Severity,
    /// One line for people; `{value}`, `{threshold}` and `{<label>}` are replaced. The value
    /// and threshold of a duration (a gauge in seconds or milliseconds) are written as a
    /// duration with its unit (`2 min 4 s`), other values to 4 significant digits.
    pub summary: String,
    #[serde(default)]
    pub guard: Option<Guard>,
    /// Gauges: the condition does not hold while the value falls at least this fast (per
    /// second, over the `for` window, at least a minute): a lag shrinking that fast is a
    /// catch-up in progress, not a fault (e.g. 1.0 on a lag in seconds: event time gaining on
    /// the wall clock at twice real time or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless_falling_per_sec: Option<f64>,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "alert rule {rule:?}: metric {metric:?} is not in the metrics table (common/types/src/metrics.rs)"
    )]
    UnknownMetric { rule: String, metric: String },
    #[error("alert rule {rule:?}: {metric} is a histogram; alert on a gauge or a counter")]
    Histogram { rule: String, metric: String },
    #[error("alert rule {rule:?}: label {label:?} is not a label of {metric}")]
    UnknownLabel {
        rule: String,
        metric: String,
        label: String,
    },
    #[error("alert rule {rule:?}: rate_secs applies to counters only, and counters need it")]
    Rate { rule: String },
    #[error(
        "alert rule {rule:?}: the guard metric {metric:?} must be a gauge or counter with the same labels"
    )]
    Guard { rule: String, metric: String },
    #[error("alert rule name {0:?} is empty, not snake_case, or used twice")]
    Name(String),
    #[error("alert rule {rule:?}: the threshold must be a finite number")]
    Threshold { rule: String },
    #[error("alert rule {rule:?}: unless_falling_per_sec applies to gauges, and must be above 0")]
    Falling { rule: String },
}

impl Rule {
    /// The metric's definition, once [`Rule::validate`] passed.
    pub fn def(&self) -> Option<&'static MetricDef> {
        m::ALL.iter().find(|d| d.name == self.metric)
    }

    /// Checks the rule against the metrics table.
    pub fn validate(&self) -> Result<&'static MetricDef, RuleError> {
        let rule = self.name.clone();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(RuleError::Name(rule));
        }
        if !self.threshold.is_finite() {
            return Err(RuleError::Threshold { rule });
        }
        let def = self.def().ok_or_else(|| RuleError::UnknownMetric {
            rule: rule.clone(),
            metric: self.metric.clone(),
        })?;
        match def.kind {
            Kind::Histogram => {
                return Err(RuleError::Histogram {
                    rule,
                    metric: self.metric.clone(),
                });
            }
            Kind::Counter if self.rate_secs.is_none_or(|s| s == 0) => {
                return Err(RuleError::Rate { rule });
            }
            Kind::Gauge if self.rate_secs.is_some() => return Err(RuleError::Rate { rule }),
            _ => {}
        }
        if let Some(f) = self.unless_falling_per_sec
            && (def.kind != Kind::Gauge || !(f.is_finite() && f > 0.0))
        {
            return Err(RuleError::Falling { rule });
        }
        if let Some(label) = self
            .matchers
            .keys()
            .find(|l| !def.labels.contains(&l.as_str()))
        {
            return Err(RuleError::UnknownLabel {
                rule,
                metric: self.metric.clone(),
                label: label.clone(),
            });
        }
        if let Some(g) = &self.guard {
            let ok = m::ALL
                .iter()
                .find(|d| d.name == g.metric)
                .is_some_and(|gd| gd.kind == Kind::Gauge && gd.labels == def.labels)
                && g.threshold.is_finite();
            if !ok {
                return Err(RuleError::Guard {
                    rule,
                    metric: g.metric.clone(),
                });
            }
        }
        Ok(def)
    }

    /// The rule as a PromQL expression (what `prometheus-rules.yml` says).
    pub fn promql(&self) -> String {
        let selector = if self.matchers.is_empty() {
            self.metric.clone()
        } else {
            let inner: Vec<String> = self
                .matchers
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            format!("{}{{{}}}", self.metric, inner.join(","))
        };
        let value = match self.rate_secs {
            Some(s) => format!("rate({selector}[{}])", promql_duration(s)),
            None => selector,
        };
        let mut cond = format!("{value} {} {}", self.op.as_str(), fmt_num(self.threshold));
        if let Some(f) = self.unless_falling_per_sec {
            cond = format!(
                "({cond}) unless (deriv({value}[{}]) <= -{})",
                promql_duration(self.falling_window_secs()),
                fmt_num(f)
            );
        }
        match (&self.guard, self.def()) {
            (Some(g), Some(def)) => format!(
                "({cond}) and on({}) ({} {} {})",
                def.labels.join(", "),
                g.metric,
                g.op.as_str(),
                fmt_num(g.threshold)
            ),
            _ => cond,
        }
    }

    /// Seconds per unit when the compared value is a duration: a gauge in seconds or
    /// milliseconds (a counter's rate is a count per second, not a duration).
    fn duration_unit(&self) -> Option<f64> {
        if self.rate_secs.is_some() {
            return None;
        }
        match self.def()?.unit {
            metrics::Unit::Seconds => Some(1.0),
            metrics::Unit::Milliseconds => Some(0.001),
            _ => None,
        }
    }

    /// The window over which [`Rule::unless_falling_per_sec`] measures the fall: the `for`
    /// window, at least a minute.
    pub fn falling_window_secs(&self) -> u64 {
        self.for_secs.max(60)
    }

    /// The summary with `{value}`, `{threshold}` and `{<label>}` filled in.
    pub fn render_summary(&self, labels: &BTreeMap<String, String>, value: f64) -> String {
        let (value, threshold) = match self.duration_unit() {
            Some(secs_per_unit) => (
                human_duration(value * secs_per_unit),
                human_duration(self.threshold * secs_per_unit),
            ),
            None => (fmt_num(round_sig(value)), fmt_num(self.threshold)),
        };
        let mut s = self
            .summary
            .replace("{value}", &value)
            .replace("{threshold}", &threshold);
        for (k, v) in labels {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }
}

/// Checks every rule and that names are unique.
pub fn validate_all(rules: &[Rule]) -> Result<(), RuleError> {
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        r.validate()?;
        if !seen.insert(r.name.as_str()) {
            return Err(RuleError::Name(r.name.clone()));
        }
    }
    Ok(())
}

/// `300` → `5m`, `90` → `90s`, `7200` → `2h`.
pub fn promql_duration(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A duration for people: `850 ms`, `4.5 s`, `42 s`, `2 min 4 s`, `3 h 12 min`, `2 d 5 h`
/// (rounded to the smaller unit shown).
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return format!("{secs} s");
    }
    if secs < 0.0 {
        return format!("-{}", human_duration(-secs));
    }
    if secs < 1.0 {
        let ms = (secs * 1000.0).round();
        return if ms < 1000.0 {
            format!("{ms} ms")
        } else {
            "1 s".into()
        };
    }
    if secs < 10.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        if tenths < 10.0 {
            return format!("{} s", fmt_num(tenths));
        }
    }
    let pair = |n: u64, big: u64, a: &str, b: &str| {
        let (hi, lo) = (n / big, n % big);
        if lo == 0 {
            format!("{hi} {a}")
        } else {
            format!("{hi} {a} {lo} {b}")
        }
    };
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        pair(s, 60, "min", "s")
    } else if s < 86_400 {
        pair((secs / 60.0).round() as u64, 60, "h", "min")
    } else {
        pair((secs / 3600.0).round() as u64, 24, "d", "h")
    }
}

fn round_sig(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let digits = 4 - v.abs().log10().ceil() as i32;
    let p = 10f64.powi(digits.clamp(-15, 15));
    (v * p).round() / p
}

/// The rules as a Prometheus rule file (`infra/monitoring/prometheus-rules.yml` is this
/// for [`default_rules`]; a test keeps them equal).
pub fn prometheus_rules_yaml(rules: &[Rule]) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::from(
        "# Generated from bikeshare_monitor::alerts::default_rules(): do not edit by hand.\n\
         # Regenerate: BIKESHARE_UPDATE_INFRA=1 cargo test -p bikeshare-monitor --test it infra_monitoring\n\
         # The same rules run inside `bikeshare up` / `bikeshare process` ([alerts] in the config).\n\
         groups:\n  - name: bikeshare\n    rules:\n",
    );
    for r in rules {
        out.push_str(&format!("      - alert: {}\n", r.name));
        out.push_str(&format!("        expr: {}\n", q(&r.promql())));
        if r.for_secs > 0 {
            out.push_str(&format!("        for: {}\n", promql_duration(r.for_secs)));
        }
        out.push_str(&format!(
            "        labels:\n          severity: {}\n",
            r.severity
        ));
        let (value, threshold) = match r.duration_unit() {
            // Prometheus' templates humanize durations in seconds only.
            Some(1.0) => (
                "{{ $value | humanizeDuration }}".to_owned(),
                human_duration(r.threshold),
            ),
            Some(per) => (
                "{{ $value | humanize }} ms".to_owned(),
                human_duration(r.threshold * per),
            ),
            None => ("{{ $value | humanize }}".to_owned(), fmt_num(r.threshold)),
        };
        let mut summary = r
            .summary
            .replace("{value}", &value)
            .replace("{threshold}", &threshold);
        if let Some(def) = r.def() {
            for l in def.labels {
                summary = summary.replace(&format!("{{{l}}}"), &format!("{{{{ $labels.{l} }}}}"));
            }
        }
        out.push_str(&format!(
            "        annotations:\n          summary: {}\n",
            q(&summary)
        ));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn rule(
    name: &str,
    def: MetricDef,
    matchers: &[(&str, &str)],
    rate_secs: Option<u64>,
    op: Comparator,
    threshold: f64,
    for_secs: u64,
    severity: Severity,
    summary: &str,
) -> Rule {
    Rule {
        name: name.into(),
        metric: def.name.into(),
        matchers: matchers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        rate_secs,
        op,
        threshold,
        for_secs,
        severity,
        summary: summary.into(),
        guard: None,
        unless_falling_per_sec: None,
    }
}

/// Labelled predictions a live-quality figure needs before it is judged.
pub const MIN_LABELLED: f64 = 200.0;

/// The rules the project ships (`[alerts] disabled` and `[alerts.overrides]` adjust them;
/// `infra/monitoring/prometheus-rules.yml` is generated from them).
pub fn default_rules() -> Vec<Rule> {
    use Comparator::*;
    use Severity::*;
    let quality_guard = Some(Guard {
        metric: m::MODEL_LABELLED.name.into(),
        op: Ge,
        threshold: MIN_LABELLED,
    });
    vec![
        rule(
            "shard_lag",
            m::SHARD_BEHIND,
            &[],
            None,
            Gt,
            60_000.0,
            300,
            Critical,
            "shard {shard} of {stream} is {value} behind the tip (> {threshold})",
        ),
        // Not while event time gains on the wall clock at twice real time or more: a city
        // catching up on its morning (`up`'s first minutes), a backlog being worked off.
        Rule {
            unless_falling_per_sec: Some(1.0),
            ..rule(
                "watermark_lag",
                m::WATERMARK_LAG,
                &[],
                None,
                Gt,
                900.0,
                300,
                Warning,
                "event time of {system} is {value} behind the wall clock (> {threshold})",
            )
        },
        rule(
            "checkpoint_stale",
            m::CHECKPOINT_AGE,
            &[],
            None,
            Gt,
            300.0,
            60,
            Critical,
            "no checkpoint stored for {value} (> {threshold})",
        ),
        // Each feed against its own period (GBFS `ttl`, weather's hour): two periods without
        // news already are the wait, so it fires at once.
        rule(
            "feed_stale",
            m::FEED_SILENCE_PERIODS,
            &[],
            None,
            Gt,
            2.0,
            0,
            Warning,
            "{feed} of {system} has brought no news for {value} of its periods (> {threshold})",
        ),
        rule(
            "dead_letter_rate",
            m::DEAD_LETTERS,
            &[],
            Some(300),
            Gt,
            1.0,
            300,
            Warning,
            "{component} dead-letters {value}/s for {reason} (> {threshold}/s)",
        ),
        rule(
            "feed_error_rate",
            m::FEED_ERRORS,
            &[],
            Some(300),
            Gt,
            0.05,
            600,
            Warning,
            "reads of {feed} of {system} fail {value}/s ({reason})",
        ),
        rule(
            "endpoint_error_rate",
            m::ENDPOINT_ERRORS,
            &[],
            Some(300),
            Gt,
            0.1,
            300,
            Warning,
            "endpoint {endpoint} fails {value} calls/s ({reason})",
        ),
        rule(
            "endpoint_fallback_rate",
            m::ENDPOINT_FALLBACKS,
            &[],
            Some(300),
            Gt,
            1.0,
            600,
            Warning,
            "{value} predictions/s from the fallback instead of endpoint {endpoint} ({reason})",
        ),
        rule(
            "feature_drift",
            m::FEATURE_DRIFT,
            &[],
            None,
            Gt,
            0.3,
            900,
            Warning,
            "feature {feature} drifted: distance {value} from the baseline (> {threshold})",
        ),
        rule(
            "drift_violations",
            m::DRIFT_VIOLATIONS,
            &[],
            None,
            Gt,
            0.0,
            900,
            Warning,
            "{value} {check} violations in the last data-quality window",
        ),
        Rule {
            guard: quality_guard.clone(),
            ..rule(
                "quality_pr_auc_low",
                m::MODEL_PR_AUC,
                &[],
                None,
                Lt,
                0.2,
                1800,
                Warning,
                "live PR-AUC of {system}/{target} is {value} (< {threshold})",
            )
        },
        Rule {
            guard: quality_guard,
            ..rule(
                "quality_brier_high",
                m::MODEL_BRIER,
                &[],
                None,
                Gt,
                0.2,
                1800,
                Warning,
                "live Brier score of {system}/{target} is {value} (> {threshold})",
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_are_valid_and_cover_every_area() {
        let rules = default_rules();
        validate_all(&rules).unwrap();
        for metric in [
            m::SHARD_BEHIND.name,
            m::WATERMARK_LAG.name,
            m::FEED_SILENCE_PERIODS.name,
            m::DEAD_LETTERS.name,
            m::ENDPOINT_ERRORS.name,
            m::ENDPOINT_FALLBACKS.name,
            m::FEATURE_DRIFT.name,
            m::DRIFT_VIOLATIONS.name,
            m::MODEL_PR_AUC.name,
            m::MODEL_BRIER.name,
        ] {
            assert!(rules.iter().any(|r| r.metric == metric), "{metric}");
        }
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let ok = default_rules().remove(0);
        let bad = |f: &dyn Fn(&mut Rule)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate().unwrap_err().to_string()
        };
        assert!(bad(&|r| r.metric = "bikeshare_nope".into()).contains("not in the metrics table"));
        assert!(bad(&|r| r.metric = m::PROCESSING_LATENCY.name.into()).contains("histogram"));
        assert!(
            bad(&|r| {
                r.matchers.insert("station".into(), "x".into());
            })
            .contains("label \"station\"")
        );
        assert!(bad(&|r| r.rate_secs = Some(60)).contains("rate_secs"));
        assert!(bad(&|r| r.metric = m::DEAD_LETTERS.name.into()).contains("rate_secs"));
        assert!(bad(&|r| r.name = "Shard Lag".into()).contains("snake_case"));
        assert!(bad(&|r| r.threshold = f64::NAN).contains("finite"));
        let mut twice = default_rules();
        twice.push(ok.clone());
        assert!(validate_all(&twice).is_err());
    }

    #[test]
    fn durations_read_as_durations() {
        for (secs, text) in [
            (0.0, "0 ms"),
            (0.8504, "850 ms"),
            (0.9996, "1 s"),
            (4.54, "4.5 s"),
            (9.96, "10 s"),
            (42.4, "42 s"),
            (59.6, "1 min"),
            (124.0, "2 min 4 s"),
            (3_599.6, "1 h"),
            (11_520.0, "3 h 12 min"),
            (190_800.0, "2 d 5 h"),
            (-90.0, "-1 min 30 s"),
        ] {
            assert_eq!(human_duration(secs), text, "{secs} s");
        }
    }

    #[test]
    fn promql_and_summaries() {
        let rules = default_rules();
        let by = |n: &str| rules.iter().find(|r| r.name == n).unwrap();
        assert_eq!(
            by("feed_stale").promql(),
            "bikeshare_feed_silence_periods > 2"
        );
        assert_eq!(
            by("dead_letter_rate").promql(),
            "rate(bikeshare_dead_letters_total[5m]) > 1"
        );
        assert_eq!(
            by("quality_pr_auc_low").promql(),
            "(bikeshare_model_pr_auc < 0.2) and on(system, target) (bikeshare_model_labelled >= 200)"
        );
        let labels: BTreeMap<String, String> = [
            ("system".to_owned(), "bluebikes".to_owned()),
            ("feed".to_owned(), "station_information".to_owned()),
        ]
        .into();
        assert_eq!(
            by("feed_stale").render_summary(&labels, 3.25159),
            "station_information of bluebikes has brought no news for 3.252 of its periods (> 2)"
        );
        // Durations with their unit, not raw numbers of seconds or milliseconds.
        let shard: BTreeMap<String, String> = [
            ("shard".to_owned(), "shardId-000000000001".to_owned()),
            ("stream".to_owned(), "events".to_owned()),
        ]
        .into();
        assert_eq!(
            by("shard_lag").render_summary(&shard, 123_456.0),
            "shard shardId-000000000001 of events is 2 min 3 s behind the tip (> 1 min)"
        );
        assert_eq!(
            by("watermark_lag").render_summary(&labels, 7_512.0),
            "event time of bluebikes is 2 h 5 min behind the wall clock (> 15 min)"
        );
        assert_eq!(
            by("checkpoint_stale").render_summary(&labels, 301.4),
            "no checkpoint stored for 5 min 1 s (> 5 min)"
        );
        // A counter's rate is no duration, whatever the counter counts.
        assert_eq!(
            by("dead_letter_rate").render_summary(&labels, 1.23456),
            "{component} dead-letters 1.235/s for {reason} (> 1/s)"
        );
        assert_eq!(promql_duration(90), "90s");
        assert_eq!(promql_duration(7200), "2h");
    }
}
