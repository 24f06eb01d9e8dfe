//! The SageMaker Model Registry: a model package group in SageMaker, the files in S3.
//!
//! | registry | SageMaker |
//! | --- | --- |
//! | model | a model package group ([`SageMakerSettings::model_package_group`], the model's name when empty) |
//! | version | a model package of the group, numbered by SageMaker (1, 2, ...), registered `PendingManualApproval`. Its inference specification names the serving image ([`SageMakerSettings::image`]) and `ModelDataUrl` = `s3://<bucket>/<prefix><artifact>/model.tar.gz`: the model directory as SageMaker unpacks it into `/opt/ml/model`. `card.json` is also stored beside it and referenced as the package's `ModelMetrics` (model quality statistics); the card's headline metrics, `feature_schema_id`, the file list and the registration time are `CustomerMetadataProperties` |
//! | production | the package that is `Approved` (the promotion gate's approval, its decision's summary as `ApprovalDescription`). One at a time: the one it replaces becomes `Rejected`, saying by what |
//! | staging | the package marked `bikeshare.staging_since` (one at a time: setting it removes the mark from the others) |
//! | decision | `<prefix>decisions/<group>/<decided_at>-v<candidate>-<stage>-<random>.json` in S3, the whole [`PromotionDecision`]; the candidate's metadata `bikeshare.decision.<stage>` carries its summary |
//!
//! `<artifact>` is `<registration ms>-<random hex>`: the serving stack's `ModelVersion`
//! parameter (`models/<ModelVersion>/model.tar.gz` with the default prefix). A refused
//! candidate stays `PendingManualApproval`: the gate's refusal is not final (more held-out
//! data may change it); the refusal is in the decision log and the package's metadata.
//!
//! Writes that span two packages (approve the new production, reject the old one) are ordered
//! so a crash between them leaves a readable state: readers take the `Approved` package with
//! the newest `bikeshare.production_since` (and the newest `bikeshare.staging_since`), and the
//! next stage change cleans up. Retries: the SDK's standard policy owns them on this path
//! (registry calls are few and a failure fails the command, or the watcher tries again).
//! Errors are [`RegistryError::SageMaker`]: the operation, the service's error code and HTTP
//! status when it answered, and the whole cause chain.
//!
//! The clients are built from the process's one AWS configuration
//! ([`bikeshare_runtime::aws`]); S3 uses path-style addressing so the same code talks to S3
//! and to moto. The endpoint comes from configuration only
//! ([`SageMakerSettings::endpoint_url`], `AWS_ENDPOINT_URL_SAGEMAKER`, `AWS_ENDPOINT_URL_S3`,
//! or the shared configuration's).

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sagemaker::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemaker::types::{
    InferenceSpecification, MetricsSource, ModelApprovalStatus, ModelMetrics,
    ModelPackageContainerDefinition, ModelQuality,
};
use bikeshare_runtime::aws::SdkConfig;
use bikeshare_types::error::chain;
use bikeshare_types::{SharedClock, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::decision::PromotionDecision;
use super::{
    CARD_FILE, ModelVersion, Registry, RegistryError, Stage, card, parse_stored_card,
    read_model_dir, valid_file_name,
};

/// The model archive's name under its artifact prefix (what SageMaker unpacks).
pub const MODEL_ARCHIVE: &str = "model.tar.gz";
/// The content types the serving container answers (`serve-model`, `crate::serve`).
pub const CONTENT_TYPES: [&str; 2] = ["text/csv", "application/jsonlines"];
/// SageMaker's limits on `CustomerMetadataProperties`.
pub const MAX_METADATA_ENTRIES: usize = 50;
pub const MAX_METADATA_VALUE: usize = 256;
/// `ApprovalDescription`'s limit.
pub const MAX_APPROVAL_DESCRIPTION: usize = 1024;
/// `ListModelPackages`' page size limit.
const PAGE: i32 = 100;
/// How many of the card's metrics go into the metadata (the whole card is in S3).
const MAX_METRIC_ENTRIES: usize = 30;

const KEY_MODEL: &str = "bikeshare.model";
const KEY_SCHEMA: &str = "bikeshare.feature_schema_id";
const KEY_FILES: &str = "bikeshare.files";
const KEY_REGISTERED: &str = "bikeshare.registered_at";
const KEY_ARTIFACT: &str = "bikeshare.artifact";
const KEY_STAGING: &str = "bikeshare.staging_since";
const KEY_PRODUCTION: &str = "bikeshare.production_since";
const METRIC_PREFIX: &str = "metric.";

/// `[registry.sagemaker]`: where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SageMakerSettings {
    /// The model package group; the registry's model name when empty.
    pub model_package_group: String,
    /// The bucket of the model archives, cards and decisions (the stack's data bucket).
    pub bucket: String,
    /// Key prefix in the bucket (a trailing `/` is added when missing).
    pub prefix: String,
    /// The serving image the packages name (`<account>.dkr.ecr.<region>.amazonaws.com/
    /// bikeshare-<env>:<tag>`); needed to register, not to read.
    pub image: String,
    /// AWS region; the shared configuration's when absent.
    pub region: Option<String>,
    /// Endpoint override for SageMaker and S3 (an emulator); `AWS_ENDPOINT_URL_SAGEMAKER` and
    /// `AWS_ENDPOINT_URL_S3` work as well.
    pub endpoint_url: Option<String>,
    /// Create the group when it is missing (development, emulators; in AWS the serving stack
    /// creates it, and the roles may not).
    pub create_group: bool,
}

