//! `bikeshare process`: the stream processor over the `events` stream of the configured
//! backend (embedded or Kinesis, see [`super::streams`]), with its checkpoint store (local
//! directory or S3) and its lease store (memory for one instance, DynamoDB for several
//! instances sharing the shards); outputs go to streams and,
//! unless `[lake] enabled = false`, to the Parquet lake.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_common::checkpoint::{CheckpointStore, LocalCheckpointStore};
use bikeshare_common::sink::Sinks;
use bikeshare_common::stream::consumer::lease::{LeaseConfig, LeaseStore, MemoryLeaseStore};
use bikeshare_common::stream::names;
use bikeshare_common::stream::publisher::PublisherConfig;
use bikeshare_kinesis::{
    ClientSettings, DynamoLeaseStore, LeaseStoreKind, S3CheckpointStore, load_sdk_config,
};
use bikeshare_models::endpoint::SageMakerPredictor;
use bikeshare_sinks::fanout::FanOut;
use bikeshare_sinks::stream::{StreamSinks, StreamWriters};
use bikeshare_stream_processor::Processor;
use bikeshare_stream_processor::runner::{Runner, RunnerConfig};
use tokio::sync::watch;

use super::models::{ScorerFeed, scorer_feed};
use super::streams::Backend;
use super::{shutdown_signal, wall_clock};
use crate::cli::ProcessArgs;
use crate::config::{CheckpointStoreKind, Config, PredictorBackend};

pub async fn run(args: ProcessArgs, config: Config) -> anyhow::Result<()> {
    let (runner, feed) = build(&config, args.features, args.until_caught_up).await?;
    let stats = runner.stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watcher_stop = stop_rx.clone();
    let watcher = feed.spawn(async move {
        let _ = watcher_stop.wait_for(|s| *s).await;
    });
    let metrics = super::start_metrics(&config, super::ingest::stopped(stop_rx.clone())).await?;
    let monitors = super::monitoring::start(&config, wall_clock(), &stop_rx).await?;
    let drift = super::monitor::DriftTask::spawn_if_lake(&config, None, &stop_rx)?;
    let processor = runner.run(shutdown_signal(args.duration)).await;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics {
        m.wait().await;
    }
    for t in monitors {
        let _ = t.await;
    }
    if let Some(d) = drift {
        let _ = d.await;
    }
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let processor = processor?;
    let s = processor.stats();
    tracing::info!(?s, "processor stopped");
    eprintln!(
        "processed {} records: {} predictions, {} labels, {} late, {} duplicates; {} stations",
        stats.records.load(std::sync::atomic::Ordering::Relaxed),
        s.rows,
        s.labels,
        s.late,
        s.duplicates,
        processor.stations()
    );
    Ok(())
}

/// A runner over the configured streams, resuming from the configured checkpoint directory,
/// scoring with the registry's production model (or the baseline), and the feed that
/// hot-swaps its scorer when production changes.
pub async fn build(
    config: &Config,
    features: bool,
    until_caught_up: bool,
) -> anyhow::Result<(Runner, ScorerFeed)> {
    let backend = Backend::from_config(config).await?;
    let events = backend.reader(names::EVENTS).await?;
    let sinks = StreamSinks::new(
        StreamWriters {
            predictions: backend.writer(names::PREDICTIONS).await?,
            labels: backend
                .writer(bikeshare_sinks::stream::names::LABELS)
                .await?,
            features: if features {
                Some(
                    backend
                        .writer(bikeshare_sinks::stream::names::FEATURES)
                        .await?,
                )
            } else {
                None
            },
            dead_letters: backend.writer(names::DEAD_LETTERS).await?,
        },
        PublisherConfig::default(),
    );
    let mut outputs: Vec<Arc<dyn Sinks>> = vec![Arc::new(sinks)];
    if let Some(lake) = super::lake::processor_sinks(config)? {
        outputs.push(Arc::new(lake));
    }
    if let Some(firehose) = firehose_sinks(config, FirehoseRole::Processor).await {
        outputs.push(firehose);
    }
    let sinks: Arc<dyn Sinks> = if outputs.len() == 1 {
        outputs.remove(0)
    } else {
        Arc::new(FanOut::new(outputs))
    };
    let processor = Processor::new(config.processor.clone());
    let feed = scorer_feed(config, processor.schema(), wall_clock()).await?;
    let leases = &config.runner.leases;
    let runner_config = RunnerConfig {
        batch: config.runner.batch,
        checkpoint_interval: Duration::from_millis(config.runner.checkpoint_interval_ms),
        stop_when_caught_up: until_caught_up,
        lease: LeaseConfig {
            owner: leases.owner.clone().unwrap_or_else(default_owner),
            duration: Duration::from_millis(leases.duration_ms.max(300)),
        },
        ..RunnerConfig::default()
    };
    tracing::info!(owner = %runner_config.lease.owner, leases = ?leases.store, checkpoints = ?config.runner.checkpoints.store, "processor instance");
    let schema_id = processor.schema().id().clone();
    let runner = Runner::new(
        events,
        sinks,
        checkpoint_store(config).await?,
        feed.rx.clone(),
        wall_clock(),
        processor,
        runner_config,
    )
    .with_lease_store(lease_store(config).await?);
    let runner = match config.predictor.backend {
        PredictorBackend::InProcess => runner,
        PredictorBackend::Sagemaker => {
            let endpoint = &config.predictor.sagemaker;
            tracing::info!(
                endpoint = %endpoint.endpoint_name,
                url = ?endpoint.endpoint_url,
                fallback = ?endpoint.fallback,
                "scoring through a model endpoint"
            );
            runner.with_predictor(Arc::new(
                SageMakerPredictor::connect(endpoint.clone(), schema_id).await,
            ))
        }
    };
    Ok((runner, feed))
}

