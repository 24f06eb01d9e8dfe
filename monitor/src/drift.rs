//! Data-quality monitoring in the file formats of SageMaker Model Monitor.
//!
//! - [`baseline_from_rows`] (training time): `statistics.json` (per feature: present and
//!   missing counts, mean, sum, standard deviation, min, max, and a 20-bucket equal-width
//!   histogram with a percentile sketch, as `distribution.kll`) and `constraints.json`
//!   (inferred type, completeness, non-negativity, and the drift comparison settings).
//! - [`DriftWindow`] (continuously, or `bikeshare monitor`): recent rows against a baseline;
//!   [`DriftWindow::evaluate`] gives a `constraint_violations.json` with the checks
//!   `completeness_check`, `data_type_check` and `baseline_drift_check`, and a distance per
//!   feature: the largest absolute difference between the baseline's and the recent
//!   cumulative distribution, taken at the baseline's bucket edges (Model Monitor's
//!   L-infinity distance).
//!
//! A value is `None` when missing and `Some(NaN)` (or infinite) when present but not a number
//! (a data-type failure).
//!
//! This file holds the file formats ([`Baseline`] and the JSON documents it reads and writes)
//! and the one bucketing rule both sides share; `builder.rs` builds baselines, `window.rs`
//! checks recent rows against them, [`hourly`] keeps statistics per hour of the week.

use std::path::Path;

use serde::{Deserialize, Serialize};

mod builder;
pub mod hourly;
mod window;

pub use builder::{BaselineBuilder, baseline_from_rows};
use hourly::HourlyStatistics;
pub use window::{CHECKS, DriftReport, DriftWindow};

/// Histogram buckets of a numeric feature in the baseline.
pub const BUCKETS: usize = 20;
/// Values kept per feature to compute percentiles and buckets of large baselines.
pub const RESERVOIR: usize = 20_000;
/// Default drift threshold (Model Monitor's default comparison threshold).
pub const DEFAULT_DRIFT_THRESHOLD: f64 = 0.1;

/// Why baseline files cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Model Monitor file: {source}")]
    Format {
        path: String,
        source: serde_json::Error,
    },
    #[error("statistics, constraints and statistics by hour do not describe the same features")]
    Mismatch,
}

