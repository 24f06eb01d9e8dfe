//! The model directory: what training writes and everything else (registry, processor,
//! serving) loads. Exactly three files:
//!
//! - `empty.json`: the went-empty model, XGBoost JSON;
//! - `full.json`: the went-full model, XGBoost JSON;
//! - `card.json`: the [`ModelCard`] — name, version, feature schema id, horizon, training
//!   window, split boundaries, parameters, data sizes, metrics and baselines.
//!
//! [`save_dir`] writes into a temporary sibling directory and renames it into place, so a
//! directory that exists is complete. [`load_dir`] refuses a model whose feature schema
//! differs from the processor's, and anything the native evaluator does not implement.

use std::path::{Path, PathBuf};

use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};
use serde::{Deserialize, Serialize};

use crate::dataset::SplitBoundaries;
use crate::eval::Evaluation;
use crate::scorer::XgbScorer;
use crate::training::TrainParams;
use crate::xgboost::{ModelError, XgbModel};

pub const CARD_FILE: &str = "card.json";
pub const EMPTY_FILE: &str = "empty.json";
pub const FULL_FILE: &str = "full.json";

/// Why a model directory cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a model card: {message}")]
    Card { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("{0} already exists")]
    Exists(PathBuf),
}

impl bikeshare_types::error::Classify for ArtifactError {
    fn class(&self) -> bikeshare_types::error::ErrorClass {
        use bikeshare_types::error::ErrorClass;
        match self {
            Self::Io { .. } => ErrorClass::External,
            _ => ErrorClass::User,
        }
    }
    fn retryable(&self) -> bool {
        false
    }
}

/// The first and last `as_of` of the labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Row counts of the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSizes {
    pub rows: usize,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    /// Rows left out because their label window crosses a split boundary.
    pub purged: usize,
}

/// How one target's model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTraining {
    /// Rounds run before early stopping.
    pub rounds: u32,
    /// Trees kept (up to the best validation round).
    pub trees: u32,
    pub best_valid_log_loss: f64,
    pub base_score: f64,
    pub train_positives: usize,
    pub valid_positives: usize,
    pub test_positives: usize,
}

/// Everything known about a trained pair of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Version of this card's layout.
    pub format: u32,
    pub name: String,
    pub version: String,
    pub created_at: Timestamp,
    /// Where the training rows came from, in words.
    pub source: String,
    pub feature_schema_id: FeatureSchemaId,
    pub feature_names: Vec<String>,
    pub horizon_minutes: u32,
    pub training_window: TrainingWindow,
    pub split: SplitBoundaries,
    pub params: TrainParams,
    pub data: DataSizes,
    pub empty: TargetTraining,
    pub full: TargetTraining,
    /// Metrics of the model, the baseline predictor and persistence on the test rows, with
    /// the verdict of each target.
    pub evaluation: Evaluation,
}

impl ModelCard {
    pub const FORMAT: u32 = 1;

    pub fn model_ref(&self) -> ModelRef {
        ModelRef {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a model directory at `dir` (which must not exist yet), atomically.
pub fn save_dir(
    dir: &Path,
    card: &ModelCard,
    empty_json: &[u8],
    full_json: &[u8],
) -> Result<(), ArtifactError> {
    if dir.exists() {
        return Err(ArtifactError::Exists(dir.to_owned()));
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        std::fs::create_dir_all(p).map_err(io(p))?;
    }
    let mut tmp_name = dir.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = dir.with_file_name(tmp_name);
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let card_json = serde_json::to_vec_pretty(card).map_err(|e| ArtifactError::Card {
            path: tmp.join(CARD_FILE),
            message: e.to_string(),
        })?;
        for (name, bytes) in [
            (EMPTY_FILE, empty_json),
            (FULL_FILE, full_json),
            (CARD_FILE, &card_json[..]),
        ] {
            let path = tmp.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        std::fs::rename(&tmp, dir).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads the card of a model directory.
pub fn read_card(dir: &Path) -> Result<ModelCard, ArtifactError> {
    let path = dir.join(CARD_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| ArtifactError::Card {
        path,
        message: e.to_string(),
    })
}

/// Loads a model directory as the processor's scorer, refusing models of another feature
/// schema (by id and by feature names) and what the native evaluator does not implement.
pub fn load_dir(dir: &Path, schema: &FeatureSchema) -> Result<XgbScorer, ArtifactError> {
    let card = read_card(dir)?;
    let card_path = dir.join(CARD_FILE);
    let load = |name: &str| {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        XgbModel::from_json(&bytes).map_err(|source| ArtifactError::Model { path, source })
    };
    let empty = load(EMPTY_FILE)?;
    let full = load(FULL_FILE)?;
    let scorer = XgbScorer::new(
        card.model_ref(),
        &card.feature_schema_id,
        schema,
        empty,
        full,
    )
    .map_err(|source| ArtifactError::Model {
        path: card_path.clone(),
        source,
    })?;
    if !card
        .feature_names
        .iter()
        .map(String::as_str)
        .eq(schema.names())
    {
        return Err(ArtifactError::Model {
            path: card_path,
            source: ModelError::Unsupported(format!(
                "model {} {} was trained on features that differ from the processor's schema {}",
                card.name,
                card.version,
                schema.id().0
            )),
        });
    }
    Ok(scorer)
}
