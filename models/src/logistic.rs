//! The logistic-regression baseline: a linear model on the same features, one per target,
//! fitted on the training rows. What a model must beat besides persistence and the net-flow
//! projection: it shows whether the trees earn their keep over a plain linear score.
//!
//! Each feature is standardised (mean and standard deviation of the fitted rows); a missing
//! value becomes the mean (0 after standardising), a feature constant on the fitted rows gets
//! no weight. The weights minimise the log loss plus an L2 penalty `l2 / 2 · |w|²` (the
//! intercept unpenalised), by Newton's method: the Hessian is `d + 1` square (76 for the
//! default schema), solved by Cholesky. Fitted on an evenly spaced sample of at most
//! [`LogisticConfig::max_rows`] rows, so its cost does not grow with the training set.

use std::ops::Range;

use bikeshare_stream_processor::{Scorer, Scores};
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};

use crate::dataset::{Target, TrainingData};

/// How the baseline is fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticConfig {
    /// Rows fitted at most (an evenly spaced sample of the range).
    pub max_rows: usize,
    /// L2 penalty on the standardised weights.
    pub l2: f64,
    /// Newton steps at most (it stops earlier once the step is tiny).
    pub max_iterations: usize,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self {
            max_rows: 30_000,
            l2: 1.0,
            max_iterations: 12,
        }
    }
}

/// One target's linear model on standardised features.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    mean: Vec<f64>,
    /// `1 / sd`, 0 for a constant (or never present) feature.
    inv_sd: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

impl LinearModel {
    fn standardised(&self, i: usize, x: f32) -> f64 {
        if x.is_nan() {
            0.0
        } else {
            (f64::from(x) - self.mean[i]) * self.inv_sd[i]
        }
    }

    /// The probability for one row (`NaN` = missing).
    pub fn predict(&self, row: &[f32]) -> f64 {
        let mut z = self.bias;
        for (i, &x) in row.iter().enumerate().take(self.weights.len()) {
            z += self.weights[i] * self.standardised(i, x);
        }
        sigmoid(z)
    }

    /// Fits `target` on `rows` of `data`.
    pub fn fit(
        data: &TrainingData,
        target: Target,
        rows: &[usize],
        config: &LogisticConfig,
    ) -> Self {
        let d = data.num_features();
        let (mut sum, mut sq, mut count) = (vec![0.0f64; d], vec![0.0f64; d], vec![0u64; d]);
        for &r in rows {
            for (i, &x) in data.row(r).iter().enumerate() {
                if !x.is_nan() {
                    let x = f64::from(x);
                    sum[i] += x;
                    sq[i] += x * x;
                    count[i] += 1;
                }
            }
        }
        let mut mean = vec![0.0; d];
        let mut inv_sd = vec![0.0; d];
        for i in 0..d {
            if count[i] > 1 {
                let n = count[i] as f64;
                mean[i] = sum[i] / n;
                let var = (sq[i] / n - mean[i] * mean[i]).max(0.0);
                if var > 1e-12 {
                    inv_sd[i] = 1.0 / var.sqrt();
                }
            }
        }
        let mut model = Self {
            mean,
            inv_sd,
            weights: vec![0.0; d],
            bias: 0.0,
        };
        let y: Vec<bool> = rows.iter().map(|&r| target.label(data.meta(r))).collect();
        // Each row counts as the rows it stands for (a sampled load's weight, else 1).
        let wt: Vec<f64> = rows
            .iter()
            .map(|&r| f64::from(data.meta(r).weight))
            .collect();
        let total: f64 = wt.iter().sum();
        let positive: f64 = y.iter().zip(&wt).filter(|(b, _)| **b).map(|(_, w)| w).sum();
        let prevalence = if total > 0.0 { positive / total } else { 0.0 };
        let p0 = prevalence.clamp(1e-6, 1.0 - 1e-6);
        model.bias = (p0 / (1.0 - p0)).ln();
        // The standardised rows once (d + 1 columns, the last the intercept's 1).
        let k = d + 1;
        let mut x = Vec::with_capacity(rows.len() * k);
        for &r in rows {
            for (i, &v) in data.row(r).iter().enumerate() {
                x.push(model.standardised(i, v));
            }
            x.push(1.0);
        }
        let mut beta: Vec<f64> = model.weights.iter().copied().chain([model.bias]).collect();
        for _ in 0..config.max_iterations {
            let mut grad = vec![0.0f64; k];
            let mut hess = vec![0.0f64; k * k];
            for ((row, &yi), &wr) in x.chunks_exact(k).zip(&y).zip(&wt) {
                let z: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let p = sigmoid(z);
                let g = wr * (p - if yi { 1.0 } else { 0.0 });
                let w = wr * (p * (1.0 - p)).max(1e-10);
                for a in 0..k {
                    let ra = row[a];
                    if ra == 0.0 {
                        continue;
                    }
                    grad[a] += g * ra;
                    let wa = w * ra;
                    let h = &mut hess[a * k..a * k + a + 1];
                    for (b, hb) in h.iter_mut().enumerate() {
                        *hb += wa * row[b];
                    }
                }
            }
            for a in 0..d {
                grad[a] += config.l2 * beta[a];
                hess[a * k + a] += config.l2;
            }
            // A tiny ridge on the intercept too keeps the system positive definite.
            hess[d * k + d] += 1e-9;
            for a in 0..k {
                for b in 0..a {
                    hess[b * k + a] = hess[a * k + b];
                }
            }
            let Some(step) = cholesky_solve(&mut hess, &grad, k) else {
                break;
            };
            // Backtracking: a full Newton step can overshoot (nearly separable features,
            // e.g. "full now" for "went full"); halve it until the objective decreases.
            let current = objective(&x, &y, &wt, &beta, config.l2, d);
            let mut scale = 1.0;
            let mut moved = false;
            for _ in 0..30 {
                let trial: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - scale * s).collect();
                if objective(&x, &y, &wt, &trial, config.l2, d) <= current {
                    beta = trial;
                    moved = true;
                    break;
                }
                scale /= 2.0;
            }
            let biggest = step.iter().fold(0.0f64, |m, s| m.max((scale * s).abs()));
            if !moved || biggest < 1e-6 {
                break;
            }
        }
        model.bias = beta[d];
        beta.truncate(d);
        model.weights = beta;
        model
    }
}