impl Default for SageMakerSettings {
    fn default() -> Self {
        Self {
            model_package_group: String::new(),
            bucket: String::new(),
            prefix: "models/".into(),
            image: String::new(),
            region: None,
            endpoint_url: None,
            create_group: false,
        }
    }
}

/// What builds the AWS configuration on first use (the CLI's process-wide one).
pub type SdkLoader = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = SdkConfig> + Send>> + Send + Sync>;

enum Source {
    Ready(Box<SdkConfig>),
    Lazy(SdkLoader),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Ready(_) => "ready",
            Source::Lazy(_) => "loaded on first use",
        })
    }
}

#[derive(Debug)]
struct Clients {
    sagemaker: aws_sdk_sagemaker::Client,
    s3: aws_sdk_s3::Client,
    /// Whether the configuration has a credentials provider: without one the SDK signs
    /// nothing and sends nothing (its dispatch fails before the request leaves).
    credentials: bool,
}

/// A registry in a SageMaker model package group.
#[derive(Debug)]
pub struct SageMakerRegistry {
    model: String,
    group: String,
    settings: SageMakerSettings,
    prefix: String,
    clock: SharedClock,
    source: Source,
    clients: OnceCell<Clients>,
    /// The group's ARN, once it is known to exist.
    group_arn: OnceCell<String>,
}

/// One model package as the registry reads it.
#[derive(Debug, Clone)]
struct Package {
    version: u64,
    arn: String,
    status: Option<ModelApprovalStatus>,
    metadata: HashMap<String, String>,
    model_data_url: Option<String>,
    created_ms: Option<i64>,
}

impl Package {
    fn since(&self, key: &str) -> Option<i64> {
        self.metadata.get(key).and_then(|v| v.parse().ok())
    }
    fn approved(&self) -> bool {
        self.status == Some(ModelApprovalStatus::Approved)
    }
}

impl SageMakerRegistry {
    /// The registry of `model` with clients from `sdk`.
    pub fn new(
        sdk: &SdkConfig,
        model: impl Into<String>,
        settings: SageMakerSettings,
        clock: SharedClock,
    ) -> Result<Self, RegistryError> {
        Self::build(
            model.into(),
            settings,
            clock,
            Source::Ready(Box::new(sdk.clone())),
        )
    }

    /// The same, with the AWS configuration loaded by `loader` on first use (a command that
    /// never reads the registry never loads it).
    pub fn lazy(
        model: impl Into<String>,
        settings: SageMakerSettings,
        clock: SharedClock,
        loader: SdkLoader,
    ) -> Result<Self, RegistryError> {
        Self::build(model.into(), settings, clock, Source::Lazy(loader))
    }

