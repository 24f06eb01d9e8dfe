//! The model registry: numbered versions of a model, the stages `staging` and `production`,
//! and the log of promotion decisions — behind one [`Registry`] trait with three backends.
//!
//! - [`local::LocalRegistry`] (default): a directory under the data directory. A version is a
//!   directory of files made visible by one atomic rename; a stage is a one-line file
//!   replaced atomically; decisions are appended as JSON lines.
//! - [`mlflow::MlflowRegistry`]: an MLflow tracking server over its REST API. A version is
//!   an MLflow run (the card's parameters and metrics, the model files as artifacts uploaded
//!   through the server's artifact proxy) registered as a model version; a stage is a
//!   registered-model alias; a decision is a run tagged `bikeshare.kind=promotion-decision`
//!   with its numbers as metrics and the whole decision as an artifact.
//! - `sagemaker::SageMakerRegistry` (feature `sagemaker-registry`): a SageMaker model package group. A version is a model
//!   package registered `PendingManualApproval` (the files as `model.tar.gz` in S3, the
//!   card's metrics as its metadata); production is the package the gate `Approved`;
//!   decisions are JSON objects in S3 beside the archives.
//!
//! A *model directory* ([`crate::model_dir`]) is what training writes: `card.json` (the model
//! card) beside the model files (`empty.json`, `full.json`). The registry stores the files as
//! they are and reads from the card only what it indexes: `feature_schema_id`, `metrics` and
//! `params`. [`fetch`] brings a version's directory into a local cache, [`load_version`]
//! loads it as the processor's scorer (the promotion gate and the hot swap both do).
//!
//! What the backends share lives here: the trait, the version record, the errors, reading a
//! model directory and its card. The decision log's record is [`decision`].

pub mod decision;
pub mod local;
pub mod mlflow;
#[cfg(feature = "sagemaker-registry")]
pub mod sagemaker;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::ModelRef;
use bikeshare_types::error::{Classify, ErrorClass};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The card's file name inside a model directory.
pub use crate::model_dir::CARD_FILE;
use crate::model_dir::LoadError;
use crate::scorer::XgbScorer;
use decision::PromotionDecision;

/// A stage a version can be in. Each stage names at most one version at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Passed the schema and sanity checks after training; waiting for the gate.
    Staging,
    /// What the processor scores with.
    Production,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Staging, Stage::Production];

    /// The stage's name: also the MLflow alias and the local stage file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Staging => "staging",
            Stage::Production => "production",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staging" => Ok(Stage::Staging),
            "production" => Ok(Stage::Production),
            other => Err(format!("unknown stage {other:?} (staging or production)")),
        }
    }
}

/// One registered version of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The registered model's name.
    pub model: String,
    /// 1, 2, 3, ... in registration order.
    pub version: u64,
    pub registered_at: Timestamp,
    /// The stages that name this version now.
    pub stages: Vec<Stage>,
    /// From the card; `None` when the card does not say.
    pub feature_schema_id: Option<String>,
    /// The model card as training wrote it.
    pub card: Value,
    /// The files of the model directory (card included).
    pub files: Vec<String>,
    /// Where the files live: a directory, or an `mlflow-artifacts:` URI.
    pub source: String,
    /// The MLflow run that holds the version's parameters and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl ModelVersion {
    /// How predictions name this model: the registered name and the version.
    pub fn model_ref(&self) -> ModelRef {
        ModelRef {
            name: self.model.clone(),
            version: self.version.to_string(),
        }
    }

    pub fn is(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }
}

/// The stages that name `version`, in [`Stage`] order, from `(stage, version it names)`
/// pairs in that order.
pub(crate) fn stages_naming(version: u64, named: &[(Stage, u64)]) -> Vec<Stage> {
    named
        .iter()
        .filter(|(_, v)| *v == version)
        .map(|(s, _)| *s)
        .collect()
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model {model} has no version {version}")]
    NoSuchVersion { model: String, version: u64 },
    #[error("invalid model directory {}: {message}", path.display())]
    InvalidModel { path: PathBuf, message: String },
    #[error("registry storage at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the registry holds something unexpected: {0}")]
    Corrupt(String),
    #[error("MLflow {operation}: {message}")]
    Mlflow {
        operation: String,
        /// HTTP status, when the server answered.
        status: Option<u16>,
        message: String,
    },
    /// A call of the SageMaker model registry (SageMaker or its S3 bucket) failed.
    #[error("SageMaker model registry, {operation}: {message}")]
    SageMaker {
        operation: String,
        /// The service's error code (`ValidationException`, `AccessDenied`, ...), or why
        /// there was no answer (`Unreachable`, `Timeout`, `NoCredentials`, ...), or
        /// `Configuration`.
        code: Option<String>,
        /// HTTP status, when the service answered.
        status: Option<u16>,
        message: String,
    },
}

