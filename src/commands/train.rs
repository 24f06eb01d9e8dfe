//! `bikeshare train`: labelled rows → two XGBoost models, evaluated against the baselines,
//! written as a model directory.

use std::fs::File;
use std::io::BufReader;
use std::sync::Mutex;

use anyhow::Context;
use async_trait::async_trait;
use bikeshare_models::dataset::{EventsLoader, TrainingData};
use bikeshare_models::eval::render;
use bikeshare_models::model_dir::save_dir;
use bikeshare_models::promote::HeldOut;
use bikeshare_models::registry::Stage;
use bikeshare_models::training::{Progress, RunInfo, ablate, feature_group, train_models};
use bikeshare_producers::output::{Output, OutputError};
use bikeshare_producers::replay::{ReplayConfig, Replayer};
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::contracts::{DeadLetter, Envelope};
use bikeshare_types::{SystemId, Timestamp};

use crate::app::wall_clock;
use crate::cli::{HistoryArgs, TrainArgs};
use crate::config::Config;

/// Replayed events straight into the backfill loader.
struct LoaderOutput {
    inner: Mutex<(EventsLoader, u64)>,
}

impl std::fmt::Debug for LoaderOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoaderOutput")
    }
}

#[async_trait]
impl Output for LoaderOutput {
    async fn events(&self, events: Vec<Envelope>) -> Result<(), OutputError> {
        let mut guard = self.inner.lock().map_err(|_| OutputError::Closed)?;
        for env in events {
            guard.0.push(env);
        }
        Ok(())
    }

    async fn dead_letters(&self, dead_letters: Vec<DeadLetter>) -> Result<(), OutputError> {
        let mut guard = self.inner.lock().map_err(|_| OutputError::Closed)?;
        guard.1 += dead_letters.len() as u64;
        Ok(())
    }
}

/// Prints progress every 10 rounds and when a target stops.
fn print_progress(p: Progress) {
    if p.done || p.round.is_multiple_of(10) {
        eprintln!(
            "  {:?}: round {:>4}/{}  validation log loss {:.5}  (best {:.5} at round {}){}",
            p.target,
            p.round + 1,
            p.max_rounds,
            p.valid_log_loss,
            p.best_log_loss,
            p.best_round + 1,
            if p.done { "  done" } else { "" }
        );
    }
}

