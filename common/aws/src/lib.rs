//! # bikeshare-aws
//!
//! The AWS backends of the stream edge: the traits of `bikeshare_stream` over Amazon Kinesis
//! (`aws-sdk-kinesis`), shard leases in DynamoDB and checkpoints in S3. It is its own crate so
//! that the AWS SDK stays out of the builds of the crates that do not need it.
//!
//! - [`client`]: the Kinesis client from the process's one `SdkConfig`
//!   (`bikeshare_runtime::aws`), the SDK's retries off (the publisher and the cursor own
//!   retries).
//! - [`config`]: `[stream.kinesis]` settings and [`KinesisStreams`], which opens streams.
//! - [`KinesisStream`] ([`stream`]): `PutRecords` with per-record outcomes, `ListShards`
//!   with pagination, parents and hash ranges.
//! - [`KinesisCursor`] ([`cursor`]): `GetRecords` within 5 calls/s and 2 MB/s per shard,
//!   throttling backoff, expired-iterator renewal, `ChildShards` at a shard's end.
//! - [`FanOutReader`] ([`fanout`]): enhanced fan-out (`RegisterStreamConsumer`,
//!   `SubscribeToShard`), chosen by configuration instead of polling.
//! - [`DynamoLeaseStore`] ([`lease_store`]): shard leases (the KCL model of
//!   `bikeshare_stream::lease`) in DynamoDB with conditional writes.
//! - [`S3CheckpointStore`] ([`checkpoint_store`]): the processor's per-shard checkpoints in
//!   S3.
//! - [`LeaseSettings`] ([`lease_store`]): `[runner.leases]`, which lease store the processor
//!   uses (memory for one instance, DynamoDB for several).
//! - [`metrics`]: per-shard figures (`MillisBehindLatest`, iterator age, records, bytes,
//!   throttles) and producer counters.
//!
//! Producing goes through the common `Publisher` (batching within the limits, linger,
//! re-sending only failed records, per-key order, backpressure); consuming through any
//! shard consumer, e.g. the stream processor's runner.

pub mod checkpoint_store;
pub mod client;
pub mod config;
pub mod cursor;
mod error;
pub mod fanout;
pub mod lease_store;
pub mod metrics;
pub mod stream;

pub use bikeshare_runtime::aws::SdkConfig;
pub use checkpoint_store::{S3CheckpointSettings, S3CheckpointStore};
pub use client::{kinesis_client, update_shard_count};
pub use config::{KinesisConfig, KinesisStreams, ReadMode};
pub use cursor::{KinesisCursor, ReadPacer, ReadSettings};
pub use error::{EXPIRED_ITERATOR_CODE, THROTTLED_CODE};
pub use fanout::{FanOutCursor, FanOutReader, FanOutSettings};
pub use lease_store::{DynamoLeaseStore, LeaseSettings, LeaseStoreKind};
pub use metrics::{KinesisMetrics, ShardMetrics, WriteMetrics};
pub use stream::{INVALID_RECORD_CODE, KinesisStream};
