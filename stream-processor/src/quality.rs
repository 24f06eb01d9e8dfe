//! Model quality: the measures of a probability forecast against what happened, and the
//! processor's rolling **live quality** from its own labels.
//!
//! The measures ([`roc_auc`], [`average_precision`], [`log_loss`], [`brier`],
//! [`reliability`], [`expected_calibration_error`], and [`score_groups`], the walk over
//! distinct scores they share) are the only implementation in the workspace: training's
//! evaluation (`bikeshare_models::eval`), the promotion gate, the processor and the dashboard
//! all call these.
//!
//! ## Live quality
//!
//! Each system keeps, per target (`empty`, `full`), a ring of `(as_of, p, y)` — the
//! probability a prediction gave and what its label says happened — joined by the runner:
//! the scores of a station's predictions wait in the station's state
//! ([`crate::Processor::record_prediction`]) until their label arrives
//! ([`crate::Processor::record_label`]). [`LiveQuality::summary`] measures the outcomes whose
//! `as_of` is within [`QualityConfig::window_ms`] of the newest one: the window is in
//! **event time**, so a replay or a restart gives the same figures as the live run.
//!
//! Memory is bounded: at most [`QualityConfig::max_outcomes`] outcomes per system and target
//! (the oldest go first), at most [`MAX_PENDING_SCORES`] waiting scores per station, and a
//! deterministic sample (`xxh3(prediction id) % sample_one_in == 0`) for very large systems.
//! The rings and the waiting scores are part of the system's checkpointed state, so a
//! restore continues with exactly the outcomes an uninterrupted run would hold.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Bins of the reliability table (and of the expected calibration error).
pub const RELIABILITY_BINS: usize = 10;
/// Scores kept per station while their labels are pending (a station scored every minute
/// waits ~35 of them for a 30-minute horizon); beyond it the oldest are dropped.
pub const MAX_PENDING_SCORES: usize = 256;

const HOUR_MS: i64 = 3_600_000;

// --- the measures -------------------------------------------------------------------------

/// Probabilities are clipped to `[LOG_LOSS_EPS, 1 − LOG_LOSS_EPS]` for the log loss.
pub const LOG_LOSS_EPS: f64 = 1e-7;

/// One group of equal scores, in [`score_groups`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreGroup {
    /// The score every row of the group has.
    pub score: f32,
    /// Positives in the group.
    pub positives: f64,
    /// Negatives in the group.
    pub negatives: f64,
}

/// The rows grouped by equal score, highest score first (`total_cmp` order): every
/// threshold-walking measure (ROC-AUC, average precision, the best-F1 threshold) steps
/// through these groups, so ties are treated alike everywhere. A NaN score is a group of its
/// own.
pub fn score_groups(p: &[f32], y: &[bool]) -> Vec<ScoreGroup> {
    let n = p.len().min(y.len());
    let (p, y) = (&p[..n], &y[..n]);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut groups = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let mut g = ScoreGroup {
            score: p[idx[i]],
            positives: 0.0,
            negatives: 0.0,
        };
        // The first row always joins its group: a NaN score (equal to nothing, itself
        // included) makes a group of its own instead of stalling the walk.
        while j < idx.len() && (j == i || p[idx[j]] == g.score) {
            if y[idx[j]] {
                g.positives += 1.0;
            } else {
                g.negatives += 1.0;
            }
            j += 1;
        }
        groups.push(g);
        i = j;
    }
    groups
}

/// ROC-AUC: the probability that a random positive scores above a random negative, ties
/// counting one half. `None` for a single class.
pub fn roc_auc(p: &[f32], y: &[bool]) -> Option<f64> {
    let n = p.len().min(y.len());
    let pos = y[..n].iter().filter(|&&b| b).count() as f64;
    let neg = n as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    // Walk groups of equal scores from the top: each negative is beaten by every positive
    // already seen, and ties with half of the positives of its own group.
    let (mut seen_pos, mut wins) = (0.0f64, 0.0f64);
    for g in score_groups(p, y) {
        wins += g.negatives * (seen_pos + g.positives / 2.0);
        seen_pos += g.positives;
    }
    Some(wins / (pos * neg))
}

