//! [`BaselineBuilder`]: a baseline from rows of features in one pass, in bounded memory
//! (a reservoir per feature for buckets and percentiles; per hour of the week when the rows
//! carry it, see [`super::hourly`]).

use super::hourly::{self, SlotAcc, SlotFeatures, SlotIndex, SlotStatistics};
use super::*;
use bikeshare_types::splitmix::SplitMix64;

/// Accumulates one feature's baseline statistics.
#[derive(Debug, Clone, Default)]
struct Acc {
    present: u64,
    missing: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    integral: bool,
    non_negative: bool,
    reservoir: Vec<f64>,
}

/// Builds a baseline from rows of features, one pass, bounded memory.
#[derive(Debug, Clone)]
pub struct BaselineBuilder {
    names: Vec<String>,
    acc: Vec<Acc>,
    rows: u64,
    rng: SplitMix64,
    drift_threshold: f64,
    /// Features not compared for drift, with the reason.
    not_compared: Vec<(String, String)>,
    /// Features whose completeness is not constrained (missing by definition at times).
    optional: Vec<String>,
    /// The slot features and, per slot, its values (see [`hourly`]).
    slots: Option<(SlotFeatures, SlotIndex, Vec<SlotAcc>)>,
}

impl BaselineBuilder {
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let slots = SlotFeatures::detect(names.iter().map(String::as_str)).and_then(|f| {
            let index = f.index(names.iter().map(String::as_str))?;
            Some((f, index, vec![SlotAcc::new(names.len()); hourly::SLOTS + 1]))
        });
        let acc = names
            .iter()
            .map(|_| Acc {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                integral: true,
                non_negative: true,
                ..Acc::default()
            })
            .collect();
        Self {
            names,
            acc,
            rows: 0,
            rng: SplitMix64::new(0x9E37_79B9_7F4A_7C15),
            drift_threshold: DEFAULT_DRIFT_THRESHOLD,
            not_compared: Vec::new(),
            optional: Vec::new(),
            slots,
        }
    }

    /// No baseline drift check for `feature` (completeness and type are still checked);
    /// `reason` goes into `constraints.json`. A name the builder does not have is ignored.
    pub fn not_compared(mut self, feature: &str, reason: impl Into<String>) -> Self {
        self.not_compared.push((feature.to_owned(), reason.into()));
        self
    }

    /// Like [`Self::not_compared`], and with no completeness constraint either: for a
    /// feature that is missing by definition until something has been seen, so its share of
    /// missing values says how long the producer of the rows has run, not their quality.
    pub fn optional(mut self, feature: &str, reason: impl Into<String>) -> Self {
        self.optional.push(feature.to_owned());
        self.not_compared(feature, reason)
    }

    /// The drift threshold written into `constraints.json`.
    pub fn drift_threshold(mut self, t: f64) -> Self {
        self.drift_threshold = t;
        self
    }

    /// Deterministic, so the same rows give the same baseline.
    fn next_random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// One row, in the order of the names (extra values are ignored, absent ones missing).
    pub fn push(&mut self, row: &[Option<f64>]) {
        self.rows += 1;
        let slot = self
            .slots
            .as_ref()
            .map(|(_, index, _)| index.slot(row).unwrap_or(hourly::SLOTS));
        if let (Some(s), Some((_, _, accs))) = (slot, &mut self.slots) {
            accs[s].rows += 1;
        }
        for i in 0..self.acc.len() {
            match row.get(i).copied().flatten().filter(|v| v.is_finite()) {
                None => self.acc[i].missing += 1,
                Some(v) => {
                    let r = self.next_random();
                    if let Some(s) = slot {
                        let r = self.next_random();
                        if let Some((_, _, accs)) = &mut self.slots {
                            accs[s].push(i, v, r);
                        }
                    }
                    let a = &mut self.acc[i];
                    a.present += 1;
                    a.sum += v;
                    a.sum_sq += v * v;
                    a.min = a.min.min(v);
                    a.max = a.max.max(v);
                    a.integral &= v.fract() == 0.0;
                    a.non_negative &= v >= 0.0;
                    if a.reservoir.len() < RESERVOIR {
                        a.reservoir.push(v);
                    } else {
                        let j = (r % a.present) as usize;
                        if j < RESERVOIR {
                            a.reservoir[j] = v;
                        }
                    }
                }
            }
        }
    }

    pub fn finish(self) -> Baseline {
        let rows = self.rows.max(1) as f64;
        let mut stats = Vec::new();
        let mut cons = Vec::new();
        let mut uppers: Vec<Vec<f64>> = Vec::new();
        for (name, mut a) in self.names.into_iter().zip(self.acc) {
            a.reservoir.sort_by(f64::total_cmp);
            let inferred_type = if a.present == 0 {
                InferredType::Unknown
            } else if a.integral {
                InferredType::Integral
            } else {
                InferredType::Fractional
            };
            let n = a.present.max(1) as f64;
            let mean = a.sum / n;
            let std_dev = (a.sum_sq / n - mean * mean).max(0.0).sqrt();
            let (min, max) = if a.present == 0 {
                (0.0, 0.0)
            } else {
                (a.min, a.max)
            };
            stats.push(FeatureStatistics {
                name: name.clone(),
                inferred_type,
                numerical_statistics: NumericalStatistics {
                    common: Common {
                        num_present: a.present,
                        num_missing: a.missing,
                    },
                    mean,
                    sum: a.sum,
                    std_dev,
                    min,
                    max,
                    distribution: Distribution {
                        kll: Kll {
                            buckets: buckets(&a.reservoir, min, max, a.present),
                            sketch: Sketch {
                                parameters: SketchParameters { c: 0.64, k: 2048.0 },
                                data: vec![percentiles(&a.reservoir)],
                            },
                        },
                    },
                },
            });
            uppers.push(
                stats
                    .last()
                    .map(|f: &FeatureStatistics| {
                        let b = &f.numerical_statistics.distribution.kll.buckets;
                        b.iter().map(|x| x.upper_bound).collect()
                    })
                    .unwrap_or_default(),
            );
            cons.push(FeatureConstraint {
                inferred_type,
                completeness: if self.optional.contains(&name) {
                    0.0
                } else {
                    a.present as f64 / rows
                },
                num_constraints: NumConstraints {
                    is_non_negative: a.present > 0 && a.non_negative,
                },
                monitoring_config_overrides: self
                    .not_compared
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, reason)| FeatureOverrides {
                        distribution_constraints: DistributionOverride {
                            perform_comparison: "Disabled".into(),
                            reason: reason.clone(),
                        },
                    }),
                name,
            });
        }
        let hourly = self.slots.map(|(slot_features, _, accs)| HourlyStatistics {
            slot_features,
            slots: accs
                .into_iter()
                .enumerate()
                .filter(|(_, a)| a.rows > 0)
                .map(|(slot, a)| SlotStatistics {
                    slot,
                    rows: a.rows,
                    bucket_counts: uppers
                        .iter()
                        .zip(a.present.iter().zip(&a.reservoir))
                        .map(|(u, (&present, values))| {
                            let mut counts = vec![0.0; u.len()];
                            let scale = present as f64 / values.len().max(1) as f64;
                            for &v in values {
                                if let Some(i) = bucket_of(u, v) {
                                    counts[i] += scale;
                                }
                            }
                            counts
                        })
                        .collect(),
                })
                .collect(),
        });
        Baseline {
            hourly,
            statistics: Statistics {
                version: 0.0,
                dataset: Dataset {
                    item_count: self.rows,
                },
                features: stats,
            },
            constraints: Constraints {
                version: 0.0,
                features: cons,
                monitoring_config: MonitoringConfig {
                    evaluate_constraints: "Enabled".into(),
                    emit_metrics: "Enabled".into(),
                    datatype_check_threshold: 1.0,
                    domain_content_threshold: 1.0,
                    distribution_constraints: DistributionConstraints {
                        perform_comparison: "Enabled".into(),
                        comparison_threshold: self.drift_threshold,
                        comparison_method: "Simple".into(),
                    },
                },
            },
        }
    }
}

