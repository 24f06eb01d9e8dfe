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

/// The time a stream's record is about: `event_time` (events), `as_of` (predictions,
/// labels, features), `at` (dead letters).
fn record_time(data: &[u8]) -> Option<bikeshare_types::Timestamp> {
    #[derive(serde::Deserialize)]
    struct Times {
        event_time: Option<bikeshare_types::Timestamp>,
        as_of: Option<bikeshare_types::Timestamp>,
        at: Option<bikeshare_types::Timestamp>,
    }
    let t: Times = serde_json::from_slice(data).ok()?;
    t.event_time.or(t.as_of).or(t.at)
}

/// Per shard, the last sequence number read by a consumer, from its checkpoint positions
/// (`prefix` + shard id as the key; `SHARD_END` and other non-numbers are left out).
fn positions_of(
    positions: &std::collections::BTreeMap<String, String>,
    prefix: &str,
) -> std::collections::BTreeMap<String, u64> {
    positions
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Per shard, the smallest position of all `consumers`; a shard some consumer has no position
/// for is left out (nothing of it is trimmed).
fn slowest(
    consumers: &[std::collections::BTreeMap<String, u64>],
) -> std::collections::BTreeMap<String, u64> {
    let Some((first, rest)) = consumers.split_first() else {
        return Default::default();
    };
    first
        .iter()
        .filter_map(|(shard, p)| {
            rest.iter()
                .map(|c| c.get(shard).copied())
                .try_fold(*p, |m, q| Some(m.min(q?)))
                .map(|m| (shard.clone(), m))
        })
        .collect()
}

/// The positions of the consumers of the embedded stream `name` that keep checkpoints: the
/// processor and the lake archiver read `events`, the archiver reads `dead-letters`. `None`:
/// the stream has no such consumer (its readers follow the head).
async fn consumers_of(
    config: &Config,
    name: &str,
    shards: &[bikeshare_stream::ShardDescription],
) -> anyhow::Result<Option<std::collections::BTreeMap<String, u64>>> {
    let archive = || async {
        let store = crate::app::stores::archiver_checkpoint_store(config).await?;
        let cp = store
            .latest(bikeshare_lake::archive::CHECKPOINT_KEY)
            .await
            .context("reading the lake archiver's checkpoint")?;
        anyhow::Ok(
            cp.map(|c| positions_of(&c.positions, &format!("{name}/")))
                .unwrap_or_default(),
        )
    };
    let mut consumers = Vec::new();
    if name == names::EVENTS {
        let store = crate::app::stores::checkpoint_store(config).await?;
        let mut processor = std::collections::BTreeMap::new();
        for s in shards {
            if let Some(cp) = store
                .latest(s.id.as_str())
                .await
                .context("reading the processor's checkpoint")?
            {
                processor.extend(positions_of(&cp.positions, ""));
            }
        }
        consumers.push(processor);
    }
    if config.lake.enabled && (name == names::EVENTS || name == names::DEAD_LETTERS) {
        consumers.push(archive().await?);
    }
    Ok((!consumers.is_empty()).then(|| slowest(&consumers)))
}

/// Trims every stream of the embedded backend by `[stream.retention]` once; what each lost.
/// Nothing on Kinesis (it keeps its own retention period) or with retention off.
pub async fn trim_streams(
    config: &Config,
) -> anyhow::Result<Vec<(&'static str, bikeshare_embedded::TrimReport)>> {
    let retention = &config.stream.retention;
    if !retention.enabled || config.stream.backend != StreamBackend::Embedded {
        return Ok(Vec::new());
    }
    let path = config.data_path(&config.stream.path);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let keep = Duration::from_secs(retention.hours.saturating_mul(3600));
    let mut out = Vec::new();
    for name in [
        names::EVENTS,
        names::DEAD_LETTERS,
        names::PREDICTIONS,
        bikeshare_sinks::stream::names::LABELS,
        bikeshare_sinks::stream::names::FEATURES,
    ] {
        let stream = match EmbeddedStream::open_existing(&path, name).await {
            Ok(s) => s,
            Err(bikeshare_stream::StreamError::NoSuchStream(_)) => continue,
            Err(e) => return Err(e).with_context(|| format!("opening stream {name:?}")),
        };
        let passed = consumers_of(config, name, stream.shards()).await?;
        let report = stream
            .trim_retained(passed.as_ref(), keep, record_time)
            .await
            .with_context(|| format!("trimming stream {name:?}"))?;
        out.push((name, report));
    }
    Ok(out)
}

/// With the embedded stream and retention on: [`trim_streams`] every `interval_ms`, and once
/// more when `stop` turns true (after the caller's final checkpoints). Errors are logged and
/// retried at the next interval: retention must never stop the pipeline.
pub fn spawn_retention(
    config: &Config,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.stream.retention.enabled || config.stream.backend != StreamBackend::Embedded {
        return None;
    }
    let config = config.clone();
    let mut stop = stop.clone();
    let every = Duration::from_millis(config.stream.retention.interval_ms.max(1_000));
    Some(tokio::spawn(async move {
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            match trim_streams(&config).await {
                Ok(r) => {
                    for (name, report) in r.into_iter().filter(|(_, r)| r.deleted > 0) {
                        tracing::info!(
                            stream = name,
                            deleted = report.deleted,
                            kept = report.kept,
                            "stream retention: trimmed"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "stream retention: trim failed");
                }
            }
            if last {
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_slowest_consumer_bounds_every_shard_and_a_missing_position_keeps_the_shard() {
        let a = BTreeMap::from([("s0".to_owned(), 10), ("s1".to_owned(), 5)]);
        let b = BTreeMap::from([("s0".to_owned(), 7)]);
        assert_eq!(
            slowest(&[a.clone(), b]),
            BTreeMap::from([("s0".to_owned(), 7)])
        );
        assert_eq!(slowest(std::slice::from_ref(&a)), a);
        assert!(slowest(&[]).is_empty());
        let cp = BTreeMap::from([
            ("events/s0".to_owned(), "12".to_owned()),
            ("events/s1".to_owned(), "SHARD_END".to_owned()),
            ("dead-letters/s0".to_owned(), "3".to_owned()),
        ]);
        assert_eq!(
            positions_of(&cp, "events/"),
            BTreeMap::from([("s0".to_owned(), 12)])
        );
    }

    #[test]
    fn every_streams_record_time_is_read() {
        let t = |s: &str| record_time(s.as_bytes()).map(|t| t.millis());
        assert_eq!(
            t(r#"{"event_time":"2021-01-01T00:00:01Z","ingest_time":"2026-01-01T00:00:00Z"}"#),
            Some(1_609_459_201_000)
        );
        assert_eq!(
            t(r#"{"as_of":"2021-01-01T00:00:00Z","x":[1]}"#),
            Some(1_609_459_200_000)
        );
        assert_eq!(
            t(r#"{"at":"2021-01-01T00:00:00Z"}"#),
            Some(1_609_459_200_000)
        );
        assert_eq!(t("not json"), None);
        assert_eq!(t("{}"), None);
    }
}
