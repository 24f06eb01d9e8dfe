//! Calibrating a model's probabilities: isotonic regression fitted on the validation rows.
//!
//! When a model's validation reliability table misses by more than two points in a populated
//! bin ([`crate::eval::calibration_check`]), training fits an isotonic map from its probability
//! to the observed rate on the validation rows (pool-adjacent-violators over at most
//! [`MAX_BLOCKS`] blocks of sorted predictions, so a knot stands for at least
//! `rows / MAX_BLOCKS` rows), and ships it in the model directory as `calibrator.json`
//! ([`crate::model_dir`]). Whoever loads the directory — the in-process scorer, `serve-model`,
//! the registry, the hot swap — applies it after the trees: linear interpolation between the
//! knots, and beyond the first (last) one linearly towards 0 (1), so the map is strictly
//! increasing and keeps the model's ranking; clamped to `[1e-5, 1 − 1e-5]` so log loss stays
//! finite. A map fitted on validation is judged on the test rows, never on its own.
//! Isotonic rather than Platt: the trees' misses are not one sigmoid's (on real data the
//! middle bins over-predict while both ends are right).

use bikeshare_stream_processor::Scores;
use serde::{Deserialize, Serialize};

use crate::dataset::Target;

/// The most blocks the fit starts from (each of at least `rows / MAX_BLOCKS` rows).
pub const MAX_BLOCKS: usize = 1000;
const EPS: f32 = 1e-5;

/// A non-decreasing piecewise-linear map of probabilities, by its knots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Isotonic {
    /// Increasing predicted probabilities (each the mean prediction of its block).
    pub x: Vec<f32>,
    /// The observed rate of each block: non-decreasing.
    pub y: Vec<f32>,
    /// Rows it was fitted on.
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Block {
    w: f64,
    sum_y: f64,
    sum_p: f64,
}

impl Block {
    fn mean(&self) -> f64 {
        self.sum_y / self.w
    }
    fn merge(&mut self, o: &Self) {
        self.w += o.w;
        self.sum_y += o.sum_y;
        self.sum_p += o.sum_p;
    }
}

impl Isotonic {
    /// The isotonic fit of outcomes `y` on predictions `p`; `None` without a finite
    /// prediction.
    pub fn fit(p: &[f32], y: &[bool]) -> Option<Self> {
        let mut idx: Vec<usize> = (0..p.len().min(y.len()))
            .filter(|&i| p[i].is_finite())
            .collect();
        if idx.is_empty() {
            return None;
        }
        idx.sort_unstable_by(|&a, &b| p[a].total_cmp(&p[b]));
        let min_rows = (idx.len() / MAX_BLOCKS).max(1) as f64;
        let mut blocks: Vec<Block> = Vec::with_capacity(MAX_BLOCKS + 1);
        let mut cur = Block::default();
        for (k, &i) in idx.iter().enumerate() {
            cur.w += 1.0;
            cur.sum_y += f64::from(u8::from(y[i]));
            cur.sum_p += f64::from(p[i]);
            // Ties stay in one block: the map must be a function of the prediction.
            let tie_next = idx.get(k + 1).is_some_and(|&j| p[j] == p[i]);
            if cur.w >= min_rows && !tie_next {
                blocks.push(std::mem::take(&mut cur));
            }
        }
        if cur.w > 0.0 {
            blocks.push(cur);
        }
        // Pool adjacent violators: merge while a block's rate is not above the previous one.
        let mut pooled: Vec<Block> = Vec::with_capacity(blocks.len());
        for b in blocks {
            pooled.push(b);
            while pooled.len() >= 2 {
                let n = pooled.len();
                if pooled[n - 2].mean() < pooled[n - 1].mean() {
                    break;
                }
                let last = pooled.pop().unwrap_or_default();
                if let Some(prev) = pooled.last_mut() {
                    prev.merge(&last);
                }
            }
        }
        Some(Self {
            x: pooled.iter().map(|b| (b.sum_p / b.w) as f32).collect(),
            y: pooled.iter().map(|b| b.mean() as f32).collect(),
            rows: idx.len() as u64,
        })
    }

    /// The calibrated probability of `p`.
    pub fn apply(&self, p: f32) -> f32 {
        let (x, y) = (&self.x, &self.y);
        let out = match x.len() {
            0 => p,
            _ if !p.is_finite() => p,
            _ => {
                let i = x.partition_point(|&k| k <= p);
                let last = x.len() - 1;
                if i == 0 {
                    // Below the first knot: towards (0, 0), so the ranking is kept.
                    if x[0] > 0.0 {
                        y[0] * p.max(0.0) / x[0]
                    } else {
                        y[0]
                    }
                } else if i > last {
                    // Above the last knot: towards (1, 1).
                    if x[last] < 1.0 {
                        y[last] + (1.0 - y[last]) * (p.min(1.0) - x[last]) / (1.0 - x[last])
                    } else {
                        y[last]
                    }
                } else {
                    let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                    if x1 > x0 {
                        y0 + (y1 - y0) * (p - x0) / (x1 - x0)
                    } else {
                        y0
                    }
                }
            }
        };
        out.clamp(EPS, 1.0 - EPS)
    }

