//! # bikeshare-monitor
//!
//! What operators, the business and data scientists watch:
//!
//! - [`exporter`]: the Prometheus recorder behind the `metrics` facade and the `/metrics`
//!   endpoint (names, units and labels are in [`bikeshare_common::metrics`]).
//! - [`samples`]: a reader of the exposition format, for in-process consumers of it.

pub mod exporter;
pub mod samples;
