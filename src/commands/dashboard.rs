//! `bikeshare dashboard`, and the dashboard part of `up`.

use crate::app::dashboard::start;

use crate::app::{shutdown_signal, wall_clock};
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
        crate::app::stopped(rx.clone()),
        crate::app::stopped(rx),
    )
    .await?;
    eprintln!("dashboard: {}", running.url());
    shutdown_signal(None).await;
    let _ = tx.send(true);
    running.wait().await;
    Ok(())
}