    fn build(
        model: String,
        settings: SageMakerSettings,
        clock: SharedClock,
        source: Source,
    ) -> Result<Self, RegistryError> {
        let group = if settings.model_package_group.is_empty() {
            model.clone()
        } else {
            settings.model_package_group.clone()
        };
        if !valid_group_name(&group) {
            return Err(config_error(format!(
                "model package group {group:?}: 1-63 letters, digits and single hyphens \
                 between them"
            )));
        }
        if settings.bucket.is_empty() {
            return Err(config_error(
                "[registry.sagemaker] bucket is empty: name the bucket of the model archives"
                    .into(),
            ));
        }
        let mut prefix = settings.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            model,
            group,
            settings,
            prefix,
            clock,
            source,
            clients: OnceCell::new(),
            group_arn: OnceCell::new(),
        })
    }

    /// The model package group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// A failed call of `operation` (made with the clients built).
    fn failed<E>(&self, operation: &str, e: &SdkError<E>) -> RegistryError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        sdk_error(
            operation,
            e,
            self.clients.get().is_none_or(|c| c.credentials),
        )
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let sdk = match &self.source {
                    Source::Ready(sdk) => SdkConfig::clone(sdk),
                    Source::Lazy(load) => load().await,
                };
                let mut b = sdk.to_builder();
                if let Some(r) = &self.settings.region {
                    b = b.region(aws_sdk_sagemaker::config::Region::new(r.clone()));
                }
                if let Some(url) = self
                    .settings
                    .endpoint_url
                    .as_ref()
                    .filter(|u| !u.is_empty())
                {
                    b = b.endpoint_url(url);
                }
                let sdk = b.build();
                Clients {
                    credentials: sdk.credentials_provider().is_some(),
                    sagemaker: aws_sdk_sagemaker::Client::new(&sdk),
                    s3: aws_sdk_s3::Client::from_conf(
                        aws_sdk_s3::config::Builder::from(&sdk)
                            .force_path_style(true)
                            .build(),
                    ),
                }
            })
            .await
    }

    fn decisions_prefix(&self) -> String {
        format!("{}decisions/{}/", self.prefix, self.group)
    }

    fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// The key of an `s3://<our bucket>/...` URL.
    fn key_of(&self, url: &str) -> Result<String, RegistryError> {
        url.strip_prefix(&format!("s3://{}/", self.settings.bucket))
            .map(str::to_owned)
            .ok_or_else(|| {
                RegistryError::Corrupt(format!(
                    "model package data {url:?} is not in s3://{}/",
                    self.settings.bucket
                ))
            })
    }

    /// The group's ARN: it must exist (or be created when `create_group` says so).
    async fn ensure_group(&self) -> Result<&String, RegistryError> {
        self.group_arn
            .get_or_try_init(|| async {
                let sm = &self.clients().await.sagemaker;
                let described = sm
                    .describe_model_package_group()
                    .model_package_group_name(&self.group)
                    .send()
                    .await;
                match described {
                    Ok(out) => Ok(out.model_package_group_arn().unwrap_or_default().to_owned()),
                    Err(e) if missing(&e) && self.settings.create_group => {
                        let created = sm
                            .create_model_package_group()
                            .model_package_group_name(&self.group)
                            .model_package_group_description(format!(
                                "bikeshare model {}: versions registered by `bikeshare train`, \
                                 approved by the promotion gate",
                                self.model
                            ))
                            .send()
                            .await
                            .map_err(|e| self.failed("CreateModelPackageGroup", &e))?;
                        tracing::info!(group = %self.group, "model package group created");
                        Ok(created
                            .model_package_group_arn()
                            .unwrap_or_default()
                            .to_owned())
                    }
                    Err(e) if missing(&e) => Err(RegistryError::SageMaker {
                        operation: "DescribeModelPackageGroup".into(),
                        code: e.code().map(str::to_owned),
                        status: Some(e.raw_response().map_or(400, |r| r.status().as_u16())),
                        message: format!(
                            "model package group {:?} does not exist (the serving stack creates \
                             it; `[registry.sagemaker] create_group = true` creates it in \
                             development): {}",
                            self.group,
                            chain(&e)
                        ),
                    }),
                    Err(e) => Err(self.failed("DescribeModelPackageGroup", &e)),
                }
            })
            .await
    }

    /// Every package of the group (summaries), oldest first.
    async fn summaries(
        &self,
        status: Option<ModelApprovalStatus>,
    ) -> Result<Vec<(u64, String)>, RegistryError> {
        self.ensure_group().await?;
        let sm = &self.clients().await.sagemaker;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = sm
                .list_model_packages()
                .model_package_group_name(&self.group)
                .set_model_approval_status(status.clone())
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.failed("ListModelPackages", &e))?;
            for s in page.model_package_summary_list() {
                let (Some(v), Some(arn)) = (s.model_package_version(), s.model_package_arn())
                else {
                    return Err(RegistryError::Corrupt(format!(
                        "a package of group {} without version or ARN: {s:?}",
                        self.group
                    )));
                };
                out.push((u64::try_from(v).unwrap_or(0), arn.to_owned()));
            }
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn describe(&self, version: u64, arn: &str) -> Result<Package, RegistryError> {
        let out = self
            .clients()
            .await
            .sagemaker
            .describe_model_package()
            .model_package_name(arn)
            .send()
            .await
            .map_err(|e| self.failed("DescribeModelPackage", &e))?;
        Ok(package_of(&out, version, arn))
    }

    /// Every package, described, oldest first.
    async fn packages(&self) -> Result<Vec<Package>, RegistryError> {
        let mut out = Vec::new();
        for (v, arn) in self.summaries(None).await? {
            out.push(self.describe(v, &arn).await?);
        }
        Ok(out)
    }

    /// Version `version`, described by its ARN (one call; the group is not listed).
    async fn package(&self, version: u64) -> Result<Package, RegistryError> {
        let arn = package_arn(self.ensure_group().await?, version)?;
        let out = self
            .clients()
            .await
            .sagemaker
            .describe_model_package()
            .model_package_name(&arn)
            .send()
            .await;
        match out {
            Ok(out) => Ok(package_of(&out, version, &arn)),
            Err(e) if missing(&e) => Err(RegistryError::NoSuchVersion {
                model: self.model.clone(),
                version,
            }),
            Err(e) => Err(self.failed("DescribeModelPackage", &e)),
        }
    }

    /// The `Approved` packages, described (one, unless a stage change was interrupted).
    async fn approved(&self) -> Result<Vec<Package>, RegistryError> {
        let mut approved = Vec::new();
        for (v, arn) in self.summaries(Some(ModelApprovalStatus::Approved)).await? {
            approved.push(self.describe(v, &arn).await?);
        }
        Ok(approved)
    }

    /// The approved package that is production: the newest `production_since` among the
    /// `Approved` ones.
    async fn production(&self) -> Result<Option<Package>, RegistryError> {
        let approved = self.approved().await?;
        Ok(newest(approved.iter().filter(|p| p.approved()), KEY_PRODUCTION).cloned())
    }

    async fn get_object(&self, key: &str) -> Result<Vec<u8>, RegistryError> {
        let out = self
            .clients()
            .await
            .s3
            .get_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.failed(&format!("GetObject {}", self.s3_url(key)), &e))?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| RegistryError::SageMaker {
                operation: format!("GetObject {}", self.s3_url(key)),
                code: None,
                status: None,
                message: chain(&e),
            })?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn put_object(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), RegistryError> {
        self.clients()
            .await
            .s3
            .put_object()
            .bucket(&self.settings.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.failed(&format!("PutObject {}", self.s3_url(key)), &e))?;
        Ok(())
    }

    /// The artifact prefix of a package (`<prefix><artifact>/`), from its model data URL.
    fn artifact_key(&self, p: &Package, file: &str) -> Result<String, RegistryError> {
        let url = p.model_data_url.as_deref().ok_or_else(|| {
            RegistryError::Corrupt(format!("package {} has no model data URL", p.arn))
        })?;
        let key = self.key_of(url)?;
        let dir = key
            .strip_suffix(MODEL_ARCHIVE)
            .ok_or_else(|| RegistryError::Corrupt(format!("{url} is not a {MODEL_ARCHIVE}")))?;
        Ok(format!("{dir}{file}"))
    }

    async fn to_version(
        &self,
        p: &Package,
        production: Option<u64>,
        staging: Option<u64>,
    ) -> Result<ModelVersion, RegistryError> {
        let card_key = self.artifact_key(p, CARD_FILE)?;
        let bytes = self.get_object(&card_key).await?;
        let card = parse_stored_card(&bytes, &self.s3_url(&card_key))?;
        let files = p
            .metadata
            .get(KEY_FILES)
            .map(|f| f.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let stages = Stage::ALL
            .into_iter()
            .filter(|s| match s {
                Stage::Staging => staging == Some(p.version),
                Stage::Production => production == Some(p.version),
            })
            .collect();
        Ok(ModelVersion {
            model: self.model.clone(),
            version: p.version,
            registered_at: Timestamp(p.since(KEY_REGISTERED).or(p.created_ms).unwrap_or_default()),
            stages,
            feature_schema_id: card::feature_schema_id(&card),
            card,
            files,
            source: p.model_data_url.clone().unwrap_or_default(),
            run_id: None,
        })
    }

    /// Sets the package's status (when given) and metadata: `set` added or replaced, `remove`
    /// removed. One `UpdateModelPackage` with only those ([`Update::of`]): SageMaker keeps
    /// what a request omits, so keys other writers set meanwhile stay, and an unchanged
    /// status is not written again.
    async fn update(
        &self,
        p: &Package,
        status: Option<(ModelApprovalStatus, String)>,
        set: &[(&str, String)],
        remove: &[&str],
    ) -> Result<(), RegistryError> {
        let Some(u) = Update::of(p, status, set, remove) else {
            return Ok(());
        };
        let mut req = self
            .clients()
            .await
            .sagemaker
            .update_model_package()
            .model_package_arn(&p.arn)
            .set_customer_metadata_properties((!u.set.is_empty()).then_some(u.set));
        for k in u.remove {
            req = req.customer_metadata_properties_to_remove(k);
        }
        if let Some((status, description)) = u.status {
            req = req
                .model_approval_status(status)
                .approval_description(description);
        }
        req.send()
            .await
            .map_err(|e| self.failed("UpdateModelPackage", &e))?;
        Ok(())
    }
}

