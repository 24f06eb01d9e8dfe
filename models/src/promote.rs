//! The promotion gate: what a trained model must show before it scores live traffic.
//!
//! - **To staging** (after training): the card's feature schema is the processor's, the
//!   model files load, and on held-out rows its probabilities are sane — finite, in [0, 1],
//!   not constant.
//! - **To production**: the same checks, and it *beats* the current production model (or,
//!   with none, the transparent [`BaselineScorer`]) on the same recent held-out rows, by the
//!   configured margins, on both the log loss of all rows (lower) and the PR-AUC of the
//!   **new-stockout** rows (higher: rows whose station was not already empty, resp. full,
//!   at `as_of`; on all rows "empty now" alone ranks most positives), for both targets
//!   (went empty, went full). Held-out rows without a new-stockout positive fall back to the
//!   PR-AUC of all rows, and the check says so.
//!
//! Every decision, taken or refused, is a [`PromotionDecision`] with its numbers, appended to
//! the registry's decision log. The decision itself ([`decide`]) is a pure function of the
//! checks and metrics; [`Gate`] does the I/O around it.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bikeshare_stream_processor::backfill::TrainingRow;
use bikeshare_stream_processor::{BaselineScorer, FeatureSchema, Scorer};
use bikeshare_types::contracts::ModelRef;
use bikeshare_types::{SharedClock, Timestamp};
use serde::{Deserialize, Serialize};

use crate::dataset::TrainingData;
/// The decision record lives with the registry that stores it; re-exported here, where the
/// gate makes it.
pub use crate::registry::decision::{
    Check, GateMetrics, HeldOutSummary, Margins, PromotionDecision, TargetMetrics,
};
use crate::registry::{self, ModelVersion, Registry, RegistryError, Stage, VersionLoadError};

/// Settings of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    pub margins: Margins,
    /// Fewer held-out rows than this is not evidence: the gate refuses.
    pub min_rows: usize,
    /// Each target needs at least this many positive and negative rows.
    pub min_per_class: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            margins: Margins::default(),
            min_rows: 200,
            min_per_class: 5,
        }
    }
}

/// Labelled feature rows the gate evaluates on.
#[derive(Debug, Clone, Default)]
pub struct HeldOut {
    pub values: Vec<Vec<Option<f32>>>,
    pub as_of: Vec<Timestamp>,
    pub went_empty: Vec<bool>,
    pub went_full: Vec<bool>,
    /// The station's state at `as_of` (`empty_now[i]`, `full_now[i]`): a row without one
    /// (the vectors are shorter) is in no new-stockout set.
    pub empty_now: Vec<bool>,
    pub full_now: Vec<bool>,
}

impl HeldOut {
    pub fn from_training_rows(rows: &[TrainingRow]) -> Self {
        let mut h = HeldOut::default();
        for r in rows {
            let v = &r.row.vector;
            h.push(
                v.values.clone(),
                v.as_of,
                (r.label.went_empty, r.label.went_full),
                (r.label.empty_at_as_of, r.label.full_at_as_of),
            );
        }
        h
    }

    /// Rows `range` of a training table (NaN is a missing value).
    pub fn from_training_data(data: &TrainingData, range: Range<usize>) -> Self {
        let mut h = HeldOut::default();
        for i in range.start..range.end.min(data.len()) {
            let m = data.meta(i);
            h.push(
                data.values(i).collect(),
                m.as_of,
                (m.went_empty, m.went_full),
                (m.empty_now, m.full_now),
            );
        }
        h
    }

