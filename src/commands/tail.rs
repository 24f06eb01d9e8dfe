//! `bikeshare tail`: print a stream's records (embedded or Kinesis) as JSON lines, merged
//! across shards.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_embedded::EmbeddedStream;
use bikeshare_stream::consumer::{ConsumerConfig, ShardConsumer};
use bikeshare_stream::{StartPosition, StreamReader, names};

use crate::app::streams::Backend;
use crate::cli::{TailArgs, TailStream};
use crate::config::{Config, StreamBackend};

pub async fn run(args: TailArgs, config: Config) -> anyhow::Result<()> {
    let name = match args.stream {
        TailStream::Events => names::EVENTS,
        TailStream::DeadLetters => names::DEAD_LETTERS,
        TailStream::Predictions => names::PREDICTIONS,
        TailStream::Labels => bikeshare_sinks::stream::names::LABELS,
        TailStream::Features => bikeshare_sinks::stream::names::FEATURES,
    };
    let stream: Arc<dyn StreamReader> = match config.stream.backend {
        StreamBackend::Embedded => {
            let path = config.data_path(&config.stream.path);
            Arc::new(
                EmbeddedStream::open_existing(&path, name)
                    .await
                    .with_context(|| {
                        format!(
                            "no stream {name:?} in {} yet: start `bikeshare up` or `ingest` first",
                            path.display()
                        )
                    })?,
            )
        }
        StreamBackend::Kinesis => Backend::from_config(&config).await?.reader(name).await?,
    };
    let from = if args.from_start {
        StartPosition::TrimHorizon
    } else {
        StartPosition::Latest
    };
    // Parents before children across reshards, like any consumer.
    let mut consumer = ShardConsumer::new(
        stream,
        BTreeMap::new(),
        ConsumerConfig {
            initial: from,
            discovery_interval: Duration::from_secs(10),
        },
    );
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let poll = consumer.poll(1000).await?;
        let got = poll.records();
        // At the end only when every shard read answered "nothing, and nothing behind"
        // (an empty Kinesis read alone does not mean the shard is read).
        let at_tip = poll
            .shards
            .iter()
            .all(|p| p.ended || p.millis_behind_latest == Some(0));
        let mut out = stdout.lock();
        for part in poll.shards {
            for rec in part.records {
                out.write_all(&rec.data)?;
                out.write_all(b"\n")?;
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    out.flush()?;
                    return Ok(());
                }
            }
        }
        out.flush()?;
        drop(out);
        if got == 0 && !poll.changed {
            if !args.follow && at_tip {
                return Ok(());
            }
            // Another process writes: poll.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
