//! Evaluation of any [`Scorer`] on labelled rows, and the baselines every model must beat.
//!
//! For each target (went empty, went full): ROC-AUC, PR-AUC (average precision), log loss,
//! Brier score, a reliability table (10 equal-width bins of predicted probability), precision
//! and recall at the operating threshold, and the same by local hour of day.
//!
//! The operating threshold of a scorer is chosen on the *validation* rows (the one that
//! maximises F1) and applied unchanged to the test rows.
//!
//! Two baselines: the processor's transparent [`BaselineScorer`] (net flow projection), and
//! [`PersistenceScorer`] — "it goes empty iff it is empty now" — made a probability by the
//! training rate of the outcome in each of the two states (so its log loss is finite; its
//! ranking is the hard rule's). [`Verdict`] says plainly whether a model beats both.
//!
//! The measures are [`bikeshare_stream_processor::quality`]'s (re-exported here): one
//! implementation for training, the promotion gate (log loss and PR-AUC of candidate and
//! production on the same held-out rows), the processor's live quality and the dashboard.

use std::ops::Range;

use bikeshare_stream_processor::{FeatureSchema, Scorer, Scores};
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};
use serde::{Deserialize, Serialize};

use crate::dataset::{Split, Target, TrainingData};

/// The measures themselves live in the processor crate (the processor's live quality and the
/// dashboard use them too): one implementation.
pub use bikeshare_stream_processor::quality::{
    RELIABILITY_BINS, ReliabilityBin, average_precision, brier, log_loss, reliability, roc_auc,
    score_groups,
};

/// Metrics of one hour of day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HourMetrics {
    pub hour: u8,
    pub n: u64,
    pub positives: u64,
    pub log_loss: f64,
    pub brier: f64,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
}

/// Metrics of one target on one set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: u64,
    pub positives: u64,
    /// `None` when the rows hold a single class.
    pub roc_auc: Option<f64>,
    /// Average precision; `None` without positives.
    pub pr_auc: Option<f64>,
    pub log_loss: f64,
    pub brier: f64,
    /// The operating threshold: predicted positive when `p >= threshold`.
    pub threshold: f32,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub reliability: Vec<ReliabilityBin>,
    pub by_hour: Vec<HourMetrics>,
}

/// Both targets' metrics of one scorer: on all rows, and on each target's **new-stockout**
/// rows (the station was not empty, for `new_empty`, or not full, for `new_full`, at
/// `as_of`): the outcomes persistence cannot foresee and riders need warning of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerReport {
    pub scorer: ModelRef,
    pub empty: Metrics,
    pub full: Metrics,
    /// `None` in cards written before the subset was measured.
    #[serde(default)]
    pub new_empty: Option<Metrics>,
    #[serde(default)]
    pub new_full: Option<Metrics>,
}

impl ScorerReport {
    pub fn target(&self, t: Target) -> &Metrics {
        match t {
            Target::WentEmpty => &self.empty,
            Target::WentFull => &self.full,
        }
    }

    /// The target's metrics on its new-stockout rows.
    pub fn new_stockout(&self, t: Target) -> Option<&Metrics> {
        match t {
            Target::WentEmpty => self.new_empty.as_ref(),
            Target::WentFull => self.new_full.as_ref(),
        }
    }

    /// The metrics of `rows`.
    pub fn rows(&self, t: Target, rows: RowSet) -> Option<&Metrics> {
        match rows {
            RowSet::All => Some(self.target(t)),
            RowSet::NewStockout => self.new_stockout(t),
        }
    }
}

/// Which rows a metric is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowSet {
    All,
    /// Not already in the target's state at `as_of`.
    NewStockout,
}

/// Operating thresholds of a scorer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub empty: f32,
    pub full: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            empty: 0.5,
            full: 0.5,
        }
    }
}

/// The fewest rows a reliability bin needs for a calibration check to judge it
/// ([`calibration_check`]): training's check, the calibrator's test summary and the tests use
/// this one number.
pub const CALIBRATION_MIN_ROWS: u64 = 100;

/// Scores rows `range` of `data`.
pub fn score_rows(scorer: &dyn Scorer, data: &TrainingData, range: Range<usize>) -> Vec<Scores> {
    let mut buf: Vec<Option<f32>> = Vec::with_capacity(data.num_features());
    range
        .map(|i| {
            buf.clear();
            buf.extend(data.values(i));
            scorer.score(&buf)
        })
        .collect()
}