    fn push(
        &mut self,
        values: Vec<Option<f32>>,
        as_of: Timestamp,
        (went_empty, went_full): (bool, bool),
        (empty_now, full_now): (bool, bool),
    ) {
        self.values.push(values);
        self.as_of.push(as_of);
        self.went_empty.push(went_empty);
        self.went_full.push(went_full);
        self.empty_now.push(empty_now);
        self.full_now.push(full_now);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The rows whose `as_of` is within `millis` of the newest one: "recent" held-out data.
    pub fn recent(&self, millis: i64) -> HeldOut {
        let Some(newest) = self.as_of.iter().max().copied() else {
            return self.clone();
        };
        let from = newest.plus_millis(-millis);
        let mut h = HeldOut::default();
        for i in 0..self.len() {
            if self.as_of[i] > from {
                h.values.push(self.values[i].clone());
                h.as_of.push(self.as_of[i]);
                h.went_empty.push(self.went_empty[i]);
                h.went_full.push(self.went_full[i]);
                if let (Some(&e), Some(&f)) = (self.empty_now.get(i), self.full_now.get(i)) {
                    h.empty_now.push(e);
                    h.full_now.push(f);
                }
            }
        }
        h
    }

    pub fn summary(&self) -> HeldOutSummary {
        HeldOutSummary {
            rows: self.len(),
            from: self.as_of.iter().min().copied(),
            to: self.as_of.iter().max().copied(),
            went_empty: self.went_empty.iter().filter(|b| **b).count(),
            went_full: self.went_full.iter().filter(|b| **b).count(),
        }
    }
}

/// Probabilities of a scorer on every held-out row.
#[derive(Debug, Clone)]
pub struct Scored {
    pub p_empty: Vec<f32>,
    pub p_full: Vec<f32>,
}

pub fn score_all(scorer: &dyn Scorer, data: &HeldOut) -> Scored {
    let mut s = Scored {
        p_empty: Vec::with_capacity(data.len()),
        p_full: Vec::with_capacity(data.len()),
    };
    for v in &data.values {
        let x = scorer.score(v);
        s.p_empty.push(x.p_empty);
        s.p_full.push(x.p_full);
    }
    s
}

/// Log loss ([`crate::eval::log_loss`]), a NaN probability counting as 0.5. NaN without rows.
pub fn log_loss(p: &[f32], y: &[bool]) -> f64 {
    crate::eval::log_loss(&nan_as_half(p), y).unwrap_or(f64::NAN)
}

/// PR-AUC as average precision ([`crate::eval::average_precision`]), a NaN probability
/// counting as 0.5. NaN without positives.
pub fn pr_auc(p: &[f32], y: &[bool]) -> f64 {
    crate::eval::average_precision(&nan_as_half(p), y).unwrap_or(f64::NAN)
}

fn nan_as_half(p: &[f32]) -> Vec<f32> {
    p.iter()
        .map(|&v| if v.is_nan() { 0.5 } else { v })
        .collect()
}

/// PR-AUC of the rows whose state at `as_of` is known and off (`now[i]` false); `None`
/// without a positive among them.
fn new_stockout_pr_auc(p: &[f32], y: &[bool], now: &[bool]) -> Option<f64> {
    let (mut ps, mut ys) = (Vec::new(), Vec::new());
    for ((&pi, &yi), &n) in p.iter().zip(y).zip(now) {
        if !n {
            ps.push(pi);
            ys.push(yi);
        }
    }
    let v = pr_auc(&ps, &ys);
    v.is_finite().then_some(v)
}

pub fn metrics(scored: &Scored, data: &HeldOut) -> GateMetrics {
    let one = |p: &[f32], y: &[bool], now: &[bool]| TargetMetrics {
        log_loss: log_loss(p, y),
        pr_auc: pr_auc(p, y),
        new_stockout_pr_auc: new_stockout_pr_auc(p, y, now),
    };
    GateMetrics {
        empty: one(&scored.p_empty, &data.went_empty, &data.empty_now),
        full: one(&scored.p_full, &data.went_full, &data.full_now),
    }
}

/// Sanity of a scorer's probabilities: finite, in [0, 1], not constant — per target.
pub fn sanity_checks(scored: &Scored) -> Vec<Check> {
    let mut out = Vec::new();
    for (target, p) in [("empty", &scored.p_empty), ("full", &scored.p_full)] {
        let bad = p
            .iter()
            .filter(|x| !x.is_finite() || **x < 0.0 || **x > 1.0)
            .count();
        out.push(Check::new(
            &format!("probabilities.{target}.in_unit_interval"),
            bad == 0 && !p.is_empty(),
            format!("{bad} of {} outside [0, 1] or not finite", p.len()),
        ));
        let (lo, hi) = p
            .iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        out.push(Check::new(
            &format!("probabilities.{target}.not_constant"),
            hi > lo,
            format!("range [{lo}, {hi}]"),
        ));
    }
    out
}

/// Whether the held-out rows are enough evidence.
pub fn data_checks(data: &HeldOut, cfg: &GateConfig) -> Vec<Check> {
    let s = data.summary();
    let mut out = vec![Check::new(
        "heldout.rows",
        s.rows >= cfg.min_rows,
        format!("{} rows (at least {})", s.rows, cfg.min_rows),
    )];
    for (target, pos) in [("empty", s.went_empty), ("full", s.went_full)] {
        let neg = s.rows - pos;
        out.push(Check::new(
            &format!("heldout.{target}.both_outcomes"),
            pos >= cfg.min_per_class && neg >= cfg.min_per_class,
            format!(
                "{pos} positive, {neg} negative (at least {} each)",
                cfg.min_per_class
            ),
        ));
    }
    out
}

/// Candidate versus incumbent, per target: lower log loss on all rows and higher PR-AUC on
/// the new-stockout rows, each by its margin (the PR-AUC of all rows when either side has no
/// new-stockout figure: the check's name and detail say which was compared).
pub fn comparison_checks(cand: &GateMetrics, inc: &GateMetrics, m: &Margins) -> Vec<Check> {
    let mut out = Vec::new();
    for (target, c, i) in [
        ("empty", &cand.empty, &inc.empty),
        ("full", &cand.full, &inc.full),
    ] {
        out.push(Check::new(
            &format!("beats.{target}.log_loss"),
            c.log_loss.is_finite() && c.log_loss <= i.log_loss - m.log_loss,
            format!(
                "{:.5} vs {:.5} (must be lower by {})",
                c.log_loss, i.log_loss, m.log_loss
            ),
        ));
        let (name, cp, ip, rows) = match (c.new_stockout_pr_auc, i.new_stockout_pr_auc) {
            (Some(cp), Some(ip)) => ("new_stockout_pr_auc", cp, ip, "new-stockout rows"),
            _ => (
                "pr_auc",
                c.pr_auc,
                i.pr_auc,
                "all rows: no new-stockout positive held out",
            ),
        };
        out.push(Check::new(
            &format!("beats.{target}.{name}"),
            cp.is_finite() && (cp >= ip + m.pr_auc || !ip.is_finite()),
            format!(
                "{cp:.5} vs {ip:.5} on {rows} (must be higher by {})",
                m.pr_auc
            ),
        ));
    }
    out
}

/// The decision from its checks: promoted only if every check passed.
pub fn decide(checks: &[Check]) -> (bool, String) {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    if failed.is_empty() {
        (true, format!("all {} checks passed", checks.len()))
    } else {
        (false, format!("failed: {}", failed.join(", ")))
    }
}

/// Why the gate could not run at all (a refused candidate is a decision, not an error).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("nothing to promote: {0}")]
    NoCandidate(String),
}

