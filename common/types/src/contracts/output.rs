//! What the stream processor emits: feature vectors, predictions and labels.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, StationId, SystemId, deterministic_id};
use crate::time::Timestamp;

/// Version 2 added [`Prediction::scored_by`] and unavailable predictions (`p_empty` and
/// `p_full` `null` in JSON, NaN in Rust). A version-1 record reads as `scored_by: in_process`.
/// Version 3 added [`Prediction::revision`]; an earlier record reads as revision 0.
pub const PREDICTION_SCHEMA_VERSION: u16 = 3;
pub const LABEL_SCHEMA_VERSION: u16 = 1;
/// The prediction horizon: will the station go empty/full within the next 30 minutes?
pub const DEFAULT_HORIZON_MINUTES: u32 = 30;

pub use crate::ids::FeatureSchemaId;

/// The online feature vector of one station at `as_of`. `values[i]` belongs to the i-th name
/// of the schema; `None` is an explicit missing value (never a silent zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureVector {
    pub system_id: SystemId,
    pub station_id: StationId,
    pub as_of: Timestamp,
    pub schema_id: FeatureSchemaId,
    pub values: Vec<Option<f32>>,
}

/// Which model made a prediction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// What caused a prediction: a station report, or the regular event-time tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionTrigger {
    Update,
    Tick,
}

/// Who computed a prediction's probabilities.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ScoredBy {
    /// The processor's in-process model (the configured predictor).
    #[default]
    InProcess,
    /// A model endpoint (SageMaker, or `bikeshare serve-model`).
    Endpoint,
    /// The in-process model, standing in for an endpoint that failed or whose circuit is open.
    Fallback,
    /// Nobody: the endpoint failed and the configured fallback is "unavailable". The
    /// probabilities are NaN (`null` in JSON) and must not be read as numbers.
    Unavailable,
}

impl ScoredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::Endpoint => "endpoint",
            Self::Fallback => "fallback",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The probability that a station goes empty / full within `horizon_minutes` after `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub schema_version: u16,
    pub prediction_id: EventId,
    pub system_id: SystemId,
    pub station_id: StationId,
    pub as_of: Timestamp,
    pub horizon_minutes: u32,
    /// NaN (`null` in JSON) when [`Self::scored_by`] is `unavailable`.
    #[serde(deserialize_with = "null_as_nan")]
    pub p_empty: f32,
    #[serde(deserialize_with = "null_as_nan")]
    pub p_full: f32,
    /// The model that computed the probabilities (for `unavailable`: the one that should have).
    pub model: ModelRef,
    pub feature_schema_id: FeatureSchemaId,
    pub trigger: PredictionTrigger,
    /// Since version 2; absent in version 1, where it was always the in-process model.
    #[serde(default)]
    pub scored_by: ScoredBy,
    /// Orders the rows of one [`Self::prediction_id`]: 0 for its first row, one more for each
    /// correction (the update trigger's on-time row replacing an early one, decision 083).
    /// The row with the highest revision is the prediction's answer; readers that count
    /// predictions keep only that one. Derived from the input (never a clock), so a replay or
    /// a restore from a checkpoint numbers the rows alike. Since version 3; absent (an earlier
    /// version, which had no corrections) it reads as 0.
    #[serde(default)]
    pub revision: u32,
}

/// `null` (how serde_json writes NaN) reads back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

impl Prediction {
    /// Whether the probabilities are numbers (not an `unavailable` prediction).
    pub fn is_available(&self) -> bool {
        self.scored_by != ScoredBy::Unavailable && !self.p_empty.is_nan() && !self.p_full.is_nan()
    }

    /// The id depends on the station, `as_of` and the horizon, not on the model: one
    /// prediction per station and time, whichever model (or fallback) scored it, so its label
    /// can name it before knowing the model, and a replay or restart gives the same id.
    pub fn id_for(
        system_id: &SystemId,
        station_id: &StationId,
        as_of: Timestamp,
        horizon_minutes: u32,
    ) -> EventId {
        deterministic_id(&[
            b"prediction",
            system_id.as_str().as_bytes(),
            station_id.as_str().as_bytes(),
            &as_of.millis().to_le_bytes(),
            &horizon_minutes.to_le_bytes(),
        ])
    }
}

/// The observed outcome of a prediction, once its horizon has passed in event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub schema_version: u16,
    pub prediction_id: EventId,
    pub system_id: SystemId,
    pub station_id: StationId,
    pub as_of: Timestamp,
    pub horizon_minutes: u32,
    /// Zero bikes while renting at some instant in (as_of, as_of + horizon].
    pub went_empty: bool,
    /// Zero docks while returning at some instant in (as_of, as_of + horizon].
    pub went_full: bool,
    /// The state at `as_of` (the most useful predictions are for stations in neither state).
    pub empty_at_as_of: bool,
    pub full_at_as_of: bool,
    /// How many station reports fell in the horizon.
    pub observations: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(scored_by: ScoredBy, p: f32) -> Prediction {
        let (system_id, station_id) = (SystemId::new("c"), StationId::new("s"));
        Prediction {
            schema_version: PREDICTION_SCHEMA_VERSION,
            prediction_id: Prediction::id_for(&system_id, &station_id, Timestamp(0), 30),
            system_id,
            station_id,
            as_of: Timestamp(0),
            horizon_minutes: 30,
            p_empty: p,
            p_full: p,
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            feature_schema_id: FeatureSchemaId("fs1-x".into()),
            trigger: PredictionTrigger::Tick,
            scored_by,
            revision: 0,
        }
    }

    #[test]
    fn unavailable_predictions_round_trip_as_null_and_version_1_reads_as_in_process() {
        let p = prediction(ScoredBy::Unavailable, f32::NAN);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["p_empty"], serde_json::Value::Null);
        assert_eq!(json["scored_by"], "unavailable");
        let back: Prediction = serde_json::from_value(json).unwrap();
        assert!(back.p_empty.is_nan() && back.p_full.is_nan() && !back.is_available());

        let ok = prediction(ScoredBy::Endpoint, 0.25);
        let back: Prediction = serde_json::from_slice(&serde_json::to_vec(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
        assert!(back.is_available());

        let mut v1 = serde_json::to_value(prediction(ScoredBy::InProcess, 0.5)).unwrap();
        v1.as_object_mut().unwrap().remove("scored_by");
        v1["schema_version"] = 1.into();
        let back: Prediction = serde_json::from_value(v1).unwrap();
        assert_eq!(back.scored_by, ScoredBy::InProcess);
        assert_eq!(back.revision, 0);
    }

    /// A correction carries its revision through JSON; a version-2 record (no field) is the
    /// first row of its id.
    #[test]
    fn a_revision_round_trips_and_version_2_reads_as_revision_0() {
        let corrected = Prediction {
            revision: 1,
            ..prediction(ScoredBy::Endpoint, 0.75)
        };
        let json = serde_json::to_value(&corrected).unwrap();
        assert_eq!(json["revision"], 1);
        assert_eq!(json["schema_version"], 3);
        let back: Prediction = serde_json::from_value(json).unwrap();
        assert_eq!(back, corrected);

        let mut v2 = serde_json::to_value(prediction(ScoredBy::Endpoint, 0.5)).unwrap();
        v2.as_object_mut().unwrap().remove("revision");
        v2["schema_version"] = 2.into();
        let back: Prediction = serde_json::from_value(v2).unwrap();
        assert_eq!((back.revision, back.schema_version), (0, 2));
    }
}
