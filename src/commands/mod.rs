//! One module per command; this one holds what they share: opening the streams, the
//! producers' output, and shutdown.

mod backfill;
mod dashboard;
mod ingest;
mod lake;
mod models;
mod monitor;
mod monitoring;
mod process;
mod promote;
mod replay;
mod serve_model;
mod simulate;
mod streams;
mod subscribe;
mod tail;
mod train;
mod up;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_common::stream::publisher::PublisherConfig;
use bikeshare_common::stream::{StreamWriter, names};
use bikeshare_common::{SharedClock, SystemClock};
use bikeshare_producers::output::StreamOutput;

use crate::cli::Command;
use crate::config::Config;

pub async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Ingest(args) => ingest::run(args, config).await,
        Command::Replay(args) => replay::run(args, config).await,
        Command::Tail(args) => tail::run(args, config).await,
        Command::Subscribe(args) => subscribe::run(args).await,
        Command::Dashboard(args) => dashboard::run(args, config).await,
        Command::Process(args) => process::run(args, config).await,
        Command::Backfill(args) => backfill::run(args, config).await,
        Command::Up(args) => up::run(args, config).await,
        Command::Lake(args) => lake::run(args, config).await,
        Command::Monitor(args) => monitor::run(args, config).await,
        Command::Simulate(args) => simulate::run(args, config).await,
        Command::ServeModel(args) => serve_model::run(args, config).await,
        Command::Train(args) => train::run(args, config).await,
        Command::Promote(args) => promote::run(args, config).await,
    }
}

/// The wall clock every command runs on.
pub fn wall_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// The producers' streams (`events`, `dead-letters`) on the configured backend (embedded or
/// Kinesis, see [`streams::Backend`]), created if missing (on Kinesis when
/// `[stream.kinesis] create_missing` says so).
pub struct Streams {
    pub backend: streams::Backend,
    pub events: Arc<dyn StreamWriter>,
    pub dead_letters: Arc<dyn StreamWriter>,
}

pub async fn open_streams(config: &Config) -> anyhow::Result<Streams> {
    let backend = streams::Backend::from_config(config).await?;
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

/// Resolves on Ctrl-C (or SIGTERM), or after `duration` when given.
pub async fn shutdown_signal(duration: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
        () = timer => tracing::info!("duration reached: shutting down"),
    }
}

/// Serves `/metrics` (unless disabled) until `stop` resolves, printing its URL.
pub async fn start_metrics(
    config: &Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<bikeshare_monitor::exporter::RunningExporter>> {
    if !config.metrics.enabled {
        return Ok(None);
    }
    match bikeshare_monitor::exporter::serve(&config.metrics, stop).await {
        Ok(running) => {
            eprintln!("metrics:     {}", running.url());
            Ok(Some(running))
        }
        // Two commands on one machine with the default port: the job matters more than
        // its endpoint; say so loudly and run on.
        Err(e @ bikeshare_monitor::exporter::ExporterError::Bind { .. }) => {
            tracing::warn!(error = %e, "no /metrics endpoint: set BIKESHARE_METRICS__BIND to a free address");
            Ok(None)
        }
        Err(e) => Err(e).context("starting the /metrics endpoint"),
    }
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

/// Parses a time given as RFC 3339 or as "how long ago" (`6h`, `2d`).
pub fn parse_time_or_ago(
    s: &str,
    now: bikeshare_common::Timestamp,
) -> anyhow::Result<bikeshare_common::Timestamp> {
    if let Some(t) = bikeshare_common::Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let ago = crate::cli::parse_duration(s)
        .map_err(|e| anyhow::anyhow!("{e}; or give an RFC 3339 time"))?;
    Ok(now.plus_millis(-i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)))
}