/// The gate over a registry: loads models, evaluates, decides, records, moves the stage.
#[derive(Debug, Clone)]
pub struct Gate {
    pub registry: Arc<dyn Registry>,
    pub schema: FeatureSchema,
    /// The processor's horizon (the baseline needs it).
    pub horizon_minutes: u32,
    pub config: GateConfig,
    /// Where downloaded versions are kept.
    pub cache: PathBuf,
    pub clock: SharedClock,
}

impl Gate {
    /// Decides whether `candidate` may enter `target`; records the decision and, if taken,
    /// moves the stage. `data` is required for production and optional for staging.
    pub async fn evaluate(
        &self,
        candidate: u64,
        target: Stage,
        data: Option<&HeldOut>,
    ) -> Result<PromotionDecision, GateError> {
        let version = self.registry.get(candidate).await?;
        let mut checks = Vec::new();
        let expected = self.schema.id().as_str();
        checks.push(Check::new(
            "schema.feature_schema_id",
            version.feature_schema_id.as_deref() == Some(expected),
            format!(
                "card says {}, the processor computes {expected}",
                version.feature_schema_id.as_deref().unwrap_or("nothing")
            ),
        ));
        let scorer = match self.load(&version).await {
            Ok(s) => {
                checks.push(Check::new("model.loads", true, "both models load"));
                Some(s)
            }
            Err(e) => {
                checks.push(Check::new("model.loads", false, e));
                None
            }
        };
        let mut candidate_metrics = None;
        let mut incumbent = None;
        let mut incumbent_metrics = None;
        match data {
            None if target == Stage::Production => checks.push(Check::new(
                "heldout.present",
                false,
                "promotion to production needs held-out rows",
            )),
            None => {}
            Some(data) => {
                checks.extend(data_checks(data, &self.config));
                if let Some(scorer) = &scorer {
                    let scored = score_all(scorer.as_ref(), data);
                    let sanity = sanity_checks(&scored);
                    let sane = sanity.iter().all(|c| c.passed);
                    checks.extend(sanity);
                    if sane && !data.is_empty() {
                        candidate_metrics = Some(metrics(&scored, data));
                    }
                }
                if target == Stage::Production {
                    let (inc_ref, inc_scorer) = self.incumbent(candidate).await;
                    let inc_metrics = metrics(&score_all(inc_scorer.as_ref(), data), data);
                    if let Some(c) = &candidate_metrics {
                        checks.extend(comparison_checks(c, &inc_metrics, &self.config.margins));
                    }
                    incumbent = Some(inc_ref);
                    incumbent_metrics = Some(inc_metrics);
                }
            }
        }
        let (promoted, why) = decide(&checks);
        let against = incumbent
            .as_ref()
            .map(|m| format!(" against {} v{}", m.name, m.version))
            .unwrap_or_default();
        let decision = PromotionDecision {
            decided_at: self.clock.now(),
            model: version.model.clone(),
            candidate,
            target,
            promoted,
            incumbent,
            checks,
            candidate_metrics,
            incumbent_metrics,
            margins: self.config.margins,
            heldout: data.map(HeldOut::summary),
            summary: format!(
                "v{candidate} {} {target}{against}: {why}",
                if promoted {
                    "promoted to"
                } else {
                    "refused for"
                }
            ),
        };
        self.registry.record_decision(&decision).await?;
        if promoted {
            self.registry.set_stage(candidate, target).await?;
        }
        tracing::info!(summary = %decision.summary, "promotion decision");
        Ok(decision)
    }

