//! `bikeshare up`: the main job on one machine — the simulated city served over HTTP, the
//! GBFS and weather producers polling it, the configured stream backend (embedded by
//! default, or Kinesis), the processor, the Parquet lake (the
//! processor's outputs and the archived input streams), and a live summary on stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bikeshare_producers::weather::WeatherMode;
use bikeshare_runner::{LatestPredictions, RunnerStats};
use bikeshare_simulator::GbfsVersion;
use ordered_float::OrderedFloat;
use tokio::sync::watch;

use crate::app::streams::{close_output, open_streams, stream_output};
use crate::app::{city, producers::spawn_producers, stopped};
use crate::app::{shutdown_signal, wall_clock};
use crate::cli::UpArgs;
use crate::config::{Config, SystemConfig};

/// How many shutdown grace periods the whole stop of `up` may take (see its use).
const STOP_GRACES: u32 = 6;

pub async fn run(args: UpArgs, mut config: Config) -> anyhow::Result<()> {
    let clock = wall_clock();
    let mut sim = config.simulator.clone();
    if let Some(n) = args.stations {
        sim.city.stations = n;
    }
    sim.time_scale = args.time_scale;
    let data_dir = config.data_dir.0.clone();
    if args.fresh {
        for p in city::remove_leftovers(&config)? {
            eprintln!("fresh:       removed {}", p.display());
        }
    }
    let history_ms = i64::try_from(args.history.as_millis()).unwrap_or(i64::MAX);
    let stored = city::load(&data_dir)?;
    let start = city::start(stored, clock.now(), history_ms);
    match stored {
        Some(_) => eprintln!(
            "city:        resuming at {start} (the clock in {}; --fresh starts clean)",
            city::clock_path(&data_dir).display()
        ),
        None if !city::leftovers(&config).is_empty() => eprintln!(
            "WARNING:     {} holds data from an earlier run but no city clock: reports older \
             than the processor's watermark will be dropped as late. Start clean with \
             `bikeshare up --fresh`.",
            data_dir.display()
        ),
        None => {}
    }
    sim.start = Some(start);
    let (lat, lon, system_id) = (
        sim.city.centre_lat,
        sim.city.centre_lon,
        sim.city.system_id.clone(),
    );
    // A first model when the registry has none, trained on simulated days before the live
    // window; a failure leaves the baseline scoring, never a stopped job.
    if !args.no_bootstrap {
        let end = sim.start.unwrap_or_else(|| clock.now());
        if let Err(e) =
            crate::app::models::bootstrap_if_empty(&config, &sim.city, end, clock.clone()).await
        {
            tracing::error!(error = %format!("{e:#}"), "bootstrap model");
            eprintln!("model:       no bootstrap model ({e:#}); scoring with the baseline");
        }
    }
    let running = bikeshare_simulator::serve(sim, clock.clone(), std::future::pending())
        .await
        .context("starting the simulator")?;
    let running = Arc::new(running);
    tracing::info!(url = %running.gbfs_url(GbfsVersion::V3_0), "simulator serving");

    // The simulator's feeds say ttl = 60 s / time_scale: poll as fast as they ask.
    config.gbfs.min_interval = Duration::from_millis(200);
    config.gbfs.info_min_interval = Duration::from_millis(200);
    config.weather.mode = WeatherMode::Bulk;
    config.weather.bulk_base = running.meteostat_bulk_url();
    config.weather.poll_interval_secs = 30;
    crate::app::producers::authorise_simulator(&mut config, &running);
    let systems = vec![SystemConfig {
        id: system_id,
        gbfs_url: running.gbfs_url(GbfsVersion::V3_0),
        lat: Some(lat),
        lon: Some(lon),
    }];

    let streams = open_streams(&config).await?;
    let output = Arc::new(stream_output(&streams, clock.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let producers = spawn_producers(
        &systems,
        true,
        &config,
        clock.clone(),
        output.clone(),
        &stop_rx,
    )?;

    let predictions = streams
        .backend
        .reader(bikeshare_stream::names::PREDICTIONS)
        .await?;
    let api = bikeshare_sinks::subscribe::serve(
        config.api.clone(),
        predictions,
        clock.clone(),
        stopped(stop_rx.clone()),
    )
    .await
    .context("starting the subscription API")?;
    eprintln!("predictions: {}  (try: bikeshare subscribe)", api.url());
    let (dashboard, dashboard_state) = crate::app::dashboard::start(
        &config,
        clock.clone(),
        stopped(stop_rx.clone()),
        stopped(stop_rx.clone()),
    )
    .await?;
    eprintln!("dashboard:   {}", dashboard.url());
    let metrics = crate::app::monitoring::start_metrics(&config, stopped(stop_rx.clone())).await?;
    let monitors = crate::app::monitoring::start(&config, clock.clone(), &stop_rx).await?;

    let (runner, feed) = crate::app::runner::build(&config, false, false).await?;
    eprintln!(
        "model:       {} v{}",
        feed.current().model().name,
        feed.current().model().version
    );
    let watcher = feed.spawn(stopped(stop_rx.clone()));
    let stats = runner.stats();
    let runner_stats = stats.clone();
    let _ = dashboard_state.runner.set(stats.clone());
    let latest = runner.latest_predictions();
    // The processor stops within `[runner] shutdown_grace_ms` of the signal (its final
    // checkpoint included, even out of a stalled read) or is abandoned with an error.
    let grace = Duration::from_millis(config.runner.shutdown_grace_ms);
    let processor = tokio::spawn(crate::app::runner::run_with_grace(
        runner,
        stopped(stop_rx.clone()),
        grace,
    ));
    let archiver = if config.lake.enabled {
        let a = crate::app::sinks::archiver(&config, false).await?;
        eprintln!(
            "lake:        {}  (try: bikeshare lake ls)",
            config.lake.location(&config.data_dir.0)
        );
        Some(tokio::spawn(a.run(stopped(stop_rx.clone()))))
    } else {
        None
    };

    let drift = crate::app::drift::DriftTask::spawn_if_lake(
        &config,
        Some(dashboard_state.clone()),
        &stop_rx,
    )?;
    let retention = crate::app::streams::spawn_retention(&config, &stop_rx);

    let summary = tokio::spawn(print_summaries(
        stats,
        latest,
        output.clone(),
        Duration::from_secs(args.summary_every.max(1)),
        stopped(stop_rx.clone()),
    ));
    let keeper = tokio::spawn(keep_city_clock(
        running.clone(),
        data_dir.clone(),
        stopped(stop_rx.clone()),
    ));

    shutdown_signal(args.duration).await;
    let _ = stop_tx.send(true);
    // Everything after the signal is bounded: the processor by its grace period, the whole
    // stop (producers, output, the lake's last epoch, API) by STOP_GRACES of them, so a
    // stalled dependency cannot hold `up` open; an overrun exits non-zero and names what did
    // not stop. (Twice the grace period failed healthy stops of `up` in tests on a loaded
    // machine: the lake's last epoch and the simulator take their time there.)
    let stopping = async {
        for t in producers {
            let _ = t.await;
        }
        // The summary task holds the output too: it must end before the output can be closed.
        let _ = summary.await;
        let output = Arc::try_unwrap(output).map_err(|_| anyhow::anyhow!("output still in use"))?;
        let ingest_dead = output.stats().1.records_sent;
        close_output(output).await?;
        let processor = processor.await.context("processor task")??;
        if let Some(w) = watcher {
            let _ = w.await;
        }
        if let Some(a) = archiver {
            a.await.context("lake archiver task")??;
        }
        if let Some(d) = drift {
            let _ = d.await;
        }
        if let Some(r) = retention {
            let _ = r.await;
        }
        let _ = keeper.await;
        // After the producers: nothing later than this reached the stream.
        save_city_clock(&running, &data_dir);
        let running =
            Arc::try_unwrap(running).map_err(|_| anyhow::anyhow!("simulator still in use"))?;
        running.stop().await.context("stopping the simulator")?;
        api.wait().await;
        dashboard.wait().await;
        if let Some(m) = metrics {
            m.wait().await;
        }
        for t in monitors {
            let _ = t.await;
        }
        anyhow::Ok((processor, ingest_dead))
    };
    let (processor, ingest_dead) = tokio::time::timeout(grace * STOP_GRACES, stopping)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "up did not stop within {STOP_GRACES} times its shutdown grace period \
                     ({grace:?}, [runner] shutdown_grace_ms): a producer, an output or the \
                     lake stalled"
            )
        })??;
    let s = processor.stats();
    eprintln!(
        "stopped: {} events processed, {} predictions, {} labels, {} stations; dead letters: {}; state is in {}",
        s.events,
        s.rows,
        s.labels,
        processor.stations(),
        dead_letters_by_cause(ingest_dead, &runner_stats.dead_letters_by_rule()),
        config.data_dir.0.display()
    );
    Ok(())
}

