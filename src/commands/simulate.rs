//! `bikeshare simulate`: serve the simulated city, or write its history.

use std::io::Write;

use anyhow::Context;
use bikeshare_simulator::GbfsVersion;

use crate::app::{shutdown_signal, wall_clock};
use crate::cli::SimulateArgs;
use crate::config::Config;

pub async fn run(args: SimulateArgs, config: Config) -> anyhow::Result<()> {
    let clock = wall_clock();
    let now = clock.now();
    let mut sim = config.simulator.clone();
    if let Some(n) = args.stations {
        sim.city.stations = n;
    }
    if let Some(seed) = args.seed {
        sim.city.seed = seed;
    }
    if let Some(s) = args.time_scale {
        sim.time_scale = s;
    }
    if let Some(b) = args.bind {
        sim.bind = b;
    }
    if let Some(start) = args.start {
        sim.start = Some(start);
    }
    if let Some(path) = &args.backfill {
        let from = sim.start.unwrap_or(now.plus_millis(-24 * 3_600_000));
        let to = args.until.unwrap_or(now);
        // The bar follows the simulated clock: minutes of history written out of all.
        let written = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(from.millis()));
        let minutes = move |t: i64| u64::try_from((t - from.millis()) / 60_000).unwrap_or(0);
        let probe = {
            let written = written.clone();
            move || crate::app::progress::Reading {
                position: minutes(written.load(std::sync::atomic::Ordering::Relaxed)),
                total: Some(minutes(to.millis())),
                note: "of city history".to_owned(),
            }
        };
        let write = tokio::task::spawn_blocking({
            let (city, path) = (sim.city.clone(), path.clone());
            move || {
                bikeshare_simulator::write_history_with_progress(&city, from, to, &path, &written)
            }
        });
        let result =
            crate::app::progress::while_probing("simulating", "minutes", probe, write).await;
        let summary = result.context("backfill task")??;
        eprintln!(
            "wrote {} events ({} station reports, {} stations, {} weather hours) from {from} to {to} into {}",
            summary.events,
            summary.station_status,
            summary.stations,
            summary.weather,
            path.display()
        );
        return Ok(());
    }
    let running = bikeshare_simulator::serve(sim, clock, std::future::pending())
        .await
        .context("starting the simulator")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "GBFS 2.3: {}", running.gbfs_url(GbfsVersion::V2_3))?;
    writeln!(out, "GBFS 3.0: {}", running.gbfs_url(GbfsVersion::V3_0))?;
    writeln!(
        out,
        "Meteostat API: {}  bulk: {}",
        running.meteostat_api_url(),
        running.meteostat_bulk_url()
    )?;
    out.flush()?;
    drop(out);
    shutdown_signal(None).await;
    running.stop().await.context("stopping the simulator")
}
