//! `bikeshare api`: the subscription API alone (`up` serves it beside the rest), over the
//! configured prediction stream: a deployed environment's API service.

use anyhow::Context;

use crate::app::streams::Backend;
use crate::app::{shutdown_signal, stopped, wall_clock};
use crate::cli::ApiArgs;
use crate::config::Config;

pub async fn run(args: ApiArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(b) = args.bind {
        config.api.bind = b;
    }
    let backend = Backend::from_config(&config).await?;
    let predictions = backend.reader(bikeshare_stream::names::PREDICTIONS).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Its subscriptions (open, refused) on `/metrics`, as `up` serves them.
    let metrics = crate::app::monitoring::start_metrics(&config, stopped(rx.clone())).await?;
    let api = bikeshare_sinks::subscribe::serve(
        config.api.clone(),
        predictions,
        wall_clock(),
        stopped(rx),
    )
    .await
    .context("starting the subscription API")?;
    eprintln!(
        "subscription API on {}  (try: bikeshare subscribe)",
        api.url()
    );
    shutdown_signal(None).await;
    let _ = tx.send(true);
    api.wait().await;
    if let Some(m) = metrics {
        m.wait().await;
    }
    Ok(())
}
