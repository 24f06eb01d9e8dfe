//! # bikeshare-firehose
//!
//! The Firehose sink: every dataset of the lake as newline-delimited JSON into its own
//! delivery stream (`<prefix><dataset>`), which Firehose converts to Parquet with the
//! dataset's Glue schema and writes to S3.
//!
//! - [`batch`]: splitting records into `PutRecordBatch` calls within the limits (pure);
//! - [`delivery::DeliveryStream`]: one stream; partial failures re-send only the failed
//!   records, refused calls back off with jitter, and records that cannot be delivered in
//!   bounded time are an error, never dropped;
//! - [`sinks::FirehoseSinks`]: the processor's [`bikeshare_stream::sink::Sinks`] and the lake
//!   archiver's [`bikeshare_lake::archive::ArchiveTap`];
//! - [`client`]: the SDK client from the shared configuration, its own retries off;
//! - [`FirehoseConfig`]: the `[firehose]` configuration section.
//!
//! Delivery is at-least-once: see docs/decisions/051.

pub mod batch;
pub mod client;
pub mod delivery;
pub mod sinks;

pub use delivery::{DeliveryConfig, DeliveryStats, DeliveryStream, FirehoseError};
pub use sinks::{DeliveryStreams, FirehoseOutputs, FirehoseSinks, stream_name};

use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// The `[firehose]` configuration section: off by default (the lake on local disk needs no
/// AWS); on in AWS, where the delivery streams write the lake's datasets to S3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct FirehoseConfig {
    pub enabled: bool,
    /// Delivery stream names are `<prefix><dataset>` with `-` for `_`
    /// (`bikeshare-dev-raw-events`, ... `bikeshare-dev-dead-letters`): one prefix per
    /// environment.
    #[default("bikeshare-")]
    pub prefix: String,
    /// AWS region; empty = the standard configuration chain.
    pub region: Option<String>,
    /// An endpoint override (a local moto server); empty = AWS, or `AWS_ENDPOINT_URL_FIREHOSE`.
    pub endpoint_url: Option<String>,
    /// Also send the processor's feature vectors (large: one float per feature).
    #[default(true)]
    pub features: bool,
    pub delivery: DeliveryConfig,
}
