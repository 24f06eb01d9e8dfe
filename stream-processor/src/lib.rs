//! # bikeshare-stream-processor
//!
//! The stateful stream processor. Pure logic, no I/O:
//!
//! - [`window`]: per-station rolling windows over the held state, exact and incremental.
//! - [`labels`]: what happened in the horizon after a prediction (self-labelling).
//! - [`neighbours`]: each station's k nearest stations within a radius.
//! - [`profile`]: each station's demand by hour of week, learned as the stream goes.
//! - [`schema`]: the ordered, versioned feature definitions and their id.
//! - [`predictor`]: the [`predictor::Scorer`] trait and the transparent baseline.
//! - [`processor`]: watermarks, the reorder buffer, ticks, features and labels per system.
//! - [`quality`]: forecast measures (ROC-AUC, PR-AUC, Brier, calibration) and the rolling
//!   live quality of each system from its own labels.
//!
//! - [`backfill`]: histories through the same processor into labelled training rows.
//!
//! Its I/O edge (reading shards, scoring, publishing, checkpoints) is the `bikeshare-runner`
//! crate in `runner/`, so that this crate compiles without tokio, SQLite or the AWS SDK.

pub mod backfill;
mod features;
pub mod labels;
pub mod neighbours;
pub mod predictor;
pub mod processor;
pub mod profile;
pub mod quality;
pub mod schema;
mod station;
pub mod window;

/// The time zone type of the history's API ([`window::StationHistory::apply`]): a system's
/// IANA zone, whose local hours the demand profile learns.
pub use chrono_tz::Tz;
pub use predictor::{BaselineScorer, Predictor, Scored, Scorer, Scores};
pub use processor::{
    Emitted, FeatureRow, Processor, ProcessorConfig, ProcessorStats, RejectReason, SnapshotError,
};
pub use schema::FeatureSchema;