/// Average precision (the area under the precision–recall step curve, thresholds at every
/// distinct score). `None` without positives.
pub fn average_precision(p: &[f32], y: &[bool]) -> Option<f64> {
    let n = p.len().min(y.len());
    let pos = y[..n].iter().filter(|&&b| b).count() as f64;
    if pos == 0.0 {
        return None;
    }
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for g in score_groups(p, y) {
        tp += g.positives;
        fp += g.negatives;
        let recall = tp / pos;
        ap += (recall - last_recall) * tp / (tp + fp);
        last_recall = recall;
    }
    Some(ap)
}

/// Mean binary cross-entropy, probabilities clipped to `[LOG_LOSS_EPS, 1 − LOG_LOSS_EPS]`
/// (a NaN probability gives NaN); `None` for no rows.
pub fn log_loss(p: &[f32], y: &[bool]) -> Option<f64> {
    let n = p.len().min(y.len());
    if n == 0 {
        return None;
    }
    let mut sum = 0.0f64;
    for (&pi, &yi) in p.iter().zip(y) {
        let q = f64::from(pi).clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
        sum -= if yi { q.ln() } else { (1.0 - q).ln() };
    }
    Some(sum / n as f64)
}

/// Mean squared difference between the probability and the outcome; `None` for no rows.
pub fn brier(p: &[f32], y: &[bool]) -> Option<f64> {
    let n = p.len().min(y.len());
    if n == 0 {
        return None;
    }
    let sum: f64 = p
        .iter()
        .zip(y)
        .map(|(&pi, &yi)| (f64::from(pi) - if yi { 1.0 } else { 0.0 }).powi(2))
        .sum();
    Some(sum / n as f64)
}

/// One bin of the reliability table: predictions in `[lower, upper)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// The reliability table: [`RELIABILITY_BINS`] equal-width bins of predicted probability
/// (the last one closed at 1), each with its mean prediction and observed rate.
pub fn reliability(p: &[f32], y: &[bool]) -> Vec<ReliabilityBin> {
    let mut bins = vec![(0u64, 0.0f64, 0u64); RELIABILITY_BINS];
    for (&pi, &yi) in p.iter().zip(y) {
        let b = ((f64::from(pi) * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += f64::from(pi);
        bins[b].2 += u64::from(yi);
    }
    bins.into_iter()
        .enumerate()
        .map(|(i, (count, sum, pos))| ReliabilityBin {
            lower: i as f64 / RELIABILITY_BINS as f64,
            upper: (i + 1) as f64 / RELIABILITY_BINS as f64,
            count,
            mean_predicted: if count > 0 { sum / count as f64 } else { 0.0 },
            observed_rate: if count > 0 {
                pos as f64 / count as f64
            } else {
                0.0
            },
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean of `|mean predicted − observed|`
/// over the bins of a reliability table; `None` when the table is empty.
pub fn expected_calibration_error(bins: &[ReliabilityBin]) -> Option<f64> {
    let n: u64 = bins.iter().map(|b| b.count).sum();
    (n > 0).then(|| {
        bins.iter()
            .map(|b| b.count as f64 * (b.mean_predicted - b.observed_rate).abs())
            .sum::<f64>()
            / n as f64
    })
}

// --- live quality -------------------------------------------------------------------------

/// Settings of the live quality (`[processor.quality]`). Part of the processor's config, so
/// a checkpoint is only absorbed by a processor with the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityConfig {
    /// The window, in event time (`as_of` of the labelled predictions).
    pub window_ms: i64,
    /// Outcomes kept per system and target; beyond it the oldest are dropped.
    pub max_outcomes: usize,
    /// Keep 1 prediction in this many (by a hash of its id; 1 keeps all).
    pub sample_one_in: u32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            window_ms: 6 * HOUR_MS,
            max_outcomes: 50_000,
            sample_one_in: 1,
        }
    }
}

impl QualityConfig {
    /// Whether the prediction with this id is part of the sample.
    pub fn sampled(&self, prediction_id: &str) -> bool {
        self.sample_one_in <= 1
            || xxhash_rust::xxh3::xxh3_64(prediction_id.as_bytes())
                .is_multiple_of(u64::from(self.sample_one_in))
    }
}

/// The quality of one target over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetQuality {
    pub labelled: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    #[serde(default)]
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    /// Expected calibration error over [`RELIABILITY_BINS`] bins.
    pub ece: Option<f64>,
    pub reliability: Vec<ReliabilityBin>,
}

impl TargetQuality {
    /// The measures of predictions `p` for outcomes `y`.
    pub fn of(p: &[f32], y: &[bool]) -> Self {
        let bins = reliability(p, y);
        Self {
            labelled: p.len().min(y.len()),
            positives: y.iter().filter(|&&b| b).count(),
            roc_auc: roc_auc(p, y),
            pr_auc: average_precision(p, y),
            log_loss: log_loss(p, y),
            brier: brier(p, y),
            ece: expected_calibration_error(&bins),
            reliability: bins,
        }
    }
}

/// Both targets' quality of one system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub window_ms: i64,
    /// The newest labelled `as_of` (ms) in the window, if any.
    pub newest_as_of_ms: Option<i64>,
    pub empty: TargetQuality,
    pub full: TargetQuality,
    /// The same measures on the **new-stockout** rows of each target: the station was not
    /// empty (for `new_empty`; not full for `new_full`) at `as_of`. Persistence cannot
    /// predict these, and they are the ones riders need warning of.
    #[serde(default)]
    pub new_empty: TargetQuality,
    #[serde(default)]
    pub new_full: TargetQuality,
}

