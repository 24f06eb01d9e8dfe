//! Versioned data contracts. A change to a contract is a new version, never a silent edit.
//!
//! - [`Envelope`]: what travels on the input stream (one event, with its deterministic id).
//! - [`SystemInfo`], [`StationInfo`], [`StationStatus`], [`WeatherObs`]: event payloads.
//! - [`FeedHeartbeat`]: a source's progress, so watermarks advance when nothing changes and
//!   freshness is judged against each feed's own period.
//! - [`DeadLetter`]: a record that failed validation, with the named rule and the raw payload.
//! - [`FeatureVector`], [`Prediction`], [`Label`]: what the stream processor emits.

mod dead_letter;
mod envelope;
mod heartbeat;
mod output;
mod station;
mod weather;

pub use dead_letter::{DEAD_LETTER_RAW_LIMIT, DeadLetter};
pub use envelope::{DecodeError, ENVELOPE_SCHEMA_VERSION, Envelope, Event, EventKind};
pub use heartbeat::{FeedHeartbeat, STATION_STATUS_FEED, WEATHER_FEED, WEATHER_PERIOD_SECS};
pub use output::{
    DEFAULT_HORIZON_MINUTES, FeatureSchemaId, FeatureVector, LABEL_SCHEMA_VERSION, Label, ModelRef,
    PREDICTION_SCHEMA_VERSION, Prediction, PredictionTrigger, ScoredBy,
};
pub use station::{StationInfo, StationStatus, SystemInfo, VehicleTypeCount};
pub use weather::WeatherObs;
