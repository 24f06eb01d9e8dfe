//! # bikeshare-testkit
//!
//! What the tests of every crate share, written once (a dev-dependency only, never linked
//! into the binary):
//!
//! - [`shared_data`]: finding `../shared/data` beside the clone, and skipping a test with a
//!   clear message when it is absent.
//! - [`envelopes`]: the events tests feed the processor and the pipeline, and the
//!   predictions and labels they expect out of it.
//! - [`emulators`]: the endpoints of kinesis-mock, moto server and MLflow that
//!   `scripts/test.sh` exports; a test without its emulator is skipped (failed in CI).
//! - [`lines`]: a child process's output line by line, received with a timeout.
//! - [`links`]: what a workspace crate links, from `cargo tree`.
//! - [`fault_proxy`]: a reverse proxy in front of an emulator that refuses calls and fails
//!   records the way Kinesis ([`fault_proxy::kinesis`]) or Firehose
//!   ([`fault_proxy::firehose`]) do under load.

pub mod emulators;
pub mod envelopes;
pub mod fault_proxy;
pub mod lines;
pub mod links;
pub mod shared_data;
