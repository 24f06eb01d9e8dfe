//! The stream processor's runner as configured: streams, sinks, checkpoint and lease stores,
//! the scorer or model endpoint.

use crate::app::models::{ScorerFeed, scorer_feed};
use crate::app::sinks::{FirehoseRole, firehose_sinks};
use crate::app::stores::{checkpoint_store, lease_store};
use crate::app::streams::Backend;
use crate::app::wall_clock;
use crate::config::{Config, PredictorBackend};
use bikeshare_models::endpoint::SageMakerPredictor;
use bikeshare_runner::{Runner, RunnerConfig};
use bikeshare_sinks::fanout::FanOut;
use bikeshare_sinks::stream::{StreamSinks, StreamWriters};
use bikeshare_stream::lease::LeaseConfig;
use bikeshare_stream::names;
use bikeshare_stream::publisher::PublisherConfig;
use bikeshare_stream::sink::Sinks;
use bikeshare_stream_processor::Processor;
use std::sync::Arc;
use std::time::Duration;

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
    if let Some(lake) = crate::app::sinks::processor_sinks(config)? {
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
        // A bounded input read to its end: every label it covers (issue 15.5).
        label_to_end: until_caught_up,
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
            let sdk = crate::app::aws::sdk_config(config, endpoint.region.as_ref()).await;
            runner.with_predictor(Arc::new(SageMakerPredictor::new(
                &sdk,
                endpoint.clone(),
                schema_id,
            )))
        }
    };
    Ok((runner, feed))
}

/// Runs `runner` until `signal` resolves (or its input ends), then gives it `grace` to stop:
/// finish its step, store its final checkpoint, release its leases. The signal is watched on
/// its own task, so it counts even while the runner waits on a stalled dependency; if the
/// runner has not stopped `grace` after it, the run is abandoned with an error (the process
/// exits non-zero; the last stored checkpoint stands, and a restart replays from it).
pub async fn run_with_grace(
    runner: Runner,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<Processor> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
    });
    let run = runner.run(crate::app::stopped(rx.clone()));
    tokio::pin!(run);
    let mut signalled = rx;
    let deadline = async move {
        if signalled.wait_for(|s| *s).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = &mut run => r.map_err(anyhow::Error::from),
        () = deadline => Err(anyhow::anyhow!(
            "the processor did not stop within its shutdown grace period of {grace:?} \
             ([runner] shutdown_grace_ms): a dependency stalled; exiting without a final \
             checkpoint (the last stored one stands)"
        )),
    };
    watcher.abort();
    result
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
