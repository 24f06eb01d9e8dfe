//! The local-directory registry (the default).
//!
//! ```text
//! <root>/<model>/versions/<n>/          the model directory as registered, plus version.json
//! <root>/<model>/stages/production      the version number the stage names (one line)
//! <root>/<model>/stages/staging
//! <root>/<model>/decisions.jsonl        one promotion decision per line, oldest first
//! ```
//!
//! A version is written into a temporary directory, fsynced and renamed to `versions/<n>`:
//! readers see all of it or nothing, and two writers racing for `<n>` cannot both win (the
//! loser takes `<n+1>`). A stage file is replaced by an atomic rename, and each stage is its
//! own file, so moving one never races with moving the other.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bikeshare_types::SharedClock;
use bikeshare_types::Timestamp;
use serde::{Deserialize, Serialize};

use super::decision::PromotionDecision;
use super::{
    CARD_FILE, ModelVersion, Registry, RegistryError, Stage, card, parse_stored_card,
    read_model_dir, sanitize, stages_naming,
};

const VERSION_FILE: &str = "version.json";
const DECISIONS_FILE: &str = "decisions.jsonl";

/// What `version.json` holds beside the files.
#[derive(Debug, Serialize, Deserialize)]
struct VersionMeta {
    version: u64,
    registered_at: Timestamp,
    files: Vec<String>,
}

/// A registry in a local directory.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    root: PathBuf,
    model: String,
    clock: SharedClock,
}

