//! A first model when there is none: a simulated history through the processor's backfill,
//! trained and written as a model directory, in well under a minute.
//!
//! The history is the city that `up` then serves (same seed, configuration and station
//! count), so the model learns the stockouts it will be asked about. Every station goes
//! through the processor (neighbour features see the whole city); to bound training time,
//! training rows are kept from an evenly spaced sample of at most `train_stations` stations,
//! while the validation and test days keep the rows of every station (the backfill computes
//! them anyway): the promotion gate then judges the first model on every station's held-out
//! day, not on a few dozen stockouts of the sample (decision 093).

use std::collections::HashMap;

use std::path::Path;

use bikeshare_simulator::{CityConfig, SimulatorError, history};
use bikeshare_stream_processor::backfill::{Backfill, BackfillStats, TrainingRow};
use bikeshare_stream_processor::{FeatureSchema, Processor, ProcessorConfig};
use bikeshare_types::Timestamp;

use crate::dataset::{RowLabel, SplitConfig, TrainingData};
use crate::model_dir::{ArtifactError, save_trained};
use crate::training::{ModelCard, Progress, RunInfo, TrainError, TrainParams, train_models};

/// Why the bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("simulating the history: {0}")]
    Simulator(#[from] SimulatorError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// What to simulate and how to train.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The city to simulate: the one that will be served.
    pub city: CityConfig,
    /// Train on the rows of at most this many of the city's stations (every k-th station
    /// in the order the history introduces them); `None`: all of them.
    pub train_stations: Option<u32>,
    /// Keep the validation and test rows of every station, not only of the sample: early
    /// stopping and the gate's held-out measures see about `stations / train_stations`
    /// times more stockouts, while training costs what it did.
    pub held_out_all_stations: bool,
    /// Days of history, ending at `end`.
    pub days: u32,
    pub end: Timestamp,
    /// The processor's configuration: it fixes the feature schema and the horizon.
    pub processor: ProcessorConfig,
    pub params: TrainParams,
    pub split: SplitConfig,
}

impl BootstrapConfig {
    /// A small, fast setting: `city` itself, rows of at most 60 of its stations, 5 days
    /// ending at `end` (3 to train on, 1 to validate, 1 to test), at most 150 rounds of
    /// depth-5 trees.
    pub fn small(city: &CityConfig, processor: ProcessorConfig, end: Timestamp) -> Self {
        Self {
            city: city.clone(),
            train_stations: Some(60),
            held_out_all_stations: true,
            days: 5,
            end,
            processor,
            params: TrainParams {
                max_rounds: 150,
                early_stopping_rounds: 15,
                max_depth: 5,
                eta: 0.15,
                ..TrainParams::default()
            },
            // Days this short cannot hold the default two weeks each.
            split: SplitConfig {
                valid_days: 1,
                test_days: 1,
                ..SplitConfig::default()
            },
        }
    }
}

impl BootstrapConfig {
    /// What `up` trains when the registry is empty (decision 093): [`Self::small`] over a
    /// whole week to train and validate on and the day after it to test (the simulated
    /// city's weekdays and weekends differ: fewer days let the gate refuse a first model
    /// that never saw the kind of day it is tested on), training rows of at most 150
    /// stations (60 lost to the net-flow baseline on new empty stockouts across the city),
    /// held-out rows of every station.
    pub fn for_up(city: &CityConfig, processor: ProcessorConfig, end: Timestamp) -> Self {
        Self {
            days: 8,
            train_stations: Some(150),
            held_out_all_stations: true,
            ..Self::small(city, processor, end)
        }
    }
}

/// What the bootstrap produced.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub card: ModelCard,
    pub backfill: BackfillStats,
    /// The labelled rows, and which of them were held out as test days (the promotion
    /// gate evaluates the first model on those).
    pub data: TrainingData,
    pub test: std::ops::Range<usize>,
}

/// Simulates `config.days` of the city, backfills it into labelled rows, trains both models
/// and writes the model directory `out_dir` (which must not exist), with the drift baseline
/// of its training rows.
pub fn train_bootstrap(
    config: &BootstrapConfig,
    out_dir: &Path,
    name: &str,
    version: &str,
    created_at: Timestamp,
    progress: &mut dyn FnMut(Progress),
) -> Result<Bootstrapped, BootstrapError> {
    let from = config
        .end
        .plus_millis(-i64::from(config.days) * 24 * Timestamp::HOUR_MS);
    let events = history(&config.city, from, config.end)?;
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let (data, stats) = sampled_rows(config, &schema, events);
    let sample = match config.train_stations {
        Some(n) if n < config.city.stations && config.held_out_all_stations => format!(
            ", training rows of {} of them, held-out rows of all",
            sample_size(config.city.stations, n)
        ),
        Some(n) if n < config.city.stations => {
            format!(", rows of {} of them", sample_size(config.city.stations, n))
        }
        _ => String::new(),
    };
    let run = RunInfo {
        name: name.into(),
        version: version.into(),
        created_at,
        source: format!(
            "bootstrap: simulated city {} (seed {}, {} stations{sample}), {} days from {} to {}",
            config.city.system_id,
            config.city.seed,
            config.city.stations,
            config.days,
            from,
            config.end
        ),
    };
    let trained = train_models(
        &data,
        &schema,
        &config.split,
        &config.params,
        &run,
        progress,
    )?;
    save_trained(out_dir, &trained)?;
    let test = data.split(&config.split).map_err(TrainError::from)?.test;
    Ok(Bootstrapped {
        card: trained.card,
        backfill: stats,
        data,
        test,
    })
}

