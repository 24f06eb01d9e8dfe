//! # bikeshare-sinks
//!
//! Implementations of [`bikeshare_common::sink::Sinks`], the processor's outputs:
//!
//! - [`stream::StreamSinks`]: predictions, labels, features and dead letters published to
//!   streams (embedded or Kinesis); the `predictions` stream is what subscribers read.
//! - [`subscribe`]: the subscription API — predictions as server-sent events, filtered by
//!   system and station, resumable from a cursor.
//! - [`memory::MemorySinks`]: everything kept in memory (tests, benchmarks).

pub mod memory;
pub mod stream;
pub mod subscribe;
