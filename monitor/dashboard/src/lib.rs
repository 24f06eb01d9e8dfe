//! # bikeshare-dashboard
//!
//! The web dashboard, served by the `bikeshare` binary with no front-end build step:
//!
//! - [`state`]: what the page shows, kept up to date from the streams — station metadata and
//!   per-feed freshness from `events`, rolling live model quality per system from
//!   `predictions` joined with `labels` (`bikeshare_stream_processor::quality`, the
//!   processor's own implementation and window), scorers and fallbacks.
//! - [`server`]: `GET /` (the page), `GET /api/state` (a JSON snapshot the page polls).
//!
//! The map is an SVG drawn from station coordinates (no tiles, so it works offline), coloured
//! by the larger of `p_empty` and `p_full`.

pub mod freshness;
pub mod server;
pub mod state;