/// What one `UpdateModelPackage` sends: the metadata that changes, the keys to remove, the
/// new status with its description.
#[derive(Debug, PartialEq)]
struct Update {
    set: HashMap<String, String>,
    remove: Vec<String>,
    status: Option<(ModelApprovalStatus, String)>,
}

impl Update {
    /// The update of `p` that sets `status` and the keys of `set` (values cleaned to
    /// SageMaker's alphabet and length; a key already holding that value is left alone) and
    /// removes the keys of `remove` it has (a key in both is set). `None`: nothing changes.
    fn of(
        p: &Package,
        status: Option<(ModelApprovalStatus, String)>,
        set: &[(&str, String)],
        remove: &[&str],
    ) -> Option<Self> {
        let set: HashMap<String, String> = set
            .iter()
            .map(|(k, v)| ((*k).to_owned(), metadata_value(v)))
            .filter(|(k, v)| p.metadata.get(k) != Some(v))
            .collect();
        let mut remove: Vec<String> = remove
            .iter()
            .filter(|k| p.metadata.contains_key(**k) && !set.contains_key(**k))
            .map(|k| (*k).to_owned())
            .collect();
        remove.sort();
        remove.dedup();
        let status = status.map(|(s, d)| (s, truncate(&d, MAX_APPROVAL_DESCRIPTION)));
        (!set.is_empty() || !remove.is_empty() || status.is_some()).then_some(Self {
            set,
            remove,
            status,
        })
    }
}

/// A package as `DescribeModelPackage` answered for `arn` (`version` when it names none).
fn package_of(
    out: &aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput,
    version: u64,
    arn: &str,
) -> Package {
    Package {
        version: out
            .model_package_version()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(version),
        arn: arn.to_owned(),
        status: out.model_approval_status().cloned(),
        metadata: out
            .customer_metadata_properties()
            .cloned()
            .unwrap_or_default(),
        model_data_url: out
            .inference_specification()
            .and_then(|s| s.containers().first())
            .and_then(|c| c.model_data_url())
            .map(str::to_owned),
        created_ms: out.creation_time().and_then(|t| t.to_millis().ok()),
    }
}