fn pick(s: &Scores, t: Target) -> f32 {
    match t {
        Target::WentEmpty => s.p_empty,
        Target::WentFull => s.p_full,
    }
}

/// The thresholds maximising F1 on rows `range` (normally the validation rows).
pub fn choose_thresholds(
    scorer: &dyn Scorer,
    data: &TrainingData,
    range: Range<usize>,
) -> Thresholds {
    thresholds_of_scores(&score_rows(scorer, data, range.clone()), data, range)
}

/// [`choose_thresholds`] of rows already scored (`scores[k]` is row `range.start + k`).
pub fn thresholds_of_scores(
    scores: &[Scores],
    data: &TrainingData,
    range: Range<usize>,
) -> Thresholds {
    let best = |t: Target| {
        let p: Vec<f32> = scores.iter().map(|s| pick(s, t)).collect();
        let y: Vec<bool> = range.clone().map(|i| t.label(data.meta(i))).collect();
        best_f1_threshold(&p, &y)
    };
    Thresholds {
        empty: best(Target::WentEmpty),
        full: best(Target::WentFull),
    }
}

/// Evaluates `scorer` on rows `range` at the given thresholds.
pub fn evaluate(
    scorer: &dyn Scorer,
    data: &TrainingData,
    range: Range<usize>,
    thresholds: Thresholds,
) -> ScorerReport {
    let scores = score_rows(scorer, data, range.clone());
    evaluate_scores(scorer.model(), &scores, data, range, thresholds)
}

/// [`evaluate`] of rows already scored (`scores[k]` is row `range.start + k`) by `model`.
pub fn evaluate_scores(
    model: &ModelRef,
    scores: &[Scores],
    data: &TrainingData,
    range: Range<usize>,
    thresholds: Thresholds,
) -> ScorerReport {
    let hours: Vec<u8> = range.clone().map(|i| data.meta(i).hour).collect();
    let one = |t: Target, threshold: f32, only_new: bool| {
        let (mut p, mut y, mut h) = (Vec::new(), Vec::new(), Vec::new());
        for (k, i) in range.clone().enumerate() {
            let m = data.meta(i);
            if only_new && t.state_now(m) {
                continue;
            }
            p.push(pick(&scores[k], t));
            y.push(t.label(m));
            h.push(hours[k]);
        }
        metrics(&p, &y, &h, threshold)
    };
    ScorerReport {
        scorer: model.clone(),
        empty: one(Target::WentEmpty, thresholds.empty, false),
        full: one(Target::WentFull, thresholds.full, false),
        new_empty: Some(one(Target::WentEmpty, thresholds.empty, true)),
        new_full: Some(one(Target::WentFull, thresholds.full, true)),
    }
}

/// Thresholds chosen on the validation rows, metrics on the test rows.
pub fn evaluate_on_split(scorer: &dyn Scorer, data: &TrainingData, split: &Split) -> ScorerReport {
    let thresholds = choose_thresholds(scorer, data, split.valid.clone());
    evaluate(scorer, data, split.test.clone(), thresholds)
}

/// Every metric of predictions `p` for outcomes `y`.
pub fn metrics(p: &[f32], y: &[bool], hours: &[u8], threshold: f32) -> Metrics {
    let n = p.len().min(y.len());
    let (p, y) = (&p[..n], &y[..n]);
    let positives = y.iter().filter(|&&b| b).count() as u64;
    let (log_loss, brier) = losses(p, y);
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (&pi, &yi) in p.iter().zip(y) {
        match (pi >= threshold, yi) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let mut by_hour = Vec::new();
    if hours.len() >= n {
        for h in 0..24u8 {
            let idx: Vec<usize> = (0..n).filter(|&i| hours[i] == h).collect();
            if idx.is_empty() {
                continue;
            }
            let hp: Vec<f32> = idx.iter().map(|&i| p[i]).collect();
            let hy: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
            let (l, b) = losses(&hp, &hy);
            by_hour.push(HourMetrics {
                hour: h,
                n: idx.len() as u64,
                positives: hy.iter().filter(|&&b| b).count() as u64,
                log_loss: l,
                brier: b,
                roc_auc: roc_auc(&hp, &hy),
                pr_auc: average_precision(&hp, &hy),
            });
        }
    }
    Metrics {
        n: n as u64,
        positives,
        roc_auc: roc_auc(p, y),
        pr_auc: average_precision(p, y),
        log_loss,
        brier,
        threshold,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fneg),
        reliability: reliability(p, y),
        by_hour,
    }
}

