//! `bikeshare lake`: list the Parquet lake, or archive the input streams into it.

use crate::app::sinks::archiver;
use std::io::Write;

use bikeshare_lake::layout::Hour;
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
            let probe = {
                let stats = stats.clone();
                move || {
                    let s = stats.snapshot();
                    crate::app::progress::Reading {
                        position: s.events + s.dead_letters,
                        total: None,
                        note: format!("{} files", s.files),
                    }
                }
            };
            let archived = crate::app::progress::while_probing(
                "archiving",
                "records",
                probe,
                archiver.run(shutdown_signal(duration)),
            )
            .await;
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
        let mine: Vec<_> = parts
            .iter()
            .filter(|p| p.dataset == d)
            .map(|p| (p.hour, p.files, p.rows, p.bytes))
            .collect();
        write_partitions(&mut out, d.name(), d.name(), &mine)?;
    }
    // Model Monitor's JSON lines (rows = lines), sampled at `sampling_percentage`.
    for t in MonitorTree::ALL
        .into_iter()
        .filter(|t| only.is_none() && only_monitor.is_none_or(|o| o == *t))
    {
        let mine: Vec<_> = monitor_parts
            .iter()
            .filter(|p| p.tree == t)
            .map(|p| (p.hour, p.files, p.rows, p.bytes))
            .collect();
        let heading = format!(
            "{t} ({}, {}% sampled)",
            t.root(monitor),
            monitor.sampling_percentage
        );
        write_partitions(&mut out, t.name(), &heading, &mine)?;
    }
    Ok(())
}

/// A dataset's (or Model Monitor tree's) totals under `heading`, then a line per hourly
/// partition of `name`: (hour, files, rows, bytes).
fn write_partitions(
    out: &mut impl Write,
    name: &str,
    heading: &str,
    partitions: &[(Hour, usize, u64, u64)],
) -> std::io::Result<()> {
    let files: usize = partitions.iter().map(|p| p.1).sum();
    let rows: u64 = partitions.iter().map(|p| p.2).sum();
    let bytes: u64 = partitions.iter().map(|p| p.3).sum();
    writeln!(
        out,
        "{heading}: {} partitions, {files} files, {rows} rows, {bytes} bytes",
        partitions.len()
    )?;
    for (hour, files, rows, bytes) in partitions {
        writeln!(
            out,
            "  {name}/{}  {files:>5} files {rows:>10} rows {bytes:>12} bytes",
            hour.path()
        )?;
    }
    Ok(())
}