/// The ARN of version `version` of the group `group_arn`
/// (`arn:<partition>:sagemaker:<region>:<account>:model-package/<group>/<version>`).
fn package_arn(group_arn: &str, version: u64) -> Result<String, RegistryError> {
    group_arn
        .split_once(":model-package-group/")
        .map(|(head, group)| format!("{head}:model-package/{group}/{version}"))
        .ok_or_else(|| {
            RegistryError::Corrupt(format!("{group_arn:?} is not a model package group ARN"))
        })
}

/// The package with the newest `key` timestamp among `packages` (equal ones: the later
/// version).
fn newest<'a>(packages: impl Iterator<Item = &'a Package>, key: &str) -> Option<&'a Package> {
    packages
        .filter_map(|p| p.since(key).map(|t| (t, p.version, p)))
        .max_by_key(|(t, v, _)| (*t, *v))
        .map(|(_, _, p)| p)
}

/// Production's and staging's versions among `packages`.
fn stage_versions(packages: &[Package]) -> (Option<u64>, Option<u64>) {
    (
        newest(packages.iter().filter(|p| p.approved()), KEY_PRODUCTION).map(|p| p.version),
        newest(packages.iter(), KEY_STAGING).map(|p| p.version),
    )
}

#[async_trait]
impl Registry for SageMakerRegistry {
    fn model_name(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        format!(
            "SageMaker model package group {} (files in s3://{}/{})",
            self.group, self.settings.bucket, self.prefix
        )
    }

    async fn register(&self, dir: &Path) -> Result<ModelVersion, RegistryError> {
        let (files, card) = read_model_dir(dir).await?;
        if self.settings.image.is_empty() {
            return Err(config_error(
                "[registry.sagemaker] image is empty: a model package names its serving image"
                    .into(),
            ));
        }
        self.ensure_group().await?;
        let mut contents = Vec::with_capacity(files.len());
        for (name, path) in &files {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| RegistryError::io(path, e))?;
            contents.push((name.clone(), bytes));
        }
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let joined = names.join(" ");
        if joined.len() > MAX_METADATA_VALUE {
            return Err(RegistryError::invalid(
                dir,
                format!(
                    "{} file names take {} characters; SageMaker metadata holds {MAX_METADATA_VALUE}",
                    names.len(),
                    joined.len()
                ),
            ));
        }
        let card_bytes = contents
            .iter()
            .find(|(n, _)| n == CARD_FILE)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let archive = tokio::task::spawn_blocking(move || pack(&contents))
            .await
            .map_err(|e| RegistryError::Corrupt(format!("archive task: {e}")))?
            .map_err(|e| RegistryError::io(dir, e))?;

        let registered_at = self.clock.now();
        let artifact = format!("{}-{:08x}", registered_at.0, rand::random::<u32>());
        let base = format!("{}{artifact}/", self.prefix);
        self.put_object(
            &format!("{base}{CARD_FILE}"),
            card_bytes,
            "application/json",
        )
        .await?;
        let archive_key = format!("{base}{MODEL_ARCHIVE}");
        self.put_object(&archive_key, archive, "application/gzip")
            .await?;

