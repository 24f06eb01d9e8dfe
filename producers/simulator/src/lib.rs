//! # bikeshare-simulator
//!
//! The GBFS city simulator: a synthetic city served over real HTTP.
//!
//! - [`city`]: the deterministic city model (stations, riders, trucks, breakdowns, outages,
//!   reports on change); its docs explain the demand model. [`demand`] holds the hourly
//!   profiles and [`climate`] the hourly weather, a pure function of the seed.
//! - [`clock`]: simulated time that runs `time_scale` times faster than the wall clock
//!   until it catches up with it.
//! - [`feeds`] and [`meteostat`]: the documents served, as pure functions (GBFS 2.3 and
//!   3.0; the Meteostat JSON API and bulk shapes).
//! - [`server`]: the HTTP server, which advances the city in the background.
//! - [`backfill`]: the simulated history as `Envelope` JSON lines, without serving.
//!
//! ```no_run
//! # async fn run() -> Result<(), bikeshare_simulator::SimulatorError> {
//! use std::sync::Arc;
//! use bikeshare_types::SystemClock;
//! use bikeshare_simulator::{GbfsVersion, SimulatorConfig, serve};
//!
//! let config = SimulatorConfig { time_scale: 60.0, ..SimulatorConfig::default() };
//! let sim = serve(config, Arc::new(SystemClock), std::future::pending()).await?;
//! println!("{}", sim.gbfs_url(GbfsVersion::V3_0));
//! sim.stop().await
//! # }
//! ```

pub mod backfill;
pub mod city;
pub mod climate;
pub mod clock;
pub mod demand;
mod error;
pub mod feeds;
pub mod meteostat;
pub mod server;

pub use backfill::{BackfillSummary, History, history, write_history, write_history_with_progress};
pub use city::{City, CityConfig, CityStats, Occupancy};
pub use climate::{Climate, ClimateConfig, HourlyWeather};
pub use clock::SimClock;
pub use demand::Zone;
pub use error::{SimulatorError, TOKEN_ENV};
pub use feeds::{Feed, GbfsVersion};
pub use server::{RunningSimulator, SimulatorConfig, serve};
