//! What the stream processor emits: feature vectors, predictions and labels.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, StationId, SystemId, deterministic_id};
use crate::time::Timestamp;

pub const PREDICTION_SCHEMA_VERSION: u16 = 1;
pub const LABEL_SCHEMA_VERSION: u16 = 1;
/// The prediction horizon: will the station go empty/full within the next 30 minutes?
pub const DEFAULT_HORIZON_MINUTES: u32 = 30;

/// Hash of the ordered feature names and their definitions: a model refuses features whose
/// schema id differs from the one it was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FeatureSchemaId(pub String);

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

/// The probability that a station goes empty / full within `horizon_minutes` after `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub schema_version: u16,
    pub prediction_id: EventId,
    pub system_id: SystemId,
    pub station_id: StationId,
    pub as_of: Timestamp,
    pub horizon_minutes: u32,
    pub p_empty: f32,
    pub p_full: f32,
    pub model: ModelRef,
    pub feature_schema_id: FeatureSchemaId,
    pub trigger: PredictionTrigger,
}

impl Prediction {
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
