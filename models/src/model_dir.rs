//! The model directory: what training writes and everything else (registry, processor,
//! serving, the promotion gate, the hot swap) loads. Three files — the layout SageMaker
//! mounts at `/opt/ml/model` and the registry stores:
//!
//! - `empty.json`: the went-empty model, XGBoost JSON;
//! - `full.json`: the went-full model, XGBoost JSON;
//! - `card.json`: the [`ModelCard`] — name, version, feature schema id, horizon, training
//!   window, split boundaries, parameters, data sizes, metrics and baselines;
//!
//! and `calibrator.json` when training fitted one ([`crate::calibration`]: the isotonic maps
//! of the targets whose validation reliability was off; a directory without it loads as
//! before, raw probabilities), and, when training saved it ([`save_trained`]), the data-quality baseline of the training
//! rows in Model Monitor's files (`statistics.json`, `constraints.json`, and
//! `statistics_by_hour.json`), so the registry carries it with the version and the drift
//! check of a job compares live features with the rows its production model learned from
//! ([`read_drift_baseline`]).
//!
//! [`save_dir`] and [`save_trained`] write into a temporary sibling directory and rename it
//! into place, so a directory that exists is complete; [`read_card`] reads the whole card back. [`load`] is
//! the one loader: it reads only the card's `name`, `version` and `feature_schema_id` (so a
//! directory with a smaller card, such as [`crate::synthetic`]'s, loads too), refuses a model
//! trained on another feature schema than the caller computes, and anything the native
//! evaluator does not implement.

use std::path::{Path, PathBuf};

use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};
use serde_json::Value;

use bikeshare_monitor::drift::{Baseline, BaselineError};

use crate::calibration::Calibrator;
use crate::scorer::XgbScorer;
use crate::training::{ModelCard, TrainedModels};
use crate::xgboost::{ModelError, XgbModel};

pub const CARD_FILE: &str = "card.json";
pub const EMPTY_FILE: &str = "empty.json";
pub const FULL_FILE: &str = "full.json";
pub const CALIBRATOR_FILE: &str = "calibrator.json";

/// Why a model directory cannot be written, or its card read ([`save_dir`], [`read_card`]).
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

/// Why a model directory cannot be loaded ([`load`]).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Card { path: String, message: String },
    #[error("{file}: {source}")]
    Model { file: String, source: ModelError },
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
    calibrator: Option<&Calibrator>,
) -> Result<(), ArtifactError> {
    save(dir, card, empty_json, full_json, calibrator, None)
}

/// Writes what training produced at `dir` (which must not exist yet), atomically: the three
/// files and the drift baseline of the training rows.
pub fn save_trained(dir: &Path, trained: &TrainedModels) -> Result<(), ArtifactError> {
    save(
        dir,
        &trained.card,
        &trained.empty_json,
        &trained.full_json,
        trained.calibrator.as_ref(),
        Some(&trained.baseline),
    )
}

/// The drift baseline saved with the model in `dir`; `None` when it has none (a model
/// trained before baselines were saved with it).
pub fn read_drift_baseline(dir: &Path) -> Result<Option<Baseline>, BaselineError> {
    if !dir.join(BASELINE_FILES[0]).is_file() {
        return Ok(None);
    }
    Baseline::read(dir).map(Some)
}

/// The files of the drift baseline in a model directory.
pub const BASELINE_FILES: [&str; 3] = [
    "statistics.json",
    "constraints.json",
    bikeshare_monitor::drift::hourly::FILE,
];

