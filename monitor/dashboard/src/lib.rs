//! # bikeshare-dashboard
//!
//! The web dashboard, served by the `bikeshare` binary with no front-end build step:
//!
//! - [`state`]: what the page shows, kept up to date from the streams — station metadata,
//!   reports and predictions (with bounded history per station), per-feed freshness, rolling
//!   live model quality per system from `predictions` joined with `labels`
//!   (`bikeshare_stream_processor::quality`, the processor's own implementation and window),
//!   and a ring of process-wide samples (throughput, per-shard lag, latency, dead letters,
//!   quality, alerts) for the charts.
//! - [`server`]: the page, its assets, and the JSON it polls: the state with station deltas
//!   (gzip, `ETag`), the history, one station's drill-down.
//! - [`assets`]: the page, Leaflet (the map) and uPlot (the charts), vendored from their npm
//!   packages and embedded in the binary.
//!
//! Base map tiles come from `[dashboard] tile_url`; without one the map is drawn on a plain
//! background and the page works offline.

pub mod assets;
pub mod freshness;
pub mod server;
pub mod state;