        let mut metadata: Vec<(String, String)> = vec![
            (KEY_MODEL.into(), self.model.clone()),
            (KEY_FILES.into(), joined),
            (KEY_REGISTERED.into(), registered_at.0.to_string()),
            (KEY_ARTIFACT.into(), artifact.clone()),
        ];
        if let Some(id) = card::feature_schema_id(&card) {
            metadata.push((KEY_SCHEMA.into(), id));
        }
        for (k, x) in card::metrics(&card).into_iter().take(MAX_METRIC_ENTRIES) {
            let key = format!("{METRIC_PREFIX}{k}");
            if key.len() <= 128 {
                metadata.push((key, x.to_string()));
            }
        }
        metadata.truncate(MAX_METADATA_ENTRIES);
        let metadata: HashMap<String, String> = metadata
            .into_iter()
            .map(|(k, v)| (metadata_key(&k), metadata_value(&v)))
            .collect();
        let description = card
            .get("description")
            .or_else(|| card.get("source"))
            .and_then(Value::as_str)
            .map_or_else(
                || format!("{} trained on {artifact}", self.model),
                str::to_owned,
            );
        let mut spec = InferenceSpecification::builder().containers(
            ModelPackageContainerDefinition::builder()
                .image(&self.settings.image)
                .model_data_url(self.s3_url(&archive_key))
                .build(),
        );
        for t in CONTENT_TYPES {
            spec = spec
                .supported_content_types(t)
                .supported_response_mime_types(t);
        }
        let metrics = ModelMetrics::builder()
            .model_quality(
                ModelQuality::builder()
                    .statistics(
                        MetricsSource::builder()
                            .content_type("application/json")
                            .s3_uri(self.s3_url(&format!("{base}{CARD_FILE}")))
                            .build(),
                    )
                    .build(),
            )
            .build();
        let created = self
            .clients()
            .await
            .sagemaker
            .create_model_package()
            .model_package_group_name(&self.group)
            .model_package_description(truncate(&description, 1000))
            .inference_specification(spec.build())
            .model_approval_status(ModelApprovalStatus::PendingManualApproval)
            .model_metrics(metrics)
            .set_customer_metadata_properties(Some(metadata))
            .send()
            .await
            .map_err(|e| self.failed("CreateModelPackage", &e))?;
        let arn = created.model_package_arn().unwrap_or_default().to_owned();
        let p = self.describe(0, &arn).await?;
        tracing::info!(model = %self.model, group = %self.group, version = p.version, %arn,
            "registered in the SageMaker model registry");
        // A new package is in no stage: registered pending, without a staging mark.
        self.to_version(&p, None, None).await
    }

    /// One package described by its ARN, and the approved ones (production); it is in
    /// staging when it carries the staging mark (a stage change interrupted between marking
    /// the new holder and unmarking the old one leaves two marked until the next one;
    /// `current(staging)` picks the newer).
    async fn get(&self, version: u64) -> Result<ModelVersion, RegistryError> {
        let p = self.package(version).await?;
        let production = self.production().await?.map(|q| q.version);
        let staging = p.since(KEY_STAGING).map(|_| p.version);
        self.to_version(&p, production, staging).await
    }

    async fn list(&self) -> Result<Vec<ModelVersion>, RegistryError> {
        let all = self.packages().await?;
        let (production, staging) = stage_versions(&all);
        let mut out = Vec::with_capacity(all.len());
        for p in &all {
            out.push(self.to_version(p, production, staging).await?);
        }
        Ok(out)
    }

    async fn download(&self, version: u64, into: &Path) -> Result<(), RegistryError> {
        let p = self.package(version).await?;
        let key = self.artifact_key(&p, MODEL_ARCHIVE)?;
        let bytes = self.get_object(&key).await?;
        let url = self.s3_url(&key);
        let files = tokio::task::spawn_blocking(move || unpack(&bytes))
            .await
            .map_err(|e| RegistryError::Corrupt(format!("unpack task: {e}")))?
            .map_err(|m| RegistryError::Corrupt(format!("{url}: {m}")))?;
        super::create_download_dir(into).await?;
        for (name, bytes) in files {
            super::write_downloaded(into, &name, bytes).await?;
        }
        Ok(())
    }

    async fn set_stage(&self, version: u64, stage: Stage) -> Result<(), RegistryError> {
        let target = &self.package(version).await?;
        let now = self.clock.now().0.to_string();
        match stage {
            Stage::Staging => {
                self.update(target, None, &[(KEY_STAGING, now)], &[])
                    .await?;
                // The mark is metadata, which ListModelPackages does not show: every package
                // is described.
                let all = self.packages().await?;
                for other in all
                    .iter()
                    .filter(|p| p.version != version && p.metadata.contains_key(KEY_STAGING))
                {
                    self.update(other, None, &[], &[KEY_STAGING]).await?;
                }
            }
            Stage::Production => {
                let decision = target
                    .metadata
                    .get(&decision_key(Stage::Production))
                    .cloned()
                    .unwrap_or_else(|| format!("v{version} set to production"));
                self.update(
                    target,
                    Some((ModelApprovalStatus::Approved, decision)),
                    &[(KEY_PRODUCTION, now)],
                    &[],
                )
                .await?;
                let approved = self.approved().await?;
                for other in approved
                    .iter()
                    .filter(|p| p.version != version && p.approved())
                {
                    self.update(
                        other,
                        Some((
                            ModelApprovalStatus::Rejected,
                            format!(
                                "left production: version {version} approved at {}",
                                self.clock.now()
                            ),
                        )),
                        &[],
                        &[KEY_PRODUCTION],
                    )
                    .await?;
                }
            }
        }
        tracing::info!(model = %self.model, group = %self.group, version, %stage,
            "stage set in the SageMaker model registry");
        Ok(())
    }

    async fn current(&self, stage: Stage) -> Result<Option<ModelVersion>, RegistryError> {
        match stage {
            // The watcher polls this: only the approved packages are described.
            Stage::Production => match self.production().await? {
                Some(p) => {
                    let staging = p.since(KEY_STAGING).map(|_| p.version);
                    self.to_version(&p, Some(p.version), staging)
                        .await
                        .map(Some)
                }
                None => Ok(None),
            },
            Stage::Staging => {
                let all = self.packages().await?;
                let (production, staging) = stage_versions(&all);
                match all.iter().find(|p| Some(p.version) == staging) {
                    Some(p) => self.to_version(p, production, staging).await.map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    async fn record_decision(&self, d: &PromotionDecision) -> Result<(), RegistryError> {
        // The candidate must exist before its decision is logged.
        let p = self.package(d.candidate).await?;
        let bytes =
            serde_json::to_vec_pretty(d).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        let key = format!(
            "{}{:013}-v{}-{}-{:08x}.json",
            self.decisions_prefix(),
            d.decided_at.0.max(0),
            d.candidate,
            d.target,
            rand::random::<u32>()
        );
        self.put_object(&key, bytes, "application/json").await?;
        self.update(
            &p,
            None,
            &[(&decision_key(d.target), d.summary.clone())],
            &[],
        )
        .await
    }

    async fn decisions(&self) -> Result<Vec<PromotionDecision>, RegistryError> {
        let s3 = &self.clients().await.s3;
        let prefix = self.decisions_prefix();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&self.settings.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.failed(&format!("ListObjectsV2 {}", self.s3_url(&prefix)), &e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| k.ends_with(".json"))
                    .map(str::to_owned),
            );
            match page
                .next_continuation_token()
                .filter(|_| page.is_truncated() == Some(true))
            {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let bytes = self.get_object(&key).await?;
            let d: PromotionDecision = serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Corrupt(format!("{}: {e}", self.s3_url(&key))))?;
            out.push(d);
        }
        out.sort_by_key(|d| d.decided_at);
        Ok(out)
    }
}

fn decision_key(stage: Stage) -> String {
    format!("bikeshare.decision.{stage}")
}

/// SageMaker's group names: 1-63 characters, letters and digits with single hyphens between.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A metadata value as SageMaker takes it: letters, digits, spaces and `_.:/=+-@` only
/// (anything else becomes a space), at most 256 characters, never empty.
fn metadata_value(v: &str) -> String {
    let cleaned: String = v
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c) {
                if c.is_whitespace() { ' ' } else { c }
            } else {
                ' '
            }
        })
        .collect();
    let out = truncate(cleaned.trim(), MAX_METADATA_VALUE);
    if out.is_empty() { "-".into() } else { out }
}