impl RegistryError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        Self::InvalidModel {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl Classify for RegistryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NoSuchVersion { .. } | Self::InvalidModel { .. } => ErrorClass::User,
            Self::Io { .. } | Self::Corrupt(_) => ErrorClass::Internal,
            Self::Mlflow {
                status: Some(400..500),
                ..
            } => ErrorClass::User,
            Self::Mlflow { .. } => ErrorClass::External,
            Self::SageMaker { code, status, .. } => match (code.as_deref(), status) {
                (Some("Configuration" | "RequestNotBuilt" | "NoCredentials"), _) => {
                    ErrorClass::User
                }
                (Some(c), _) if c.contains("Throttl") => ErrorClass::External,
                (_, Some(400..500)) => ErrorClass::User,
                _ => ErrorClass::External,
            },
        }
    }
    fn retryable(&self) -> bool {
        match self {
            Self::Mlflow { status, .. } => status.is_none_or(|s| s == 429 || s >= 500),
            Self::SageMaker { .. } => self.class() == ErrorClass::External,
            Self::Io { .. } => true,
            _ => false,
        }
    }
}

/// A store of model versions, their stages and the decisions that moved them.
#[async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// The registered model this registry instance manages.
    fn model_name(&self) -> &str;
    /// Where it is, for people: "local registry at var/registry", "MLflow at http://...".
    fn describe(&self) -> String;

    /// Stores a model directory (`card.json` and model files) as a new version, in no stage.
    async fn register(&self, dir: &Path) -> Result<ModelVersion, RegistryError>;
    async fn get(&self, version: u64) -> Result<ModelVersion, RegistryError>;
    /// Every version, oldest first.
    async fn list(&self) -> Result<Vec<ModelVersion>, RegistryError>;
    /// Writes the version's files into the directory `into` (created if missing).
    async fn download(&self, version: u64, into: &Path) -> Result<(), RegistryError>;
    /// Makes `stage` name `version` (a stage names one version: the previous one leaves it).
    async fn set_stage(&self, version: u64, stage: Stage) -> Result<(), RegistryError>;
    /// The version `stage` names, if any.
    async fn current(&self, stage: Stage) -> Result<Option<ModelVersion>, RegistryError>;
    /// Appends a promotion decision (taken or refused) to the decision log.
    async fn record_decision(&self, decision: &PromotionDecision) -> Result<(), RegistryError>;
    /// The decision log, oldest first.
    async fn decisions(&self) -> Result<Vec<PromotionDecision>, RegistryError>;
}

/// The version's files in `cache/<model>/<version>`, downloaded once (into a temporary
/// directory renamed into place, so a crash never leaves half a model there).
pub async fn fetch(
    registry: &dyn Registry,
    version: u64,
    cache: &Path,
) -> Result<PathBuf, RegistryError> {
    let dir = cache
        .join(sanitize(registry.model_name()))
        .join(version.to_string());
    if tokio::fs::try_exists(dir.join(CARD_FILE))
        .await
        .unwrap_or(false)
    {
        return Ok(dir);
    }
    let parent = dir
        .parent()
        .ok_or_else(|| RegistryError::Corrupt(format!("no parent of {}", dir.display())))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| RegistryError::io(parent, e))?;
    let tmp = parent.join(format!(".tmp-{version}-{}", rand::random::<u64>()));
    registry.download(version, &tmp).await?;
    match tokio::fs::rename(&tmp, &dir).await {
        Ok(()) => Ok(dir),
        // Someone else fetched it meanwhile: theirs is as good as ours.
        Err(_)
            if tokio::fs::try_exists(dir.join(CARD_FILE))
                .await
                .unwrap_or(false) =>
        {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            Ok(dir)
        }
        Err(e) => Err(RegistryError::io(&dir, e)),
    }
}

/// Why a registered version cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum VersionLoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("version {version} does not load: {source}")]
    Load {
        version: u64,
        #[source]
        source: LoadError,
    },
}

/// Downloads a version (once, into `cache`, see [`fetch`]) and loads it for features of
/// `schema`, named as the registry names it (model name, version number).
pub async fn load_version(
    registry: &dyn Registry,
    version: &ModelVersion,
    cache: &Path,
    schema: &FeatureSchema,
) -> Result<XgbScorer, VersionLoadError> {
    let dir = fetch(registry, version.version, cache).await?;
    crate::model_dir::load(&dir, schema)
        .map(|s| s.with_model(version.model_ref()))
        .map_err(|source| VersionLoadError::Load {
            version: version.version,
            source,
        })
}