async fn load(
    args: &TrainArgs,
    config: &Config,
    now: Timestamp,
) -> anyhow::Result<(TrainingData, String)> {
    let horizon = config.processor.horizon_minutes;
    if let Some(path) = &args.rows {
        if bikeshare_models::rows_parquet::is_parquet(path) {
            let keep = args
                .easy_negative_keep
                .unwrap_or(config.train.params.easy_negative_keep);
            let sampling = bikeshare_models::rows_parquet::Sampling {
                keep,
                seed: config.train.params.seed,
                split: config.train.split.clone(),
            };
            eprintln!(
                "reading {} (Parquet, column by column{})",
                path.display(),
                if keep < 1.0 {
                    format!("; keeping {keep} of the training rows easy for both targets, weighted")
                } else {
                    String::new()
                }
            );
            let path = path.clone();
            let started = std::time::Instant::now();
            let data = tokio::task::spawn_blocking(move || {
                bikeshare_models::rows_parquet::read_training_data_sampled(
                    &path, horizon, &sampling,
                )
            })
            .await
            .context("reading task")??;
            eprintln!(
                "read {} rows in {:.1} s",
                data.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok((
                data,
                format!(
                    "backfill rows {}",
                    args.rows
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let data = TrainingData::from_backfill_csv(
            BufReader::new(file),
            &path.display().to_string(),
            horizon,
        )?;
        return Ok((data, format!("backfill rows {}", path.display())));
    }
    if let Some(days) = args.simulate_days {
        anyhow::ensure!(days >= 1, "--simulate-days must be at least 1");
        let mut city = config.simulator.city.clone();
        if let Some(n) = args.sim_stations {
            city.stations = n;
        }
        let to = now.floor_to(Timestamp::MINUTE_MS);
        let from = to.plus_millis(-i64::from(days) * 24 * Timestamp::HOUR_MS);
        let processor = config.processor.clone();
        let source = format!(
            "simulated city {} (seed {}, {} stations), {days} days from {from} to {to}",
            city.system_id, city.seed, city.stations
        );
        let (data, stats) = tokio::task::spawn_blocking(move || {
            let events = bikeshare_simulator::history(&city, from, to)?;
            anyhow::Ok(TrainingData::from_events(processor, events)?)
        })
        .await
        .context("backfill task")??;
        eprintln!(
            "backfill: {} events -> {} labelled rows ({} without a label yet)",
            stats.events, stats.rows, stats.unlabelled
        );
        return Ok((data, source));
    }
    let format = args
        .format
        .ok_or_else(|| anyhow::anyhow!("--history needs --format"))?;
    let history = HistoryArgs {
        files: args.history.clone(),
        format,
        system_id: args.system_id.clone(),
        stations: args.history_stations.clone(),
        time_zone: args.time_zone.clone(),
    };
    let source = crate::app::producers::source(&history, config);
    let mut rc = ReplayConfig::new(SystemId::new(&history.system_id));
    rc.time_zone = history.time_zone.clone();
    let replayer = Replayer::new(rc, wall_clock()).context("replay settings")?;
    let output = LoaderOutput {
        inner: Mutex::new((EventsLoader::new(config.processor.clone()), 0)),
    };
    let replay = replayer
        .run(&source, &output)
        .await
        .context("reading the history")?;
    replay.ensure_some_events()?;
    let (loader, dead_letters) = output
        .inner
        .into_inner()
        .map_err(|_| anyhow::anyhow!("loader state poisoned"))?;
    let (data, stats) = loader.finish()?;
    eprintln!(
        "backfill: {} events ({dead_letters} dead letters while reading) -> {} labelled rows ({} without a label yet)",
        replay.events, stats.rows, stats.unlabelled
    );
    let files: Vec<String> = args
        .history
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok((data, format!("history {} ({format:?})", files.join(", "))))
}

pub async fn run(args: TrainArgs, config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.output.exists(),
        "{} already exists: give a new model directory",
        args.output.display()
    );
    let now = wall_clock().now();
    let (data, source) = load(&args, &config, now).await?;
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    anyhow::ensure!(
        data.schema_id() == schema.id(),
        "the rows were computed with feature schema {}, the configured processor computes {}",
        data.schema_id().0,
        schema.id().0
    );
    // Checked before training, not after it.
    ablation_groups(&args, data.feature_names())?;
    let mut params = config.train.params.clone();
    if let Some(r) = args.max_rounds {
        params.max_rounds = r;
    }
    if let Some(t) = args.nthread {
        params.nthread = t;
    }
    if let Some(k) = args.easy_negative_keep {
        params.easy_negative_keep = k;
    }
    if data.load_sample().is_some() {
        // Sampled while reading (the card's `data.load_sample` says how): not again.
        params.easy_negative_keep = 1.0;
    }
    if let Some(n) = args.search {
        params.search_trials = n;
    }
    let run = RunInfo {
        name: config.train.model_name.clone(),
        version: args
            .model_version
            .clone()
            .unwrap_or_else(|| now.to_datetime().format("%Y%m%dT%H%M%SZ").to_string()),
        created_at: now,
        source,
    };
    eprintln!(
        "training {} {} on {} rows ({} features), nthread {}",
        run.name,
        run.version,
        data.len(),
        data.num_features(),
        params.nthread
    );
    let split_config = config.train.split.clone();
    let (trained, data) = tokio::task::spawn_blocking(move || {
        train_models(
            &data,
            &schema,
            &split_config,
            &params,
            &run,
            &mut print_progress,
        )
        .map(|t| (t, data))
    })
    .await
    .context("training task")??;
    let card = &trained.card;
    eprintln!(
        "split ({:?}): train {} rows up to {}, validation {} from {}, test {} from {} to {} ({} purged)",
        card.split.method,
        card.data.train,
        card.split.valid_start,
        card.data.valid,
        card.split.valid_start,
        card.data.test,
        card.split.test_start,
        card.split.last,
        card.data.purged
    );
    if let Some(search) = &card.search {
        print_search(search);
    }
    eprint!("{}", render(&card.evaluation));
    for (what, t) in [("went-empty", &card.empty), ("went-full", &card.full)] {
        let top: Vec<String> = t
            .feature_importance
            .iter()
            .take(8)
            .map(|(f, share)| format!("{f} {:.1}%", share * 100.0))
            .collect();
        eprintln!(
            "{what}: {} trees; gain by feature: {}; {} features unused{}",
            t.trees,
            top.join(", "),
            t.unused_features.len(),
            if t.unused_features.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.unused_features.join(", "))
            }
        );
        if let Some(c) = t.calibration.as_ref().filter(|c| c.off) {
            eprintln!(
                "the raw {what} model is off by {:.1} points in the [{:.1}, {:.1}) bin of its \
                 validation reliability table (more than 2): calibrated",
                c.max_gap * 100.0,
                c.bin_lower,
                c.bin_lower + 0.1
            );
        }
        if let Some(s) = &t.calibrator {
            eprintln!(
                "  {} calibrator, {} knots from {} validation rows: test reliability off by at \
                 most {:.1} points raw, {:.1} calibrated (bins of 100+ rows)",
                s.method,
                s.knots,
                s.fitted_rows,
                s.test_before.max_gap * 100.0,
                s.test_after.max_gap * 100.0
            );
        }
        if t.hit_round_cap {
            eprintln!(
                "WARNING: the {what} model used every one of its {} rounds and was still \
                 improving on validation: raise --max-rounds (or eta)",
                t.rounds
            );
        }
    }
    let mut card = trained.card.clone();
    let data = if args.ablate.is_empty() {
        data
    } else {
        let (rows, data) = run_ablation(&args, &config, data, &card.params).await?;
        card.ablation = rows;
        print_ablation(&card);
        data
    };
    save_dir(
        &args.output,
        &card,
        &trained.empty_json,
        &trained.full_json,
        trained.calibrator.as_ref(),
    )?;
    eprintln!("wrote {}", args.output.display());
    if args.register {
        register(&args, &config, &data).await?;
    }
    Ok(())
}

/// Every trial of the hyper-parameter search and the chosen one.
fn print_search(s: &bikeshare_models::search::SearchReport) {
    let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
    eprintln!(
        "hyper-parameter search (seed {}): {} trials; criterion: {}",
        s.seed,
        s.trials.len(),
        s.criterion
    );
    eprintln!(
        "  {:>5} {:>5} {:>6} {:>6} {:>5} | {:>8} {:>8} {:>5} | {:>8} {:>8} {:>5} | {:>7}",
        "depth",
        "eta",
        "mcw",
        "subs",
        "",
        "new PR e",
        "logloss",
        "trees",
        "new PR f",
        "logloss",
        "trees",
        "s"
    );
    for (k, t) in s.trials.iter().enumerate() {
        eprintln!(
            "  {:>5} {:>5} {:>6} {:>6} {:>5} | {:>8} {:>8.5} {:>5} | {:>8} {:>8.5} {:>5} | {:>7.0}",
            t.max_depth,
            t.eta,
            t.min_child_weight,
            t.subsample,
            if k == s.chosen { "<-" } else { "" },
            f(t.empty.valid_new_stockout_pr_auc),
            t.empty.valid_log_loss,
            t.empty.trees,
            f(t.full.valid_new_stockout_pr_auc),
            t.full.valid_log_loss,
            t.full.trees,
            t.seconds
        );
    }
}

/// The `--ablate` groups as feature indices.
fn ablation_groups(
    args: &TrainArgs,
    names: &[String],
) -> anyhow::Result<Vec<(String, Vec<usize>)>> {
    args.ablate
        .iter()
        .map(|g| {
            let (name, patterns) = g
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--ablate {g:?}: give NAME=PATTERN[,PATTERN…]"))?;
            let patterns: Vec<&str> = patterns.split(',').map(str::trim).collect();
            let idx = feature_group(names, &patterns).with_context(|| format!("--ablate {g:?}"))?;
            Ok((name.trim().to_owned(), idx))
        })
        .collect()
}

async fn run_ablation(
    args: &TrainArgs,
    config: &Config,
    data: TrainingData,
    params: &bikeshare_models::training::TrainParams,
) -> anyhow::Result<(Vec<bikeshare_models::training::AblationRow>, TrainingData)> {
    let groups = ablation_groups(args, data.feature_names())?;
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let split = config.train.split.clone();
    let params = params.clone();
    tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        for g in groups {
            eprintln!(
                "ablation: training without {} ({} features)",
                g.0,
                g.1.len()
            );
            rows.extend(ablate(
                &data,
                &schema,
                &split,
                &params,
                std::slice::from_ref(&g),
                &mut print_progress,
            )?);
        }
        anyhow::Ok((rows, data))
    })
    .await
    .context("ablation task")?
}

