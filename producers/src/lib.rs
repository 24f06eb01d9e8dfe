//! # bikeshare-producers
//!
//! Everything that puts events on the input stream:
//!
//! - [`gbfs`]: the GBFS client (auto-discovery, GBFS 1.x–3.0, TTL polling, conditional
//!   requests) and validation (official JSON schemas plus named semantic rules).
//! - [`weather`]: Meteostat hourly observations (JSON API and bulk CSV).
//! - [`simulator`]: a synthetic city served over real HTTP as GBFS 2.3 and 3.0 feeds, with a
//!   Meteostat-compatible weather endpoint.
//! - [`replay`]: recorded histories into the stream in event-time order (Bluebikes change logs,
//!   flattened snapshot CSVs, raw GBFS snapshot directories, envelope JSON lines).
//! - [`output`]: where producers put events and dead letters.

pub mod gbfs;
pub mod output;
pub mod replay;
pub mod simulator;
pub mod weather;
