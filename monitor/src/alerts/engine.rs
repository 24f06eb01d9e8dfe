//! The alert state machine: pure, driven by snapshots of samples and an injected time.
//!
//! Per (rule, label set): the condition starts holding → **pending**; it holds for the rule's
//! `for` → **firing** (one [`NotificationKind::Firing`]); it stops holding, or the series
//! disappears → **resolved** (one [`NotificationKind::Resolved`]) and the state is dropped. A
//! pending alert whose condition stops holding is dropped silently, so a flapping value that
//! never holds for `for` notifies nobody. While firing, a reminder
//! ([`NotificationKind::Repeat`]) goes out every `renotify` when one is configured; otherwise
//! one episode is one notification and one recovery.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bikeshare_types::Timestamp;

use super::rules::{Rule, Severity};
use crate::samples::Sample;

/// A series' labels, ordered.
pub type Labels = BTreeMap<String, String>;

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    /// The alert started firing.
    Firing,
    /// Still firing (re-notification).
    Repeat,
    /// It stopped firing.
    Resolved,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Repeat => "still firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One message for the notifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub rule: String,
    pub severity: Severity,
    pub labels: Labels,
    /// The last value that met the condition (for `Resolved`: the value that no longer did,
    /// or NaN when the series disappeared).
    pub value: f64,
    pub threshold: f64,
    /// The rendered summary.
    pub summary: String,
    /// When it started firing.
    pub firing_since: Timestamp,
    /// When this notification was made.
    pub at: Timestamp,
}

impl Notification {
    /// `[FIRING] warning feed_stale: station_status of x has brought no news for 3 of its
    /// periods (> 2)`.
    pub fn title(&self) -> String {
        let tag = match self.kind {
            NotificationKind::Firing => "FIRING",
            NotificationKind::Repeat => "STILL FIRING",
            NotificationKind::Resolved => "RESOLVED",
        };
        format!("[{tag}] {} {}: {}", self.severity, self.rule, self.summary)
    }

    /// The labels as `k=v, k=v`.
    pub fn labels_text(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone)]
enum State {
    Pending {
        since: Timestamp,
    },
    Firing {
        since: Timestamp,
        last_notified: Timestamp,
    },
}

/// The alert engine: rules, per-alert states and the counter history rates need.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Rule>,
    renotify: Option<Duration>,
    states: HashMap<(usize, Labels), State>,
    /// Samples per (metric, labels), oldest first, within the longest window a rule needs:
    /// counters for rates, gauges for `unless_falling_per_sec`.
    history: HashMap<(String, Labels), VecDeque<(Timestamp, f64)>>,
    last_eval: Option<Timestamp>,
}

