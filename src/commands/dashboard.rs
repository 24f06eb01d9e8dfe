//! `bikeshare dashboard`, and the dashboard part of `up`.

use anyhow::Context;
use bikeshare_common::SharedClock;
use bikeshare_common::stream::names;
use bikeshare_dashboard::server::{self, RunningDashboard};
use bikeshare_dashboard::state::{self as dash, DashboardState, Sources};

use super::{shutdown_signal, wall_clock};
use crate::cli::DashboardArgs;
use crate::config::Config;

pub async fn run(args: DashboardArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(b) = args.bind {
        config.dashboard.bind = b;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (running, _state) = start(
        &config,
        wall_clock(),
        super::ingest::stopped(rx.clone()),
        super::ingest::stopped(rx),
    )
    .await?;
    eprintln!("dashboard: {}", running.url());
    shutdown_signal(None).await;
    let _ = tx.send(true);
    running.wait().await;
    Ok(())
}

/// Starts following the streams and serving the dashboard; the state is returned so that a
/// processor running in the same process can attach its live counters.
pub async fn start(
    config: &Config,
    clock: SharedClock,
    stop_follow: impl std::future::Future<Output = ()> + Send + 'static,
    stop_server: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(RunningDashboard, std::sync::Arc<DashboardState>)> {
    let backend = super::streams::Backend::from_config(config).await?;
    let open = |name: &'static str| {
        let backend = backend.clone();
        async move { backend.reader(name).await }
    };
    let sources = Sources {
        events: open(names::EVENTS).await?,
        predictions: open(names::PREDICTIONS).await?,
        labels: open(bikeshare_sinks::stream::names::LABELS).await?,
        dead_letters: open(names::DEAD_LETTERS).await?,
    };
    let state = DashboardState::new(clock, config.processor.quality.clone());
    tokio::spawn(dash::follow(state.clone(), sources, stop_follow));
    let running = server::serve(config.dashboard.clone(), state.clone(), stop_server)
        .await
        .context("starting the dashboard")?;
    Ok((running, state))
}
