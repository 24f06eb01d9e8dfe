//! Training at scale: how fast labelled rows load from Parquet, how many bytes each row
//! costs in memory, how long XGBoost rounds take, and the peak resident memory of it all.
//!
//! ```text
//! # rows a backfill wrote (real history):
//! bikeshare backfill --format bluebikes --system-id bluebikes --time-zone America/New_York \
//!   --stations-file $D/stations.csv $D/station_status_2021-0[1-5].csv.bz2 -o rows.parquet
//! cargo run --release -p bikeshare-benches --bin train-bench -- --rows rows.parquet
//! # or N synthetic rows of the default schema (streamed to a temporary Parquet file first,
//! a row group at a time):
//! cargo run --release -p bikeshare-benches --bin train-bench -- --synthetic 20000000 --keep 0.05
//! ```
//!
//! Phases, each printed with its wall time: (1) with `--synthetic`, writing the rows
//! (`RowsWriter`, one row group in memory at a time; not measured as training); (2) loading
//! them (`rows_parquet::read_training_data`, or with `--keep K` `read_training_data_sampled`,
//! which keeps a share K of the easy training rows, weighted, so the table holds only the
//! kept rows: rows/s, resident bytes per row added, and the table's own bytes per row); (3)
//! training one target (went empty) for `--rounds` rounds (no early stopping) on the rows
//! before the last `--valid-days` days, validating on those (XGBoost `hist`, `--nthread`
//! threads), with the time per round; `--easy-negative-keep 0.1` samples the training rows'
//! easy negatives once more, in training. Training is `bikeshare train`'s own path
//! (`TrainingMatrices`, decision 096): the training rows go to XGBoost's external-memory
//! matrix a block at a time and live in cache files (under `--cache-dir`, default $TMPDIR;
//! their size is printed), and the validation rows are scored natively tree by tree. Peak RSS
//! is the process's `VmHWM` (Linux) after each phase; bytes per row are per row of the source,
//! kept or not.
//!
//! Synthetic rows: `--stations` stations, one row per station every 5 minutes; features are
//! uniform, 10 % missing, some exactly 0; went-empty depends on three of them through a
//! logistic link, so trees have something to find; went-full 6 %, empty or full at `as_of`
//! 4 % each: about a fifth of the training rows are hard (kept by every sample; 20 M rows at
//! `--keep 0.05` keep 6.4 M), more than Bluebikes' 8 % in January–May 2021, so a pessimistic
//! case for sampling. Memory and speed depend on the row count, the width and that share, not
//! on what the values mean; real rows (`--rows`) give real missing patterns.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use bikeshare_models::dataset::{SplitConfig, Target};
use bikeshare_models::external::bytes_under;
use bikeshare_models::rows_parquet::{
    RowsWriter, Sampling, count_rows, read_training_data, read_training_data_sampled,
};
use bikeshare_models::training::{IN_MEMORY_MAX_BYTES, TrainParams, TrainingMatrices};
use bikeshare_stream_processor::backfill::TrainingRow;
use bikeshare_stream_processor::processor::FeatureRow;
use bikeshare_stream_processor::{FeatureSchema, ProcessorConfig};
use bikeshare_types::contracts::{
    FeatureVector, LABEL_SCHEMA_VERSION, Label, Prediction, PredictionTrigger,
};
use bikeshare_types::{StationId, SystemId, Timestamp};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// A Parquet rows file written by `bikeshare backfill -o *.parquet`.
    #[arg(long, conflicts_with = "synthetic")]
    rows: Option<PathBuf>,
    /// Generate this many synthetic rows instead.
    #[arg(long)]
    synthetic: Option<usize>,
    /// Write the synthetic rows to this file (kept for later `--rows` runs) instead of a
    /// temporary one.
    #[arg(long, requires = "synthetic")]
    synthetic_file: Option<PathBuf>,
    /// Stations of the synthetic rows.
    #[arg(long, default_value_t = 2000)]
    stations: usize,
    /// Boosting rounds to time (no early stopping).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    #[arg(long, default_value_t = 2)]
    nthread: u32,
    /// Skip training (load only).
    #[arg(long)]
    load_only: bool,
    /// Keep this share of the easy negatives of the training rows (weighted), in training.
    #[arg(long, default_value_t = 1.0)]
    easy_negative_keep: f64,
    /// Keep this share of the easy training rows while loading (weighted; decision 089).
    #[arg(long, default_value_t = 1.0)]
    keep: f64,
    /// Days at the end of the rows to validate on (the rest trains).
    #[arg(long, default_value_t = 3)]
    valid_days: u32,
    /// Where XGBoost's external-memory cache goes (a temporary directory inside it, removed
    /// after training); default $TMPDIR.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// XGBoost keeps the training rows in memory while its copy (12 bytes a value) takes at
    /// most this many MB, else uses external memory (default `bikeshare train`'s, 1024); 0
    /// always uses external memory.
    #[arg(long, default_value_t = IN_MEMORY_MAX_BYTES >> 20)]
    in_memory_max_mb: u64,
}

/// The process's peak and current resident set, bytes (Linux `/proc/self/status`).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn gb(b: u64) -> f64 {
    b as f64 / 1e9
}