/// The penalised log loss of `beta` on the standardised rows `x` (`d + 1` columns), each row
/// weighted by `wt`.
fn objective(x: &[f64], y: &[bool], wt: &[f64], beta: &[f64], l2: f64, d: usize) -> f64 {
    let k = d + 1;
    let mut loss = 0.0;
    for ((row, &yi), &wr) in x.chunks_exact(k).zip(y).zip(wt) {
        let z: f64 = row.iter().zip(beta).map(|(a, b)| a * b).sum();
        // log(1 + e^z) - y z, computed without overflow.
        let softplus = if z > 0.0 {
            z + (-z).exp().ln_1p()
        } else {
            z.exp().ln_1p()
        };
        loss += wr * (softplus - if yi { z } else { 0.0 });
    }
    loss + 0.5 * l2 * beta[..d].iter().map(|b| b * b).sum::<f64>()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Solves `a · x = b` for a symmetric positive definite `a` (`n × n`, row-major, destroyed);
/// `None` when it is not.
fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * y[k];
        }
        y[i] = s / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= a[k * n + i] * x[k];
        }
        x[i] = s / a[i * n + i];
    }
    Some(x)
}

/// The two linear models as a [`Scorer`].
#[derive(Debug, Clone)]
pub struct LogisticScorer {
    model: ModelRef,
    schema_id: FeatureSchemaId,
    empty: LinearModel,
    full: LinearModel,
}

impl LogisticScorer {
    pub const NAME: &'static str = "logistic";

    /// Fits both targets on an evenly spaced sample of rows `range` (the training rows).
    pub fn fit(data: &TrainingData, range: Range<usize>, config: &LogisticConfig) -> Self {
        let n = range.len();
        let take = n.min(config.max_rows.max(1));
        let rows: Vec<usize> = (0..take)
            .map(|j| range.start + (j as u128 * n as u128 / take.max(1) as u128) as usize)
            .collect();
        Self {
            model: ModelRef {
                name: Self::NAME.into(),
                version: "1".into(),
            },
            schema_id: data.schema_id().clone(),
            empty: LinearModel::fit(data, Target::WentEmpty, &rows, config),
            full: LinearModel::fit(data, Target::WentFull, &rows, config),
        }
    }
}

impl Scorer for LogisticScorer {
    fn model(&self) -> &ModelRef {
        &self.model
    }
    fn schema_id(&self) -> &FeatureSchemaId {
        &self.schema_id
    }
    fn score(&self, values: &[Option<f32>]) -> Scores {
        let row: Vec<f32> = values.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
        Scores {
            p_empty: self.empty.predict(&row) as f32,
            p_full: self.full.predict(&row) as f32,
        }
    }
}

#[cfg(test)]
mod tests {
    use bikeshare_stream_processor::FeatureSchema;
    use bikeshare_types::Timestamp;

    use super::*;
    use crate::dataset::RowLabel;

