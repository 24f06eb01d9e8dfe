//! A first model when there is none: a simulated history through the processor's backfill,
//! trained and written as a model directory, in well under a minute.
//!
//! The history is the city that `up` then serves (same seed, configuration and station
//! count), so the model learns the stockouts it will be asked about. Every station goes
//! through the processor (neighbour features see the whole city); to bound training time,
//! rows are kept from an evenly spaced sample of at most `train_stations` stations.

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

/// The history through the processor's backfill; rows of the sampled stations only.
fn sampled_rows(
    config: &BootstrapConfig,
    schema: &FeatureSchema,
    events: impl IntoIterator<Item = bikeshare_types::contracts::Envelope>,
) -> (TrainingData, BackfillStats) {
    let k = config
        .train_stations
        .map_or(1, |n| stride(config.city.stations, n));
    let mut data = TrainingData::new(schema, config.processor.horizon_minutes);
    let mut keep: HashMap<String, bool> = HashMap::new();
    let mut push = |r: TrainingRow| {
        let v = &r.row.vector;
        let next = keep.len() as u32;
        if !*keep
            .entry(v.station_id.as_str().to_owned())
            .or_insert(next.is_multiple_of(k))
        {
            return;
        }
        data.push(
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
    (data, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_at_most_the_cap_and_everyone_without_one() {
        assert_eq!(sample_size(300, 60), 60);
        assert!((30..=60).contains(&sample_size(301, 60)));
        assert_eq!(sample_size(60, 60), 60);
        assert_eq!(sample_size(10, 60), 10);
        assert_eq!(stride(1, 0), 1);
    }

    #[test]
    fn the_bootstrap_simulates_the_city_that_is_served() {
        let served = CityConfig {
            stations: 300,
            seed: 7,
            ..CityConfig::default()
        };
        let boot = BootstrapConfig::small(&served, ProcessorConfig::default(), Timestamp(0));
        assert_eq!(boot.city, served, "same station count, seed and settings");
        assert_eq!(boot.train_stations, Some(60));
    }
}
