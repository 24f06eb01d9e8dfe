//! A first model when there is none: a simulated history through the processor's backfill,
//! trained and written as a model directory, in well under a minute.

use std::path::Path;

use bikeshare_simulator::{CityConfig, SimulatorError, history};
use bikeshare_stream_processor::backfill::BackfillStats;
use bikeshare_stream_processor::{FeatureSchema, ProcessorConfig};
use bikeshare_types::Timestamp;

use crate::dataset::{SplitConfig, TrainingData};
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
    /// The city to simulate (its `stations` is usually reduced to keep this fast).
    pub city: CityConfig,
    /// Days of history, ending at `end`.
    pub days: u32,
    pub end: Timestamp,
    /// The processor's configuration: it fixes the feature schema and the horizon.
    pub processor: ProcessorConfig,
    pub params: TrainParams,
    pub split: SplitConfig,
}

impl BootstrapConfig {
    /// A small, fast setting: 60 stations of `city`, 5 days ending at `end` (3 to train on,
    /// 1 to validate, 1 to test), at most 150 rounds of depth-5 trees.
    pub fn small(city: &CityConfig, processor: ProcessorConfig, end: Timestamp) -> Self {
        Self {
            city: CityConfig {
                stations: city.stations.min(60),
                ..city.clone()
            },
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
            split: SplitConfig::default(),
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
    let (data, stats) =
        TrainingData::from_events(config.processor.clone(), events).map_err(TrainError::from)?;
    let schema = FeatureSchema::v1(&config.processor.window_minutes);
    let run = RunInfo {
        name: name.into(),
        version: version.into(),
        created_at,
        source: format!(
            "bootstrap: simulated city {} (seed {}, {} stations), {} days from {} to {}",
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