    #[test]
    fn a_weighted_row_counts_as_that_many_copies() {
        // The baselines fitted on a sampled load (each kept easy row weighing 4) equal those
        // fitted on the rows it stands for (each kept easy row four times).
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let (mut copies, mut weighted) = (
            TrainingData::new(&schema, 30),
            TrainingData::new(&schema, 30),
        );
        let mut s = bikeshare_types::lcg::Lcg64::new(9);
        let mut u = || s.unit_f64();
        let mut t = 0i64;
        for i in 0..8000 {
            let x = u();
            let label = RowLabel {
                went_empty: u() < 0.05 + 0.3 * x,
                empty_now: u() < 0.05,
                went_full: u() < 0.03,
                ..RowLabel::default()
            };
            let easy = !(label.went_empty || label.empty_now || label.went_full);
            if easy && i % 4 != 0 {
                continue;
            }
            let v = [
                Some(x as f32),
                Some(if label.empty_now { 0.0 } else { 3.0 }),
            ];
            let n = if easy { 4 } else { 1 };
            for _ in 0..n {
                copies.push("s", Timestamp(t), label, v);
                t += 1;
            }
            weighted.push_weighted("s", Timestamp(t), label, v, n as f32);
            t += 1;
        }
        assert!(copies.len() < 30_000, "every row in the logistic fit");
        let config = LogisticConfig::default();
        let a = LogisticScorer::fit(&copies, 0..copies.len(), &config);
        let b = LogisticScorer::fit(&weighted, 0..weighted.len(), &config);
        let pa = crate::eval::PersistenceScorer::fit(&copies, 0..copies.len());
        let pb = crate::eval::PersistenceScorer::fit(&weighted, 0..weighted.len());
        for k in 0..=10 {
            for now in [0.0f32, 3.0] {
                let row = [Some(k as f32 / 10.0), Some(now)];
                let (sa, sb) = (a.score(&row), b.score(&row));
                assert!(
                    (sa.p_empty - sb.p_empty).abs() < 2e-3 && (sa.p_full - sb.p_full).abs() < 2e-3,
                    "{sa:?} vs {sb:?}"
                );
                let (qa, qb) = (pa.score(&row), pb.score(&row));
                assert!((qa.p_empty - qb.p_empty).abs() < 1e-6, "{qa:?} vs {qb:?}");
            }
        }
    }

    #[test]
    fn a_separating_feature_does_not_make_it_diverge() {
        // "Full now" implies "went full" (a rare state), the rest is noise around a weak
        // trend: Newton's full steps overshoot here.
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        let mut s = bikeshare_types::lcg::Lcg64::new(5);
        let mut u = || s.unit_f64();
        let (mut p, mut y) = (Vec::new(), Vec::new());
        let mut rows = Vec::new();
        for i in 0..5000 {
            let full = u() < 0.03;
            let x = u();
            let went = full || u() < 0.02 + 0.05 * x;
            let label = RowLabel {
                went_full: went,
                ..RowLabel::default()
            };
            let v = [Some(if full { 1.0 } else { 0.0 }), Some(x as f32)];
            d.push("s", Timestamp(i), label, v);
            rows.push((v, went));
        }
        let scorer = LogisticScorer::fit(&d, 0..d.len(), &LogisticConfig::default());
        for (v, went) in rows {
            let mut all = vec![None; schema.len()];
            all[..2].copy_from_slice(&v);
            p.push(scorer.score(&all).p_full);
            y.push(went);
        }
        let ll = crate::eval::log_loss(&p, &y).unwrap();
        let auc = crate::eval::roc_auc(&p, &y).unwrap();
        // The constant rate alone: about 0.2 nats.
        assert!(ll < 0.2 && auc > 0.6, "log loss {ll}, ROC-AUC {auc}");
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] x = [2, 5] -> x = [-0.5, 2].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut a, &[2.0, 5.0], 2).unwrap();
        assert!(
            (x[0] + 0.5).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12,
            "{x:?}"
        );
        let mut singular = vec![1.0, 1.0, 1.0, 1.0];
        assert!(cholesky_solve(&mut singular, &[1.0, 1.0], 2).is_none());
    }

    #[test]
    fn recovers_a_logistic_relation_and_ignores_constant_and_missing_features() {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        let mut s = bikeshare_types::lcg::Lcg64::new(3);
        let mut u = || s.unit_f64();
        // P(empty) = sigmoid(2 x0 - 1); feature 1 constant, feature 2 always missing.
        for i in 0..20_000 {
            let x0 = u() * 4.0 - 2.0;
            let y = u() < sigmoid(2.0 * x0 - 1.0);
            let label = RowLabel {
                went_empty: y,
                ..RowLabel::default()
            };
            d.push("s", Timestamp(i), label, [Some(x0 as f32), Some(7.0), None]);
        }
        let scorer = LogisticScorer::fit(
            &d,
            0..d.len(),
            &LogisticConfig {
                l2: 1e-3,
                ..LogisticConfig::default()
            },
        );
        for x0 in [-1.5f32, 0.0, 1.0] {
            let mut v = vec![None; schema.len()];
            v[0] = Some(x0);
            let p = f64::from(scorer.score(&v).p_empty);
            let want = sigmoid(2.0 * f64::from(x0) - 1.0);
            assert!((p - want).abs() < 0.03, "x0 {x0}: {p} vs {want}");
        }
        assert_eq!(
            scorer.empty.weights[1], 0.0,
            "a constant feature has no weight"
        );
        assert_eq!(
            scorer.empty.weights[2], 0.0,
            "a missing feature has no weight"
        );
        // No positives for `full`: probabilities near 0, not NaN.
        let p = scorer.score(&vec![Some(0.0); schema.len()]).p_full;
        assert!(p.is_finite() && p < 0.01, "{p}");
    }
}
