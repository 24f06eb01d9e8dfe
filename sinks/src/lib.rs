//! # bikeshare-sinks
//!
//! Implementations of [`bikeshare_stream::sink::Sinks`], the processor's outputs:
//!
//! - [`stream::StreamSinks`]: predictions, labels, features and dead letters published to
//!   streams (embedded or Kinesis); the `predictions` stream is what subscribers read.
//! - [`subscribe`]: the subscription API — predictions as server-sent events, filtered by
//!   system and station, resumable from a cursor.
//! - [`fanout::FanOut`]: the same outputs to several sinks (streams and the lake).
//! - [`memory::MemorySinks`]: everything kept in memory (tests, benchmarks).

pub mod fanout;
pub mod memory;
pub mod stream;
pub mod subscribe;