/// A model name as a single path component.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The model directory's files (name, path), sorted, and its card.
pub(crate) async fn read_model_dir(
    dir: &Path,
) -> Result<(Vec<(String, PathBuf)>, Value), RegistryError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| RegistryError::invalid(dir, format!("cannot read it: {e}")))?;
    let mut files = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| RegistryError::io(dir, e))?
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .await
            .map_err(|e| RegistryError::io(&path, e))?;
        if !kind.is_file() {
            return Err(RegistryError::invalid(
                dir,
                format!("{name} is not a regular file (a model directory is flat)"),
            ));
        }
        if !valid_file_name(&name) {
            return Err(RegistryError::invalid(
                dir,
                format!("file name {name:?} (letters, digits, '.', '-' and '_' only)"),
            ));
        }
        files.push((name, path));
    }
    files.sort();
    let card_path = dir.join(CARD_FILE);
    let bytes = tokio::fs::read(&card_path)
        .await
        .map_err(|e| RegistryError::invalid(dir, format!("no readable {CARD_FILE}: {e}")))?;
    let card = parse_card(&bytes).map_err(|m| RegistryError::invalid(dir, m))?;
    Ok((files, card))
}

/// A stored version's card (`at` names it in the error: a registry that holds a card it
/// cannot read is corrupt).
pub(crate) fn parse_stored_card(bytes: &[u8], at: &str) -> Result<Value, RegistryError> {
    parse_card(bytes).map_err(|m| RegistryError::Corrupt(format!("{at}: {m}")))
}

pub(crate) fn parse_card(bytes: &[u8]) -> Result<Value, String> {
    let card: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{CARD_FILE} is not JSON: {e}"))?;
    if !card.is_object() {
        return Err(format!("{CARD_FILE} is not a JSON object"));
    }
    Ok(card)
}

pub(crate) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
}

/// Creates the folder a version is downloaded into ([`Registry::download`]).
pub(crate) async fn create_download_dir(into: &Path) -> Result<(), RegistryError> {
    tokio::fs::create_dir_all(into)
        .await
        .map_err(|e| RegistryError::io(into, e))
}

/// Writes one downloaded file, `name`, into `into`.
pub(crate) async fn write_downloaded(
    into: &Path,
    name: &str,
    bytes: impl AsRef<[u8]>,
) -> Result<(), RegistryError> {
    let to = into.join(name);
    tokio::fs::write(&to, bytes)
        .await
        .map_err(|e| RegistryError::io(&to, e))
}

/// What the registry reads from a model card.
pub mod card {
    use serde_json::Value;

    /// The feature schema the model was trained on (`feature_schema_id`, a string).
    pub fn feature_schema_id(card: &Value) -> Option<String> {
        card.get("feature_schema_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// Numeric leaves of the card's `metrics` object (keys as they are), and of its
    /// `evaluation` and `data` objects (keys prefixed with the object's name), joined with
    /// '.', sorted. Arrays (tables such as the reliability diagram) are skipped.
    pub fn metrics(card: &Value) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (section, prefix) in [
            ("metrics", ""),
            ("evaluation", "evaluation"),
            ("data", "data"),
        ] {
            if let Some(m) = card.get(section) {
                flatten(m, prefix.to_owned(), &mut |k, v| {
                    if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                        out.push((k, x));
                    }
                });
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Leaves of the card's `params` (or `parameters`) object as strings, keys joined with '.'.
    pub fn params(card: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(p) = card.get("params").or_else(|| card.get("parameters")) {
            flatten(p, String::new(), &mut |k, v| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => return,
                    other => other.to_string(),
                };
                out.push((k, s));
            });
        }
        out.sort();
        out
    }

    fn flatten(v: &Value, prefix: String, f: &mut impl FnMut(String, &Value)) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(child, key, f);
                }
            }
            Value::Array(_) => {}
            leaf if !prefix.is_empty() => f(prefix, leaf),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_metrics_and_params_are_flattened() {
        let card = serde_json::json!({
            "feature_schema_id": "fs1-abc",
            "metrics": {"empty": {"test": {"log_loss": 0.25, "pr_auc": 0.5}, "reliability": [[0.1, 0.2]]},
                        "rows": 10},
            "params": {"eta": 0.1, "max_depth": 6, "objective": "binary:logistic", "none": null},
            "data": {"rows": 7},
        });
        assert_eq!(card::feature_schema_id(&card).as_deref(), Some("fs1-abc"));
        assert_eq!(
            card::metrics(&card),
            vec![
                ("data.rows".to_owned(), 7.0),
                ("empty.test.log_loss".to_owned(), 0.25),
                ("empty.test.pr_auc".to_owned(), 0.5),
                ("rows".to_owned(), 10.0)
            ]
        );
        assert_eq!(
            card::params(&card),
            vec![
                ("eta".to_owned(), "0.1".to_owned()),
                ("max_depth".to_owned(), "6".to_owned()),
                ("objective".to_owned(), "binary:logistic".to_owned()),
            ]
        );
    }

    #[test]
    fn stages_parse_and_print() {
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(s));
        }
        assert!("archived".parse::<Stage>().unwrap_err().contains("staging"));
    }

    #[test]
    fn file_names_are_plain() {
        assert!(valid_file_name("empty.json"));
        for bad in ["", ".hidden", "a/b", "a b", "..", "é.json"] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }
}
