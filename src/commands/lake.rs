//! `bikeshare lake`: list the Parquet lake, or archive the input streams into it.

use crate::app::sinks::archiver;
use std::io::Write;

use anyhow::Context;
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
            archiver.run(shutdown_signal(duration)).await?;
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "archived {} events and {} dead letters into {} ({} epochs, {} files, {} undecodable records skipped)",
                n(&stats.events),
                n(&stats.dead_letters),
                config.lake.location(&config.data_dir.0),
                n(&stats.epochs),
                n(&stats.files),
                n(&stats.undecodable),
            );
            Ok(())
        }
    }
}

async fn list(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    let only = match only {
        Some(name) => Some(Dataset::from_name(name).with_context(|| {
            let all: Vec<_> = Dataset::ALL.iter().map(|d| d.name()).collect();
            format!("unknown dataset {name:?}; datasets: {}", all.join(", "))
        })?),
        None => None,
    };
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let parts = bikeshare_lake::catalog::partitions(&store).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "lake: {}", config.lake.location(&config.data_dir.0))?;
    for d in Dataset::ALL
        .into_iter()
        .filter(|d| only.is_none_or(|o| o == *d))
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
    Ok(())
}