/// The baseline of `rows` (values in the order of `names`), e.g. the training rows, to be
/// written next to the model with [`Baseline::write`].
pub fn baseline_from_rows<R: AsRef<[Option<f64>]>>(
    names: impl IntoIterator<Item = impl Into<String>>,
    rows: impl IntoIterator<Item = R>,
) -> Baseline {
    let mut b = BaselineBuilder::new(names);
    for r in rows {
        b.push(r.as_ref());
    }
    b.finish()
}

fn buckets(sorted: &[f64], min: f64, max: f64, present: u64) -> Vec<Bucket> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = if max > min { BUCKETS } else { 1 };
    let width = (max - min) / n as f64;
    let scale = present as f64 / sorted.len() as f64;
    let uppers: Vec<f64> = (0..n)
        .map(|i| {
            if i + 1 == n {
                max
            } else {
                min + width * (i + 1) as f64
            }
        })
        .collect();
    let mut counts = vec![0usize; n];
    for &v in sorted {
        if let Some(i) = bucket_of(&uppers, v) {
            counts[i] += 1;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| Bucket {
            lower_bound: if i == 0 { min } else { uppers[i - 1] },
            upper_bound: uppers[i],
            count: c as f64 * scale,
        })
        .collect()
}

fn percentiles(sorted: &[f64]) -> Vec<f64> {
    if sorted.is_empty() {
        return Vec::new();
    }
    (0..=100)
        .map(|p| sorted[((sorted.len() - 1) * p) / 100])
        .collect()
}
