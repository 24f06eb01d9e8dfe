//! # bikeshare-common
//!
//! What every bikeshare component shares, with no network I/O:
//!
//! - [`checkpoint`]: checkpoints (operator state + input positions) and where they are stored.
//! - [`contracts`]: the versioned records on the streams and in the lake.
//! - [`ids`] and [`time`]: identifier newtypes, deterministic ids, [`time::Timestamp`] and
//!   the injected [`time::Clock`].
//! - [`error`]: how errors say whose fault they are and whether a retry can help.
//! - [`retry`]: exponential backoff with full jitter.
//! - [`stream`]: the stream traits, and the embedded durable stream (SQLite) that is the
//!   default backend; Kinesis implements the same traits in AWS.
//! - [`sink`]: the trait the stream processor's outputs go through.
//! - [`limits`]: AWS service limits as named constants.
//! - [`metrics`]: every metric's name, unit and labels, and the typed functions that record them.

pub mod checkpoint;
pub mod contracts;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod retry;
pub mod security;
pub mod sink;
pub mod stream;
pub mod testdata;
pub mod time;

pub use ids::{EventId, StationId, SystemId};
pub use time::{Clock, SharedClock, SystemClock, Timestamp};
