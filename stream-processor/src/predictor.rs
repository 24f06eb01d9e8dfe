//! Scoring feature vectors: the [`Scorer`] trait and the transparent [`BaselineScorer`].
//!
//! In-process scorers are synchronous and cheap (the baseline; the native XGBoost evaluator
//! of the models crate). A remote endpoint (SageMaker) is a [`Predictor`]: an async, batched
//! stage in front of the in-process `Scorer`, which it uses as its fallback; the runner calls
//! it at the processor's I/O edge (the models crate implements it over SageMaker).

use std::sync::Arc;

use bikeshare_types::contracts::{FeatureSchemaId, ModelRef, ScoredBy};

use crate::schema::FeatureSchema;

/// Probabilities of going empty and full within the horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub p_empty: f32,
    pub p_full: f32,
}

/// Scores one feature vector (values in the order of the scorer's schema).
pub trait Scorer: Send + Sync + std::fmt::Debug {
    fn model(&self) -> &ModelRef;
    fn schema_id(&self) -> &FeatureSchemaId;
    fn score(&self, values: &[Option<f32>]) -> Scores;
}

/// One row's scores and who computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub scores: Scores,
    pub model: ModelRef,
    pub scored_by: ScoredBy,
}

/// Scores batches of rows away from the processor (a model endpoint), with the in-process
/// scorer at hand as the fallback.
///
/// `predict` never fails and returns within its own time budget (timeouts, bounded retries,
/// a circuit breaker): a failure becomes fallback results, so the pipeline never stalls on it.
#[async_trait::async_trait]
pub trait Predictor: Send + Sync + std::fmt::Debug {
    /// One result per row, in order. `rows` hold feature values in the schema order of
    /// `local`, the current in-process scorer.
    async fn predict(&self, rows: &[&[Option<f32>]], local: &Arc<dyn Scorer>) -> Vec<Scored>;
}

/// A transparent baseline: project bikes 30 minutes ahead from the last hour's net flow and
/// turn the distance to 0 (or to capacity) into a probability with a normal approximation
/// whose spread grows with the station's activity.
///
/// `projected = bikes + (arrivals_60m − departures_60m) / 60 · h`,
/// `σ = 1 + sqrt((arrivals_60m + departures_60m) / 60 · h)`,
/// `p_empty = Φ((0.5 − projected) / σ)`, `p_full = Φ((projected − (bikes + docks) + 0.5) / σ)`;
/// a station that is closed for renting (returning) cannot go empty (full).
///
/// It stays after models land, as the baseline every model must beat.
#[derive(Debug, Clone)]
pub struct BaselineScorer {
    model: ModelRef,
    schema_id: FeatureSchemaId,
    horizon_minutes: f32,
    idx: BaselineIdx,
}

#[derive(Debug, Clone)]
struct BaselineIdx {
    bikes: usize,
    docks: usize,
    renting: usize,
    returning: usize,
    arrivals: Option<usize>,
    departures: Option<usize>,
    window_minutes: f32,
}

impl BaselineScorer {
    pub const NAME: &'static str = "baseline-netflow";

    /// A baseline for `schema`, using its longest window for the net flow.
    pub fn new(schema: &FeatureSchema, horizon_minutes: u32) -> Self {
        let longest = schema.window_minutes.iter().copied().max().unwrap_or(60);
        let find = |n: &str| schema.index(n);
        let idx = BaselineIdx {
            bikes: find("bikes").unwrap_or(0),
            docks: find("docks").unwrap_or(1),
            renting: find("is_renting").unwrap_or(7),
            returning: find("is_returning").unwrap_or(8),
            arrivals: find(&format!("arrivals_{longest}m")),
            departures: find(&format!("departures_{longest}m")),
            window_minutes: longest as f32,
        };
        Self {
            model: ModelRef {
                name: Self::NAME.into(),
                version: "1".into(),
            },
            schema_id: schema.id().clone(),
            horizon_minutes: horizon_minutes as f32,
            idx,
        }
    }
}

/// The standard normal CDF (Abramowitz–Stegun 26.2.17, |error| < 7.5e-8).
fn phi(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.231_641_9 * x.abs());
    let poly = t
        * (0.319_381_530
            + t * (-0.356_563_782
                + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    (if x >= 0.0 { 1.0 - tail } else { tail }) as f32
}

impl Scorer for BaselineScorer {
    fn model(&self) -> &ModelRef {
        &self.model
    }
    fn schema_id(&self) -> &FeatureSchemaId {
        &self.schema_id
    }
    fn score(&self, v: &[Option<f32>]) -> Scores {
        let get = |i: usize| v.get(i).copied().flatten();
        let Some(bikes) = get(self.idx.bikes) else {
            return Scores {
                p_empty: 0.5,
                p_full: 0.5,
            };
        };
        let arrivals = self.idx.arrivals.and_then(get).unwrap_or(0.0);
        let departures = self.idx.departures.and_then(get).unwrap_or(0.0);
        let h = self.horizon_minutes;
        let rate = (arrivals - departures) / self.idx.window_minutes;
        let projected = bikes + rate * h;
        let sigma = 1.0 + ((arrivals + departures) / self.idx.window_minutes * h).sqrt();
        let renting = get(self.idx.renting).unwrap_or(1.0) > 0.5;
        let returning = get(self.idx.returning).unwrap_or(1.0) > 0.5;
        let p_empty = if renting {
            phi((0.5 - projected) / sigma)
        } else {
            0.0
        };
        let p_full = match get(self.idx.docks) {
            Some(docks) if returning => phi((projected - (bikes + docks) + 0.5) / sigma),
            _ => 0.0,
        };
        Scores { p_empty, p_full }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(schema: &FeatureSchema, pairs: &[(&str, f32)]) -> Vec<Option<f32>> {
        let mut v = vec![None; schema.len()];
        for (n, x) in pairs {
            v[schema.index(n).unwrap()] = Some(*x);
        }
        v
    }

    #[test]
    fn draining_station_is_riskier_than_a_steady_one() {
        let s = FeatureSchema::current(&[5, 15, 30, 60]);
        let b = BaselineScorer::new(&s, 30);
        let base = [
            ("bikes", 3.0),
            ("docks", 12.0),
            ("is_renting", 1.0),
            ("is_returning", 1.0),
        ];
        let steady = b.score(&row(&s, &base));
        let mut draining = base.to_vec();
        draining.extend([("departures_60m", 12.0), ("arrivals_60m", 0.0)]);
        let draining = b.score(&row(&s, &draining));
        assert!(
            draining.p_empty > steady.p_empty,
            "{draining:?} vs {steady:?}"
        );
        assert!(draining.p_full < 0.01);
        let empty = b.score(&row(
            &s,
            &[
                ("bikes", 0.0),
                ("docks", 15.0),
                ("is_renting", 1.0),
                ("is_returning", 1.0),
            ],
        ));
        assert!(empty.p_empty > 0.6, "{empty:?}");
        let closed = b.score(&row(
            &s,
            &[
                ("bikes", 0.0),
                ("docks", 15.0),
                ("is_renting", 0.0),
                ("is_returning", 1.0),
            ],
        ));
        assert_eq!(closed.p_empty, 0.0);
    }

    #[test]
    fn phi_is_a_cdf() {
        assert!((phi(0.0) - 0.5).abs() < 1e-6);
        assert!((phi(1.96) - 0.975).abs() < 1e-4);
        assert!(phi(-8.0) < 1e-6 && phi(8.0) > 1.0 - 1e-6);
    }
}