fn metadata_key(k: &str) -> String {
    let v = metadata_value(k).replace(' ', "_");
    truncate(&v, 128)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The model directory's files as a gzipped tar (flat, regular files, mode 644, time 0:
/// the same files give the same archive).
fn pack(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes.as_slice())?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

/// A model archive's files: flat regular files with plain names, `card.json` among them.
fn unpack(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar.gz: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("a damaged entry: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("an entry's name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let name = path.trim_start_matches("./");
        let kind = entry.header().entry_type();
        if kind.is_dir() && name.is_empty() {
            continue;
        }
        if !kind.is_file() || !valid_file_name(name) {
            return Err(format!(
                "entry {path:?} is not a plain file of a flat model directory"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is in the archive twice"));
        }
        let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(1 << 26));
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {name}: {e}"))?;
        out.push((name.to_owned(), data));
    }
    if !out.iter().any(|(n, _)| n == CARD_FILE) {
        return Err(format!("no {CARD_FILE} in the archive"));
    }
    Ok(out)
}

fn config_error(message: String) -> RegistryError {
    RegistryError::SageMaker {
        operation: "configuration".into(),
        code: Some("Configuration".into()),
        status: None,
        message,
    }
}

/// Whether SageMaker said the thing does not exist (it answers `ValidationException` with
/// "does not exist" for a missing group).
fn missing<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    e.code()
        .is_some_and(|c| c == "ResourceNotFound" || c == "ValidationException")
        && e.message()
            .is_some_and(|m| m.contains("does not exist") || m.contains("not found"))
}

/// A failed SageMaker or S3 call (both SDKs share the error type); `credentials`: whether
/// the configuration had a credentials provider.
fn sdk_error<E>(operation: &str, e: &SdkError<E>, credentials: bool) -> RegistryError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    RegistryError::SageMaker {
        operation: operation.into(),
        code: e
            .code()
            .map(str::to_owned)
            .or_else(|| no_answer_code(e, credentials).map(str::to_owned)),
        status: e.raw_response().map(|r| r.status().as_u16()),
        message: chain(e),
    }
}