/// Every `k`-th station keeps its rows, so that at most `max` of `stations` do.
fn stride(stations: u32, max: u32) -> u32 {
    stations.div_ceil(max.max(1)).max(1)
}

/// How many stations keep their rows.
fn sample_size(stations: u32, max: u32) -> u32 {
    stations.div_ceil(stride(stations, max))
}

/// The history through the processor's backfill: rows of the sampled stations, and, with
/// `held_out_all_stations`, every other station's rows of the validation and test periods.
///
/// Those periods are known only once the last row is (`SplitConfig::boundaries`), so the
/// other stations' rows of the last `valid_days + test_days` days (and a margin) wait in a
/// second table and join the first after the history ends: the same boundaries then split
/// the joined table, and none of them lands in the training period.
fn sampled_rows(
    config: &BootstrapConfig,
    schema: &FeatureSchema,
    events: impl IntoIterator<Item = bikeshare_types::contracts::Envelope>,
) -> (TrainingData, BackfillStats) {
    let k = config
        .train_stations
        .map_or(1, |n| stride(config.city.stations, n));
    let horizon = config.processor.horizon_minutes;
    let mut data = TrainingData::new(schema, horizon);
    let mut others = TrainingData::new(schema, horizon);
    let held_out_ms =
        i64::from(config.split.valid_days + config.split.test_days) * 24 * Timestamp::HOUR_MS
            + OTHERS_MARGIN_MS
            + i64::from(horizon) * Timestamp::MINUTE_MS;
    let others_from = config.end.plus_millis(-held_out_ms);
    let mut keep: HashMap<String, bool> = HashMap::new();
    let mut push = |r: TrainingRow| {
        let v = &r.row.vector;
        let next = keep.len() as u32;
        let sampled = *keep
            .entry(v.station_id.as_str().to_owned())
            .or_insert(next.is_multiple_of(k));
        let table = if sampled {
            &mut data
        } else if config.held_out_all_stations && v.as_of >= others_from {
            &mut others
        } else {
            return;
        };
        table.push(
            v.station_id.as_str(),
            v.as_of,
            RowLabel {
                went_empty: r.label.went_empty,
                went_full: r.label.went_full,
                empty_now: r.label.empty_at_as_of,
                full_now: r.label.full_at_as_of,
            },
            v.values.iter().copied(),
        );
    };
    let mut backfill = Backfill::new(Processor::new(config.processor.clone()));
    for env in events {
        backfill.push(env, &mut push);
    }
    let stats = backfill.finish(&mut push);
    data.finish();
    others.finish();
    join_held_out(&mut data, &others, &config.split);
    data.finish();
    (data, stats)
}

/// How far before the nominal held-out days the other stations' rows are kept: the split
/// rounds the last row up to the hour, and the last row may come before `end`.
const OTHERS_MARGIN_MS: i64 = 6 * Timestamp::HOUR_MS;

