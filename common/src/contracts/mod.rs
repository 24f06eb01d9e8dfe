//! Versioned data contracts. A change to a contract is a new version, never a silent edit.
//!
//! - [`Envelope`]: what travels on the input stream (one event, with its deterministic id).
//! - [`SystemInfo`], [`StationInfo`], [`StationStatus`], [`WeatherObs`]: event payloads.
//! - [`DeadLetter`]: a record that failed validation, with the named rule and the raw payload.
//! - [`FeatureVector`], [`Prediction`], [`Label`]: what the stream processor emits.

mod dead_letter;
mod envelope;
mod output;
mod station;
mod weather;

pub use dead_letter::{DeadLetter, DEAD_LETTER_RAW_LIMIT};
pub use envelope::{DecodeError, Envelope, Event, EventKind, ENVELOPE_SCHEMA_VERSION};
pub use output::{
    FeatureSchemaId, FeatureVector, Label, ModelRef, Prediction, PredictionTrigger,
    DEFAULT_HORIZON_MINUTES, LABEL_SCHEMA_VERSION, PREDICTION_SCHEMA_VERSION,
};
pub use station::{StationInfo, StationStatus, SystemInfo, VehicleTypeCount};
pub use weather::WeatherObs;