/// One labelled prediction: `(as_of ms, p_empty, p_full, went_empty, went_full)`.
pub type LabelledPrediction = (i64, f32, f32, bool, bool);

/// The station's state at `as_of` of a labelled prediction: empty, full.
pub type StateAtAsOf = (bool, bool);

/// The rolling outcomes of one system (both targets share the ring: one label answers both).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveQuality {
    outcomes: VecDeque<LabelledPrediction>,
    /// The state at `as_of` of the newest `states.len()` outcomes (bit 0 empty, bit 1 full;
    /// a state kept before this field existed is unknown, so it is shorter then).
    #[serde(default)]
    states: VecDeque<u8>,
    newest: Option<i64>,
    /// Outcomes ever pushed: changes whenever the window does.
    #[serde(default)]
    pushed: u64,
}

impl LiveQuality {
    /// Adds one labelled prediction, with the station's state at its `as_of`, and forgets
    /// what fell out of the window or the cap.
    pub fn push(&mut self, o: LabelledPrediction, state: StateAtAsOf, config: &QualityConfig) {
        let newest = self.newest.map_or(o.0, |n| n.max(o.0));
        self.newest = Some(newest);
        self.pushed += 1;
        self.outcomes.push_back(o);
        self.states
            .push_back(u8::from(state.0) | (u8::from(state.1) << 1));
        let cutoff = newest.saturating_sub(config.window_ms);
        while self
            .outcomes
            .front()
            .is_some_and(|f| f.0 < cutoff || self.outcomes.len() > config.max_outcomes.max(1))
        {
            self.outcomes.pop_front();
            if self.states.len() > self.outcomes.len() {
                self.states.pop_front();
            }
        }
    }

