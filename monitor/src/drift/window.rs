//! [`DriftWindow`]: recent rows checked against a baseline, and the [`DriftReport`] of one
//! evaluation (`constraint_violations.json` and the drift metrics).

use std::path::Path;

use serde::Serialize;

use super::hourly::{self, SlotIndex};
use super::*;

/// Recent values of one feature, counted against the baseline's bucket edges.
#[derive(Debug, Clone)]
struct Recent {
    /// Upper bounds of the baseline's buckets.
    edges: Vec<f64>,
    /// The baseline CDF at each edge.
    baseline_cdf: Vec<f64>,
    /// Recent values in the buckets up to each edge (see [`bucket_of`]).
    at_or_below: Vec<u64>,
    /// Per slot of the baseline (see [`hourly`]; the last one holds rows without the hour):
    /// its CDF at each edge, if it has values.
    slot_cdf: Vec<Option<Vec<f64>>>,
    /// Recent present values per slot (the last one: rows without the hour).
    per_slot: Vec<u64>,
    present: u64,
    missing: u64,
    wrong_type: u64,
}

impl Recent {
    /// The baseline's CDF over the hours these values came from: the slots' CDFs weighted
    /// by the values per slot; values of a slot the baseline lacks weigh the whole
    /// baseline's CDF.
    fn expected_cdf(&self) -> Vec<f64> {
        let n = self.present.max(1) as f64;
        let mut out = vec![0.0; self.edges.len()];
        for (s, &k) in self.per_slot.iter().enumerate() {
            if k == 0 {
                continue;
            }
            let c = self
                .slot_cdf
                .get(s)
                .and_then(Option::as_ref)
                .unwrap_or(&self.baseline_cdf);
            let w = k as f64 / n;
            for (o, x) in out.iter_mut().zip(c) {
                *o += w * x;
            }
        }
        out
    }
}

/// What one evaluation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub rows: u64,
    pub violations: Violations,
    /// `(feature, distance)` for every compared feature with present values in both.
    pub distances: Vec<(String, f64)>,
}

impl DriftReport {
    /// Violations per check type.
    pub fn count(&self, check: &str) -> usize {
        self.violations
            .violations
            .iter()
            .filter(|v| v.constraint_check_type == check)
            .count()
    }

    /// Records the drift metrics: a distance per feature, violations per check.
    pub fn record_metrics(&self) {
        for (f, d) in &self.distances {
            bikeshare_types::metrics::feature_drift(f, *d);
        }
        for check in CHECKS {
            bikeshare_types::metrics::drift_violations(check, self.count(check));
        }
    }

    /// Writes `constraint_violations.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), BaselineError> {
        std::fs::create_dir_all(dir).map_err(|source| BaselineError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write_json(&dir.join("constraint_violations.json"), &self.violations)
    }
}

/// The checks this monitor evaluates.
pub const CHECKS: [&str; 3] = [
    "completeness_check",
    "data_type_check",
    "baseline_drift_check",
];

/// Recent rows compared with a baseline. Push rows, evaluate, reset (tumbling windows).
#[derive(Debug, Clone)]
pub struct DriftWindow {
    baseline: Baseline,
    features: Vec<Recent>,
    /// Where a row's slot comes from, when the baseline has statistics by hour.
    slot_index: Option<SlotIndex>,
    rows: u64,
}

/// The CDF at each bucket's upper edge of these counts; `None` when they hold nothing.
fn cdf(counts: impl Iterator<Item = f64> + Clone) -> Option<Vec<f64>> {
    let total: f64 = counts.clone().sum();
    (total > 0.0).then(|| {
        let mut cum = 0.0;
        counts
            .map(|c| {
                cum += c;
                cum / total
            })
            .collect()
    })
}

