//! Streams by backend: the one place that turns `[stream] backend = ...` into readers and
//! writers. Commands ask for a stream by its logical name (`events`, `predictions`, ...)
//! and never know which backend they got.

use std::sync::Arc;

use anyhow::Context;
use bikeshare_common::stream::embedded::EmbeddedStream;
use bikeshare_common::stream::{StreamReader, StreamWriter};
use bikeshare_kinesis::KinesisStreams;

use crate::config::{Config, StreamBackend};

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
                Self::Kinesis(KinesisStreams::connect(&config.stream.kinesis).await)
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
    ) -> anyhow::Result<bikeshare_kinesis::KinesisStream> {
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
