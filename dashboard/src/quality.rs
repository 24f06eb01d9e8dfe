//! Rolling live model quality from the processor's own labels.

use std::collections::VecDeque;

use serde::Serialize;

/// One labelled prediction: the probability given, and what happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub at_ms: i64,
    pub p: f32,
    pub y: bool,
}

/// Quality over the last `window` of outcomes (by label time).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QualitySummary {
    pub labelled: usize,
    pub positives: usize,
    pub brier: Option<f64>,
    pub roc_auc: Option<f64>,
    /// Mean predicted probability vs observed rate, in 5 bins of predicted probability.
    pub calibration: Vec<(f64, f64, usize)>,
}

/// A bounded window of outcomes.
#[derive(Debug, Clone)]
pub struct RollingQuality {
    window_ms: i64,
    outcomes: VecDeque<Outcome>,
}

impl RollingQuality {
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms,
            outcomes: VecDeque::new(),
        }
    }

    /// Adds an outcome; forgets those older than the window before the newest.
    pub fn push(&mut self, o: Outcome) {
        self.outcomes.push_back(o);
        let newest = self
            .outcomes
            .iter()
            .map(|o| o.at_ms)
            .max()
            .unwrap_or(o.at_ms);
        while self
            .outcomes
            .front()
            .is_some_and(|f| f.at_ms < newest - self.window_ms)
        {
            self.outcomes.pop_front();
        }
    }

    pub fn summary(&self) -> QualitySummary {
        let n = self.outcomes.len();
        if n == 0 {
            return QualitySummary::default();
        }
        let positives = self.outcomes.iter().filter(|o| o.y).count();
        let brier = self
            .outcomes
            .iter()
            .map(|o| (f64::from(o.p) - f64::from(u8::from(o.y))).powi(2))
            .sum::<f64>()
            / n as f64;
        let mut bins = vec![(0.0f64, 0usize, 0usize); 5];
        for o in &self.outcomes {
            let b = ((o.p * 5.0) as usize).min(4);
            bins[b].0 += f64::from(o.p);
            bins[b].1 += usize::from(o.y);
            bins[b].2 += 1;
        }
        let calibration = bins
            .into_iter()
            .filter(|b| b.2 > 0)
            .map(|(sum_p, pos, count)| (sum_p / count as f64, pos as f64 / count as f64, count))
            .collect();
        QualitySummary {
            labelled: n,
            positives,
            brier: Some(brier),
            roc_auc: roc_auc(&self.outcomes),
            calibration,
        }
    }
}

/// ROC-AUC by ranks (ties share their mean rank); `None` without both classes.
pub fn roc_auc(outcomes: &VecDeque<Outcome>) -> Option<f64> {
    let pos = outcomes.iter().filter(|o| o.y).count();
    let neg = outcomes.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v: Vec<(f32, bool)> = outcomes.iter().map(|o| (o.p, o.y)).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += mean_rank * v[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    Some((rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(p: f32, y: bool) -> Outcome {
        Outcome { at_ms: 0, p, y }
    }

    #[test]
    fn auc_and_brier() {
        let perfect: VecDeque<_> =
            [o(0.1, false), o(0.2, false), o(0.8, true), o(0.9, true)].into();
        assert_eq!(roc_auc(&perfect), Some(1.0));
        let inverted: VecDeque<_> = [o(0.9, false), o(0.1, true)].into();
        assert_eq!(roc_auc(&inverted), Some(0.0));
        let ties: VecDeque<_> = [o(0.5, false), o(0.5, true)].into();
        assert_eq!(roc_auc(&ties), Some(0.5));
        let mut q = RollingQuality::new(1000);
        for x in perfect {
            q.push(x);
        }
        let s = q.summary();
        assert_eq!((s.labelled, s.positives), (4, 2));
        assert!((s.brier.unwrap() - (0.01 + 0.04 + 0.04 + 0.01) / 4.0).abs() < 1e-6);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let mut q = RollingQuality::new(100);
        q.push(Outcome {
            at_ms: 0,
            p: 0.5,
            y: true,
        });
        q.push(Outcome {
            at_ms: 150,
            p: 0.5,
            y: false,
        });
        assert_eq!(q.summary().labelled, 1);
    }
}
