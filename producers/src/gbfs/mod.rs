//! GBFS: discovery, typed parsing for every version, validation and polling.
//!
//! How a GBFS system becomes events, file by file:
//!
//! - [`version`]: which GBFS version a file declares ([`GbfsVersion`], 1.0 to 3.0; 3.1
//!   candidates are read with the 3.0 layout).
//! - [`discovery`]: `gbfs.json`, in the 1.x/2.x (`data.{language}.feeds`) and 3.0
//!   (`data.feeds`) layouts, into a feed name → URL map.
//! - [`model`]: lenient typed parsing of `system_information`, `station_information` and
//!   `station_status` for every version, record by record, into the normalised contracts;
//!   a bad record is [`Rejected`] with a rule name and the rest of the feed flows.
//! - [`rules`]: the named semantic rules (counts, capacity, times, coordinates).
//! - [`schema`]: the official JSON schemas, when a directory of them is configured.
//! - [`validate`]: [`FeedValidator`], the whole validation of one file (JSON, header, schema,
//!   types, rules).
//! - [`client`]: HTTP with timeouts, a streaming size cap, ETag/Last-Modified and retries.
//! - [`poller`]: [`GbfsPoller`], one system's polling loop, emitting events on change and
//!   dead letters to an [`Output`](crate::output::Output).
//! - [`probe`]: who a system says it is (`system_id` from `system_information`), read once
//!   before polling, so an unreachable URL is an error at start.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bikeshare_types::{SystemClock, SystemId};
//! use bikeshare_producers::gbfs::{GbfsPoller, PollerConfig};
//! use bikeshare_producers::output::MemoryOutput;
//!
//! let poller = GbfsPoller::new(
//!     SystemId::new("bluebikes"),
//!     "https://gbfs.bluebikes.com/gbfs/gbfs.json",
//!     PollerConfig::default(),
//!     Arc::new(SystemClock),
//! )?;
//! let output = Arc::new(MemoryOutput::default());
//! let stats = poller.run(output, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod discovery;
mod feed;
pub(crate) mod fields;
pub mod model;
pub mod poller;
pub mod probe;
pub mod rules;
pub mod schema;
pub mod validate;
pub mod version;

pub use client::{
    Bearer, CacheValidators, ClientConfig, DEFAULT_MAX_BODY_BYTES, FetchError, Fetched, GbfsClient,
};
pub use discovery::{Discovery, parse_discovery};
pub use model::{
    FeedError, FeedHeader, FeedKind, KnownStations, ParseContext, ParsedFeed, Rejected, Skipped,
    parse_station_information, parse_station_status, parse_system_information,
};
pub use poller::{
    GbfsPoller, PollError, PollReport, PollerConfig, PollerStats, PollerStatsSnapshot, SetupError,
};
pub use probe::{Probe, ProbeError, probe};
pub use rules::{RuleConfig, RuleViolation};
pub use schema::{SchemaError, SchemaRegistry, SchemaReport};
pub use validate::FeedValidator;
pub use version::{DeclaredVersion, GbfsVersion, VersionError};