    /// Outcomes held (some may be older than the window when labels arrive out of order;
    /// [`Self::summary`] leaves those out).
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Outcomes ever pushed (a version of the window: it changes whenever the window does).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The measures over the outcomes within the window of the newest one.
    pub fn summary(&self, config: &QualityConfig) -> QualityReport {
        let cutoff = self
            .newest
            .map_or(i64::MIN, |n| n.saturating_sub(config.window_ms));
        let n = self.outcomes.len();
        let (mut pe, mut pf, mut ye, mut yf) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut npe, mut nye, mut npf, mut nyf) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // `states` holds the newest outcomes' states: the first `unknown` have none.
        let unknown = n.saturating_sub(self.states.len());
        for (i, &(t, p_empty, p_full, went_empty, went_full)) in self.outcomes.iter().enumerate() {
            if t >= cutoff {
                pe.push(p_empty);
                pf.push(p_full);
                ye.push(went_empty);
                yf.push(went_full);
                let Some(state) = i.checked_sub(unknown).and_then(|j| self.states.get(j)) else {
                    continue;
                };
                if state & 1 == 0 {
                    npe.push(p_empty);
                    nye.push(went_empty);
                }
                if state & 2 == 0 {
                    npf.push(p_full);
                    nyf.push(went_full);
                }
            }
        }
        QualityReport {
            window_ms: config.window_ms,
            newest_as_of_ms: self.newest,
            empty: TargetQuality::of(&pe, &ye),
            full: TargetQuality::of(&pf, &yf),
            new_empty: TargetQuality::of(&npe, &nye),
            new_full: TargetQuality::of(&npf, &nyf),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_scores_give_known_measures() {
        let p = [0.1, 0.2, 0.8, 0.9];
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&p, &y), Some(1.0));
        assert_eq!(average_precision(&p, &y), Some(1.0));
        let b = brier(&p, &y).unwrap();
        assert!((b - (0.01 + 0.04 + 0.04 + 0.01) / 4.0).abs() < 1e-7, "{b}");
        // Inverted ranking, and a tie.
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // One positive ranked second of three: AP = 1/2, AUC = 1/2.
        let (p, y) = ([0.9, 0.5, 0.1], [false, true, false]);
        assert_eq!(average_precision(&p, &y), Some(0.5));
        assert_eq!(roc_auc(&p, &y), Some(0.5));
        assert_eq!(roc_auc(&[0.3], &[true]), None);
        assert_eq!(average_precision(&[0.3], &[false]), None);
        assert_eq!(brier(&[], &[]), None);
    }

    #[test]
    fn scores_are_walked_in_groups_of_equal_scores() {
        let g = score_groups(
            &[0.2, 0.7, 0.2, 0.7, 0.1],
            &[true, false, false, true, false],
        );
        let summary: Vec<(f32, f64, f64)> = g
            .iter()
            .map(|g| (g.score, g.positives, g.negatives))
            .collect();
        assert_eq!(summary, [(0.7, 1.0, 1.0), (0.2, 1.0, 1.0), (0.1, 0.0, 1.0)]);
        // A NaN equals nothing: each is a group of its own, and the walk ends.
        let g = score_groups(&[f32::NAN, 0.5, f32::NAN], &[true, false, false]);
        assert_eq!(g.len(), 3);
        assert!(score_groups(&[], &[]).is_empty());
    }

    #[test]
    fn calibration_error_of_a_known_table() {
        // Bin [0.2, 0.3): 0.25 x4, 1 positive -> |0.25 - 0.25| = 0.
        // Bin [0.8, 0.9): 0.8 x2, 0 positives -> |0.8 - 0| = 0.8, weight 2/6.
        let p = [0.25, 0.25, 0.25, 0.25, 0.8, 0.8];
        let y = [true, false, false, false, false, false];
        let bins = reliability(&p, &y);
        assert_eq!(bins.len(), RELIABILITY_BINS);
        assert_eq!(bins[2].count, 4);
        assert_eq!(bins[8].count, 2);
        let ece = expected_calibration_error(&bins).unwrap();
        assert!((ece - 0.8 * 2.0 / 6.0).abs() < 1e-6, "{ece}");
        // p = 1.0 falls in the last bin.
        assert_eq!(reliability(&[1.0], &[true])[9].count, 1);
        assert_eq!(expected_calibration_error(&reliability(&[], &[])), None);
    }

    fn config(window_ms: i64, max_outcomes: usize) -> QualityConfig {
        QualityConfig {
            window_ms,
            max_outcomes,
            sample_one_in: 1,
        }
    }

    #[test]
    fn outcomes_leave_the_window_by_event_time() {
        let c = config(60 * 60_000, 1000);
        let mut q = LiveQuality::default();
        // A perfect forecast an hour and a half ago, an inverted one in the last hour.
        q.push((0, 0.9, 0.1, true, false), (false, false), &c);
        q.push((60_000, 0.1, 0.9, false, true), (false, false), &c);
        let s = q.summary(&c);
        assert_eq!(s.empty.labelled, 2);
        assert_eq!(s.empty.roc_auc, Some(1.0));
        q.push((90 * 60_000, 0.9, 0.1, false, true), (false, false), &c);
        q.push((91 * 60_000, 0.1, 0.9, true, false), (false, false), &c);
        let s = q.summary(&c);
        assert_eq!((s.empty.labelled, s.full.labelled), (2, 2));
        assert_eq!(s.empty.roc_auc, Some(0.0));
        assert_eq!(s.full.roc_auc, Some(0.0));
        assert_eq!(q.len(), 2, "the old outcomes were evicted");
        // A label arriving late (older than the window of the newest) is held but not
        // measured.
        q.push((10 * 60_000, 0.5, 0.5, true, true), (false, false), &c);
        assert_eq!(q.summary(&c).empty.labelled, 2);
        assert_eq!(q.summary(&c).newest_as_of_ms, Some(91 * 60_000));
    }

    #[test]
    fn new_stockout_rows_are_those_not_already_in_the_state() {
        let c = config(60 * 60_000, 1000);
        let mut q = LiveQuality::default();
        // Already empty and still empty: right, but trivially so.
        q.push((0, 0.95, 0.1, true, false), (true, false), &c);
        q.push((1, 0.9, 0.1, true, false), (true, false), &c);
        // Not empty at as_of: one goes empty (scored low), one does not (scored high).
        q.push((2, 0.2, 0.1, true, false), (false, false), &c);
        q.push((3, 0.6, 0.8, false, true), (false, true), &c);
        let s = q.summary(&c);
        assert_eq!(s.empty.labelled, 4);
        assert_eq!(s.empty.roc_auc, Some(2.0 / 3.0));
        assert_eq!((s.new_empty.labelled, s.new_empty.positives), (2, 1));
        assert_eq!(s.new_empty.roc_auc, Some(0.0), "inverted on the new ones");
        assert_eq!(s.new_empty.pr_auc, Some(0.5));
        // Full: the one full at as_of is left out.
        assert_eq!((s.new_full.labelled, s.new_full.positives), (3, 0));
        let ll = s.new_empty.log_loss.unwrap();
        assert!(
            (ll - (-(0.2f64.ln()) - 0.4f64.ln()) / 2.0).abs() < 1e-6,
            "{ll}"
        );
        // A ring restored from before states were kept: those outcomes count in all rows,
        // not in the new-stockout ones.
        #[derive(Serialize)]
        struct Before {
            outcomes: Vec<LabelledPrediction>,
            newest: Option<i64>,
            pushed: u64,
        }
        let before = Before {
            outcomes: vec![(0, 0.5, 0.5, true, false), (1, 0.4, 0.5, false, false)],
            newest: Some(1),
            pushed: 2,
        };
        let mut old: LiveQuality =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&before).unwrap()).unwrap();
        old.push((2, 0.3, 0.5, false, false), (false, false), &c);
        let s = old.summary(&c);
        assert_eq!((s.empty.labelled, s.new_empty.labelled), (3, 1));
    }

    #[test]
    fn memory_is_capped() {
        let c = config(i64::MAX / 4, 100);
        let mut q = LiveQuality::default();
        for i in 0..1000 {
            q.push((i, 0.5, 0.5, i % 2 == 0, false), (false, false), &c);
        }
        assert_eq!(q.len(), 100);
        assert_eq!(q.summary(&c).empty.labelled, 100);
    }

    #[test]
    fn summaries_are_deterministic_and_survive_serialisation() {
        let c = config(3 * HOUR_MS, 10_000);
        let mut q = LiveQuality::default();
        let mut x = 7u64;
        for i in 0..5000i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let p = (x >> 40) as f32 / (1u64 << 24) as f32;
            q.push(
                (
                    i * 10_000,
                    p,
                    1.0 - p,
                    (x >> 7).is_multiple_of(3),
                    (x >> 9).is_multiple_of(5),
                ),
                ((x >> 11).is_multiple_of(4), (x >> 13).is_multiple_of(6)),
                &c,
            );
        }
        let bytes = rmp_serde::to_vec_named(&q).unwrap();
        let back: LiveQuality = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, q);
        assert_eq!(back.summary(&c), q.summary(&c));
        let s = q.summary(&c);
        assert_eq!(s.empty.labelled, 1081); // 3 h of outcomes every 10 s, both ends in
        assert!(s.empty.roc_auc.is_some_and(|a| (0.4..0.6).contains(&a)));
    }

    #[test]
    fn sampling_is_a_deterministic_fraction() {
        let c = QualityConfig {
            sample_one_in: 4,
            ..QualityConfig::default()
        };
        let kept = (0..4000)
            .filter(|i| c.sampled(&format!("{i:032x}")))
            .count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert!(QualityConfig::default().sampled("anything"));
        assert_eq!(c.sampled("abc"), c.sampled("abc"));
    }
}