impl DriftWindow {
    pub fn new(baseline: Baseline) -> Self {
        let slot_index = baseline.hourly.as_ref().and_then(|h| {
            let names: Vec<&str> = baseline.feature_names().collect();
            h.slot_features.index(names.into_iter())
        });
        let features = baseline
            .statistics
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let b = &f.numerical_statistics.distribution.kll.buckets;
                let baseline_cdf =
                    cdf(b.iter().map(|x| x.count)).unwrap_or_else(|| vec![0.0; b.len()]);
                let mut slot_cdf = vec![None; hourly::SLOTS + 1];
                if let (Some(h), Some(_)) = (&baseline.hourly, slot_index) {
                    for s in &h.slots {
                        if let Some(c) = s.bucket_counts.get(i) {
                            slot_cdf[s.slot] = cdf(c.iter().copied());
                        }
                    }
                }
                Recent {
                    edges: b.iter().map(|x| x.upper_bound).collect(),
                    baseline_cdf,
                    at_or_below: vec![0; b.len()],
                    slot_cdf,
                    per_slot: vec![0; hourly::SLOTS + 1],
                    present: 0,
                    missing: 0,
                    wrong_type: 0,
                }
            })
            .collect();
        Self {
            baseline,
            features,
            slot_index,
            rows: 0,
        }
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// One row in the baseline's feature order.
    pub fn push(&mut self, row: &[Option<f64>]) {
        self.rows += 1;
        let slot = self
            .slot_index
            .and_then(|x| x.slot(row))
            .unwrap_or(hourly::SLOTS);
        for (i, r) in self.features.iter_mut().enumerate() {
            match row.get(i).copied().flatten() {
                None => r.missing += 1,
                Some(v) if !v.is_finite() => r.wrong_type += 1,
                Some(v) => {
                    r.present += 1;
                    r.per_slot[slot] += 1;
                    if let Some(first) = bucket_of(&r.edges, v) {
                        for c in &mut r.at_or_below[first..] {
                            *c += 1;
                        }
                    }
                }
            }
        }
    }

    /// A row of `f32` features (the processor's `FeatureVector::values`).
    pub fn push_f32(&mut self, row: &[Option<f32>]) {
        let row: Vec<Option<f64>> = row.iter().map(|v| v.map(f64::from)).collect();
        self.push(&row);
    }

    /// The violations and distances of the rows pushed since the last reset.
    pub fn evaluate(&self) -> DriftReport {
        let mut violations = Vec::new();
        let mut distances = Vec::new();
        let cfg = &self.baseline.constraints.monitoring_config;
        let threshold = cfg.distribution_constraints.comparison_threshold;
        let compare = cfg.distribution_constraints.perform_comparison == "Enabled";
        for ((r, c), s) in self
            .features
            .iter()
            .zip(&self.baseline.constraints.features)
            .zip(&self.baseline.statistics.features)
        {
            if self.rows == 0 {
                break;
            }
            let completeness = r.present as f64 / self.rows as f64;
            // A window is a sample: below the baseline's share by more than a one-sided 1 %
            // binomial margin (none for a feature always present in the baseline).
            let margin = 2.33 * (c.completeness * (1.0 - c.completeness) / self.rows as f64).sqrt();
            if completeness + margin + 1e-9 < c.completeness {
                violations.push(Violation {
                    feature_name: c.name.clone(),
                    constraint_check_type: "completeness_check".into(),
                    description: format!(
                        "Data completeness ({completeness:.4}) is less than the constraint ({:.4})",
                        c.completeness
                    ),
                });
            }
            let typed = r.present + r.wrong_type;
            if typed > 0 {
                let ok = r.present as f64 / typed as f64;
                if ok + 1e-9 < cfg.datatype_check_threshold {
                    violations.push(Violation {
                        feature_name: c.name.clone(),
                        constraint_check_type: "data_type_check".into(),
                        description: format!(
                            "Data type match ({ok:.4}) is less than the threshold ({:.4}): {} values are not {:?} numbers",
                            cfg.datatype_check_threshold, r.wrong_type, s.inferred_type
                        ),
                    });
                }
            }
            if r.present == 0 || r.edges.is_empty() || !c.compared() {
                continue;
            }
            let n = r.present as f64;
            let expected = r.expected_cdf();
            let distance = r
                .at_or_below
                .iter()
                .zip(&expected)
                .map(|(&c, &b)| (c as f64 / n - b).abs())
                .fold(0.0, f64::max);
            distances.push((c.name.clone(), distance));
            if compare && distance > threshold {
                violations.push(Violation {
                    feature_name: c.name.clone(),
                    constraint_check_type: "baseline_drift_check".into(),
                    description: format!(
                        "Baseline drift distance: {distance:.4} exceeds threshold: {threshold}"
                    ),
                });
            }
        }
        DriftReport {
            rows: self.rows,
            violations: Violations { violations },
            distances,
        }
    }

    /// Forgets the recent rows (the next window starts).
    pub fn reset(&mut self) {
        self.rows = 0;
        for r in &mut self.features {
            r.at_or_below.iter_mut().for_each(|c| *c = 0);
            r.per_slot.iter_mut().for_each(|c| *c = 0);
            r.present = 0;
            r.missing = 0;
            r.wrong_type = 0;
        }
    }
}
