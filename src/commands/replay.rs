//! `bikeshare replay`: publish a recorded history in event-time order.

use anyhow::Context;
use bikeshare_common::SystemId;
use bikeshare_producers::replay::{ReplayConfig, ReplaySource, Replayer, Speed};

use super::{close_output, open_streams, stream_output, wall_clock};
use crate::cli::{HistoryArgs, ReplayArgs, ReplayFormat};
use crate::config::Config;

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

pub async fn run(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let source = source(&args.history, &config);
    let mut rc = ReplayConfig::new(SystemId::new(&args.history.system_id));
    rc.speed = Speed::from_factor(args.speed);
    let clock = wall_clock();
    let replayer = Replayer::new(rc, clock.clone()).context("replay settings")?;
    let streams = open_streams(&config).await?;
    let output = stream_output(&streams, clock);
    let stats = replayer
        .run(&source, &output)
        .await
        .context("replay failed")?;
    close_output(output).await?;
    tracing::info!(?stats, "replay finished");
    eprintln!(
        "replayed {} rows: {} events, {} dead letters, event time {:?} .. {:?}",
        stats.rows, stats.events, stats.dead_letters, stats.first_event_time, stats.last_event_time
    );
    Ok(())
}