    /// Whether the knots make a valid map (what a loaded file must satisfy).
    pub fn check(&self) -> Result<(), String> {
        if self.x.len() != self.y.len() || self.x.is_empty() {
            return Err("x and y must be non-empty and of one length".into());
        }
        let finite = |v: &[f32]| v.iter().all(|z| z.is_finite() && (0.0..=1.0).contains(z));
        if !finite(&self.x) || !finite(&self.y) {
            return Err("knots must be probabilities".into());
        }
        if self.x.windows(2).any(|w| w[1] <= w[0]) || self.y.windows(2).any(|w| w[1] < w[0]) {
            return Err("x must increase and y must not decrease".into());
        }
        Ok(())
    }
}

/// The calibrators of a model directory (`calibrator.json`): one per target, or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    /// Always `"isotonic"` for now.
    pub method: String,
    pub empty: Option<Isotonic>,
    pub full: Option<Isotonic>,
}

impl Calibrator {
    pub const METHOD: &'static str = "isotonic";

    /// Both maps checked.
    pub fn check(&self) -> Result<(), String> {
        if self.method != Self::METHOD {
            return Err(format!("unknown calibration method {:?}", self.method));
        }
        for (what, m) in [("empty", &self.empty), ("full", &self.full)] {
            if let Some(m) = m {
                m.check().map_err(|e| format!("{what}: {e}"))?;
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.empty.is_none() && self.full.is_none()
    }

    /// The map of target `t`, if it has one.
    pub fn map(&self, t: Target) -> Option<&Isotonic> {
        match t {
            Target::WentEmpty => self.empty.as_ref(),
            Target::WentFull => self.full.as_ref(),
        }
    }

    /// Sets (or removes) the map of target `t`.
    pub fn set_map(&mut self, t: Target, map: Option<Isotonic>) {
        match t {
            Target::WentEmpty => self.empty = map,
            Target::WentFull => self.full = map,
        }
    }

    /// Both probabilities of `s` mapped (a target without a map keeps its raw one).
    pub fn apply(&self, s: Scores) -> Scores {
        let one = |t: Target, p: f32| self.map(t).map_or(p, |m| m.apply(p));
        Scores {
            p_empty: one(Target::WentEmpty, s.p_empty),
            p_full: one(Target::WentFull, s.p_full),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{calibration_check, reliability};

    /// Rows whose true probability is `q` and whose model says `sqrt(q)`: too high, most in
    /// the middle.
    fn rows(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut state = bikeshare_types::lcg::Lcg64::new(seed);
        let mut next = || state.unit_f32();
        let (mut p, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let q = next();
            p.push(q.sqrt());
            y.push(next() < q);
        }
        (p, y)
    }

    #[test]
    fn calibration_fitted_on_one_half_fixes_the_other() {
        let (p_fit, y_fit) = rows(40_000, 1);
        let (p_test, y_test) = rows(40_000, 2);
        let iso = Isotonic::fit(&p_fit, &y_fit).unwrap();
        iso.check().unwrap();
        assert!(iso.x.len() <= MAX_BLOCKS);
        let before = calibration_check(
            &reliability(&p_test, &y_test),
            crate::eval::CALIBRATION_MIN_ROWS,
        );
        let calibrated: Vec<f32> = p_test.iter().map(|&p| iso.apply(p)).collect();
        let after = calibration_check(
            &reliability(&calibrated, &y_test),
            crate::eval::CALIBRATION_MIN_ROWS,
        );
        assert!(before.off && before.max_gap > 0.1, "{before:?}");
        assert!(!after.off, "held-out rows after calibration: {after:?}");
        let ll = |p: &[f32]| crate::eval::log_loss(p, &y_test).unwrap();
        assert!(ll(&calibrated) < ll(&p_test));
    }

    #[test]
    fn the_map_is_monotone_clamped_and_ties_stay_together() {
        let p = [0.1, 0.1, 0.1, 0.9, 0.9, 0.5];
        let y = [false, true, false, true, true, false];
        let iso = Isotonic::fit(&p, &y).unwrap();
        iso.check().unwrap();
        assert_eq!(
            iso.x.len(),
            2,
            "{iso:?}: 0.5 pooled with the 0.1s (0 after 1/3)"
        );
        // Knots (0.2, 0.25) and (0.9, 1); below the first, towards (0, 0).
        assert!((iso.apply(0.1) - 0.125).abs() < 1e-6);
        assert!((iso.apply(0.55) - 0.625).abs() < 1e-6);
        assert_eq!(iso.apply(0.0), EPS);
        assert_eq!(iso.apply(1.0), 1.0 - EPS);
        let mut last = 0.0;
        for k in 1..90 {
            let v = iso.apply(k as f32 / 100.0);
            assert!(
                v > last,
                "strictly increasing below the top knot's rate of 1"
            );
            last = v;
        }
        assert!(Isotonic::fit(&[f32::NAN], &[true]).is_none());
        let bad = Isotonic {
            x: vec![0.5, 0.4],
            y: vec![0.1, 0.2],
            rows: 2,
        };
        assert!(bad.check().is_err());
    }
}
