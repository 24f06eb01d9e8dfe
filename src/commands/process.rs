//! `bikeshare process`: the stream processor over the `events` stream of the configured
//! backend (embedded or Kinesis, see [`crate::app::streams`]), with its checkpoint store (local
//! directory or S3) and its lease store (memory for one instance, DynamoDB for several
//! instances sharing the shards); outputs go to streams and,
//! unless `[lake] enabled = false`, to the Parquet lake. After SIGTERM or Ctrl-C it stops
//! within `[runner] shutdown_grace_ms` (final checkpoint included), or exits non-zero.
//!
//! A live run scores each report when it arrives (`[processor] score_on_arrival`, on by
//! default); a bounded run (`--until-caught-up`: a replay, a backfill into the streams) scores
//! at the watermark only, so its outputs hold one row per prediction id: nobody waits for its
//! rows, and its answers by id are the same either way (decision 083).

use crate::app::runner::{build, run_with_grace};

use tokio::sync::watch;

use crate::app::{shutdown_signal, wall_clock};
use crate::cli::ProcessArgs;
use crate::config::Config;

pub async fn run(args: ProcessArgs, mut config: Config) -> anyhow::Result<()> {
    if args.until_caught_up && config.processor.score_on_arrival {
        tracing::info!("bounded run (--until-caught-up): reports are scored at the watermark");
        config.processor.score_on_arrival = false;
    }
    let (runner, feed) = build(&config, args.features, args.until_caught_up).await?;
    let stats = runner.stats();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watcher_stop = stop_rx.clone();
    let watcher = feed.spawn(async move {
        let _ = watcher_stop.wait_for(|s| *s).await;
    });
    let metrics =
        crate::app::monitoring::start_metrics(&config, crate::app::stopped(stop_rx.clone()))
            .await?;
    let monitors = crate::app::monitoring::start(&config, wall_clock(), &stop_rx).await?;
    let drift = crate::app::drift::DriftTask::spawn_if_lake(&config, None, &stop_rx)?;
    let retention = crate::app::streams::spawn_retention(&config, &stop_rx);
    let progress = {
        let stats = stats.clone();
        let mut first = None;
        crate::app::progress::spawn(
            "processing",
            "s of lag",
            move || {
                use std::sync::atomic::Ordering::Relaxed;
                crate::app::progress::catching_up(
                    &mut first,
                    stats.millis_behind_latest.load(Relaxed),
                    stats.records.load(Relaxed),
                )
            },
            crate::app::stopped(stop_rx.clone()),
        )
    };
    let grace = std::time::Duration::from_millis(config.runner.shutdown_grace_ms);
    let processor = run_with_grace(runner, shutdown_signal(args.duration), grace).await;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics {
        m.wait().await;
    }
    for t in monitors {
        let _ = t.await;
    }
    if let Some(d) = drift {
        let _ = d.await;
    }
    if let Some(r) = retention {
        let _ = r.await;
    }
    if let Some(w) = watcher {
        let _ = w.await;
    }
    let _ = progress.await;
    let processor = processor?;
    let s = processor.stats();
    tracing::info!(?s, "processor stopped");
    eprintln!(
        "processed {} records: {} predictions, {} labels, {} late, {} duplicates; {} stations",
        stats.records.load(std::sync::atomic::Ordering::Relaxed),
        s.rows,
        s.labels,
        s.late,
        s.duplicates,
        processor.stations()
    );
    Ok(())
}
