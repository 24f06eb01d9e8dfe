//! `bikeshare replay`: publish a recorded history in event-time order.

use anyhow::Context;
use bikeshare_producers::replay::{ReplayConfig, Replayer, Speed};
use bikeshare_types::SystemId;

use crate::app::streams::{close_output, open_streams, stream_output};
use crate::app::wall_clock;
use crate::cli::ReplayArgs;
use crate::config::Config;

pub async fn run(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let source = crate::app::producers::source(&args.history, &config);
    let mut rc = ReplayConfig::new(SystemId::new(&args.history.system_id));
    rc.time_zone = args.history.time_zone.clone();
    rc.speed = Speed::from_factor(args.speed);
    let clock = wall_clock();
    let replayer = Replayer::new(rc, clock.clone()).context("replay settings")?;
    let streams = open_streams(&config).await?;
    let output = std::sync::Arc::new(stream_output(&streams, clock));
    let probe = {
        let output = output.clone();
        move || {
            let (events, dead) = output.stats();
            crate::app::progress::Reading {
                position: events.records_sent,
                total: None,
                note: format!("published, {} dead letters", dead.records_sent),
            }
        }
    };
    let result = crate::app::progress::while_probing(
        "replaying",
        "events",
        probe,
        replayer.run(&source, output.as_ref()),
    )
    .await;
    let stats = result.context("replay failed")?;
    let output = std::sync::Arc::try_unwrap(output)
        .map_err(|_| anyhow::anyhow!("the stream output is still in use"))?;
    close_output(output).await?;
    tracing::info!(?stats, "replay finished");
    stats.ensure_some_events()?;
    eprintln!(
        "replayed {} rows: {} events, {} dead letters, event time {:?} .. {:?}",
        stats.rows, stats.events, stats.dead_letters, stats.first_event_time, stats.last_event_time
    );
    Ok(())
}
