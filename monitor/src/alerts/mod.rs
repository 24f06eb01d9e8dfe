//! Alerting on our own metrics, inside the process that records them.
//!
//! - [`rules`]: [`Rule`] (metric, label matchers, value or rate, comparator, threshold, `for`,
//!   severity, summary, optional guard) and [`default_rules`] for lag, freshness, error
//!   rates, drift and live quality.
//! - [`engine`]: the pending → firing → resolved state machine per (rule, labels), with one
//!   notification per episode (optionally repeated) and a recovery message.
//! - [`notify`]: the [`Notifier`] trait and the [`Dispatcher`] that logs, sends and counts.
//! - [`webhook`] (Slack-compatible JSON) and [`sns`] (`Publish`): the notifiers.
//!
//! [`AlertLoop`] ties them together: every `interval` it renders the installed Prometheus
//! recorder, reads it back with [`crate::samples`], evaluates, sets
//! `bikeshare_alerts_firing{rule}` and dispatches. With no notifier configured, alerts are
//! only logged (a `WARN` line when one fires, an `INFO` line when it resolves).
//!
//! ```
//! use bikeshare_types::Timestamp;
//! use bikeshare_monitor::alerts::{Engine, NotificationKind, default_rules};
//! use bikeshare_monitor::samples::parse;
//!
//! let mut engine = Engine::new(default_rules(), None);
//! let lag = parse("bikeshare_shard_millis_behind_latest{stream=\"events\",shard=\"0\"} 900000\n");
//! assert!(engine.evaluate(Timestamp::from_secs(0), &lag).is_empty()); // pending for 5 min
//! let n = engine.evaluate(Timestamp::from_secs(300), &lag);
//! assert_eq!(n[0].kind, NotificationKind::Firing);
//! let caught_up = parse("bikeshare_shard_millis_behind_latest{stream=\"events\",shard=\"0\"} 5\n");
//! assert_eq!(engine.evaluate(Timestamp::from_secs(360), &caught_up)[0].kind, NotificationKind::Resolved);
//! ```

pub mod engine;
pub mod notify;
pub mod rules;
pub mod sns;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_types::SharedClock;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

pub use engine::{Engine, Notification, NotificationKind};
pub use notify::{Dispatcher, Notifier, NotifyError};
pub use rules::{
    Comparator, Guard, Rule, RuleError, Severity, default_rules, prometheus_rules_yaml,
};
pub use sns::SnsConfig;
#[cfg(feature = "aws")]
pub use sns::SnsNotifier;
pub use webhook::{WebhookConfig, WebhookNotifier};

use crate::samples::Sample;

/// Changes to one default rule (`[alerts.overrides.<rule>]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleOverride {
    pub threshold: Option<f64>,
    pub for_secs: Option<u64>,
    pub severity: Option<Severity>,
    /// Replaces the rule's label matchers.
    pub matchers: Option<BTreeMap<String, String>>,
}

/// `[alerts]`: which rules, how often, and where notifications go.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct AlertsConfig {
    /// Evaluate rules at all (default true: with no notifier, alerts go to the log).
    #[default(true)]
    pub enabled: bool,
    /// How often the rules are evaluated.
    #[default(15_000)]
    pub interval_ms: u64,
    /// Remind while an alert keeps firing, this often (0: one notification per episode).
    pub renotify_secs: u64,
    /// Default rules to leave out, by name.
    pub disabled: Vec<String>,
    /// Thresholds, `for` durations, severities or matchers of default rules, by name.
    pub overrides: BTreeMap<String, RuleOverride>,
    /// Rules of your own, added to the defaults (`[[alerts.rules]]`).
    pub rules: Vec<Rule>,
    pub webhook: WebhookConfig,
    pub sns: SnsConfig,
}

