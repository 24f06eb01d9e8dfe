//! `bikeshare lake`: list the Parquet lake, or archive the input streams into it.

use crate::app::sinks::archiver;
use std::io::Write;

use bikeshare_lake::{Dataset, open_store};

use crate::app::shutdown_signal;
use crate::cli::{LakeArgs, LakeCommand};
use crate::config::Config;

pub async fn run(args: LakeArgs, config: Config) -> anyhow::Result<()> {
    match args.command {
        LakeCommand::Ls { dataset } => list(&config, dataset.as_deref()).await,
        LakeCommand::Write {
            until_caught_up,
            duration,
        } => {
            let archiver = archiver(&config, until_caught_up).await?;
            let stats = archiver.stats();
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let progress = {
                let stats = stats.clone();
                crate::app::progress::spawn(
                    "archiving",
                    "records",
                    move || {
                        let s = stats.snapshot();
                        crate::app::progress::Reading {
                            position: s.events + s.dead_letters,
                            total: None,
                            note: format!("{} files", s.files),
                        }
                    },
                    crate::app::stopped(stop_rx),
                )
            };
            let archived = archiver.run(shutdown_signal(duration)).await;
            let _ = stop_tx.send(true);
            let _ = progress.await;
            archived?;
            // The archiver is a consumer of the embedded stream: trim what it has now passed.
            // Its rows are in the lake whatever happens here: a failed trim is only logged.
            if let Err(e) = crate::app::streams::trim_streams(&config).await {
                tracing::warn!(error = %format!("{e:#}"), "stream retention: trim failed");
            }
            let s = stats.snapshot();
            eprintln!(
                "archived {} events and {} dead letters into {} ({} epochs, {} files, {} undecodable records skipped)",
                s.events,
                s.dead_letters,
                config.lake.location(&config.data_dir.0),
                s.epochs,
                s.files,
                s.undecodable,
            );
            Ok(())
        }
    }
}

async fn list(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    use bikeshare_lake::catalog::MonitorTree;
    let monitor = &config.lake.model_monitor;
    let (only, only_monitor) = match only {
        Some(name) => match (Dataset::from_name(name), MonitorTree::from_name(name)) {
            (Some(d), _) => (Some(d), None),
            (None, Some(t)) => (None, Some(t)),
            (None, None) => {
                let all: Vec<_> = Dataset::ALL
                    .iter()
                    .map(|d| d.name())
                    .chain(MonitorTree::ALL.iter().map(|t| t.name()))
                    .collect();
                anyhow::bail!("unknown dataset {name:?}; datasets: {}", all.join(", "));
            }
        },
        None => (None, None),
    };
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let parts = bikeshare_lake::catalog::partitions(&store).await?;
    let monitor_parts = bikeshare_lake::catalog::monitor_partitions(&store, monitor).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "lake: {}", config.lake.location(&config.data_dir.0))?;
    for d in Dataset::ALL
        .into_iter()
        .filter(|d| only_monitor.is_none() && only.is_none_or(|o| o == *d))
    {
        let mine: Vec<_> = parts.iter().filter(|p| p.dataset == d).collect();
        let rows: u64 = mine.iter().map(|p| p.rows).sum();
        let bytes: u64 = mine.iter().map(|p| p.bytes).sum();
        let files: usize = mine.iter().map(|p| p.files).sum();
        writeln!(
            out,
            "{d}: {} partitions, {files} files, {rows} rows, {bytes} bytes",
            mine.len()
        )?;
        for p in mine {
            writeln!(
                out,
                "  {d}/{}  {:>5} files {:>10} rows {:>12} bytes",
                p.hour.path(),
                p.files,
                p.rows,
                p.bytes
            )?;
        }
    }
    // Model Monitor's JSON lines (rows = lines), sampled at `sampling_percentage`.
    for t in MonitorTree::ALL
        .into_iter()
        .filter(|t| only.is_none() && only_monitor.is_none_or(|o| o == *t))
    {
        let mine: Vec<_> = monitor_parts.iter().filter(|p| p.tree == t).collect();
        let rows: u64 = mine.iter().map(|p| p.rows).sum();
        let bytes: u64 = mine.iter().map(|p| p.bytes).sum();
        let files: usize = mine.iter().map(|p| p.files).sum();
        writeln!(
            out,
            "{t} ({}, {}% sampled): {} partitions, {files} files, {rows} rows, {bytes} bytes",
            t.root(monitor),
            monitor.sampling_percentage,
            mine.len()
        )?;
        for p in mine {
            writeln!(
                out,
                "  {t}/{}  {:>5} files {:>10} rows {:>12} bytes",
                p.hour.path(),
                p.files,
                p.rows,
                p.bytes
            )?;
        }
    }
    Ok(())
}
