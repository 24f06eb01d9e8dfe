//! Streams by backend: the one place that turns `[stream] backend = ...` into readers and
//! writers. Commands ask for a stream by its logical name (`events`, `predictions`, ...)
//! and never know which backend they got.

use std::sync::Arc;

use anyhow::Context;
use bikeshare_aws::KinesisStreams;
use bikeshare_embedded::EmbeddedStream;
use bikeshare_stream::StreamReader;

use crate::config::{Config, StreamBackend};
use bikeshare_producers::output::StreamOutput;
use bikeshare_stream::publisher::PublisherConfig;
use bikeshare_stream::{StreamWriter, names};
use bikeshare_types::SharedClock;
use std::time::Duration;

/// The configured stream backend, opened.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The SQLite file of the embedded stream, and the shards of a new stream.
    Embedded {
        path: std::path::PathBuf,
        shards: u32,
    },
    Kinesis(KinesisStreams),
}

impl Backend {
    pub async fn from_config(config: &Config) -> anyhow::Result<Self> {
        Ok(match config.stream.backend {
            StreamBackend::Embedded => {
                let path = config.data_path(&config.stream.path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Self::Embedded {
                    path,
                    shards: config.stream.shards,
                }
            }
            StreamBackend::Kinesis => {
                Self::Kinesis(KinesisStreams::connect(&config.stream.kinesis, config.aws).await)
            }
        })
    }

    async fn embedded(
        path: &std::path::Path,
        shards: u32,
        name: &str,
    ) -> anyhow::Result<EmbeddedStream> {
        EmbeddedStream::open(path, name, shards)
            .await
            .with_context(|| format!("opening stream {name:?} in {}", path.display()))
    }

    async fn kinesis(
        streams: &KinesisStreams,
        name: &str,
    ) -> anyhow::Result<bikeshare_aws::KinesisStream> {
        streams
            .stream(name)
            .await
            .with_context(|| format!("opening Kinesis stream {name:?}"))
    }

    /// A reader of the stream `name`.
    pub async fn reader(&self, name: &str) -> anyhow::Result<Arc<dyn StreamReader>> {
        Ok(match self {
            Self::Embedded { path, shards } => Arc::new(Self::embedded(path, *shards, name).await?),
            Self::Kinesis(streams) => streams
                .reader(name)
                .await
                .with_context(|| format!("opening Kinesis stream {name:?} for reading"))?,
        })
    }

    /// A writer of the stream `name`.
    pub async fn writer(&self, name: &str) -> anyhow::Result<Arc<dyn StreamWriter>> {
        Ok(match self {
            Self::Embedded { path, shards } => Arc::new(Self::embedded(path, *shards, name).await?),
            Self::Kinesis(streams) => Arc::new(Self::kinesis(streams, name).await?),
        })
    }
}

/// The producers' streams (`events`, `dead-letters`) on the configured backend (embedded or
/// Kinesis, see [`streams::Backend`]), created if missing (on Kinesis when
/// `[stream.kinesis] create_missing` says so).
pub struct Streams {
    pub backend: Backend,
    pub events: Arc<dyn StreamWriter>,
    pub dead_letters: Arc<dyn StreamWriter>,
}

pub async fn open_streams(config: &Config) -> anyhow::Result<Streams> {
    let backend = Backend::from_config(config).await?;
    Ok(Streams {
        events: backend.writer(names::EVENTS).await?,
        dead_letters: backend.writer(names::DEAD_LETTERS).await?,
        backend,
    })
}

/// The producers' output: events and dead letters published to their streams through the
/// batching, retrying `Publisher` (on Kinesis: `PutRecords` within the limits, only failed
/// records re-sent, per-key order kept).
pub fn stream_output(streams: &Streams, clock: SharedClock) -> StreamOutput {
    StreamOutput::new(
        streams.events.clone(),
        streams.dead_letters.clone(),
        PublisherConfig::default(),
        clock,
    )
}

/// Flushes and closes the output, bounded in time so a dead stream cannot hang shutdown.
pub async fn close_output(output: StreamOutput) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(30), output.close()).await {
        Ok(Ok((events, dead))) => {
            tracing::info!(
                events = events.records_sent,
                dead_letters = dead.records_sent,
                "all records published"
            );
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("publishing failed: {e}")),
        Err(_) => anyhow::bail!("records still unpublished after 30 s; giving up"),
    }
}
