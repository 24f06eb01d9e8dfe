//! `bikeshare backfill`: a history through the processor, offline, into training rows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use bikeshare_models::rows_parquet::{RowsWriter, is_parquet};
use bikeshare_producers::output::{Output, OutputError};
use bikeshare_producers::replay::{ReplayConfig, Replayer};
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_stream_processor::Processor;
use bikeshare_stream_processor::backfill::{
    Backfill, TrainingRow, write_csv_header, write_csv_row,
};
use bikeshare_types::SystemId;
use bikeshare_types::contracts::{DeadLetter, Envelope};

use crate::app::wall_clock;
use crate::cli::BackfillArgs;
use crate::config::Config;

/// Where the rows go: CSV, or Parquet (`-o *.parquet`: columnar, what `train` reads
/// fastest).
enum RowSink {
    Csv(BufWriter<File>),
    Parquet(Box<RowsWriter>),
}

impl RowSink {
    fn create(path: &std::path::Path, schema: &FeatureSchema) -> anyhow::Result<Self> {
        if is_parquet(path) {
            return Ok(Self::Parquet(Box::new(RowsWriter::create(path, schema)?)));
        }
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = BufWriter::new(file);
        write_csv_header(&mut writer, schema)?;
        Ok(Self::Csv(writer))
    }

    fn write(&mut self, row: &TrainingRow) -> std::io::Result<()> {
        match self {
            Self::Csv(w) => write_csv_row(w, row),
            Self::Parquet(w) => w.push(row).map_err(std::io::Error::other),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Self::Csv(mut w) => {
                w.flush().context("writing rows")?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            Self::Parquet(w) => {
                w.finish()?;
            }
        }
        Ok(())
    }
}

/// Replayed events go straight into the backfill; rows into the file.
struct BackfillOutput {
    inner: Mutex<(Backfill, RowSink, u64, Option<std::io::Error>)>,
    /// Events taken so far, for the progress bar.
    events: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for BackfillOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackfillOutput")
    }
}

#[async_trait]
impl Output for BackfillOutput {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
        let mut guard = self.inner.lock().map_err(|_| OutputError::Closed)?;
        let (backfill, writer, _, error) = &mut *guard;
        self.events
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for env in events {
            backfill.push(env, &mut |row| {
                if error.is_none()
                    && let Err(e) = writer.write(&row)
                {
                    *error = Some(e);
                }
            });
        }
        match error.take() {
            Some(e) => Err(OutputError::Publish(format!("writing rows: {e}"))),
            None => Ok(()),
        }
    }

    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError> {
        let mut guard = self.inner.lock().map_err(|_| OutputError::Closed)?;
        guard.2 += dead_letters.len() as u64;
        Ok(())
    }
}

/// The live job's processor settings for a replay that the replayer hands over in event-time
/// order: no reorder buffer (lateness 0, the in-order fast path) and no early firing (the
/// update trigger's early rows are replaced by their on-time rows, the only ones a training
/// row keeps). Neither changes a feature or a label: in-order input gives the same answers
/// with any lateness and with the trigger on or off (the processor's golden test), so the
/// rows are those of the configured processor, computed once instead of up to twice, without
/// copying a station per buffered report or holding two minutes of envelopes.
fn offline(
    live: &bikeshare_stream_processor::ProcessorConfig,
) -> bikeshare_stream_processor::ProcessorConfig {
    bikeshare_stream_processor::ProcessorConfig {
        lateness_ms: 0,
        score_on_arrival: false,
        ..live.clone()
    }
}

pub async fn run(args: BackfillArgs, config: Config) -> anyhow::Result<()> {
    let source = crate::app::producers::source(&args.history, &config);
    let mut rc = ReplayConfig::new(SystemId::new(&args.history.system_id));
    rc.time_zone = args.history.time_zone.clone();
    let replayer = Replayer::new(rc, wall_clock()).context("replay settings")?;
    let backfill = Backfill::new(Processor::new(offline(&config.processor)));
    let writer = RowSink::create(&args.output, backfill.schema())?;
    let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let output = BackfillOutput {
        inner: Mutex::new((backfill, writer, 0, None)),
        events: events.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let progress = crate::app::progress::spawn(
        "backfilling",
        "events",
        move || crate::app::progress::Reading {
            position: events.load(std::sync::atomic::Ordering::Relaxed),
            total: None,
            note: String::new(),
        },
        crate::app::stopped(stop_rx),
    );
    let replay = replayer.run(&source, &output).await;
    let _ = stop_tx.send(true);
    let _ = progress.await;
    let replay = match replay.context("reading the history").and_then(|r| {
        r.ensure_some_events()?;
        Ok(r)
    }) {
        Ok(r) => r,
        Err(e) => {
            // No half-written rows file is left behind to be trained on.
            let _ = std::fs::remove_file(&args.output);
            return Err(e);
        }
    };
    let (backfill, mut writer, dead_letters, _) = output
        .inner
        .into_inner()
        .map_err(|_| anyhow::anyhow!("backfill state poisoned"))?;
    let mut tail_err = None;
    let stats = backfill.finish(&mut |row| {
        if let Err(e) = writer.write(&row) {
            tail_err.get_or_insert(e);
        }
    });
    if let Some(e) = tail_err {
        return Err(e).context("writing rows");
    }
    writer.finish()?;
    eprintln!(
        "backfill: {} events ({} dead letters while reading) -> {} labelled rows in {} ({} rows without a label yet, {} late, {} duplicates)",
        replay.events,
        dead_letters,
        stats.rows,
        args.output.display(),
        stats.unlabelled,
        stats.late,
        stats.duplicates
    );
    Ok(())
}