// --- statistics.json ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    pub version: f64,
    pub dataset: Dataset,
    pub features: Vec<FeatureStatistics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub item_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStatistics {
    pub name: String,
    pub inferred_type: InferredType,
    pub numerical_statistics: NumericalStatistics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InferredType {
    Integral,
    Fractional,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericalStatistics {
    pub common: Common,
    pub mean: f64,
    pub sum: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
    pub distribution: Distribution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Common {
    pub num_present: u64,
    pub num_missing: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub kll: Kll,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kll {
    pub buckets: Vec<Bucket>,
    pub sketch: Sketch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub lower_bound: f64,
    pub upper_bound: f64,
    pub count: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pub parameters: SketchParameters,
    /// Percentiles 0, 1, ..., 100 of the present values.
    pub data: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SketchParameters {
    pub c: f64,
    pub k: f64,
}

// --- constraints.json ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub version: f64,
    pub features: Vec<FeatureConstraint>,
    pub monitoring_config: MonitoringConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConstraint {
    pub name: String,
    pub inferred_type: InferredType,
    /// The fraction of rows where the feature is present, at least.
    pub completeness: f64,
    pub num_constraints: NumConstraints,
    /// This feature's settings in place of `monitoring_config`'s (Model Monitor's
    /// `monitoringConfigOverrides`): a feature whose distribution is not comparable between
    /// a window and the baseline is not compared, and the file says why.
    #[serde(
        default,
        rename = "monitoringConfigOverrides",
        skip_serializing_if = "Option::is_none"
    )]
    pub monitoring_config_overrides: Option<FeatureOverrides>,
}

impl FeatureConstraint {
    /// Whether the baseline drift check compares this feature.
    pub fn compared(&self) -> bool {
        self.monitoring_config_overrides
            .as_ref()
            .is_none_or(|o| o.distribution_constraints.perform_comparison == "Enabled")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureOverrides {
    pub distribution_constraints: DistributionOverride,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionOverride {
    /// `Disabled`: no baseline drift check for this feature.
    pub perform_comparison: String,
    /// Why, for whoever reads the constraints.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumConstraints {
    pub is_non_negative: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitoringConfig {
    pub evaluate_constraints: String,
    pub emit_metrics: String,
    /// The fraction of present values that must have the baseline's type.
    pub datatype_check_threshold: f64,
    pub domain_content_threshold: f64,
    pub distribution_constraints: DistributionConstraints,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistributionConstraints {
    pub perform_comparison: String,
    pub comparison_threshold: f64,
    pub comparison_method: String,
}

// --- constraint_violations.json -----------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violations {
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub feature_name: String,
    pub constraint_check_type: String,
    pub description: String,
}

/// A baseline: the two files Model Monitor reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub statistics: Statistics,
    pub constraints: Constraints,
    /// Bucket counts per hour of the week (`statistics_by_hour.json`, see [`hourly`]).
    pub hourly: Option<HourlyStatistics>,
}

impl Baseline {
    /// Writes `statistics.json` and `constraints.json` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), BaselineError> {
        std::fs::create_dir_all(dir).map_err(|source| BaselineError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        write_json(&dir.join("statistics.json"), &self.statistics)?;
        write_json(&dir.join("constraints.json"), &self.constraints)?;
        let hourly = dir.join(hourly::FILE);
        match &self.hourly {
            Some(h) => write_json(&hourly, h),
            None => match std::fs::remove_file(&hourly) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BaselineError::Io {
                    path: hourly.display().to_string(),
                    source: e,
                }),
                _ => Ok(()),
            },
        }
    }

    /// Reads `statistics.json` and `constraints.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self, BaselineError> {
        let statistics: Statistics = read_json(&dir.join("statistics.json"))?;
        let constraints: Constraints = read_json(&dir.join("constraints.json"))?;
        if !statistics
            .features
            .iter()
            .map(|f| &f.name)
            .eq(constraints.features.iter().map(|f| &f.name))
        {
            return Err(BaselineError::Mismatch);
        }
        let path = dir.join(hourly::FILE);
        let hourly: Option<HourlyStatistics> = if path.is_file() {
            Some(read_json(&path)?)
        } else {
            None
        };
        if let Some(h) = &hourly {
            let consistent = h.slots.iter().all(|s| {
                s.slot <= hourly::SLOTS
                    && s.bucket_counts.len() == statistics.features.len()
                    && s.bucket_counts
                        .iter()
                        .zip(&statistics.features)
                        .all(|(c, f)| {
                            c.len() == f.numerical_statistics.distribution.kll.buckets.len()
                        })
            });
            if !consistent {
                return Err(BaselineError::Mismatch);
            }
        }
        Ok(Self {
            statistics,
            constraints,
            hourly,
        })
    }

    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.statistics.features.iter().map(|f| f.name.as_str())
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), BaselineError> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| BaselineError::Format {
        path: path.display().to_string(),
        source,
    })?;
    std::fs::write(path, text).map_err(|source| BaselineError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BaselineError> {
    let text = std::fs::read(path).map_err(|source| BaselineError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| BaselineError::Format {
        path: path.display().to_string(),
        source,
    })
}

/// The bucket of `v` given the buckets' upper bounds: bucket `i` holds
/// `upper[i-1] <= v < upper[i]`, the last one also its upper bound (the maximum); values
/// below the first bucket count in it (the CDF at every edge includes them), values above the
/// last in none. The baseline's counts and a [`DriftWindow`]'s use this one rule, so the same
/// values give the same CDF at every edge: a value exactly on an edge cannot land on one side
/// in the baseline and the other in the check.
pub(crate) fn bucket_of(uppers: &[f64], v: f64) -> Option<usize> {
    let last = uppers.len().checked_sub(1)?;
    let i = uppers[..last].partition_point(|&e| e <= v);
    (i < last || v <= uppers[last]).then_some(i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Deterministic pseudo-normal values (sum of uniforms).
    fn values(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                let mut s = 0.0;
                for _ in 0..12 {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    s += (x >> 11) as f64 / (1u64 << 53) as f64;
                }
                mean + (s - 6.0) * sd
            })
            .collect()
    }

    fn rows(a: &[f64], b: &[f64]) -> Vec<Vec<Option<f64>>> {
        a.iter()
            .zip(b)
            .map(|(x, y)| vec![Some(*x), Some(*y)])
            .collect()
    }

    #[test]
    fn flags_a_shifted_feature_and_stays_quiet_on_an_unshifted_one() {
        let base = baseline_from_rows(
            ["bikes", "temp"],
            rows(&values(1, 5000, 10.0, 3.0), &values(2, 5000, 20.0, 5.0)),
        );
        let mut w = DriftWindow::new(base.clone());
        // Same distributions, other draws: quiet.
        for r in rows(&values(3, 2000, 10.0, 3.0), &values(4, 2000, 20.0, 5.0)) {
            w.push(&r);
        }
        let quiet = w.evaluate();
        assert!(quiet.violations.violations.is_empty(), "{quiet:#?}");
        assert!(quiet.distances.iter().all(|(_, d)| *d < 0.05), "{quiet:?}");
        // `temp` shifted by one standard deviation: flagged, `bikes` not.
        w.reset();
        for r in rows(&values(5, 2000, 10.0, 3.0), &values(6, 2000, 25.0, 5.0)) {
            w.push(&r);
        }
        let shifted = w.evaluate();
        let flagged: Vec<_> = shifted
            .violations
            .violations
            .iter()
            .map(|v| (v.feature_name.as_str(), v.constraint_check_type.as_str()))
            .collect();
        assert_eq!(flagged, vec![("temp", "baseline_drift_check")]);
        let temp = shifted
            .distances
            .iter()
            .find(|(f, _)| f == "temp")
            .unwrap()
            .1;
        assert!(temp > 0.3, "distance {temp}");
    }

    #[test]
    fn completeness_and_type_violations_and_files_round_trip() {
        let base = baseline_from_rows(["a"], (0..100).map(|i| vec![Some(f64::from(i))]));
        assert_eq!(
            base.constraints.features[0].inferred_type,
            InferredType::Integral
        );
        assert_eq!(base.constraints.features[0].completeness, 1.0);
        let dir = tempfile::tempdir().unwrap();
        base.write(dir.path()).unwrap();
        let read = Baseline::read(dir.path()).unwrap();
        assert_eq!(read.constraints, base.constraints);
        let (x, y) = (&read.statistics.features[0], &base.statistics.features[0]);
        assert_eq!(x.numerical_statistics.common, y.numerical_statistics.common);
        // serde_json's float parsing may differ in the last bit.
        assert!((x.numerical_statistics.std_dev - y.numerical_statistics.std_dev).abs() < 1e-9);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("statistics.json")).unwrap(),
        )
        .unwrap();
        assert!(
            json["features"][0]["numerical_statistics"]["distribution"]["kll"]["buckets"]
                .is_array()
        );

        let mut w = DriftWindow::new(base);
        for i in 0..50 {
            w.push(&[if i % 2 == 0 { None } else { Some(f64::from(i)) }]);
        }
        w.push(&[Some(f64::NAN)]);
        let r = w.evaluate();
        assert_eq!(r.count("completeness_check"), 1);
        assert_eq!(r.count("data_type_check"), 1);
        r.write(dir.path()).unwrap();
        let v: Violations = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("constraint_violations.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(v, r.violations);
    }

    /// `(hour_sin, hour_cos, is_weekend)` of a local hour.
    fn hour(h: f64, weekend: bool) -> [Option<f64>; 3] {
        let a = std::f64::consts::TAU * h / 24.0;
        [
            Some(a.sin()),
            Some(a.cos()),
            Some(f64::from(u8::from(weekend))),
        ]
    }

    #[test]
    fn a_window_of_some_hours_is_compared_with_the_baseline_of_those_hours() {
        // Bikes follow the clock: ~20 by day (8-20 h), ~5 by night. Two weeks of rows, every
        // 5 minutes, 3 stations.
        let bikes = |h: f64, i: usize| {
            let base = if (8.0..20.0).contains(&h) { 20.0 } else { 5.0 };
            base + (i % 7) as f64
        };
        let row = |h: f64, i: usize, shift: f64| {
            let mut r = hour(h, false).to_vec();
            r.push(Some(bikes(h, i) + shift));
            r
        };
        let names = ["hour_sin", "hour_cos", "is_weekend", "bikes"];
        let rows = (0..14 * 24 * 12 * 3).map(|i| row(((i / 3) % (24 * 12)) as f64 / 12.0, i, 0.0));
        let base = baseline_from_rows(names, rows);
        let dir = tempfile::tempdir().unwrap();
        base.write(dir.path()).unwrap();
        let base = Baseline::read(dir.path()).unwrap();
        assert!(dir.path().join(hourly::FILE).is_file());
        // The morning hour 09:00-10:00: all day-time bikes, unlike the whole baseline.
        let morning = |shift: f64| {
            let mut w = DriftWindow::new(base.clone());
            for i in 0..12 * 3 {
                w.push(&row(9.0 + (i / 3) as f64 / 12.0, i, shift));
            }
            w.evaluate()
        };
        let healthy = morning(0.0);
        assert!(healthy.violations.violations.is_empty(), "{healthy:#?}");
        // Without statistics by hour, the same window "drifts" (what a healthy system showed).
        let mut whole = base.clone();
        whole.hourly = None;
        let mut w = DriftWindow::new(whole);
        for i in 0..12 * 3 {
            w.push(&row(9.0 + (i / 3) as f64 / 12.0, i, 0.0));
        }
        let flagged = w.evaluate().violations.violations;
        assert!(
            flagged.iter().any(|v| v.feature_name == "bikes"),
            "{flagged:#?}"
        );
        // A real shift within the hour is still seen.
        let shifted = morning(-8.0);
        assert_eq!(shifted.count("baseline_drift_check"), 1, "{shifted:#?}");
    }

    #[test]
    fn a_feature_not_compared_says_why_and_is_not_flagged() {
        let rows = (0..1000).map(|i| vec![Some(f64::from(i % 10)), Some(f64::from(i % 10))]);
        let base = BaselineBuilder::new(["a", "b"]).not_compared("b", "the window's clock");
        let mut b = base;
        for r in rows {
            b.push(&r);
        }
        let base = b.finish();
        let dir = tempfile::tempdir().unwrap();
        base.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("constraints.json")).unwrap();
        assert!(
            text.contains("the window's clock") && text.contains("Disabled"),
            "{text}"
        );
        let mut w = DriftWindow::new(Baseline::read(dir.path()).unwrap());
        for _ in 0..100 {
            w.push(&[Some(50.0), Some(50.0)]);
        }
        let r = w.evaluate();
        let flagged: Vec<_> = r
            .violations
            .violations
            .iter()
            .map(|v| v.feature_name.as_str())
            .collect();
        assert_eq!(flagged, ["a"]);
        assert!(
            r.distances.iter().all(|(f, _)| f == "a"),
            "{:?}",
            r.distances
        );
    }

    mod identical {
        use super::*;
        use proptest::prelude::*;

        /// A feature's values, each column of one kind: small integers (many sit exactly on
        /// bucket edges), fractions in twentieths, any number, a constant; some missing.
        fn column(rows: usize) -> impl Strategy<Value = Vec<Option<f64>>> {
            (0u8..4).prop_flat_map(move |kind| {
                let value = match kind {
                    0 => (-12i32..12).prop_map(|v| Some(f64::from(v))).boxed(),
                    1 => (0u8..=20).prop_map(|v| Some(f64::from(v) / 20.0)).boxed(),
                    2 => (-1e3f64..1e3).prop_map(Some).boxed(),
                    _ => Just(Some(7.0)).boxed(),
                };
                prop::collection::vec(prop_oneof![9 => value, 1 => Just(None)], rows)
            })
        }

        fn sample() -> impl Strategy<Value = Vec<Vec<Option<f64>>>> {
            (1usize..400).prop_flat_map(|n| {
                prop::collection::vec(column(n), 3).prop_map(move |cols| {
                    (0..n)
                        .map(|i| cols.iter().map(|c| c[i]).collect())
                        .collect()
                })
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            /// Any sample checked against its own baseline (also after the files' round trip)
            /// has no violation.
            #[test]
            fn any_sample_against_its_own_baseline_has_no_violation(
                rows in sample(),
            ) {
                // With the hour in the rows, the baseline keeps statistics by hour too.
                let names = ["hour_sin", "hour_cos", "is_weekend"];
                let base = baseline_from_rows(names, &rows);
                prop_assert!(base.hourly.is_some());
                let dir = tempfile::tempdir().unwrap();
                base.write(dir.path()).unwrap();
                for b in [base.clone(), Baseline::read(dir.path()).unwrap()] {
                    let mut w = DriftWindow::new(b);
                    for r in &rows {
                        w.push(r);
                    }
                    let r = w.evaluate();
                    prop_assert!(r.violations.violations.is_empty(), "{:#?}", r);
                    prop_assert!(r.distances.iter().all(|(_, d)| *d < 1e-9), "{:?}", r.distances);
                }
            }
        }
    }
}