impl Engine {
    /// `rules` must have passed [`super::rules::validate_all`]. `renotify`: remind while
    /// firing this often (`None`: never).
    pub fn new(rules: Vec<Rule>, renotify: Option<Duration>) -> Self {
        Self {
            rules,
            renotify: renotify.filter(|d| !d.is_zero()),
            states: HashMap::new(),
            history: HashMap::new(),
            last_eval: None,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Alerts firing now, per rule name (every rule is listed, 0 when quiet).
    pub fn firing_per_rule(&self) -> BTreeMap<&str, usize> {
        let mut out: BTreeMap<&str, usize> =
            self.rules.iter().map(|r| (r.name.as_str(), 0)).collect();
        for ((i, _), s) in &self.states {
            if matches!(s, State::Firing { .. })
                && let Some(n) = out.get_mut(self.rules[*i].name.as_str())
            {
                *n += 1;
            }
        }
        out
    }

    /// Evaluates every rule on one snapshot taken at `now`; returns what to notify.
    pub fn evaluate(&mut self, now: Timestamp, samples: &[Sample]) -> Vec<Notification> {
        self.record_counters(now, samples);
        let mut out = Vec::new();
        let mut seen: std::collections::HashSet<(usize, Labels)> = Default::default();
        for (i, rule) in self.rules.iter().enumerate() {
            for (labels, value) in observe(rule, samples, &self.history, now) {
                let holds = rule.op.holds(value, rule.threshold)
                    && rule.guard.as_ref().is_none_or(|g| {
                        samples
                            .iter()
                            .find(|s| s.name == g.metric && s.labels == labels)
                            .is_some_and(|s| g.op.holds(s.value, g.threshold))
                    })
                    && rule.unless_falling_per_sec.is_none_or(|f| {
                        let h = self.history.get(&(rule.metric.clone(), labels.clone()));
                        let window = secs_ms(rule.falling_window_secs());
                        h.and_then(|h| fall_per_sec(h, now, window))
                            .is_none_or(|fall| fall < f)
                    });
                let key = (i, labels);
                if !holds {
                    continue;
                }
                seen.insert(key.clone());
                let labels = &key.1;
                let next = match self.states.get(&key) {
                    None if rule.for_secs == 0 => None,
                    None => Some(State::Pending { since: now }),
                    Some(State::Pending { since }) => {
                        if now.millis() - since.millis() >= secs_ms(rule.for_secs) {
                            None
                        } else {
                            Some(State::Pending { since: *since })
                        }
                    }
                    Some(State::Firing {
                        since,
                        last_notified,
                        ..
                    }) => {
                        let due = self.renotify.is_some_and(|d| {
                            now.millis() - last_notified.millis()
                                >= i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                        });
                        if due {
                            out.push(notification(
                                NotificationKind::Repeat,
                                rule,
                                labels,
                                value,
                                *since,
                                now,
                            ));
                        }
                        Some(State::Firing {
                            since: *since,
                            last_notified: if due { now } else { *last_notified },
                        })
                    }
                };
                let state = next.unwrap_or_else(|| {
                    // Pending long enough (or `for` = 0): fire.
                    out.push(notification(
                        NotificationKind::Firing,
                        rule,
                        labels,
                        value,
                        now,
                        now,
                    ));
                    State::Firing {
                        since: now,
                        last_notified: now,
                    }
                });
                self.states.insert(key, state);
            }
        }
        // Everything not seen holding: pending ones end quietly, firing ones resolve.
        let ended: Vec<(usize, Labels)> = self
            .states
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in ended {
            if let Some(State::Firing { since, .. }) = self.states.remove(&key) {
                let rule = &self.rules[key.0];
                let value = observe(rule, samples, &self.history, now)
                    .into_iter()
                    .find(|(l, _)| *l == key.1)
                    .map_or(f64::NAN, |(_, v)| v);
                out.push(notification(
                    NotificationKind::Resolved,
                    rule,
                    &key.1,
                    value,
                    since,
                    now,
                ));
            }
        }
        self.last_eval = Some(now);
        out
    }

    /// Appends the samples rate rules and falling-gauge rules read, and forgets what is older
    /// than needed.
    fn record_counters(&mut self, now: Timestamp, samples: &[Sample]) {
        let window = |r: &Rule| {
            r.rate_secs
                .or(r.unless_falling_per_sec.map(|_| r.falling_window_secs()))
        };
        let keep_ms = self
            .rules
            .iter()
            .filter_map(window)
            .max()
            .map_or(0, secs_ms);
        if keep_ms == 0 {
            return;
        }
        let rated: std::collections::HashSet<&str> = self
            .rules
            .iter()
            .filter(|r| window(r).is_some())
            .map(|r| r.metric.as_str())
            .collect();
        let counters: std::collections::HashSet<&str> = self
            .rules
            .iter()
            .filter(|r| r.rate_secs.is_some())
            .map(|r| r.metric.as_str())
            .collect();
        for s in samples.iter().filter(|s| rated.contains(s.name.as_str())) {
            let h = self
                .history
                .entry((s.name.clone(), s.labels.clone()))
                .or_default();
            // A counter first seen after an earlier evaluation started from 0 since then.
            if h.is_empty()
                && counters.contains(s.name.as_str())
                && let Some(prev) = self.last_eval
            {
                h.push_back((prev, 0.0));
            }
            h.push_back((now, s.value));
        }
        for h in self.history.values_mut() {
            // Keep one sample at or before the window's start, so a rate spans the window.
            while h.len() > 2
                && h.get(1)
                    .is_some_and(|(t, _)| now.millis() - t.millis() >= keep_ms)
            {
                h.pop_front();
            }
        }
        self.history.retain(|_, h| {
            h.back()
                .is_some_and(|(t, _)| now.millis() - t.millis() < keep_ms)
        });
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn notification(
    kind: NotificationKind,
    rule: &Rule,
    labels: &Labels,
    value: f64,
    since: Timestamp,
    at: Timestamp,
) -> Notification {
    Notification {
        kind,
        rule: rule.name.clone(),
        severity: rule.severity,
        labels: labels.clone(),
        value,
        threshold: rule.threshold,
        summary: rule.render_summary(labels, value),
        firing_since: since,
        at,
    }
}

/// The rule's observed value per matching series: the sample (gauges) or its rate.
fn observe(
    rule: &Rule,
    samples: &[Sample],
    history: &HashMap<(String, Labels), VecDeque<(Timestamp, f64)>>,
    now: Timestamp,
) -> Vec<(Labels, f64)> {
    let matching = samples.iter().filter(|s| {
        s.name == rule.metric
            && rule
                .matchers
                .iter()
                .all(|(k, v)| s.label(k) == Some(v.as_str()))
    });
    match rule.rate_secs {
        None => matching.map(|s| (s.labels.clone(), s.value)).collect(),
        Some(window) => matching
            .filter_map(|s| {
                let h = history.get(&(s.name.clone(), s.labels.clone()))?;
                rate(h, now, secs_ms(window)).map(|r| (s.labels.clone(), r))
            })
            .collect(),
    }
}

/// How fast a gauge fell, per second, from its sample at the window's start (or the oldest
/// kept) to now; `None` until the samples span at least the window.
fn fall_per_sec(h: &VecDeque<(Timestamp, f64)>, now: Timestamp, window_ms: i64) -> Option<f64> {
    let first = h
        .iter()
        .rev()
        .find(|(t, _)| now.millis() - t.millis() >= window_ms)?;
    let last = h.back()?;
    let span_ms = last.0.millis() - first.0.millis();
    (span_ms > 0).then(|| (first.1 - last.1) * 1000.0 / span_ms as f64)
}

/// Per-second increase over the samples within `window_ms` of `now` (plus the one just
/// before it); a decrease is a counter reset, counted from 0.
fn rate(h: &VecDeque<(Timestamp, f64)>, now: Timestamp, window_ms: i64) -> Option<f64> {
    let start = h
        .iter()
        .rposition(|(t, _)| now.millis() - t.millis() >= window_ms)
        .unwrap_or(0);
    let points: Vec<&(Timestamp, f64)> = h.iter().skip(start).collect();
    let (first, last) = (points.first()?, points.last()?);
    let span_ms = last.0.millis() - first.0.millis();
    if span_ms <= 0 {
        return None;
    }
    let increase: f64 = points
        .windows(2)
        .map(|w| {
            let d = w[1].1 - w[0].1;
            if d >= 0.0 { d } else { w[1].1 }
        })
        .sum();
    Some(increase * 1000.0 / span_ms as f64)
}

#[cfg(test)]
mod tests {
    use super::super::rules::{Comparator, Guard, Severity};
    use super::*;

    fn gauge_rule(for_secs: u64) -> Rule {
        Rule {
            name: "lag".into(),
            metric: "bikeshare_watermark_lag_seconds".into(),
            matchers: BTreeMap::new(),
            rate_secs: None,
            op: Comparator::Gt,
            threshold: 100.0,
            for_secs,
            severity: Severity::Warning,
            summary: "{system} lag {value}".into(),
            guard: None,
            unless_falling_per_sec: None,
        }
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            value,
        }
    }

    fn lag(system: &str, v: f64) -> Sample {
        sample("bikeshare_watermark_lag_seconds", &[("system", system)], v)
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_700_000_000 + s)
    }

    fn kinds(n: &[Notification]) -> Vec<NotificationKind> {
        n.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn pending_for_its_duration_then_fires_once_then_resolves() {
        let mut e = Engine::new(vec![gauge_rule(60)], None);
        assert!(e.evaluate(t(0), &[lag("a", 500.0)]).is_empty(), "pending");
        assert!(
            e.evaluate(t(30), &[lag("a", 500.0)]).is_empty(),
            "still pending"
        );
        let fired = e.evaluate(t(60), &[lag("a", 600.0)]);
        assert_eq!(kinds(&fired), [NotificationKind::Firing]);
        assert_eq!(fired[0].summary, "a lag 10 min");
        assert_eq!(fired[0].labels["system"], "a");
        assert_eq!(e.firing_per_rule()["lag"], 1);
        for s in 61..200 {
            assert!(
                e.evaluate(t(s), &[lag("a", 700.0)]).is_empty(),
                "deduplicated"
            );
        }
        let resolved = e.evaluate(t(200), &[lag("a", 5.0)]);
        assert_eq!(kinds(&resolved), [NotificationKind::Resolved]);
        assert_eq!(resolved[0].value, 5.0);
        assert_eq!(resolved[0].firing_since, t(60));
        assert_eq!(e.firing_per_rule()["lag"], 0);
        assert!(e.evaluate(t(201), &[lag("a", 5.0)]).is_empty());
    }

    #[test]
    fn flapping_below_the_for_duration_never_notifies() {
        let mut e = Engine::new(vec![gauge_rule(60)], None);
        for s in 0..600 {
            let v = if (s / 50) % 2 == 0 { 500.0 } else { 0.0 };
            assert!(e.evaluate(t(s), &[lag("a", v)]).is_empty(), "at {s}");
        }
    }

    #[test]
    fn flapping_after_firing_is_one_notification_per_episode() {
        let mut e = Engine::new(vec![gauge_rule(0)], None);
        let mut all = Vec::new();
        for (s, v) in [
            (0, 500.0),
            (1, 600.0),
            (2, 0.0),
            (3, 0.0),
            (4, 500.0),
            (5, 0.0),
        ] {
            all.extend(e.evaluate(t(s), &[lag("a", v)]));
        }
        use NotificationKind::*;
        assert_eq!(kinds(&all), [Firing, Resolved, Firing, Resolved]);
    }

    #[test]
    fn label_sets_are_separate_alerts_and_a_vanished_series_resolves() {
        let mut e = Engine::new(vec![gauge_rule(0)], None);
        let n = e.evaluate(t(0), &[lag("a", 500.0), lag("b", 500.0), lag("c", 1.0)]);
        assert_eq!(n.len(), 2);
        assert_eq!(e.firing_per_rule()["lag"], 2);
        let n = e.evaluate(t(1), &[lag("a", 500.0)]);
        assert_eq!(kinds(&n), [NotificationKind::Resolved]);
        assert_eq!(n[0].labels["system"], "b");
        assert!(n[0].value.is_nan());
    }

    #[test]
    fn renotifies_while_firing_when_asked() {
        let mut e = Engine::new(vec![gauge_rule(0)], Some(Duration::from_secs(100)));
        let mut all = Vec::new();
        for s in 0..=250 {
            all.extend(e.evaluate(t(s), &[lag("a", 500.0)]));
        }
        use NotificationKind::*;
        assert_eq!(kinds(&all), [Firing, Repeat, Repeat]);
        assert_eq!(all[1].at, t(100));
        assert_eq!(all[2].firing_since, t(0));
    }

    #[test]
    fn matchers_select_series() {
        let mut r = gauge_rule(0);
        r.matchers.insert("system".into(), "b".into());
        let mut e = Engine::new(vec![r], None);
        let n = e.evaluate(t(0), &[lag("a", 500.0), lag("b", 500.0)]);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].labels["system"], "b");
    }

    #[test]
    fn counter_rates_over_a_window_with_resets() {
        let rule = Rule {
            name: "dead".into(),
            metric: "bikeshare_dead_letters_total".into(),
            rate_secs: Some(60),
            threshold: 1.0,
            summary: "{value}/s".into(),
            ..gauge_rule(0)
        };
        let dl = |v: f64| sample("bikeshare_dead_letters_total", &[("reason", "x")], v);
        let mut e = Engine::new(vec![rule], None);
        // First sight of a counter at the first evaluation: no rate yet.
        assert!(e.evaluate(t(0), &[dl(1000.0)]).is_empty());
        // 0.5/s: quiet.
        assert!(e.evaluate(t(10), &[dl(1005.0)]).is_empty());
        // 1005 → 1100 in 10 s, over the window since t0: 100 / 20 s = 5/s.
        let n = e.evaluate(t(20), &[dl(1100.0)]);
        assert_eq!(kinds(&n), [NotificationKind::Firing]);
        assert_eq!(n[0].value, 5.0);
        // Reset to 10 (a restart) counts as +10, then flat: the rate decays below 1/s.
        assert!(e.evaluate(t(30), &[dl(10.0)]).is_empty());
        let mut resolved = Vec::new();
        for s in 4..12 {
            resolved.extend(e.evaluate(t(s * 10), &[dl(10.0)]));
        }
        assert_eq!(kinds(&resolved), [NotificationKind::Resolved]);
        // A labelled counter that appears between evaluations counts from 0.
        let mut e = Engine::new(e.rules().to_vec(), None);
        assert!(e.evaluate(t(0), &[]).is_empty());
        let n = e.evaluate(t(10), &[dl(50.0)]);
        assert_eq!(n[0].value, 5.0);
    }

    #[test]
    fn a_guard_needs_enough_labels() {
        let rule = Rule {
            name: "pr_auc".into(),
            metric: "bikeshare_model_pr_auc".into(),
            op: Comparator::Lt,
            threshold: 0.2,
            guard: Some(Guard {
                metric: "bikeshare_model_labelled".into(),
                op: Comparator::Ge,
                threshold: 200.0,
            }),
            ..gauge_rule(0)
        };
        let l = [("system", "a"), ("target", "empty")];
        let mut e = Engine::new(vec![rule], None);
        let few = [
            sample("bikeshare_model_pr_auc", &l, 0.05),
            sample("bikeshare_model_labelled", &l, 20.0),
        ];
        assert!(e.evaluate(t(0), &few).is_empty());
        let many = [
            sample("bikeshare_model_pr_auc", &l, 0.05),
            sample("bikeshare_model_labelled", &l, 500.0),
        ];
        assert_eq!(kinds(&e.evaluate(t(1), &many)), [NotificationKind::Firing]);
    }

    #[test]
    fn a_lag_that_shrinks_at_twice_real_time_is_a_catch_up_not_an_alert() {
        let rule = || Rule {
            threshold: 900.0,
            unless_falling_per_sec: Some(1.0),
            ..gauge_rule(300)
        };
        // `up`'s city catching up on six hours at 60x: the lag falls 59 s a second.
        let mut e = Engine::new(vec![rule()], None);
        let mut all = Vec::new();
        for s in (0..=420).step_by(15) {
            let v = (21_600.0 - 59.0 * s as f64).max(5.0);
            all.extend(e.evaluate(t(s), &[lag("a", v)]));
        }
        assert!(all.is_empty(), "{all:?}");
        // A lag that stays (or falls slower than real time) fires after the `for` window.
        for fall in [0.0, 0.5] {
            let mut e = Engine::new(vec![rule()], None);
            let mut all = Vec::new();
            for s in (0..=330).step_by(15) {
                all.extend(e.evaluate(t(s), &[lag("a", 5_000.0 - fall * s as f64)]));
            }
            assert_eq!(kinds(&all), [NotificationKind::Firing], "falling {fall}/s");
        }
        // A catch-up that stalls: the lag stops falling, and it fires a window later.
        let mut e = Engine::new(vec![rule()], None);
        let mut all = Vec::new();
        for s in (0..=900).step_by(15) {
            let v = if s < 120 {
                20_000.0 - 59.0 * s as f64
            } else {
                12_920.0
            };
            all.extend(e.evaluate(t(s), &[lag("a", v)]));
        }
        assert_eq!(kinds(&all), [NotificationKind::Firing]);
    }
}