/// Which outputs a Firehose sink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirehoseRole {
    /// The processor's: features (unless `[firehose] features = false`), predictions, labels.
    /// Its dead letters reach Firehose through the `dead-letters` stream and the archiver.
    Processor,
    /// The lake archiver's tap: raw events, station status, dead letters.
    Archiver,
}

/// The Firehose sink of `role`, or `None` when `[firehose] enabled` is false.
pub async fn firehose_sinks(
    config: &Config,
    role: FirehoseRole,
) -> Option<Arc<bikeshare_firehose::FirehoseSinks>> {
    let fh = &config.firehose;
    if !fh.enabled {
        return None;
    }
    let sdk = sdk_config(config, fh.region.as_ref()).await;
    let client = bikeshare_firehose::client::firehose_client(&sdk, fh.endpoint_url.as_deref());
    tracing::info!(prefix = %fh.prefix, ?role, "delivering to Firehose");
    Some(Arc::new(bikeshare_firehose::FirehoseSinks::new(
        bikeshare_firehose::DeliveryStreams::new(&client, &fh.prefix, &fh.delivery),
        bikeshare_firehose::FirehoseOutputs {
            features: fh.features && role == FirehoseRole::Processor,
            dead_letters: false,
        },
    )))
}

/// The AWS configuration for a store: its own region, else the Kinesis backend's.
async fn sdk_config(config: &Config, region: Option<&String>) -> bikeshare_kinesis::SdkConfig {
    load_sdk_config(&ClientSettings {
        region: region.or(config.stream.kinesis.region.as_ref()).cloned(),
        endpoint_url: None,
    })
    .await
}

/// The configured checkpoint store (`[runner.checkpoints]`).
pub async fn checkpoint_store(config: &Config) -> anyhow::Result<Arc<dyn CheckpointStore>> {
    let settings = &config.runner.checkpoints;
    Ok(match settings.store {
        CheckpointStoreKind::Local => Arc::new(LocalCheckpointStore::new(
            config.data_path(&config.runner.checkpoint_dir),
        )),
        CheckpointStoreKind::S3 => {
            let sdk = sdk_config(config, settings.s3.region.as_ref()).await;
            let store = S3CheckpointStore::new(&sdk, &settings.s3)?;
            if settings.s3.create_bucket {
                store
                    .ensure_bucket()
                    .await
                    .context("creating the checkpoint bucket")?;
            }
            Arc::new(store)
        }
    })
}

/// The configured lease store (`[runner.leases]`).
pub async fn lease_store(config: &Config) -> anyhow::Result<Arc<dyn LeaseStore>> {
    let settings = &config.runner.leases;
    Ok(match settings.store {
        LeaseStoreKind::Memory => Arc::new(MemoryLeaseStore::default()),
        LeaseStoreKind::Dynamodb => {
            let sdk = sdk_config(config, settings.region.as_ref()).await;
            let store =
                DynamoLeaseStore::new(&sdk, &settings.table, settings.endpoint_url.as_deref());
            if settings.create_table {
                store
                    .ensure_table()
                    .await
                    .context("creating the lease table")?;
            }
            Arc::new(store)
        }
    })
}

/// `<host>-<pid>`: unique among running processes.
fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}
