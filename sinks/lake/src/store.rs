//! Where the lake lives: a local directory (default) or an S3 bucket and prefix.
//!
//! S3 goes through `object_store`'s AWS client: credentials and region from the usual
//! `AWS_*` environment (or the instance role), path-style requests, and an endpoint override
//! from configuration only (`[lake] endpoint`, e.g. a local moto server) or the standard
//! `AWS_ENDPOINT_URL` variable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use crate::LakeError;

/// The `[lake]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct LakeConfig {
    /// Write the lake at all (`up`, `process`).
    #[default(true)]
    pub enabled: bool,
    /// Where: empty = `<data_dir>/lake`; a directory path; or `s3://bucket/prefix`.
    pub url: String,
    /// S3 endpoint override (a local emulator); empty = AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: String,
    /// Suffix of the writer ids (`processor`, `archive`) when several instances share a lake.
    pub instance: String,
    /// The archiver's checkpoints; relative paths are under `data_dir`.
    #[default(PathBuf::from("checkpoints/lake"))]
    pub checkpoint_dir: PathBuf,
    /// How often the archiver checkpoints (and so writes files).
    #[default(10_000)]
    pub checkpoint_interval_ms: u64,
    /// SageMaker Model Monitor's data capture and ground truth (`[lake.model_monitor]`).
    pub model_monitor: crate::model_monitor::ModelMonitorConfig,
}

impl LakeConfig {
    /// The writer id of `role` (`processor`, `archive`), with the instance suffix if any.
    pub fn writer_id(&self, role: &str) -> Result<String, LakeError> {
        let id = if self.instance.is_empty() {
            role.to_owned()
        } else {
            format!("{role}-{}", self.instance)
        };
        if crate::layout::valid_writer(&id) {
            Ok(id)
        } else {
            Err(LakeError::Config(format!(
                "writer id {id:?}: use letters, digits, '-' and '_' (at most 64)"
            )))
        }
    }

    /// A printable location (the URL or the local directory).
    pub fn location(&self, data_dir: &Path) -> String {
        if self.url.is_empty() {
            data_dir.join("lake").display().to_string()
        } else {
            self.url.clone()
        }
    }
}

/// Opens the lake's object store; a local directory is created if missing.
pub fn open_store(config: &LakeConfig, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, LakeError> {
    if let Some(rest) = config.url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LakeError::Config(format!(
                "lake url {:?} names no bucket",
                config.url
            )));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false);
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        if !config.endpoint.is_empty() {
            b = b
                .with_endpoint(&config.endpoint)
                .with_allow_http(config.endpoint.starts_with("http://"));
        }
        let s3 = b
            .build()
            .map_err(|e| LakeError::Config(format!("S3 lake {}: {e}", config.url)))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        });
    }
    let dir = if config.url.is_empty() {
        data_dir.join("lake")
    } else {
        let p = PathBuf::from(config.url.strip_prefix("file://").unwrap_or(&config.url));
        if config.url.contains("://") && !config.url.starts_with("file://") {
            return Err(LakeError::Config(format!(
                "lake url {:?}: use a directory or s3://bucket/prefix",
                config.url
            )));
        }
        if p.is_relative() { data_dir.join(p) } else { p }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| LakeError::Config(format!("creating {}: {e}", dir.display())))?;
    let local = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| LakeError::Config(format!("lake directory {}: {e}", dir.display())))?;
    Ok(Arc::new(local))
}
