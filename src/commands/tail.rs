//! `bikeshare tail`: print a stream's records as JSON lines, merged across shards.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bikeshare_common::stream::embedded::EmbeddedStream;
use bikeshare_common::stream::{ShardCursor, StartPosition, StreamReader, names};

use crate::cli::{TailArgs, TailStream};
use crate::config::Config;

pub async fn run(args: TailArgs, config: Config) -> anyhow::Result<()> {
    let name = match args.stream {
        TailStream::Events => names::EVENTS,
        TailStream::DeadLetters => names::DEAD_LETTERS,
        TailStream::Predictions => names::PREDICTIONS,
        TailStream::Labels => bikeshare_sinks::stream::names::LABELS,
        TailStream::Features => bikeshare_sinks::stream::names::FEATURES,
    };
    let path = config.data_path(&config.stream.path);
    let stream = EmbeddedStream::open_existing(&path, name)
        .await
        .with_context(|| {
            format!(
                "no stream {name:?} in {} yet: start `bikeshare up` or `ingest` first",
                path.display()
            )
        })?;
    let from = if args.from_start {
        StartPosition::TrimHorizon
    } else {
        StartPosition::Latest
    };
    let mut cursors: Vec<Box<dyn ShardCursor>> = Vec::new();
    for shard in stream.list_shards().await? {
        cursors.push(stream.open(&shard.id, from.clone()).await?);
    }
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let mut got = 0;
        for cursor in &mut cursors {
            let batch = cursor.next_batch(1000).await?;
            got += batch.records.len();
            let mut out = stdout.lock();
            for rec in batch.records {
                out.write_all(&rec.data)?;
                out.write_all(b"\n")?;
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(());
                }
            }
            out.flush()?;
        }
        if got == 0 {
            if !args.follow {
                return Ok(());
            }
            // Another process writes: poll.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