/// Why a call got no answer, from the SDK's error kinds (never its wording): the request
/// was not built, it timed out, it never reached the service, or it was not sent. The SDK
/// fails a dispatch with an "other" connector error, before transmitting, when it cannot
/// resolve an identity or sign; with no credentials provider configured, that is for want
/// of credentials.
fn no_answer_code<E, R>(e: &SdkError<E, R>, credentials: bool) -> Option<&'static str> {
    Some(match e {
        SdkError::ConstructionFailure(_) => "RequestNotBuilt",
        SdkError::TimeoutError(_) => "Timeout",
        SdkError::DispatchFailure(d) if d.is_timeout() => "Timeout",
        SdkError::DispatchFailure(d) if d.is_io() => "Unreachable",
        SdkError::DispatchFailure(d) if d.is_other() && !credentials => "NoCredentials",
        SdkError::DispatchFailure(d) if d.is_other() => "RequestNotSent",
        SdkError::DispatchFailure(_) => "DispatchFailure",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_round_trip_bit_identically_and_deterministically() {
        let files = vec![
            ("card.json".to_owned(), br#"{"a":1}"#.to_vec()),
            ("empty.json".to_owned(), (0..=255u8).collect::<Vec<u8>>()),
            ("full.json".to_owned(), Vec::new()),
        ];
        let a = pack(&files).unwrap();
        assert_eq!(a, pack(&files).unwrap(), "same files, same archive");
        assert_eq!(unpack(&a).unwrap(), files);
    }

    #[test]
    fn unpacking_refuses_what_is_not_a_flat_model_directory() {
        let no_card = pack(&[("empty.json".to_owned(), b"{}".to_vec())]).unwrap();
        assert!(unpack(&no_card).unwrap_err().contains("card.json"));
        assert!(unpack(b"not gzip at all").is_err());
        // A path outside the directory.
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_entry_type(tar::EntryType::Regular);
        // `append_data` refuses "..": write the name into the header directly.
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
        h.set_cksum();
        tar.append(&h, &b"{}"[..]).unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        assert!(
            unpack(&bytes).unwrap_err().contains("escape"),
            "{:?}",
            unpack(&bytes)
        );
    }

    #[test]
    fn metadata_values_keep_to_sagemakers_pattern_and_limits() {
        assert_eq!(
            metadata_value("v2 promoted to production: beats (0.2, 0.3)"),
            "v2 promoted to production: beats  0.2  0.3"
        );
        assert_eq!(metadata_value(&"x".repeat(300)).len(), MAX_METADATA_VALUE);
        assert_eq!(metadata_value("\"\""), "-");
        assert_eq!(metadata_key("metric.empty test"), "metric.empty_test");
    }

    #[test]
    fn group_names_follow_sagemakers_rule() {
        assert!(valid_group_name("bikeshare-dev-stockout"));
        for bad in ["", "-a", "a-", "a--b", "a_b", &"a".repeat(64)] {
            assert!(!valid_group_name(bad), "{bad:?}");
        }
    }

    fn package(metadata: &[(&str, &str)]) -> Package {
        Package {
            version: 3,
            arn: "arn:aws:sagemaker:ca-central-1:1:model-package/g/3".into(),
            status: Some(ModelApprovalStatus::Approved),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            model_data_url: None,
            created_ms: None,
        }
    }

    #[test]
    fn an_update_sends_only_what_changes() {
        let p = package(&[
            (KEY_STAGING, "5"),
            ("other.writer", "x"),
            (KEY_FILES, "a b"),
        ]);
        // A metadata change: that key only, no status (SageMaker keeps it), and not the
        // keys another writer may have set meanwhile.
        let u = Update::of(&p, None, &[(KEY_PRODUCTION, "9".into())], &[]).unwrap();
        assert_eq!(
            u,
            Update {
                set: HashMap::from([(KEY_PRODUCTION.to_owned(), "9".to_owned())]),
                remove: vec![],
                status: None,
            }
        );
        // Removing: only keys the package has; a key both set and removed is set.
        let u = Update::of(
            &p,
            None,
            &[(KEY_ARTIFACT, "y".into())],
            &[KEY_STAGING, "absent", KEY_ARTIFACT],
        )
        .unwrap();
        assert_eq!(u.remove, vec![KEY_STAGING.to_owned()]);
        assert_eq!(u.set.keys().collect::<Vec<_>>(), vec![KEY_ARTIFACT]);
        // A status change carries its description, cut to SageMaker's limit.
        let u = Update::of(
            &p,
            Some((ModelApprovalStatus::Rejected, "z".repeat(2000))),
            &[],
            &[],
        )
        .unwrap();
        assert!(u.set.is_empty() && u.remove.is_empty());
        let (status, description) = u.status.unwrap();
        assert_eq!(status, ModelApprovalStatus::Rejected);
        assert_eq!(description.len(), MAX_APPROVAL_DESCRIPTION);
        // Nothing to change (a value it already holds, a key it lacks): no call at all.
        assert_eq!(
            Update::of(&p, None, &[(KEY_STAGING, "5".into())], &["absent"]),
            None
        );
    }

    #[test]
    fn a_version_arn_from_its_group_arn() {
        assert_eq!(
            package_arn(
                "arn:aws:sagemaker:ca-central-1:387706002632:model-package-group/bikeshare-dev-stockout",
                12
            )
            .unwrap(),
            "arn:aws:sagemaker:ca-central-1:387706002632:model-package/bikeshare-dev-stockout/12"
        );
        assert!(package_arn("arn:aws:s3:::bucket", 1).is_err());
    }

    #[test]
    fn the_newest_mark_names_the_stage() {
        let p = |version, status: ModelApprovalStatus, marks: &[(&str, i64)]| Package {
            version,
            arn: format!("arn/{version}"),
            status: Some(status),
            metadata: marks
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                .collect(),
            model_data_url: None,
            created_ms: None,
        };
        use ModelApprovalStatus::{Approved, PendingManualApproval, Rejected};
        // An interrupted promotion left two approved: the newer approval is production.
        let all = [
            p(1, Approved, &[(KEY_PRODUCTION, 10)]),
            p(2, Approved, &[(KEY_PRODUCTION, 20), (KEY_STAGING, 5)]),
            p(3, Rejected, &[(KEY_PRODUCTION, 30)]),
            p(4, PendingManualApproval, &[(KEY_STAGING, 7)]),
        ];
        assert_eq!(stage_versions(&all), (Some(2), Some(4)));
        assert_eq!(stage_versions(&all[..0]), (None, None));
    }
}
