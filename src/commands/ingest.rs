//! `bikeshare ingest`: poll GBFS systems (and weather), publish events to the stream.

use std::sync::Arc;

use anyhow::Context;
use bikeshare_common::SystemId;
use bikeshare_producers::gbfs::{GbfsPoller, SchemaRegistry};
use bikeshare_producers::output::Output;
use bikeshare_producers::weather::{WeatherProducer, WeatherSystem};
use tokio::sync::watch;

use super::{close_output, open_streams, shutdown_signal, stream_output, wall_clock};
use crate::cli::IngestArgs;
use crate::config::{Config, SystemConfig};

pub async fn run(args: IngestArgs, mut config: Config) -> anyhow::Result<()> {
    let mut systems = config.systems.clone();
    let clock = wall_clock();
    let simulator = if args.simulator {
        let running = bikeshare_producers::simulator::serve(
            config.simulator.clone(),
            clock.clone(),
            std::future::pending(),
        )
        .await
        .context("starting the simulator")?;
        systems.push(simulated_system(&mut config, &running));
        eprintln!(
            "simulator: {}",
            running.gbfs_url(bikeshare_producers::simulator::GbfsVersion::V3_0)
        );
        Some(running)
    } else {
        None
    };
    for (i, url) in args.gbfs_urls.iter().enumerate() {
        let id = args
            .system_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("system-{}", i + 1));
        systems.push(SystemConfig {
            id,
            gbfs_url: url.clone(),
            lat: None,
            lon: None,
        });
    }
    anyhow::ensure!(
        !systems.is_empty(),
        "nothing to ingest: give --gbfs-url or --simulator, or [[systems]] in the config"
    );
    let streams = open_streams(&config).await?;
    let output = Arc::new(stream_output(&streams, clock.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = super::start_metrics(&config, stopped(stop_rx.clone())).await?;
    let monitors = super::monitoring::start(&config, clock.clone(), &stop_rx).await?;
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

/// The simulated city as a system to ingest; points the weather producer at its Meteostat
/// bulk endpoint and lets the GBFS poller follow the feed's (time-scaled) TTL.
pub fn simulated_system(
    config: &mut Config,
    running: &bikeshare_producers::simulator::RunningSimulator,
) -> SystemConfig {
    config.gbfs.min_interval = std::time::Duration::from_millis(200);
    config.gbfs.info_min_interval = std::time::Duration::from_millis(200);
    config.weather.mode = bikeshare_producers::weather::WeatherMode::Bulk;
    config.weather.bulk_base = running.meteostat_bulk_url();
    config.weather.poll_interval_secs = 30;
    let city = &config.simulator.city;
    SystemConfig {
        id: city.system_id.clone(),
        gbfs_url: running.gbfs_url(bikeshare_producers::simulator::GbfsVersion::V3_0),
        lat: Some(city.centre_lat),
        lon: Some(city.centre_lon),
    }
}

/// Resolves when `stop` becomes true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Starts one poller task per system, and one weather task when asked.
pub fn spawn_producers(
    systems: &[SystemConfig],
    weather: bool,
    config: &Config,
    clock: bikeshare_common::SharedClock,
    output: Arc<impl Output + 'static>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let schemas = match &config.gbfs.schema_dir {
        Some(dir) => Some(Arc::new(SchemaRegistry::new(dir).with_context(|| {
            format!("loading GBFS schemas from {}", dir.display())
        })?)),
        None => None,
    };
    let mut tasks = Vec::new();
    for s in systems {
        let mut poller = GbfsPoller::new(
            SystemId::new(&s.id),
            &s.gbfs_url,
            config.gbfs.clone(),
            clock.clone(),
        )
        .with_context(|| format!("system {}", s.id))?;
        if let Some(reg) = &schemas {
            poller = poller.with_schemas(reg.clone());
        }
        let out: Arc<dyn Output> = output.clone();
        let stop = stopped(stop.clone());
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            let stats = poller.run(out, stop).await;
            tracing::info!(system = %id, ?stats, "poller stopped");
        }));
    }
    if weather {
        let ws: Vec<WeatherSystem> = systems
            .iter()
            .filter_map(|s| {
                Some(WeatherSystem {
                    system_id: SystemId::new(&s.id),
                    lat: s.lat?,
                    lon: s.lon?,
                })
            })
            .collect();
        if ws.is_empty() {
            tracing::warn!("--weather: no system has lat/lon in the config; no weather polled");
        } else {
            let producer = WeatherProducer::new(config.weather.clone(), ws, clock)
                .context("weather producer")?;
            let out = output.clone();
            let stop = stopped(stop.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = producer.run(out.as_ref(), stop).await {
                    tracing::error!(error = %bikeshare_common::error::chain(&e), "weather producer stopped");
                }
            }));
        }
    }
    Ok(tasks)
}