/// Whether a reliability table is calibrated: the largest gap between mean prediction and
/// observed rate over the bins holding at least `min_rows` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationCheck {
    /// The largest `|mean predicted − observed|` of a populated bin (0 with none).
    pub max_gap: f64,
    /// That bin's lower edge.
    pub bin_lower: f64,
    /// Rows a bin needs to count.
    pub min_rows: u64,
    /// `max_gap` above [`CALIBRATION_TOLERANCE`]: a calibrator (isotonic or Platt) is due.
    pub off: bool,
}

/// Two points of probability: the most a populated bin may be off.
pub const CALIBRATION_TOLERANCE: f64 = 0.02;

/// The [`CalibrationCheck`] of `bins`.
pub fn calibration_check(bins: &[ReliabilityBin], min_rows: u64) -> CalibrationCheck {
    let (mut max_gap, mut bin_lower) = (0.0f64, 0.0f64);
    for b in bins.iter().filter(|b| b.count >= min_rows) {
        let gap = (b.mean_predicted - b.observed_rate).abs();
        if gap > max_gap {
            (max_gap, bin_lower) = (gap, b.lower);
        }
    }
    CalibrationCheck {
        max_gap,
        bin_lower,
        min_rows,
        off: max_gap > CALIBRATION_TOLERANCE,
    }
}

/// Log loss and Brier score, 0 for no rows.
fn losses(p: &[f32], y: &[bool]) -> (f64, f64) {
    (log_loss(p, y).unwrap_or(0.0), brier(p, y).unwrap_or(0.0))
}

/// The threshold (one of the scores) that maximises F1; 0.5 when nothing is positive.
pub fn best_f1_threshold(p: &[f32], y: &[bool]) -> f32 {
    let pos = y.iter().filter(|&&b| b).count() as f64;
    if pos == 0.0 {
        return 0.5;
    }
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let (mut best, mut best_t) = (-1.0f64, 0.5f32);
    for g in score_groups(p, y) {
        tp += g.positives;
        fp += g.negatives;
        let f1 = 2.0 * tp / (2.0 * tp + fp + (pos - tp));
        if f1 > best {
            best = f1;
            best_t = g.score;
        }
    }
    best_t
}

/// Persistence: a station empty (full) now goes empty (full) in the horizon. As a
/// probability: the training rate of the outcome given the state now.
#[derive(Debug, Clone)]
pub struct PersistenceScorer {
    model: ModelRef,
    schema_id: FeatureSchemaId,
    is_empty: Option<usize>,
    is_full: Option<usize>,
    /// `[state off, state on]` rates per target.
    empty_rate: [f32; 2],
    full_rate: [f32; 2],
}

impl PersistenceScorer {
    pub const NAME: &'static str = "persistence";

    /// Fits the two rates of each target on rows `range` (the training rows), each row
    /// weighted ([`crate::dataset::RowMeta::weight`]).
    pub fn fit(data: &TrainingData, range: Range<usize>) -> Self {
        let find = |n: &str| data.feature_names().iter().position(|f| f == n);
        let rate = |t: Target| {
            // Each row counts as the rows it stands for (a sampled load's weight, else 1).
            let mut c = [[0f64; 2]; 2];
            for i in range.clone() {
                let m = data.meta(i);
                c[usize::from(t.state_now(m))][usize::from(t.label(m))] += f64::from(m.weight);
            }
            // Add-one smoothing keeps the rates inside (0, 1).
            c.map(|[neg, pos]| ((pos + 1.0) / (pos + neg + 2.0)) as f32)
        };
        Self {
            model: ModelRef {
                name: Self::NAME.into(),
                version: "1".into(),
            },
            schema_id: data.schema_id().clone(),
            is_empty: find("is_empty"),
            is_full: find("is_full"),
            empty_rate: rate(Target::WentEmpty),
            full_rate: rate(Target::WentFull),
        }
    }
}