/// Stores the city's clock twice a second until `stop` (see [`city`]).
async fn keep_city_clock(
    running: Arc<bikeshare_simulator::RunningSimulator>,
    data_dir: std::path::PathBuf,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => save_city_clock(&running, &data_dir),
        }
    }
}

fn save_city_clock(running: &bikeshare_simulator::RunningSimulator, data_dir: &std::path::Path) {
    let clock = city::CityClock {
        sim_time_ms: running.sim_now().millis(),
    };
    if let Err(e) = city::save(data_dir, clock) {
        tracing::warn!(error = %format!("{e:#}"), "storing the city clock");
    }
}

/// `ingest 0, late 3, duplicate 0, decode 0`: the producers' dead letters, then the
/// processor's by rule (the usual three always shown, others when they occur).
fn dead_letters_by_cause(ingest: u64, processor: &BTreeMap<String, u64>) -> String {
    let mut parts = vec![format!("ingest {ingest}")];
    let cause = |rule: &str| rule.strip_prefix("processor.").unwrap_or(rule).to_owned();
    let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
    for (rule, n) in processor {
        *by_cause.entry(cause(rule)).or_default() += n;
    }
    for usual in ["late", "duplicate", "decode"] {
        parts.push(format!("{usual} {}", by_cause.remove(usual).unwrap_or(0)));
    }
    parts.extend(by_cause.iter().map(|(c, n)| format!("{c} {n}")));
    parts.join(", ")
}

