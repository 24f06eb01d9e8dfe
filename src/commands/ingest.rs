//! `bikeshare ingest`: poll GBFS systems (and weather), publish events to the stream.

use crate::app::producers::{simulated_system, spawn_producers};
use crate::app::stopped;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::app::streams::{close_output, open_streams, stream_output};
use crate::app::{shutdown_signal, wall_clock};
use crate::cli::IngestArgs;
use crate::config::Config;

pub async fn run(args: IngestArgs, mut config: Config) -> anyhow::Result<()> {
    let mut systems = config.systems.clone();
    let clock = wall_clock();
    let simulator = if args.simulator {
        let running = bikeshare_simulator::serve(
            config.simulator.clone(),
            clock.clone(),
            std::future::pending(),
        )
        .await
        .context("starting the simulator")?;
        systems.push(simulated_system(&mut config, &running));
        eprintln!(
            "simulator: {}",
            running.gbfs_url(bikeshare_simulator::GbfsVersion::V3_0)
        );
        Some(running)
    } else {
        None
    };
    crate::app::producers::probe_systems(
        &mut systems,
        &args.gbfs_urls,
        &args.system_ids,
        &config,
        &clock,
    )
    .await?;
    anyhow::ensure!(
        !systems.is_empty(),
        "nothing to ingest: give --gbfs-url or --simulator, or [[systems]] in the config"
    );
    let streams = open_streams(&config).await?;
    let output = Arc::new(stream_output(&streams, clock.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = crate::app::monitoring::start_metrics(&config, stopped(stop_rx.clone())).await?;
    let monitors = crate::app::monitoring::start(&config, clock.clone(), &stop_rx).await?;
    let tasks = spawn_producers(
        &systems,
        args.weather,
        &config,
        clock,
        output.clone(),
        &stop_rx,
    )?;
    shutdown_signal(args.duration).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let output = Arc::try_unwrap(output).map_err(|_| anyhow::anyhow!("output still in use"))?;
    close_output(output).await?;
    if let Some(sim) = simulator {
        sim.stop().await.context("stopping the simulator")?;
    }
    if let Some(m) = metrics {
        m.wait().await;
    }
    for t in monitors {
        let _ = t.await;
    }
    Ok(())
}