/// The ablation table: new-stockout PR-AUC and log loss of each target, with all features
/// and without each group.
fn print_ablation(card: &bikeshare_models::training::ModelCard) {
    let m = &card.evaluation.model;
    let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
    eprintln!("ablation on the test rows: new-stockout PR-AUC and log loss (empty | full)");
    eprintln!(
        "  {:<28} {:>8} {:>8} | {:>8} {:>8}",
        "all features",
        f(m.new_empty.as_ref().and_then(|x| x.pr_auc)),
        format!("{:.4}", m.empty.log_loss),
        f(m.new_full.as_ref().and_then(|x| x.pr_auc)),
        format!("{:.4}", m.full.log_loss)
    );
    for r in &card.ablation {
        eprintln!(
            "  {:<28} {:>8} {:>8} | {:>8} {:>8}",
            format!("without {} ({})", r.without, r.features.len()),
            f(r.empty.new_stockout_pr_auc),
            format!("{:.4}", r.empty.log_loss),
            f(r.full.new_stockout_pr_auc),
            format!("{:.4}", r.full.log_loss)
        );
    }
}

/// The model directory as a new registry version, through the gate to staging on the test
/// days.
async fn register(args: &TrainArgs, config: &Config, data: &TrainingData) -> anyhow::Result<()> {
    let clock = wall_clock();
    let registry = crate::app::models::open_registry(config, clock.clone())?;
    let version = registry.register(&args.output).await?;
    eprintln!(
        "registered as {} v{} in {}",
        version.model,
        version.version,
        registry.describe()
    );
    let test = data.split(&config.train.split)?.test;
    let held_out = HeldOut::from_training_data(data, test);
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let gate = crate::app::models::gate(config, registry, &schema, clock);
    let decision = gate
        .evaluate(version.version, Stage::Staging, Some(&held_out))
        .await?;
    crate::app::models::print_decision(&decision);
    Ok(())
}
