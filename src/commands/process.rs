//! `bikeshare process`: the stream processor over the `events` stream of the configured
//! backend (embedded or Kinesis, see [`super::streams`]).

use std::sync::Arc;
use std::time::Duration;

use bikeshare_common::checkpoint::LocalCheckpointStore;
use bikeshare_common::stream::names;
use bikeshare_common::stream::publisher::PublisherConfig;
use bikeshare_models::endpoint::SageMakerPredictor;
use bikeshare_sinks::stream::{StreamSinks, StreamWriters};
use bikeshare_stream_processor::Processor;
use bikeshare_stream_processor::runner::{Runner, RunnerConfig};
use tokio::sync::watch;

use super::models::{ScorerFeed, scorer_feed};
use super::streams::Backend;
use super::{shutdown_signal, wall_clock};
use crate::cli::ProcessArgs;
use crate::config::{Config, PredictorBackend};

pub async fn run(args: ProcessArgs, config: Config) -> anyhow::Result<()> {
    let (runner, feed) = build(&config, args.features, args.until_caught_up).await?;
    let stats = runner.stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watcher_stop = stop_rx.clone();
    let watcher = feed.spawn(async move {
        let _ = watcher_stop.wait_for(|s| *s).await;
    });
    let metrics = super::start_metrics(&config, super::ingest::stopped(stop_rx.clone())).await?;
    let processor = runner.run(shutdown_signal(args.duration)).await;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics {
        m.wait().await;
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
    let processor = Processor::new(config.processor.clone());
    let feed = scorer_feed(config, processor.schema(), wall_clock()).await?;
    let store = LocalCheckpointStore::new(config.data_path(&config.runner.checkpoint_dir));
    let runner_config = RunnerConfig {
        batch: config.runner.batch,
        checkpoint_interval: Duration::from_millis(config.runner.checkpoint_interval_ms),
        stop_when_caught_up: until_caught_up,
        ..RunnerConfig::default()
    };
    let schema_id = processor.schema().id().clone();
    let runner = Runner::new(
        events,
        Arc::new(sinks),
        Arc::new(store),
        feed.rx.clone(),
        wall_clock(),
        processor,
        runner_config,
    );
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