fn write_synthetic(path: &std::path::Path, n: usize, stations: usize) -> anyhow::Result<()> {
    let schema = FeatureSchema::current(&ProcessorConfig::default().window_minutes);
    let mut w = RowsWriter::create(path, &schema)?;
    let system = SystemId::new("synthetic");
    let ids: Vec<StationId> = (0..stations.max(1))
        .map(|i| StationId::new(format!("s{i}")))
        .collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut u = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    let t0 = 1_717_200_000_000i64;
    for k in 0..n {
        let station = &ids[k % ids.len()];
        let as_of = Timestamp(t0 + (k / ids.len()) as i64 * 300_000);
        let values: Vec<Option<f32>> = (0..schema.len())
            .map(|_| {
                let r = u();
                if r < 0.1 {
                    None
                } else if r < 0.15 {
                    Some(0.0)
                } else {
                    Some(u() * 20.0)
                }
            })
            .collect();
        let z = 0.3 * values[0].unwrap_or(5.0) - 0.2 * values[1].unwrap_or(5.0)
            + 0.1 * values[2].unwrap_or(0.0)
            - 3.0;
        let went = u() < 1.0 / (1.0 + (-(z - 2.5)).exp());
        let prediction_id = Prediction::id_for(&system, station, as_of, 30);
        let row = TrainingRow {
            row: FeatureRow {
                vector: FeatureVector {
                    system_id: system.clone(),
                    station_id: station.clone(),
                    as_of,
                    schema_id: schema.id().clone(),
                    values,
                },
                trigger: PredictionTrigger::Tick,
                prediction_id: prediction_id.clone(),
                horizon_minutes: 30,
                revision: 0,
            },
            label: Label {
                schema_version: LABEL_SCHEMA_VERSION,
                prediction_id,
                system_id: system.clone(),
                station_id: station.clone(),
                as_of,
                horizon_minutes: 30,
                went_empty: went,
                went_full: u() < 0.06,
                empty_at_as_of: u() < 0.04,
                full_at_as_of: u() < 0.04,
                observations: 1,
            },
        };
        w.push(&row)?;
    }
    w.finish()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let path = match (&args.rows, args.synthetic) {
        (Some(p), _) => p.clone(),
        (None, Some(n)) => {
            let p = args
                .synthetic_file
                .clone()
                .unwrap_or_else(|| tmp.path().join("rows.parquet"));
            let started = Instant::now();
            write_synthetic(&p, n, args.stations)?;
            let bytes = std::fs::metadata(&p)?.len();
            println!(
                "write    {n} synthetic rows in {:.1} s ({:.0} rows/s), {:.1} bytes/row on disk",
                started.elapsed().as_secs_f64(),
                n as f64 / started.elapsed().as_secs_f64(),
                bytes as f64 / n.max(1) as f64
            );
            p
        }
        (None, None) => anyhow::bail!("give --rows FILE or --synthetic N"),
    };
    let (_, before) = rss();
    let started = Instant::now();
    let split_config = SplitConfig {
        valid_days: args.valid_days,
        test_days: 0,
        gap_minutes: None,
        min_rows: 0,
    };
    let source_rows = usize::try_from(count_rows(&path)?)?;
    let data = if args.keep < 1.0 {
        read_training_data_sampled(
            &path,
            30,
            &Sampling {
                keep: args.keep,
                seed: 0,
                split: split_config.clone(),
            },
        )
    } else {
        read_training_data(&path, 30)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    let load_s = started.elapsed().as_secs_f64();
    let (peak, after) = rss();
    let n = data.len();
    let width = data.num_features();
    println!(
        "load     {source_rows} rows x {width} features in {load_s:.1} s: {:.0} rows/s; kept {n} \
         (--keep {}); resident +{:.0} bytes/row read (the matrix {} bytes/row kept + keys); peak RSS {:.2} GB",
        source_rows as f64 / load_s,
        args.keep,
        after.saturating_sub(before) as f64 / source_rows.max(1) as f64,
        width * 4,
        gb(peak)
    );
    if args.load_only {
        return Ok(());
    }
    let split = data.split(&split_config)?;
    let (train, valid) = (split.train.clone(), split.valid.start..n);
    let cut = train.len();
    let params = TrainParams {
        max_rounds: args.rounds,
        early_stopping_rounds: 0,
        nthread: args.nthread,
        easy_negative_keep: args.easy_negative_keep,
        ..TrainParams::default()
    };
    // XGBoost's external-memory cache goes in a directory of the bench's own, so its size
    // can be measured (`bikeshare train` puts it under $TMPDIR).
    let cache = match &args.cache_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let started = Instant::now();
    let mut first_round = None;
    let mut cache_bytes = 0u64;
    let b = TrainingMatrices::new(&data, train, &params, &[])
        .cache_in(cache.path())
        .in_memory_up_to(args.in_memory_max_mb << 20)
        .train(Target::WentEmpty, valid.clone(), &params, &mut |p| {
            if p.round == 0 {
                first_round = Some(started.elapsed().as_secs_f64());
                cache_bytes = bytes_under(cache.path());
            }
        })?;
    let train_s = started.elapsed().as_secs_f64();
    let (peak, _) = rss();
    let first = first_round.unwrap_or(0.0);
    let left = bytes_under(cache.path());
    println!(
        "train    {} rounds on {cut} rows, validating on {} in {train_s:.1} s (matrix and first round {first:.1} s, then {:.2} s/round), \
         validation log loss {:.5}; peak RSS {:.2} GB ({:.0} bytes per row read); \
         external-memory cache {:.2} GB ({:.0} bytes per training row), {left} bytes left after training",
        b.rounds,
        valid.len(),
        (train_s - first) / f64::from(b.rounds.saturating_sub(1).max(1)),
        b.best_valid_log_loss,
        gb(peak),
        peak as f64 / source_rows.max(1) as f64,
        gb(cache_bytes),
        cache_bytes as f64 / cut.max(1) as f64,
    );
    println!(
        "total    {:.1} s from load to trained ({:.0} rows/s of the source)",
        load_s + train_s,
        source_rows as f64 / (load_s + train_s)
    );
    Ok(())
}