    /// The current production model, or the baseline when there is none or it cannot be
    /// loaded (a broken production model must not block its replacement).
    async fn incumbent(&self, candidate: u64) -> (ModelRef, Arc<dyn Scorer>) {
        match self.registry.current(Stage::Production).await {
            Ok(Some(v)) if v.version != candidate => match self.load(&v).await {
                Ok(s) => return (v.model_ref(), s),
                Err(e) => tracing::warn!(version = v.version, error = %e,
                    "production model does not load: comparing with the baseline"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading production: comparing with the baseline"),
        }
        let b = BaselineScorer::new(&self.schema, self.horizon_minutes);
        (b.model().clone(), Arc::new(b))
    }

    async fn load(&self, version: &ModelVersion) -> Result<Arc<dyn Scorer>, String> {
        match registry::load_version(self.registry.as_ref(), version, &self.cache, &self.schema)
            .await
        {
            Ok(s) => Ok(Arc::new(s)),
            // The check's detail is the cause alone: the decision names the version.
            Err(VersionLoadError::Registry(e)) => Err(e.to_string()),
            Err(VersionLoadError::Load { source, .. }) => Err(source.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_matches_hand_computation() {
        // Ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): AP = (1/1 + 2/3) / 2.
        let p = [0.7, 0.1, 0.9, 0.8];
        let y = [true, false, true, false];
        assert!((pr_auc(&p, &y) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        // Perfect ranking: 1; no positives: undefined.
        assert_eq!(pr_auc(&[0.9, 0.1], &[true, false]), 1.0);
        assert!(pr_auc(&[0.9, 0.1], &[false, false]).is_nan());
        // A tie between a positive and a negative counts them at one threshold.
        assert_eq!(pr_auc(&[0.5, 0.5], &[true, false]), 0.5);
    }

    #[test]
    fn log_loss_is_cross_entropy() {
        let ll = log_loss(&[0.8, 0.3], &[true, false]);
        assert!((ll - (-(0.8f64.ln()) - 0.7f64.ln()) / 2.0).abs() < 1e-6);
        assert!(log_loss(&[1.0], &[false]) < 17.0, "clipped, not infinite");
    }

    #[test]
    fn sanity_refuses_constant_nan_and_out_of_range() {
        let ok = Scored {
            p_empty: vec![0.1, 0.2],
            p_full: vec![0.3, 0.0],
        };
        assert!(sanity_checks(&ok).iter().all(|c| c.passed));
        for bad in [
            vec![0.5, 0.5],
            vec![0.1, f32::NAN],
            vec![0.1, 1.5],
            vec![-0.1, 0.2],
        ] {
            let s = Scored {
                p_empty: bad.clone(),
                p_full: vec![0.3, 0.0],
            };
            let (ok, why) = decide(&sanity_checks(&s));
            assert!(!ok, "{bad:?} passed");
            assert!(why.contains("probabilities.empty"), "{why}");
        }
    }

    #[test]
    fn comparison_needs_both_metrics_on_both_targets_by_the_margin() {
        let m = |ll: f64, pr: f64| TargetMetrics {
            log_loss: ll,
            pr_auc: pr,
            new_stockout_pr_auc: None,
        };
        let inc = GateMetrics {
            empty: m(0.30, 0.50),
            full: m(0.20, 0.40),
        };
        let margins = Margins {
            log_loss: 0.01,
            pr_auc: 0.01,
        };
        let better = GateMetrics {
            empty: m(0.25, 0.60),
            full: m(0.15, 0.45),
        };
        assert!(decide(&comparison_checks(&better, &inc, &margins)).0);
        // Better log loss, but PR-AUC within the margin for "full": refused, and says why.
        let close = GateMetrics {
            full: m(0.15, 0.405),
            ..better
        };
        let (ok, why) = decide(&comparison_checks(&close, &inc, &margins));
        assert!(!ok);
        assert_eq!(why, "failed: beats.full.pr_auc");
        let worse = GateMetrics {
            empty: m(0.35, 0.45),
            ..better
        };
        let (ok, why) = decide(&comparison_checks(&worse, &inc, &margins));
        assert!(!ok);
        assert!(why.contains("beats.empty.log_loss") && why.contains("beats.empty.pr_auc"));
        // With new-stockout figures on both sides, those decide, not the PR-AUC of all rows.
        let new = |t: TargetMetrics, pr: f64| TargetMetrics {
            new_stockout_pr_auc: Some(pr),
            ..t
        };
        let inc_new = GateMetrics {
            empty: new(inc.empty, 0.30),
            full: new(inc.full, 0.20),
        };
        let better_on_all_only = GateMetrics {
            empty: new(better.empty, 0.25),
            full: new(better.full, 0.25),
        };
        let (ok, why) = decide(&comparison_checks(&better_on_all_only, &inc_new, &margins));
        assert!(!ok);
        assert_eq!(why, "failed: beats.empty.new_stockout_pr_auc");
    }

    #[test]
    fn new_stockout_pr_auc_ranks_only_rows_not_already_in_the_state() {
        // Two already empty (scored high, both went empty), three not: the one that went
        // empty is scored lowest of them.
        let p = [0.9, 0.95, 0.1, 0.3, 0.4];
        let y = [true, true, true, false, false];
        let now = [true, true, false, false, false];
        assert_eq!(new_stockout_pr_auc(&p, &y, &now), Some(1.0 / 3.0));
        assert_eq!(new_stockout_pr_auc(&p, &y, &[true; 5]), None);
        // Rows without a known state are in no new-stockout set.
        assert_eq!(new_stockout_pr_auc(&p, &y, &now[..2]), None);
    }
}
