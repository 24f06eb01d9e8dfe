//! Configuration of the Kinesis backend (`[stream.kinesis]` in `bikeshare.toml`), and
//! [`KinesisStreams`], which opens the named streams from it.

use aws_config::SdkConfig;
use bikeshare_stream::StreamError;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use tokio::time::Duration;

use bikeshare_runtime::aws::{ClientSettings, Timeouts, load_sdk_config};

use crate::client::kinesis_client;
use std::sync::Arc;

use bikeshare_stream::StreamReader;

use crate::cursor::ReadSettings;
use crate::fanout::{FanOutReader, FanOutSettings};
use crate::stream::KinesisStream;

/// `[stream.kinesis]`: where the streams are and how they are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct KinesisConfig {
    /// Stream names are this prefix and the logical name: `bikeshare-events`, ...
    #[default("bikeshare-")]
    pub stream_prefix: String,
    /// AWS region; from the standard AWS configuration when absent.
    pub region: Option<String>,
    /// Endpoint override (an emulator); `AWS_ENDPOINT_URL_KINESIS` works as well.
    pub endpoint_url: Option<String>,
    /// Create missing streams with `create_shards` shards (development, emulators). In AWS
    /// the infrastructure templates create them.
    pub create_missing: bool,
    #[default(2)]
    pub create_shards: u32,
    /// `polling` (`GetRecords`, default) or `fan_out` (`SubscribeToShard`).
    #[default(ReadMode::Polling)]
    pub read_mode: ReadMode,
    /// Pacing and backoff of polling reads.
    pub read: ReadSettings,
    /// The registered consumer of fan-out reads.
    pub fan_out: FanOutSettings,
}

/// How shards are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// `GetRecords`, within the shared 5 calls/s and 2 MB/s per shard.
    #[default]
    Polling,
    /// Enhanced fan-out: a dedicated 2 MB/s per shard for this consumer.
    FanOut,
}

impl KinesisConfig {
    /// Where the client goes, every call bounded by `timeouts` (`[aws]`).
    pub fn client_settings(&self, timeouts: Timeouts) -> ClientSettings {
        ClientSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            timeouts,
        }
    }
}

/// Opens the streams of one configuration through one shared client.
#[derive(Debug, Clone)]
pub struct KinesisStreams {
    client: aws_sdk_kinesis::Client,
    config: KinesisConfig,
}

impl KinesisStreams {
    /// Loads the shared AWS configuration, every call bounded by `timeouts`, and builds
    /// the client.
    pub async fn connect(config: &KinesisConfig, timeouts: Timeouts) -> Self {
        let sdk = load_sdk_config(&config.client_settings(timeouts)).await;
        Self::with_sdk_config(&sdk, config)
    }

    /// From an already loaded shared configuration.
    pub fn with_sdk_config(sdk: &SdkConfig, config: &KinesisConfig) -> Self {
        Self {
            client: kinesis_client(sdk),
            config: config.clone(),
        }
    }

    /// The stream with logical name `name` (e.g. `events`), created first if configured so.
    pub async fn stream(&self, name: &str) -> Result<KinesisStream, StreamError> {
        let full = format!("{}{name}", self.config.stream_prefix);
        let stream = KinesisStream::new(self.client.clone(), full)
            .with_read_settings(self.config.read.clone());
        if self.config.create_missing {
            stream
                .ensure_exists(self.config.create_shards, Duration::from_secs(60))
                .await?;
        }
        Ok(stream)
    }

    /// A reader of the stream `name` in the configured [`ReadMode`] (fan-out registers
    /// its consumer first).
    pub async fn reader(&self, name: &str) -> Result<Arc<dyn StreamReader>, StreamError> {
        let stream = self.stream(name).await?;
        Ok(match self.config.read_mode {
            ReadMode::Polling => Arc::new(stream),
            ReadMode::FanOut => Arc::new(
                FanOutReader::register(
                    stream,
                    self.config.fan_out.clone(),
                    Duration::from_secs(60),
                )
                .await?,
            ),
        })
    }
}