/// Why alerting cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("[alerts] {what} names rule {name:?}, which is not a default rule")]
    UnknownRule { what: &'static str, name: String },
    #[error(transparent)]
    Notifier(#[from] NotifyError),
    #[error(transparent)]
    Exporter(#[from] crate::exporter::ExporterError),
}

impl AlertsConfig {
    /// The effective rules: defaults less `disabled`, with `overrides`, plus `rules`; checked.
    pub fn effective_rules(&self) -> Result<Vec<Rule>, AlertsError> {
        let defaults = default_rules();
        for (what, name) in self
            .disabled
            .iter()
            .map(|n| ("disabled", n))
            .chain(self.overrides.keys().map(|n| ("overrides", n)))
        {
            if !defaults.iter().any(|r| &r.name == name) {
                return Err(AlertsError::UnknownRule {
                    what,
                    name: name.clone(),
                });
            }
        }
        let mut rules: Vec<Rule> = defaults
            .into_iter()
            .filter(|r| !self.disabled.contains(&r.name))
            .map(|mut r| {
                if let Some(o) = self.overrides.get(&r.name) {
                    if let Some(t) = o.threshold {
                        r.threshold = t;
                    }
                    if let Some(f) = o.for_secs {
                        r.for_secs = f;
                    }
                    if let Some(s) = o.severity {
                        r.severity = s;
                    }
                    if let Some(m) = &o.matchers {
                        r.matchers = m.clone();
                    }
                }
                r
            })
            .collect();
        rules.extend(self.rules.iter().cloned());
        rules::validate_all(&rules)?;
        Ok(rules)
    }

    /// The configured notifiers; SNS needs `sdk` (the shared AWS configuration). With the
    /// `aws` feature only: without it, build a [`Dispatcher`] of your own notifiers.
    #[cfg(feature = "aws")]
    pub fn notifiers(
        &self,
        sdk: Option<&aws_config::SdkConfig>,
    ) -> Result<Vec<Arc<dyn Notifier>>, AlertsError> {
        let mut out: Vec<Arc<dyn Notifier>> = Vec::new();
        if let Some(w) = WebhookNotifier::from_config(&self.webhook)? {
            out.push(Arc::new(w));
        }
        if let Some(sdk) = sdk
            && let Some(s) = SnsNotifier::from_config(sdk, &self.sns)
        {
            out.push(Arc::new(s));
        }
        Ok(out)
    }

    /// Whether SNS is configured (the caller then loads an AWS configuration).
    pub fn wants_sns(&self) -> bool {
        self.sns.topic_arn.as_deref().is_some_and(|t| !t.is_empty())
    }
}

/// Where the loop reads its samples from.
pub type SampleSource = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// The installed Prometheus recorder (installed now if need be), rendered and parsed.
pub fn recorder_source() -> Result<SampleSource, crate::exporter::ExporterError> {
    let handle = crate::exporter::install()?;
    Ok(Arc::new(move || crate::samples::parse(&handle.render())))
}

/// Evaluates the rules periodically and dispatches notifications.
pub struct AlertLoop {
    engine: Engine,
    dispatcher: Dispatcher,
    source: SampleSource,
    clock: SharedClock,
    interval: Duration,
}

impl std::fmt::Debug for AlertLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertLoop")
            .field("rules", &self.engine.rules().len())
            .field("channels", &self.dispatcher.channels())
            .field("interval", &self.interval)
            .finish()
    }
}

impl AlertLoop {
    pub fn new(
        engine: Engine,
        dispatcher: Dispatcher,
        source: SampleSource,
        clock: SharedClock,
        interval: Duration,
    ) -> Self {
        Self {
            engine,
            dispatcher,
            source,
            clock,
            interval: interval.max(Duration::from_millis(10)),
        }
    }

    /// The loop of `config` over the process's own recorder (with the `aws` feature, for
    /// SNS; without it, [`AlertLoop::new`]).
    #[cfg(feature = "aws")]
    pub fn from_config(
        config: &AlertsConfig,
        sdk: Option<&aws_config::SdkConfig>,
        clock: SharedClock,
    ) -> Result<Self, AlertsError> {
        let engine = Engine::new(
            config.effective_rules()?,
            Some(Duration::from_secs(config.renotify_secs)),
        );
        let dispatcher = Dispatcher::new(config.notifiers(sdk)?);
        Ok(Self::new(
            engine,
            dispatcher,
            recorder_source()?,
            clock,
            Duration::from_millis(config.interval_ms),
        ))
    }

    pub fn channels(&self) -> Vec<&'static str> {
        self.dispatcher.channels()
    }

    pub fn rules(&self) -> &[Rule] {
        self.engine.rules()
    }

    /// One evaluation: returns the notifications it dispatched.
    pub async fn tick(&mut self) -> Vec<Notification> {
        let samples = (self.source)();
        let notes = self.engine.evaluate(self.clock.now(), &samples);
        for (rule, n) in self.engine.firing_per_rule() {
            bikeshare_types::metrics::alert_firing(rule, n > 0);
        }
        for n in &notes {
            self.dispatcher.dispatch(n).await;
        }
        notes
    }

    /// Ticks every `interval` until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = every.tick() => {
                    self.tick().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_disabled_and_extra_rules() {
        let mut c = AlertsConfig::default();
        assert_eq!(c.effective_rules().unwrap(), default_rules());
        c.disabled = vec!["feature_drift".into()];
        c.overrides.insert(
            "feed_stale".into(),
            RuleOverride {
                threshold: Some(60.0),
                severity: Some(Severity::Critical),
                ..RuleOverride::default()
            },
        );
        let mut extra = default_rules().remove(0);
        extra.name = "my_lag".into();
        c.rules.push(extra);
        let rules = c.effective_rules().unwrap();
        assert!(!rules.iter().any(|r| r.name == "feature_drift"));
        let fs = rules.iter().find(|r| r.name == "feed_stale").unwrap();
        assert_eq!((fs.threshold, fs.severity), (60.0, Severity::Critical));
        assert!(rules.iter().any(|r| r.name == "my_lag"));
        c.overrides.insert("nope".into(), RuleOverride::default());
        assert!(
            c.effective_rules()
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }
}