/// Adds the rows of `others` that fall in the validation or test period of the joined table
/// (its first row is `data`'s, its last the later of both).
fn join_held_out(data: &mut TrainingData, others: &TrainingData, split: &SplitConfig) {
    let (Some((first, last)), Some((_, others_last))) = (data.window(), others.window()) else {
        return;
    };
    let (valid_start, _, _) = split.boundaries(first, last.max(others_last));
    for i in 0..others.len() {
        let m = others.meta(i);
        if m.as_of.millis() < valid_start {
            continue;
        }
        data.push(
            others.station_id(i),
            m.as_of,
            RowLabel {
                went_empty: m.went_empty,
                went_full: m.went_full,
                empty_now: m.empty_now,
                full_now: m.full_now,
            },
            others.values(i),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use bikeshare_types::time::ManualClock;

    use crate::promote::{Gate, GateConfig, HeldOut, PromotionDecision};
    use crate::registry::local::LocalRegistry;
    use crate::registry::{Registry, Stage};

    /// What `up` does on a fresh directory (`src/app/models.rs`, `bootstrap_if_empty`): its
    /// bootstrap of the default city ending at `end`, registered, then through the gate to
    /// staging and to production on its held-out rows.
    /// `before_093`: the bootstrap before decision 093 (rows of 60 stations, held out too).
    fn up_verdict(end: &str, before_093: bool) -> (PromotionDecision, Bootstrapped, f64) {
        let end = Timestamp::parse_rfc3339(end).unwrap();
        let city = CityConfig::default();
        let mut boot = BootstrapConfig::for_up(&city, ProcessorConfig::default(), end);
        if before_093 {
            boot.train_stations = Some(60);
            boot.held_out_all_stations = false;
        }
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let trained = train_bootstrap(
            &boot,
            &dir.path().join("model"),
            "stockout",
            "bootstrap",
            end,
            &mut |_| {},
        )
        .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let held_out = HeldOut::from_training_data(&trained.data, trained.test.clone());
        let clock = Arc::new(ManualClock::new(end));
        let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(
            dir.path().join("registry"),
            "stockout",
            clock.clone(),
        ));
        let gate = Gate {
            registry: registry.clone(),
            schema: FeatureSchema::current(&boot.processor.window_minutes),
            horizon_minutes: boot.processor.horizon_minutes,
            config: GateConfig::default(),
            cache: dir.path().join("cache"),
            clock,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let decision = rt.block_on(async {
            let version = registry
                .register(&dir.path().join("model"))
                .await
                .unwrap()
                .version;
            let staged = gate
                .evaluate(version, Stage::Staging, Some(&held_out))
                .await
                .unwrap();
            assert!(staged.promoted, "{}", staged.summary);
            gate.evaluate(version, Stage::Production, Some(&held_out))
                .await
                .unwrap()
        });
        (decision, trained, seconds)
    }

    /// One line per verdict: the gate's measures for the bootstrap and the baseline.
    fn describe(end: &str, d: &PromotionDecision, b: &Bootstrapped, seconds: f64) -> String {
        let (c, i) = (
            d.candidate_metrics.as_ref().unwrap(),
            d.incumbent_metrics.as_ref().unwrap(),
        );
        let h = d.heldout.as_ref().unwrap();
        format!(
            "end {end}: {} ({} held-out rows, {} went empty, {} went full; {} training rows; \
             {seconds:.1} s) newPR empty {:.3} vs {:.3}, newPR full {:.3} vs {:.3}, LL empty \
             {:.4} vs {:.4}, LL full {:.4} vs {:.4}",
            if d.promoted { "promoted" } else { "REFUSED" },
            h.rows,
            h.went_empty,
            h.went_full,
            b.test.start,
            c.empty.new_stockout_pr_auc.unwrap_or(f64::NAN),
            i.empty.new_stockout_pr_auc.unwrap_or(f64::NAN),
            c.full.new_stockout_pr_auc.unwrap_or(f64::NAN),
            i.full.new_stockout_pr_auc.unwrap_or(f64::NAN),
            c.empty.log_loss,
            i.empty.log_loss,
            c.full.log_loss,
            i.full.log_loss,
        )
    }

    /// Issue 13: `up --catch-up 6h` at 11:56 UTC on 2026-12-06 (the bootstrap's history
    /// ends at 05:56) served the net-flow baseline: the gate refused the bootstrap on the
    /// went-full new-stockout PR-AUC of a few dozen positives. The model is better; the gate
    /// must see enough held-out rows to say so. About 65 s in a debug build on 2 cores.
    /// It pins one seeded simulation: a change to the simulator or the features changes the
    /// city it judges, so re-run `bootstrap_verdicts_across_end_times` (ignored) before relaxing it.
    #[test]
    fn ups_bootstrap_at_a_refused_hour_is_promoted_and_beats_the_baseline() {
        let end = "2026-12-06T05:56:00Z";
        let (d, b, seconds) = up_verdict(end, false);
        let line = describe(end, &d, &b, seconds);
        eprintln!("{line}");
        assert!(d.promoted, "{line}\n{}", d.summary);
        assert_eq!(d.incumbent.as_ref().unwrap().name, "baseline-netflow");
        let (c, i) = (
            d.candidate_metrics.as_ref().unwrap(),
            d.incumbent_metrics.as_ref().unwrap(),
        );
        for (what, cm, im) in [("empty", &c.empty, &i.empty), ("full", &c.full, &i.full)] {
            assert!(cm.log_loss < im.log_loss, "log loss {what}: {line}");
            let (cn, inn) = (
                cm.new_stockout_pr_auc.unwrap(),
                im.new_stockout_pr_auc.unwrap(),
            );
            assert!(cn > inn, "new-stockout PR-AUC {what}: {line}");
        }
    }

    /// The verdict across end times (a measurement, not a check): `cargo nextest run -p
    /// bikeshare-models --run-ignored only -E 'test(verdicts_across)'
    /// --no-capture`.
    #[test]
    #[ignore = "a measurement: seven bootstraps"]
    fn bootstrap_verdicts_across_end_times() {
        for (end, variants) in [
            ("2026-12-06T05:56:00Z", &[true][..]),
            ("2026-12-05T23:56:00Z", &[true, false][..]),
            ("2026-12-06T10:56:00Z", &[true, false][..]),
            ("2026-12-06T18:00:00Z", &[true, false][..]),
        ] {
            for &before in variants {
                let (d, b, seconds) = up_verdict(end, before);
                let which = if before { "before 093" } else { "093" };
                eprintln!("{which}: {}", describe(end, &d, &b, seconds));
            }
        }
    }
}
