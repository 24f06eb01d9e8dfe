//! The web dashboard, fed from the streams of the configured backend.

use crate::config::Config;
use anyhow::Context;
use bikeshare_dashboard::server::{self, RunningDashboard};
use bikeshare_dashboard::state::{self as dash, DashboardState, Sources};
use bikeshare_stream::names;
use bikeshare_types::SharedClock;

/// Starts following the streams and serving the dashboard; the state is returned so that a
/// processor running in the same process can attach its live counters.
pub async fn start(
    config: &Config,
    clock: SharedClock,
    stop_follow: impl std::future::Future<Output = ()> + Send + 'static,
    stop_server: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(RunningDashboard, std::sync::Arc<DashboardState>)> {
    let backend = crate::app::streams::Backend::from_config(config).await?;
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
