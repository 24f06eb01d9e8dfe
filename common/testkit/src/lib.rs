//! # bikeshare-testkit
//!
//! What the tests of every crate share, written once (a dev-dependency only, never linked
//! into the binary):
//!
//! - [`shared_data`]: finding `../shared/data` beside the clone, and skipping a test with a
//!   clear message when it is absent.
//! - [`envelopes`]: the events tests feed the processor and the pipeline.

pub mod envelopes;
pub mod shared_data;