impl Scorer for PersistenceScorer {
    fn model(&self) -> &ModelRef {
        &self.model
    }
    fn schema_id(&self) -> &FeatureSchemaId {
        &self.schema_id
    }
    fn score(&self, values: &[Option<f32>]) -> Scores {
        let on = |i: Option<usize>| {
            usize::from(
                i.and_then(|i| values.get(i).copied().flatten())
                    .is_some_and(|x| x > 0.5),
            )
        };
        Scores {
            p_empty: self.empty_rate[on(self.is_empty)],
            p_full: self.full_rate[on(self.is_full)],
        }
    }
}

/// Whether a model beats the baselines on one target, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub beats_baselines: bool,
    pub summary: String,
}

/// A model beats the baselines on a target when its log loss on all rows is lower *and* its
/// PR-AUC on the new-stockout rows higher than every baseline's (the PR-AUC of all rows when
/// a report has no new-stockout metrics). The ranking that matters is that of the rows not
/// already empty (full): on all rows, "empty now" alone ranks most of them.
pub fn verdict(
    target: Target,
    model: &ScorerReport,
    baselines: &[(&str, &ScorerReport)],
) -> Verdict {
    let mut failures = Vec::new();
    let mut wins = Vec::new();
    let ap = |r: &ScorerReport| {
        r.new_stockout(target)
            .unwrap_or(r.target(target))
            .pr_auc
            .unwrap_or(0.0)
    };
    for (name, b) in baselines {
        let (ll, bll) = (model.target(target).log_loss, b.target(target).log_loss);
        let ll_ok = ll < bll;
        let ap_ok = ap(model) > ap(b);
        let line = format!(
            "log loss {ll:.4} vs {name} {bll:.4}, new-stockout PR-AUC {:.4} vs {:.4}",
            ap(model),
            ap(b)
        );
        if ll_ok && ap_ok {
            wins.push(line);
        } else {
            failures.push(line);
        }
    }
    let what = match target {
        Target::WentEmpty => "went-empty",
        Target::WentFull => "went-full",
    };
    if failures.is_empty() {
        Verdict {
            beats_baselines: true,
            summary: format!("the {what} model beats the baselines: {}", wins.join("; ")),
        }
    } else {
        Verdict {
            beats_baselines: false,
            summary: format!(
                "the {what} model does NOT beat the baselines: {}",
                failures.join("; ")
            ),
        }
    }
}

/// A model and the baselines on the test rows of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub model: ScorerReport,
    pub baseline: ScorerReport,
    pub persistence: ScorerReport,
    /// The logistic regression on the same features (`None` in cards from before it).
    #[serde(default)]
    pub logistic: Option<ScorerReport>,
    pub empty: Verdict,
    pub full: Verdict,
}

impl Evaluation {
    pub fn beats_baselines(&self) -> bool {
        self.empty.beats_baselines && self.full.beats_baselines
    }
}

/// Evaluates `model` against the net-flow baseline, persistence and a logistic regression:
/// thresholds on the validation rows, metrics on the test rows, persistence and the logistic
/// regression fitted on the training rows.
pub fn evaluate_against_baselines(
    model: &dyn Scorer,
    schema: &FeatureSchema,
    data: &TrainingData,
    split: &Split,
) -> Evaluation {
    compare_with_baselines(evaluate_on_split(model, data, split), schema, data, split)
}

/// [`evaluate_against_baselines`] of a model already evaluated on the split (`model`:
/// thresholds from the validation rows, metrics on the test rows).
pub fn compare_with_baselines(
    model: ScorerReport,
    schema: &FeatureSchema,
    data: &TrainingData,
    split: &Split,
) -> Evaluation {
    let baseline = bikeshare_stream_processor::BaselineScorer::new(schema, data.horizon_minutes());
    let persistence = PersistenceScorer::fit(data, split.train.clone());
    let logistic = crate::logistic::LogisticScorer::fit(
        data,
        split.train.clone(),
        &crate::logistic::LogisticConfig::default(),
    );
    let baseline = evaluate_on_split(&baseline, data, split);
    let persistence = evaluate_on_split(&persistence, data, split);
    let logistic = evaluate_on_split(&logistic, data, split);
    let v = |t: Target| {
        verdict(
            t,
            &model,
            &[
                ("baseline", &baseline),
                ("persistence", &persistence),
                ("logistic", &logistic),
            ],
        )
    };
    Evaluation {
        empty: v(Target::WentEmpty),
        full: v(Target::WentFull),
        model,
        baseline,
        persistence,
        logistic: Some(logistic),
    }
}

