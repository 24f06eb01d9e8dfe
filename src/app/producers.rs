//! Producers as tasks: one GBFS poller per system and the weather producer; replay sources.

use crate::app::stopped;
use crate::cli::{HistoryArgs, ReplayFormat};
use crate::config::{Config, SystemConfig};
use anyhow::Context;
use bikeshare_producers::gbfs::{Bearer, GbfsPoller, SchemaRegistry, probe};
use bikeshare_producers::output::Output;
use bikeshare_producers::replay::ReplaySource;
use bikeshare_producers::weather::{WeatherProducer, WeatherSystem};
use bikeshare_types::SystemId;
use std::sync::Arc;
use tokio::sync::watch;

/// The simulated city as a system to ingest; points the weather producer at its Meteostat
/// bulk endpoint and lets the GBFS poller follow the feed's (time-scaled) TTL.
pub fn simulated_system(
    config: &mut Config,
    running: &bikeshare_simulator::RunningSimulator,
) -> SystemConfig {
    config.gbfs.min_interval = std::time::Duration::from_millis(200);
    config.gbfs.info_min_interval = std::time::Duration::from_millis(200);
    config.weather.mode = bikeshare_producers::weather::WeatherMode::Bulk;
    config.weather.bulk_base = running.meteostat_bulk_url();
    config.weather.poll_interval_secs = 30;
    authorise_simulator(config, running);
    let city = &config.simulator.city;
    SystemConfig {
        id: city.system_id.clone(),
        gbfs_url: running.gbfs_url(bikeshare_simulator::GbfsVersion::V3_0),
        lat: Some(city.centre_lat),
        lon: Some(city.centre_lon),
    }
}

/// When the simulator runs with a token (`[simulator] token` or `BIKESHARE_SIM_TOKEN`), gives
/// it to the GBFS client and the weather producer, scoped to the simulator's origin: other
/// feeds never receive it.
pub fn authorise_simulator(config: &mut Config, running: &bikeshare_simulator::RunningSimulator) {
    let token = config
        .simulator
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .or_else(|| std::env::var(bikeshare_simulator::TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let Some(token) = token else { return };
    let bearer = Bearer::for_origin_of(running.base_url(), token);
    config.gbfs.client.bearer.clone_from(&bearer);
    config.weather.bearer = bearer;
}

/// Reads each `--gbfs-url` system's own id from its `system_information` (unless an id is
/// given, in order, by `ids`) and checks that every system answers, through the client's
/// retry policy: a feed that cannot be read is an error naming its URL and the cause.
pub async fn probe_systems(
    systems: &mut Vec<SystemConfig>,
    urls: &[String],
    ids: &[String],
    config: &Config,
    clock: &bikeshare_types::SharedClock,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        ids.len() <= urls.len(),
        "{} --system-id for {} --gbfs-url: give at most one id per URL, in order",
        ids.len(),
        urls.len()
    );
    for s in systems.iter() {
        probe(&s.gbfs_url, &config.gbfs, clock)
            .await
            .with_context(|| format!("system {}", s.id))?;
    }
    for (i, url) in urls.iter().enumerate() {
        let found = probe(url, &config.gbfs, clock).await?;
        let id = ids.get(i).cloned().unwrap_or(found.system_id);
        eprintln!(
            "{url}: {} (GBFS {}), publishing as {id:?}",
            found.name, found.version
        );
        anyhow::ensure!(
            systems.iter().all(|s| s.id != id),
            "two systems would publish as {id:?}: give each --gbfs-url its own --system-id"
        );
        systems.push(SystemConfig {
            id,
            gbfs_url: url.clone(),
            lat: None,
            lon: None,
        });
    }
    Ok(())
}

/// Starts one poller task per system, and one weather task when asked.
pub fn spawn_producers(
    systems: &[SystemConfig],
    weather: bool,
    config: &Config,
    clock: bikeshare_types::SharedClock,
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
                    tracing::error!(error = %bikeshare_types::error::chain(&e), "weather producer stopped");
                }
            }));
        }
    }
    Ok(tasks)
}

/// The replay source a history's flags describe.
pub fn source(h: &HistoryArgs, config: &Config) -> ReplaySource {
    let files = h.files.clone();
    match h.format {
        ReplayFormat::Bluebikes => ReplaySource::Bluebikes {
            status_files: files,
            stations: h.stations.clone(),
        },
        ReplayFormat::Jsonl => ReplaySource::Jsonl { files },
        ReplayFormat::Snapshots => ReplaySource::Snapshots {
            files,
            station_information: h.stations.clone().into_iter().collect(),
        },
        ReplayFormat::GbfsSnapshots => ReplaySource::GbfsSnapshots {
            files_or_dirs: files,
            station_information: h.stations.clone().into_iter().collect(),
            schema_dir: config.gbfs.schema_dir.clone(),
        },
    }
}