async fn print_summaries(
    stats: Arc<RunnerStats>,
    latest: LatestPredictions,
    output: Arc<bikeshare_producers::output::StreamOutput>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut warned_late = false;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let records = stats.records.load(Ordering::Relaxed);
        let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), records);
        let (events, dead) = output.stats();
        let mut top: Vec<_> = latest
            .iter()
            .map(|e| {
                let p = e.value();
                (
                    OrderedFloat(p.p_empty.max(p.p_full)),
                    p.station_id.clone(),
                    p.p_empty,
                    p.p_full,
                    p.as_of,
                )
            })
            .collect();
        top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let sim_time = top.iter().map(|t| t.4).max();
        let by_rule = stats.dead_letters_by_rule();
        let late = by_rule.get("processor.late").copied().unwrap_or(0);
        if late > 0 && !warned_late {
            warned_late = true;
            eprintln!(
                "WARNING:     {late} reports were older than the processor's watermark and were \
                 dropped as late dead letters: the stream in the data directory is ahead of this \
                 city. Start clean with `bikeshare up --fresh`."
            );
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[{}] published {} events | dead letters: {} | processed {:.0} events/s | {} stations | {} predictions, {} labels | lag {} ms",
            sim_time.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
            events.records_sent,
            dead_letters_by_cause(dead.records_sent, &by_rule),
            rate,
            stats.stations.load(Ordering::Relaxed),
            stats.predictions.load(Ordering::Relaxed),
            stats.labels.load(Ordering::Relaxed),
            stats.millis_behind_latest.load(Ordering::Relaxed),
        );
        for (_, station, pe, pf, as_of) in top.iter().take(5) {
            let what = if pe >= pf { "empty" } else { "full" };
            let _ = writeln!(
                out,
                "    risk {:>5.1}% {what:<5}  station {station:<12} as of {as_of}",
                pe.max(*pf) * 100.0
            );
        }
        let _ = out.flush();
    }
}
