//! `bikeshare replay`: publish a recorded history in event-time order.

use anyhow::Context;
use bikeshare_common::SystemId;
use bikeshare_producers::replay::{ReplayConfig, ReplaySource, Replayer, Speed};

use super::{close_output, open_streams, stream_output, wall_clock};
use crate::cli::{ReplayArgs, ReplayFormat};
use crate::config::Config;

pub async fn run(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let files = args.files.clone();
    let source = match args.format {
        ReplayFormat::Bluebikes => ReplaySource::Bluebikes {
            status_files: files,
            stations: args.stations.clone(),
        },
        ReplayFormat::Jsonl => ReplaySource::Jsonl { files },
        ReplayFormat::Snapshots => ReplaySource::Snapshots {
            files,
            station_information: args.stations.clone().into_iter().collect(),
        },
    };
    let mut rc = ReplayConfig::new(SystemId::new(&args.system_id));
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