fn save(
    dir: &Path,
    card: &ModelCard,
    empty_json: &[u8],
    full_json: &[u8],
    calibrator: Option<&Calibrator>,
    baseline: Option<&Baseline>,
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
        let calibrator_json = match calibrator.filter(|c| !c.is_empty()) {
            Some(c) => Some(serde_json::to_vec(c).map_err(|e| ArtifactError::Card {
                path: tmp.join(CALIBRATOR_FILE),
                message: e.to_string(),
            })?),
            None => None,
        };
        let files = [
            (EMPTY_FILE, Some(empty_json)),
            (FULL_FILE, Some(full_json)),
            (CARD_FILE, Some(&card_json[..])),
            (CALIBRATOR_FILE, calibrator_json.as_deref()),
        ];
        for (name, bytes) in files {
            let Some(bytes) = bytes else { continue };
            let path = tmp.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
        if let Some(b) = baseline {
            b.write(&tmp).map_err(|e| ArtifactError::Io {
                path: tmp.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
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

/// Loads the two models of `dir` for features of `schema`: the processor's scorer, named by
/// the card.
pub fn load(dir: &Path, schema: &FeatureSchema) -> Result<XgbScorer, LoadError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let card_path = dir.join(CARD_FILE).display().to_string();
    let card: Value = serde_json::from_slice(&read(CARD_FILE)?).map_err(|e| LoadError::Card {
        path: card_path.clone(),
        message: format!("not JSON: {e}"),
    })?;
    let field = |k: &str| {
        card.get(k)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| LoadError::Card {
                path: card_path.clone(),
                message: format!("no {k:?}"),
            })
    };
    let model = ModelRef {
        name: field("name")?,
        version: field("version")?,
    };
    let trained_on = FeatureSchemaId::new(field("feature_schema_id")?);
    let load_model = |file: &str| {
        XgbModel::from_json(&read(file)?).map_err(|source| LoadError::Model {
            file: dir.join(file).display().to_string(),
            source,
        })
    };
    let (empty, full) = (load_model(EMPTY_FILE)?, load_model(FULL_FILE)?);
    let calibrator = read_calibrator(dir)?;
    let scorer = XgbScorer::new(model, &trained_on, schema, empty, full).map_err(|source| {
        LoadError::Model {
            file: dir.display().to_string(),
            source,
        }
    })?;
    Ok(scorer.with_calibrator(calibrator))
}

/// The calibrator of `dir`, `None` when it has none; a file that is not a valid one is an
/// error (a model must not be served with a calibrator silently dropped).
pub fn read_calibrator(dir: &Path) -> Result<Option<Calibrator>, LoadError> {
    let path = dir.join(CALIBRATOR_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoadError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let bad = |message: String| LoadError::Card {
        path: path.display().to_string(),
        message,
    };
    let c: Calibrator =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a calibrator: {e}")))?;
    c.check().map_err(bad)?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bikeshare_stream_processor::Scorer;

    #[test]
    fn loads_a_directory_and_refuses_another_schema_or_a_missing_file() {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let dir = tempfile::tempdir().unwrap();
        crate::synthetic::write_model_dir(dir.path(), "m", "3", schema.id(), schema.len(), 5, 3)
            .unwrap();
        let s = load(dir.path(), &schema).unwrap();
        assert_eq!(s.model().name, "m");
        assert_eq!(s.model().version, "3");

        let other = FeatureSchema::current(&[5, 60]);
        let err = load(dir.path(), &other).unwrap_err().to_string();
        assert!(err.contains("feature schema"), "{err}");

        assert!(
            s.calibrator().is_none(),
            "a directory without a calibrator loads raw"
        );

        // With a calibrator, every loader's scorer applies it; a bad one is refused.
        let row: Vec<Option<f32>> = (0..schema.len()).map(|j| Some(j as f32 * 0.1)).collect();
        let raw = s.score(&row);
        let halve = |p: f32| crate::calibration::Isotonic {
            x: vec![0.0, p, 1.0],
            y: vec![0.0, p / 2.0, 1.0],
            rows: 3,
        };
        let c = crate::calibration::Calibrator {
            method: "isotonic".into(),
            empty: Some(halve(raw.p_empty)),
            full: None,
        };
        std::fs::write(
            dir.path().join(CALIBRATOR_FILE),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        let calibrated = load(dir.path(), &schema).unwrap().score(&row);
        assert!((calibrated.p_empty - raw.p_empty / 2.0).abs() < 1e-6);
        assert_eq!(calibrated.p_full, raw.p_full);
        std::fs::write(dir.path().join(CALIBRATOR_FILE), br#"{"method":"platt"}"#).unwrap();
        let err = load(dir.path(), &schema).unwrap_err().to_string();
        assert!(err.contains(CALIBRATOR_FILE), "{err}");

        std::fs::remove_file(dir.path().join("full.json")).unwrap();
        let err = load(dir.path(), &schema).unwrap_err().to_string();
        assert!(err.contains("full.json"), "{err}");
    }
}
