//! # bikeshare-producers
//!
//! Everything that puts events on the input stream:
//!
//! - [`gbfs`]: the GBFS client (auto-discovery, GBFS 1.x–3.0, TTL polling, conditional
//!   requests) and validation (official JSON schemas plus named semantic rules).
//! - [`weather`]: Meteostat hourly observations (JSON API and bulk CSV).
//! - [`replay`]: recorded histories into the stream in event-time order (Bluebikes change logs,
//!   flattened snapshot CSVs, raw GBFS snapshot directories, envelope JSON lines).
//! - [`output`]: where producers put events and dead letters.
//!
//! The city simulator that the default job polls over HTTP is its own crate,
//! `bikeshare-simulator` in `simulator/`.

pub mod gbfs;
pub mod output;
pub mod replay;
pub mod weather;
