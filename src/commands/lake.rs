//! `bikeshare lake`: list the Parquet lake, or archive the input streams into it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_common::checkpoint::LocalCheckpointStore;
use bikeshare_common::stream::names;
use bikeshare_lake::archive::{Archiver, ArchiverConfig};
use bikeshare_lake::sinks::{LakeOutputs, LakeSinks};
use bikeshare_lake::{Dataset, EpochWriter, open_store};

use super::streams::Backend;
use super::{shutdown_signal, wall_clock};
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

/// The archiver of the configured streams into the configured lake.
pub async fn archiver(config: &Config, until_caught_up: bool) -> anyhow::Result<Archiver> {
    let backend = Backend::from_config(config).await?;
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let firehose =
        super::process::firehose_sinks(config, super::process::FirehoseRole::Archiver).await;
    let archiver = Archiver::new(
        backend.reader(names::EVENTS).await?,
        backend.reader(names::DEAD_LETTERS).await?,
        Arc::new(LocalCheckpointStore::new(
            config.data_path(&config.lake.checkpoint_dir),
        )),
        EpochWriter::new(store, config.lake.writer_id("archive")?),
        wall_clock(),
        ArchiverConfig {
            batch: config.runner.batch,
            checkpoint_interval: Duration::from_millis(config.lake.checkpoint_interval_ms),
            stop_when_caught_up: until_caught_up,
            ..ArchiverConfig::default()
        },
    );
    Ok(match firehose {
        Some(tap) => archiver.with_tap(tap),
        None => archiver,
    })
}

/// The processor's lake sinks (features, predictions, labels; dead letters reach the lake
/// through the `dead-letters` stream and the archiver), or `None` when the lake is off.
pub fn processor_sinks(config: &Config) -> anyhow::Result<Option<LakeSinks>> {
    if !config.lake.enabled {
        return Ok(None);
    }
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let sinks = LakeSinks::new(
        store,
        config.lake.writer_id("processor")?,
        LakeOutputs {
            features: true,
            dead_letters: false,
        },
    );
    let monitor = &config.lake.model_monitor;
    Ok(Some(if monitor.enabled {
        sinks.with_model_monitor(monitor.clone())
    } else {
        sinks
    }))
}