impl LocalRegistry {
    /// The registry of `model` under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>, model: impl Into<String>, clock: SharedClock) -> Self {
        Self {
            root: root.into(),
            model: model.into(),
            clock,
        }
    }

    fn model_dir(&self) -> PathBuf {
        self.root.join(sanitize(&self.model))
    }
    fn versions_dir(&self) -> PathBuf {
        self.model_dir().join("versions")
    }
    fn version_dir(&self, version: u64) -> PathBuf {
        self.versions_dir().join(version.to_string())
    }
    fn stage_file(&self, stage: Stage) -> PathBuf {
        self.model_dir().join("stages").join(stage.as_str())
    }

    /// Version numbers present, ascending.
    async fn version_numbers(&self) -> Result<Vec<u64>, RegistryError> {
        let dir = self.versions_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::io(&dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| RegistryError::io(&dir, e))?
        {
            if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn stage_version(&self, stage: Stage) -> Result<Option<u64>, RegistryError> {
        let path = self.stage_file(stage);
        match tokio::fs::read_to_string(&path).await {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| {
                RegistryError::Corrupt(format!("{} holds {s:?}, not a version", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io(&path, e)),
        }
    }

    async fn read_version(
        &self,
        version: u64,
        stages: &[(Stage, u64)],
    ) -> Result<ModelVersion, RegistryError> {
        let dir = self.version_dir(version);
        let meta_path = dir.join(VERSION_FILE);
        let meta = match tokio::fs::read(&meta_path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::NoSuchVersion {
                    model: self.model.clone(),
                    version,
                });
            }
            Err(e) => return Err(RegistryError::io(&meta_path, e)),
        };
        let meta: VersionMeta = serde_json::from_slice(&meta)
            .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", meta_path.display())))?;
        let card_path = dir.join(CARD_FILE);
        let bytes = tokio::fs::read(&card_path)
            .await
            .map_err(|e| RegistryError::io(&card_path, e))?;
        let card = parse_stored_card(&bytes, &card_path.display().to_string())?;
        Ok(ModelVersion {
            model: self.model.clone(),
            version,
            registered_at: meta.registered_at,
            stages: stages_naming(version, stages),
            feature_schema_id: card::feature_schema_id(&card),
            card,
            files: meta.files,
            source: dir.display().to_string(),
            run_id: None,
        })
    }

    /// Each stage that names a version, and the version, in [`Stage`] order.
    async fn all_stages(&self) -> Result<Vec<(Stage, u64)>, RegistryError> {
        let mut out = Vec::new();
        for s in Stage::ALL {
            if let Some(v) = self.stage_version(s).await? {
                out.push((s, v));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    fn model_name(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        format!(
            "local registry at {} (model {})",
            self.root.display(),
            self.model
        )
    }

    async fn register(&self, dir: &Path) -> Result<ModelVersion, RegistryError> {
        let (files, _card) = read_model_dir(dir).await?;
        let versions = self.versions_dir();
        tokio::fs::create_dir_all(&versions)
            .await
            .map_err(|e| RegistryError::io(&versions, e))?;
        let registered_at = self.clock.now();
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let model_dir = self.model_dir();
        let staged = tokio::task::spawn_blocking({
            let model_dir = model_dir.clone();
            let files = files.clone();
            move || stage_files(&model_dir, &files)
        })
        .await
        .map_err(|e| RegistryError::Corrupt(format!("staging task: {e}")))??;

        let mut next = self.version_numbers().await?.last().copied().unwrap_or(0) + 1;
        loop {
            let meta = VersionMeta {
                version: next,
                registered_at,
                files: names.clone(),
            };
            let meta_path = staged.join(VERSION_FILE);
            let bytes = serde_json::to_vec_pretty(&meta)
                .map_err(|e| RegistryError::Corrupt(e.to_string()))?;
            write_synced(&meta_path, &bytes).map_err(|e| RegistryError::io(&meta_path, e))?;
            let target = self.version_dir(next);
            match std::fs::rename(&staged, &target) {
                Ok(()) => {
                    sync_dir(&versions);
                    tracing::info!(model = %self.model, version = next, "registered");
                    let stages = self.all_stages().await?;
                    return self.read_version(next, &stages).await;
                }
                // Taken by a concurrent registration: try the next number.
                Err(_) if target.exists() => next += 1,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staged);
                    return Err(RegistryError::io(&target, e));
                }
            }
        }
    }

    async fn get(&self, version: u64) -> Result<ModelVersion, RegistryError> {
        let stages = self.all_stages().await?;
        self.read_version(version, &stages).await
    }

    async fn list(&self) -> Result<Vec<ModelVersion>, RegistryError> {
        let stages = self.all_stages().await?;
        let mut out = Vec::new();
        for v in self.version_numbers().await? {
            out.push(self.read_version(v, &stages).await?);
        }
        Ok(out)
    }

    async fn download(&self, version: u64, into: &Path) -> Result<(), RegistryError> {
        let v = self.get(version).await?;
        super::create_download_dir(into).await?;
        let from = self.version_dir(version);
        for name in &v.files {
            tokio::fs::copy(from.join(name), into.join(name))
                .await
                .map_err(|e| RegistryError::io(from.join(name), e))?;
        }
        Ok(())
    }

    async fn set_stage(&self, version: u64, stage: Stage) -> Result<(), RegistryError> {
        // The version must exist before a stage may name it.
        self.get(version).await?;
        let path = self.stage_file(stage);
        let bytes = format!("{version}\n").into_bytes();
        tokio::task::spawn_blocking(move || replace_file(&path, &bytes))
            .await
            .map_err(|e| RegistryError::Corrupt(format!("stage task: {e}")))??;
        tracing::info!(model = %self.model, version, %stage, "stage set");
        Ok(())
    }

    async fn current(&self, stage: Stage) -> Result<Option<ModelVersion>, RegistryError> {
        match self.stage_version(stage).await? {
            Some(v) => {
                let stages = self.all_stages().await?;
                self.read_version(v, &stages).await.map(Some)
            }
            None => Ok(None),
        }
    }

    async fn record_decision(&self, decision: &PromotionDecision) -> Result<(), RegistryError> {
        let dir = self.model_dir();
        let mut line =
            serde_json::to_vec(decision).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            std::fs::create_dir_all(&dir).map_err(|e| RegistryError::io(&dir, e))?;
            let path = dir.join(DECISIONS_FILE);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| RegistryError::io(&path, e))?;
            f.write_all(&line)
                .and_then(|()| f.sync_all())
                .map_err(|e| RegistryError::io(&path, e))
        })
        .await
        .map_err(|e| RegistryError::Corrupt(format!("decision task: {e}")))?
    }

    async fn decisions(&self) -> Result<Vec<PromotionDecision>, RegistryError> {
        let path = self.model_dir().join(DECISIONS_FILE);
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RegistryError::io(&path, e)),
        };
        let mut out = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(d) => out.push(d),
                // A crash mid-append can leave a torn last line: it was never acknowledged.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(RegistryError::Corrupt(format!(
                        "{} line {}: {e}",
                        path.display(),
                        i + 1
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Copies the files into a fresh temporary directory under `model_dir`, fsynced.
fn stage_files(model_dir: &Path, files: &[(String, PathBuf)]) -> Result<PathBuf, RegistryError> {
    let tmp = model_dir.join(format!(".tmp-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&tmp).map_err(|e| RegistryError::io(&tmp, e))?;
    for (name, path) in files {
        let bytes = std::fs::read(path).map_err(|e| RegistryError::io(path, e))?;
        let to = tmp.join(name);
        write_synced(&to, &bytes).map_err(|e| RegistryError::io(&to, e))?;
    }
    Ok(tmp)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Best effort: makes a rename in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` atomically: temporary file, fsync, rename.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = path
        .parent()
        .ok_or_else(|| RegistryError::Corrupt(format!("no parent of {}", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| RegistryError::io(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", rand::random::<u64>()));
    write_synced(&tmp, bytes).map_err(|e| RegistryError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RegistryError::io(path, e))?;
    sync_dir(dir);
    Ok(())
}
