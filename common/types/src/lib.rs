//! # bikeshare-types
//!
//! What every bikeshare component shares, with no I/O at all (no tokio, SQLite or AWS):
//!
//! - [`contracts`]: the versioned records on the streams and in the lake.
//! - [`ids`] and [`time`]: identifier newtypes, deterministic ids, [`time::Timestamp`] and
//!   the injected [`time::Clock`].
//! - [`error`]: how errors say whose fault they are and whether a retry can help.
//! - [`retry`]: exponential backoff with full jitter.
//! - [`limits`]: AWS service limits as named constants.
//! - [`metrics`]: every metric's name, unit and labels, and the typed functions that record them.
//! - [`counters`]: relaxed in-process counters and their snapshot, declared once
//!   ([`counters!`]).
//! - [`xorshift`] and [`splitmix`]: tiny seeded generators (and SplitMix64's hash) for
//!   synthetic data, baselines and test schedules.

pub mod contracts;
pub mod counters;
pub mod error;
pub mod ids;
pub mod lcg;
pub mod limits;
pub mod metrics;
pub mod retry;
pub mod splitmix;
pub mod time;
mod unit;
pub mod xorshift;

pub use ids::{EventId, SourceName, StationId, SystemId, VehicleTypeId};
pub use time::{Clock, SharedClock, SystemClock, Timestamp};
