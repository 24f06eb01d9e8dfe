//! Loading a model directory: `card.json` + `empty.json` + `full.json`.
//!
//! The layout SageMaker mounts at `/opt/ml/model` and the registry stores. The card gives the
//! model's `name`, `version` and `feature_schema_id`; a model trained on another feature
//! schema than the one the caller computes is refused here, at load time.

use std::path::Path;

use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};
use serde_json::Value;

use crate::scorer::XgbScorer;
use crate::xgboost::{ModelError, XgbModel};

/// Why a model directory cannot be served.
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

/// Loads the two models of `dir` for features of `schema`.
pub fn load(dir: &Path, schema: &FeatureSchema) -> Result<XgbScorer, LoadError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let card_path = dir.join("card.json").display().to_string();
    let card: Value = serde_json::from_slice(&read("card.json")?).map_err(|e| LoadError::Card {
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
    let trained_on = FeatureSchemaId(field("feature_schema_id")?);
    let load_model = |file: &str| {
        XgbModel::from_json(&read(file)?).map_err(|source| LoadError::Model {
            file: dir.join(file).display().to_string(),
            source,
        })
    };
    let (empty, full) = (load_model("empty.json")?, load_model("full.json")?);
    XgbScorer::new(model, &trained_on, schema, empty, full).map_err(|source| LoadError::Model {
        file: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bikeshare_stream_processor::Scorer;

    #[test]
    fn loads_a_directory_and_refuses_another_schema_or_a_missing_file() {
        let schema = FeatureSchema::v1(&[5, 15, 30, 60]);
        let dir = tempfile::tempdir().unwrap();
        crate::synthetic::write_model_dir(dir.path(), "m", "3", schema.id(), schema.len(), 5, 3)
            .unwrap();
        let s = load(dir.path(), &schema).unwrap();
        assert_eq!(s.model().name, "m");
        assert_eq!(s.model().version, "3");

        let other = FeatureSchema::v1(&[5, 60]);
        let err = load(dir.path(), &other).unwrap_err().to_string();
        assert!(err.contains("feature schema"), "{err}");

        std::fs::remove_file(dir.path().join("full.json")).unwrap();
        let err = load(dir.path(), &schema).unwrap_err().to_string();
        assert!(err.contains("full.json"), "{err}");
    }
}