/// A short, human-readable table of an evaluation: every scorer on all rows and on the
/// new-stockout rows, then the model's reliability table on all rows.
pub fn render(e: &Evaluation) -> String {
    let mut out = String::new();
    let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
    let mut reports = vec![&e.model, &e.baseline, &e.persistence];
    reports.extend(e.logistic.as_ref());
    for t in Target::BOTH {
        let what = match t {
            Target::WentEmpty => "went empty",
            Target::WentFull => "went full",
        };
        for (rows, label) in [
            (RowSet::All, "all rows"),
            (RowSet::NewStockout, "new-stockout rows"),
        ] {
            let Some(n) = e.model.rows(t, rows).map(|m| (m.n, m.positives)) else {
                continue;
            };
            out.push_str(&format!(
                "{what}, {label} ({} rows, {} positive)\n  {:<38} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}\n",
                n.0, n.1, "scorer", "ROC-AUC", "PR-AUC", "logloss", "Brier", "precision", "recall",
                "thresh"
            ));
            for r in &reports {
                let Some(m) = r.rows(t, rows) else {
                    continue;
                };
                out.push_str(&format!(
                    "  {:<38} {:>8} {:>8} {:>8.4} {:>8.4} {:>9} {:>9} {:>8.3}\n",
                    format!("{} {}", r.scorer.name, r.scorer.version),
                    f(m.roc_auc),
                    f(m.pr_auc),
                    m.log_loss,
                    m.brier,
                    f(m.precision),
                    f(m.recall),
                    m.threshold
                ));
            }
        }
        out.push_str(
            "  reliability of the model (all rows): bin, rows, mean predicted, observed\n",
        );
        for b in e.model.target(t).reliability.iter().filter(|b| b.count > 0) {
            out.push_str(&format!(
                "    [{:.1}, {:.1}) {:>9} {:>8.4} {:>8.4}\n",
                b.lower, b.upper, b.count, b.mean_predicted, b.observed_rate
            ));
        }
        let v = match t {
            Target::WentEmpty => &e.empty,
            Target::WentFull => &e.full,
        };
        out.push_str(&format!("  {}\n", v.summary));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_auc_counts_ties_as_half() {
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        // 2 pos, 2 neg: pairs (p1>n1, p1>n2, p2<n1, p2 tie n2) = 2.5/4
        assert_eq!(
            roc_auc(&[0.8, 0.3, 0.5, 0.3], &[true, true, false, false]),
            Some(0.625)
        );
        assert_eq!(roc_auc(&[0.5], &[true]), None);
    }

    #[test]
    fn average_precision_matches_hand_computation() {
        // Sorted: 0.9 T, 0.8 F, 0.7 T, 0.1 F → AP = 0.5·1 + 0.5·(2/3)
        let ap = average_precision(&[0.1, 0.7, 0.8, 0.9], &[false, true, false, true]).unwrap();
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[0.2], &[false]), None);
        // Constant scores: AP = prevalence.
        let ap = average_precision(&[0.3; 4], &[true, false, false, false]).unwrap();
        assert!((ap - 0.25).abs() < 1e-12);
    }

    #[test]
    fn losses_thresholds_and_reliability() {
        let p = [0.95f32, 0.2, 0.6, 0.4];
        let y = [true, false, true, false];
        let m = metrics(&p, &y, &[0, 0, 1, 1], 0.5);
        let ll = -(0.95f64.ln() + 0.8f64.ln() + 0.6f64.ln() + 0.6f64.ln()) / 4.0;
        assert!((m.log_loss - ll).abs() < 1e-6);
        let brier = (0.0025 + 0.04 + 0.16 + 0.16) / 4.0;
        assert!((m.brier - brier).abs() < 1e-6);
        assert_eq!((m.precision, m.recall), (Some(1.0), Some(1.0)));
        assert_eq!(m.by_hour.len(), 2);
        assert_eq!(m.by_hour[1].n, 2);
        assert_eq!(m.reliability.iter().map(|b| b.count).sum::<u64>(), 4);
        assert_eq!(m.reliability[9].count, 1);
        assert_eq!(m.reliability[9].observed_rate, 1.0);
        assert_eq!(best_f1_threshold(&p, &y), 0.6);
        // Hard 0/1 predictions keep a finite log loss.
        assert!(metrics(&[0.0], &[true], &[0], 0.5).log_loss.is_finite());
    }

    fn report(all: Metrics, new: Option<Metrics>) -> ScorerReport {
        ScorerReport {
            scorer: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            full: all.clone(),
            empty: all,
            new_full: new.clone(),
            new_empty: new,
        }
    }

    #[test]
    fn calibration_is_off_when_a_populated_bin_is_off_by_more_than_two_points() {
        let bin = |lower: f64, count: u64, mean: f64, observed: f64| ReliabilityBin {
            lower,
            upper: lower + 0.1,
            count,
            mean_predicted: mean,
            observed_rate: observed,
        };
        let fine = [bin(0.0, 5000, 0.01, 0.012), bin(0.9, 200, 0.95, 0.94)];
        let c = calibration_check(&fine, CALIBRATION_MIN_ROWS);
        assert!(!c.off && (c.max_gap - 0.01).abs() < 1e-12, "{c:?}");
        // A bin 5 points off, but with too few rows to say: still fine.
        let sparse = [fine[0].clone(), bin(0.5, 20, 0.55, 0.5)];
        assert!(!calibration_check(&sparse, CALIBRATION_MIN_ROWS).off);
        let off = [fine[0].clone(), bin(0.3, 400, 0.34, 0.19)];
        let c = calibration_check(&off, CALIBRATION_MIN_ROWS);
        assert!(
            c.off && c.bin_lower == 0.3 && (c.max_gap - 0.15).abs() < 1e-12,
            "{c:?}"
        );
    }

    #[test]
    fn verdict_says_plainly_when_a_model_loses() {
        let good = metrics(&[0.9, 0.1, 0.8, 0.2], &[true, false, true, false], &[], 0.5);
        let bad = metrics(&[0.4, 0.6, 0.5, 0.5], &[true, false, true, false], &[], 0.5);
        let (g, b) = (report(good.clone(), None), report(bad.clone(), None));
        let v = verdict(Target::WentEmpty, &g, &[("baseline", &b)]);
        assert!(v.beats_baselines, "{v:?}");
        let v = verdict(Target::WentEmpty, &b, &[("baseline", &g)]);
        assert!(!v.beats_baselines);
        assert!(v.summary.contains("does NOT beat"), "{}", v.summary);
        // Better on all rows, worse on the new-stockout rows: it does not beat it.
        let g_new_bad = report(good.clone(), Some(bad.clone()));
        let b_new_good = report(bad, Some(good));
        let v = verdict(Target::WentEmpty, &g_new_bad, &[("baseline", &b_new_good)]);
        assert!(!v.beats_baselines, "{}", v.summary);
    }

    #[test]
    fn new_stockout_rows_leave_out_stations_already_in_the_state() {
        use crate::dataset::RowLabel;
        let schema = bikeshare_stream_processor::FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        // (empty now, went empty): two already empty, three not, one of which goes empty.
        for (i, (now, went)) in [
            (true, true),
            (true, true),
            (false, true),
            (false, false),
            (false, false),
        ]
        .into_iter()
        .enumerate()
        {
            let label = RowLabel {
                went_empty: went,
                empty_now: now,
                ..RowLabel::default()
            };
            let is_empty = schema.index("is_empty").unwrap();
            let mut v = vec![None; schema.len()];
            v[is_empty] = Some(if now { 1.0 } else { 0.0 });
            d.push("s", bikeshare_types::Timestamp(i as i64), label, v);
        }
        let persistence = PersistenceScorer::fit(&d, 0..5);
        let r = evaluate(&persistence, &d, 0..5, Thresholds::default());
        assert_eq!((r.empty.n, r.empty.positives), (5, 3));
        // On all rows the two already empty rank first: AP = 2/3 · 1 + 1/3 · 3/5.
        let all = r.empty.pr_auc.unwrap();
        assert!((all - (2.0 / 3.0 + 0.2)).abs() < 1e-12, "{all}");
        let new = r.new_empty.as_ref().unwrap();
        assert_eq!((new.n, new.positives), (3, 1));
        // Persistence gives every new row the same score: PR-AUC is the prevalence.
        assert!((new.pr_auc.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.new_full.as_ref().unwrap().n, 5, "none was full");
    }
}
