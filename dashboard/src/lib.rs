//! # bikeshare-dashboard
//!
//! The web dashboard, served by the `bikeshare` binary with no front-end build step:
//!
//! - [`state`]: what the page shows, kept up to date from the streams — station metadata and
//!   per-system freshness from `events`, rolling live model quality from `predictions` joined
//!   with `labels` — plus the runner's latest prediction per station.
//! - [`server`]: `GET /` (the page), `GET /api/state` (a JSON snapshot the page polls).
//!
//! The map is an SVG drawn from station coordinates (no tiles, so it works offline), coloured
//! by the larger of `p_empty` and `p_full`.

pub mod quality;
pub mod server;
pub mod state;
