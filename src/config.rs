//! Layered configuration: built-in defaults, then a TOML file, then the environment.
//!
//! - File: `--config PATH`, else `bikeshare.toml` in the working directory if it exists.
//! - Environment: `BIKESHARE_<SECTION>__<KEY>`, e.g. `BIKESHARE_STREAM__SHARDS=4`,
//!   `BIKESHARE_SIMULATOR__CITY__STATIONS=1000`.
//!
//! Secrets (the Meteostat key, the simulator token) are read from their own environment
//! variables by the components that need them and are never part of this struct's output.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bikeshare_dashboard::server::DashboardConfig;
use bikeshare_models::dataset::SplitConfig;
use bikeshare_models::endpoint::EndpointConfig;
use bikeshare_models::serve::ServeConfig;
use bikeshare_models::training::TrainParams;
use bikeshare_producers::gbfs::PollerConfig;
use bikeshare_producers::weather::WeatherConfig;
use bikeshare_simulator::SimulatorConfig;
use bikeshare_sinks::subscribe::SubscribeConfig;
use bikeshare_stream_processor::ProcessorConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// The whole configuration. Every section has defaults, so an empty file is valid.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct Config {
    /// Where local state lives: the embedded stream, checkpoints, the lake.
    pub data_dir: DataDir,
    pub stream: StreamConfig,
    /// GBFS systems to ingest (`bikeshare ingest` also takes `--gbfs-url`).
    pub systems: Vec<SystemConfig>,
    /// Polling, validation and HTTP settings of the GBFS producer.
    pub gbfs: PollerConfig,
    /// The Meteostat producer (the API key comes from `METEOSTAT_API_KEY` only).
    pub weather: WeatherConfig,
    /// The built-in city simulator (`simulate`, and `up`).
    pub simulator: SimulatorConfig,
    /// The stream processor: windows, horizon, lateness, ticks, neighbourhoods. Unlike the
    /// library's `ProcessorConfig::default()`, the update trigger is on ([`live_processor`]).
    #[default(live_processor())]
    pub processor: ProcessorConfig,
    /// How the processor runs: checkpoints and reads.
    pub runner: RunnerSettings,
    /// Timeouts of every AWS call (`[aws]`: `connect_timeout_ms`, `attempt_timeout_ms`,
    /// `operation_timeout_ms`; defaults 3 s, 10 s, 30 s): a stalled dependency becomes an
    /// error, logged and counted, within one timeout.
    pub aws: bikeshare_runtime::aws::Timeouts,
    /// The subscription API (server-sent events of predictions) that `up` serves.
    pub api: SubscribeConfig,
    /// The web dashboard (`up` and `dashboard` serve it).
    pub dashboard: DashboardConfig,
    /// How the processor scores: in process (default) or through a SageMaker endpoint.
    pub predictor: PredictorSettings,
    /// `bikeshare serve-model`: bind address, model directory, payload limit.
    pub serve_model: ServeConfig,
    /// The model registry, the promotion gate and hot swapping (`[registry]`).
    pub registry: RegistrySettings,
    /// The Prometheus `/metrics` endpoint of `up`, `process` and `ingest` (`[metrics]`;
    /// the token comes from `BIKESHARE_METRICS_TOKEN` only).
    pub metrics: bikeshare_monitor::exporter::MetricsConfig,
    /// Alert rules and notifiers of `up`, `process` and `ingest` (`[alerts]`; on by default,
    /// log only until `[alerts.webhook]` or `[alerts.sns]` is set; the webhook URL is a
    /// secret: `BIKESHARE_ALERTS__WEBHOOK__URL` or a config file outside the repository).
    pub alerts: bikeshare_monitor::alerts::AlertsConfig,
    /// Pushing the metrics to CloudWatch with `PutMetricData` (`[cloudwatch]`; off by default).
    pub cloudwatch: bikeshare_monitor::cloudwatch::CloudWatchConfig,
    /// Training (`bikeshare train`): model name, XGBoost parameters, the time-based split.
    pub train: TrainConfig,
    /// The Parquet lake (`[lake]`: where, and the archiver's checkpoints); `up` and `process`
    /// write it, `bikeshare lake` lists it.
    pub lake: bikeshare_lake::LakeConfig,
    /// The lake archiver (`bikeshare lake write`): where its checkpoints live
    /// (`[archiver.checkpoints]`, local under `lake.checkpoint_dir` by default).
    pub archiver: ArchiverSettings,
    /// The Firehose sink (`[firehose]`, off by default): the lake's datasets as JSON lines
    /// into one delivery stream each, `<prefix><dataset>`.
    pub firehose: bikeshare_firehose::FirehoseConfig,
    pub log: LogConfig,
}

/// The app's processor defaults: the library's, with the update trigger on
/// (`score_on_arrival`), so that the live job publishes a report's prediction when the report
/// arrives instead of `lateness_ms` of event time later (issue 13 item 6, decision 083). A
/// correction of it, if any, is a later record with the same prediction id; replays and
/// backfills give the same answers by id (the last row), which every consumer reads. The
/// library default stays off, so its golden tests keep describing the watermark order alone.
pub fn live_processor() -> ProcessorConfig {
    ProcessorConfig {
        score_on_arrival: true,
        ..ProcessorConfig::default()
    }
}

/// Where model versions live, what the gate demands, how the processor follows production.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct RegistrySettings {
    /// `local` (default: a directory), `mlflow` (a tracking server) or `sagemaker` (a
    /// SageMaker model package group, `[registry.sagemaker]`).
    #[default(RegistryBackend::Local)]
    pub backend: RegistryBackend,
    /// The local registry's directory; relative paths are under `data_dir`.
    #[default(PathBuf::from("registry"))]
    pub path: PathBuf,
    /// The MLflow tracking server (`mlflow` backend), e.g. `http://127.0.0.1:5000`. Its
    /// credentials come from `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD`, never from this file.
    pub tracking_uri: Option<String>,
    /// The MLflow experiment of training and decision runs.
    #[default("bikeshare")]
    pub experiment: String,
    /// The registered model's name (predictions carry it with the version).
    #[default("bikeshare-stockout")]
    pub model_name: String,
    /// The SageMaker Model Registry (`sagemaker` backend): the model package group (the model
    /// name when empty), the bucket and prefix of the model archives, the serving image.
    pub sagemaker: bikeshare_models::registry::sagemaker::SageMakerSettings,
    /// Where downloaded versions are kept; relative paths are under `data_dir`.
    #[default(PathBuf::from("registry-cache"))]
    pub cache_dir: PathBuf,
    /// How often a running processor checks for a newly promoted model (0: never).
    #[default(5_000)]
    pub poll_interval_ms: u64,
    /// The gate evaluates on the held-out rows of the last `recent_hours` (0: all of them).
    #[default(48)]
    pub recent_hours: u64,
    /// Margins and evidence the gate demands (`[registry.gate]`).
    pub gate: bikeshare_models::promote::GateConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryBackend {
    Local,
    Mlflow,
    Sagemaker,
}

/// Checkpointing and reading of the processor.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct RunnerSettings {
    /// Checkpoint directory; relative paths are under `data_dir`.
    #[default(PathBuf::from("checkpoints/processor"))]
    pub checkpoint_dir: PathBuf,
    #[default(10_000)]
    pub checkpoint_interval_ms: u64,
    /// Records per read from a shard.
    #[default(1000)]
    pub batch: usize,
    /// Where the per-shard checkpoints live (`[runner.checkpoints]`).
    pub checkpoints: CheckpointSettings,
    /// Shard leases (`[runner.leases]`): memory for one instance, DynamoDB for several.
    pub leases: bikeshare_aws::LeaseSettings,
    /// After SIGTERM or Ctrl-C, how long the processor may take to stop (final checkpoint
    /// included) before it exits anyway, with the last stored checkpoint standing, ms.
    #[default(10_000)]
    pub shutdown_grace_ms: u64,
}

/// How the processor scores its feature rows (`[predictor]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictorSettings {
    /// `in_process` (default: the model runs inside the processor) or `sagemaker` (a
    /// SageMaker endpoint, or `bikeshare serve-model`, with the in-process model as fallback).
    pub backend: PredictorBackend,
    /// The endpoint client (`[predictor.sagemaker]`): endpoint name, `endpoint_url`,
    /// timeouts, retries, circuit breaker, fallback (`in_process` or `unavailable`).
    pub sagemaker: EndpointConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictorBackend {
    #[default]
    InProcess,
    Sagemaker,
}

/// `[runner.checkpoints]`: the checkpoint store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointSettings {
    /// `local` (default: files under `runner.checkpoint_dir`) or `s3`.
    pub store: CheckpointStoreKind,
    /// `[runner.checkpoints.s3]`: bucket, prefix, region, endpoint_url, create_bucket.
    pub s3: bikeshare_aws::S3CheckpointSettings,
}

/// `[archiver]`: the lake archiver's checkpoints. Like the processor's, they must outlive the
/// task in a deployed environment (`store = "s3"`, in the stack's bucket under
/// `checkpoints/lake/`), or a restarted Fargate task would archive its streams again from the
/// oldest record.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct ArchiverSettings {
    /// `local` (default: files under `lake.checkpoint_dir`) or `s3`
    /// (`[archiver.checkpoints.s3]`: bucket, prefix, region, endpoint_url, create_bucket).
    #[default(CheckpointSettings {
        store: CheckpointStoreKind::Local,
        s3: bikeshare_aws::S3CheckpointSettings {
            prefix: "checkpoints/lake/".into(),
            ..Default::default()
        },
    })]
    pub checkpoints: CheckpointSettings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStoreKind {
    #[default]
    Local,
    S3,
}

/// Training settings (`[train]`, `[train.params]`, `[train.split]`).
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct TrainConfig {
    /// The model name written in the model card.
    #[default("bikeshare-stockout")]
    pub model_name: String,
    /// XGBoost parameters and the round budget, e.g. `BIKESHARE_TRAIN__PARAMS__NTHREAD=1`.
    pub params: TrainParams,
    /// Days held out for validation (early stopping, thresholds) and test (the report).
    pub split: SplitConfig,
}

/// One GBFS system to ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemConfig {
    pub id: String,
    /// Its auto-discovery URL (`gbfs.json`).
    pub gbfs_url: String,
    /// Where to look for weather; no weather for the system without them.
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
}

/// The data directory (default `./var`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataDir(pub PathBuf);

impl Default for DataDir {
    fn default() -> Self {
        Self(PathBuf::from("var"))
    }
}

/// The stream backend.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct StreamConfig {
    /// `embedded` (default) or `kinesis`.
    #[default(StreamBackend::Embedded)]
    pub backend: StreamBackend,
    /// The SQLite file of the embedded stream; relative paths are under `data_dir`.
    #[default(PathBuf::from("stream.db"))]
    pub path: PathBuf,
    /// Shards of each stream when it is created.
    #[default(2)]
    pub shards: u32,
    /// The Kinesis backend: stream name prefix, region, endpoint, reads
    /// (`[stream.kinesis]`, e.g. `BIKESHARE_STREAM__KINESIS__REGION`).
    pub kinesis: bikeshare_aws::KinesisConfig,
    /// The embedded stream's retention (`[stream.retention]`: enabled, hours, interval_ms).
    pub retention: RetentionConfig,
}

/// `[stream.retention]`: how much of the embedded stream is kept, like Kinesis' retention
/// period but in event time and never past a consumer's checkpoint (decision 074).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct RetentionConfig {
    /// Trim at all.
    #[default(true)]
    pub enabled: bool,
    /// Event time kept behind every consumer's checkpoint (Kinesis keeps 24 h by default).
    #[default(24)]
    pub hours: u64,
    /// How often `process`, `up` and `lake write` trim while they run (and once as they stop).
    #[default(10_000)]
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamBackend {
    Embedded,
    Kinesis,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct LogConfig {
    /// `text` for people, `json` for machines.
    #[default(LogFormat::Text)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `bikeshare_producers=debug,info`; `RUST_LOG` wins.
    // xgboost-rs logs every DMatrix it builds at info: noise in the main job's log.
    #[default("info,xgboost_rs=warn")]
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Defaults, then `file` (or `./bikeshare.toml` when present), then `BIKESHARE_*`.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => {
                anyhow::ensure!(f.is_file(), "config file {} does not exist", f.display());
                fig = fig.merge(Toml::file(f));
            }
            None if Path::new("bikeshare.toml").is_file() => {
                fig = fig.merge(Toml::file("bikeshare.toml"));
            }
            None => {}
        }
        fig = fig.merge(Env::prefixed("BIKESHARE_").split("__").ignore(&[
            "SIM_TOKEN",
            "API_TOKEN",
            "DASHBOARD_TOKEN",
            "MODEL_TOKEN",
            "METRICS_TOKEN",
            "SHARED_DIR",
        ]));
        fig.extract().context("invalid configuration")
    }

    /// `path` resolved against the data directory when relative.
    pub fn data_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.data_dir.0.join(path)
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    /// Issue 13 item 6: with the app's default configuration, a report that must wait in the
    /// reorder buffer for the watermark is scored when it arrives (published without waiting
    /// for the watermark or a tick), and a config file can still turn the trigger off.
    #[test]
    fn the_live_job_scores_a_report_when_it_arrives() {
        use bikeshare_stream_processor::{Emitted, Processor};
        use bikeshare_testkit::envelopes::status_envelope;
        use bikeshare_types::contracts::PredictionTrigger;

        let config = Config::default().processor;
        let t0 = 1_700_000_000_000i64;
        let mut p = Processor::new(config.clone());
        let mut out = Vec::new();
        p.process(status_envelope("a", "test", "s1", t0, 5, 7), &mut out);
        p.process(
            status_envelope("a", "test", "s2", t0 + 1_000, 3, 9),
            &mut out,
        );
        out.clear();
        let t = t0 + 30_000;
        p.process(status_envelope("a", "test", "s1", t, 4, 8), &mut out);
        let wm = p
            .watermark(&bikeshare_types::SystemId::new("a"))
            .map(|w| w.0);
        assert!(
            wm.is_some_and(|wm| wm < t),
            "the watermark has not passed it: {wm:?}"
        );
        let rows: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Emitted::Row(r) => Some((
                    r.vector.station_id.as_str().to_owned(),
                    r.vector.as_of.0,
                    r.trigger,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            rows,
            [("s1".to_owned(), t, PredictionTrigger::Update)],
            "{out:?}"
        );

        figment::Jail::expect_with(|jail| {
            jail.create_file("off.toml", "[processor]\nscore_on_arrival = false\n")?;
            let c = Config::load(Some(Path::new("off.toml"))).map_err(|e| e.to_string())?;
            assert!(!c.processor.score_on_arrival);
            assert!(
                Config::load(None)
                    .map_err(|e| e.to_string())?
                    .processor
                    .score_on_arrival
            );
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "[stream]\nshards = 3\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("BIKESHARE_STREAM__SHARDS", "5");
            let cfg = Config::load(Some(Path::new("custom.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.stream.shards, 5, "environment wins over the file");
            assert_eq!(cfg.log.format, LogFormat::Json, "file wins over defaults");
            assert_eq!(cfg.data_dir.0, PathBuf::from("var"));
            Ok(())
        });
    }

    #[test]
    fn kinesis_backend_with_region_endpoint_and_fan_out() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kinesis.toml",
                "[stream]\nbackend = \"kinesis\"\n[stream.kinesis]\nregion = \"eu-west-1\"\n\
                 read_mode = \"fan_out\"\n",
            )?;
            jail.set_env(
                "BIKESHARE_STREAM__KINESIS__ENDPOINT_URL",
                "http://127.0.0.1:4568",
            );
            let cfg = Config::load(Some(Path::new("kinesis.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.stream.backend, StreamBackend::Kinesis);
            let k = &cfg.stream.kinesis;
            assert_eq!(k.region.as_deref(), Some("eu-west-1"));
            assert_eq!(k.endpoint_url.as_deref(), Some("http://127.0.0.1:4568"));
            assert_eq!(k.read_mode, bikeshare_aws::ReadMode::FanOut);
            assert_eq!(k.stream_prefix, "bikeshare-", "defaults fill the rest");
            Ok(())
        });
    }

    #[test]
    fn predictor_through_an_endpoint_with_its_fallback() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "[predictor]\nbackend = \"sagemaker\"\n[predictor.sagemaker]\n\
                 endpoint_name = \"stockout\"\nendpoint_url = \"http://127.0.0.1:8080\"\n\
                 fallback = \"unavailable\"\n[predictor.sagemaker.retry]\nbase = 20\nmax = 200\n\
                 max_retries = 1\n",
            )?;
            jail.set_env("BIKESHARE_PREDICTOR__SAGEMAKER__TIMEOUT_MS", "750");
            let cfg = Config::load(Some(Path::new("p.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(cfg.predictor.backend, PredictorBackend::Sagemaker);
            let e = &cfg.predictor.sagemaker;
            assert_eq!(e.endpoint_name, "stockout");
            assert_eq!(e.endpoint_url.as_deref(), Some("http://127.0.0.1:8080"));
            assert_eq!(
                e.fallback,
                bikeshare_models::endpoint::Fallback::Unavailable
            );
            assert_eq!(e.timeout_ms, 750);
            assert_eq!(e.retry.max_retries, Some(1));
            assert_eq!(e.breaker_failures, 3, "defaults fill the rest");
            let d = Config::default();
            assert_eq!(d.predictor.backend, PredictorBackend::InProcess);
            assert_eq!(d.serve_model.bind.port(), 8080);
            assert!(d.serve_model.bind.ip().is_loopback());
            Ok(())
        });
    }

    #[test]
    fn registry_section_with_mlflow_and_margins() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "r.toml",
                "[registry]\nbackend = \"mlflow\"\ntracking_uri = \"http://127.0.0.1:5000\"\n\
                 [registry.gate.margins]\nlog_loss = 0.01\n",
            )?;
            jail.set_env("BIKESHARE_REGISTRY__MODEL_NAME", "stockout-eu");
            let cfg = Config::load(Some(Path::new("r.toml"))).map_err(|e| e.to_string())?;
            let r = &cfg.registry;
            assert_eq!(r.backend, RegistryBackend::Mlflow);
            assert_eq!(r.tracking_uri.as_deref(), Some("http://127.0.0.1:5000"));
            assert_eq!(r.model_name, "stockout-eu");
            assert_eq!(r.gate.margins.log_loss, 0.01);
            assert_eq!(r.gate.margins.pr_auc, 0.001, "defaults fill the rest");
            assert_eq!(Config::default().registry.backend, RegistryBackend::Local);
            Ok(())
        });
    }

    #[test]
    fn registry_section_with_sagemaker() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "r.toml",
                "[registry]\nbackend = \"sagemaker\"\n[registry.sagemaker]\n\
                 model_package_group = \"bikeshare-dev-stockout\"\nbucket = \"b\"\n",
            )?;
            jail.set_env("BIKESHARE_REGISTRY__SAGEMAKER__IMAGE", "img:tag");
            let cfg = Config::load(Some(Path::new("r.toml"))).map_err(|e| e.to_string())?;
            let r = &cfg.registry;
            assert_eq!(r.backend, RegistryBackend::Sagemaker);
            assert_eq!(r.sagemaker.model_package_group, "bikeshare-dev-stockout");
            assert_eq!(
                (r.sagemaker.bucket.as_str(), r.sagemaker.image.as_str()),
                ("b", "img:tag")
            );
            assert_eq!(r.sagemaker.prefix, "models/", "defaults fill the rest");
            assert!(!r.sagemaker.create_group);
            Ok(())
        });
    }

    #[test]
    fn scale_out_settings_leases_in_dynamodb_checkpoints_in_s3() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "scale.toml",
                "[runner.leases]\nstore = \"dynamodb\"\ntable = \"leases\"\nduration_ms = 3000\n\
                 [runner.checkpoints]\nstore = \"s3\"\n[runner.checkpoints.s3]\nbucket = \"cp\"\n",
            )?;
            jail.set_env("BIKESHARE_RUNNER__LEASES__OWNER", "worker-1");
            let cfg = Config::load(Some(Path::new("scale.toml"))).map_err(|e| e.to_string())?;
            let (l, c) = (&cfg.runner.leases, &cfg.runner.checkpoints);
            assert_eq!(l.store, bikeshare_aws::LeaseStoreKind::Dynamodb);
            assert_eq!((l.table.as_str(), l.duration_ms), ("leases", 3000));
            assert_eq!(l.owner.as_deref(), Some("worker-1"));
            assert_eq!(c.store, CheckpointStoreKind::S3);
            assert_eq!(c.s3.bucket, "cp");
            assert_eq!(
                c.s3.prefix, "checkpoints/processor/",
                "defaults fill the rest"
            );
            let defaults = Config::default().runner;
            assert_eq!(defaults.checkpoints.store, CheckpointStoreKind::Local);
            assert_eq!(defaults.leases.store, bikeshare_aws::LeaseStoreKind::Memory);
            Ok(())
        });
    }

    #[test]
    fn archiver_checkpoints_in_s3_under_their_own_prefix() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "[archiver.checkpoints]\nstore = \"s3\"\n[archiver.checkpoints.s3]\nbucket = \"cp\"\n",
            )?;
            let cfg = Config::load(Some(Path::new("a.toml"))).map_err(|e| e.to_string())?;
            let c = &cfg.archiver.checkpoints;
            assert_eq!(c.store, CheckpointStoreKind::S3);
            assert_eq!(c.s3.bucket, "cp");
            assert_eq!(
                c.s3.prefix, "checkpoints/lake/",
                "not the processor's prefix: the two must not share keys"
            );
            assert_eq!(
                Config::default().archiver.checkpoints.store,
                CheckpointStoreKind::Local
            );
            Ok(())
        });
    }

    #[test]
    fn alerts_and_cloudwatch_sections() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "[alerts]\ninterval_ms = 5000\ndisabled = [\"feature_drift\"]\n\
                 [alerts.overrides.feed_stale]\nthreshold = 120\n\
                 [alerts.sns]\ntopic_arn = \"arn:aws:sns:ca-central-1:387706002632:alerts\"\n\
                 [cloudwatch]\nenabled = true\nnamespace = \"bikeshare/prod\"\n\
                 dimensions = { environment = \"prod\" }\n",
            )?;
            jail.set_env(
                "BIKESHARE_ALERTS__WEBHOOK__URL",
                "https://hooks.example/SECRET",
            );
            let cfg = Config::load(Some(Path::new("a.toml"))).map_err(|e| e.to_string())?;
            let a = &cfg.alerts;
            assert!(a.enabled);
            assert_eq!(a.interval_ms, 5000);
            assert_eq!(
                a.webhook.url.as_deref(),
                Some("https://hooks.example/SECRET")
            );
            assert!(
                !format!("{cfg:?}").contains("SECRET"),
                "the URL never shows"
            );
            assert!(a.wants_sns());
            let rules = a.effective_rules().map_err(|e| e.to_string())?;
            assert!(!rules.iter().any(|r| r.name == "feature_drift"));
            let fs = rules.iter().find(|r| r.name == "feed_stale").unwrap();
            assert_eq!(fs.threshold, 120.0);
            assert!(cfg.cloudwatch.enabled);
            assert_eq!(cfg.cloudwatch.namespace, "bikeshare/prod");
            assert_eq!(cfg.cloudwatch.dimensions["environment"], "prod");
            let d = Config::default();
            assert!(d.alerts.enabled && !d.alerts.wants_sns() && d.alerts.webhook.url.is_none());
            assert!(!d.cloudwatch.enabled);
            Ok(())
        });
    }

    #[test]
    fn firehose_is_off_by_default_and_configured_per_environment() {
        figment::Jail::expect_with(|jail| {
            assert!(!Config::default().firehose.enabled);
            jail.create_file(
                "f.toml",
                "[firehose]\nprefix = \"bikeshare-prod-\"\n\
                 [firehose.delivery]\nmax_elapsed_ms = 5000\n\
                 backoff = { base = 50, max = 2000, max_retries = 3 }\n",
            )?;
            jail.set_env("BIKESHARE_FIREHOSE__ENABLED", "true");
            let cfg = Config::load(Some(Path::new("f.toml"))).map_err(|e| e.to_string())?;
            let f = &cfg.firehose;
            assert!(f.enabled);
            assert_eq!(f.prefix, "bikeshare-prod-");
            assert_eq!(f.delivery.max_elapsed_ms, 5000);
            assert_eq!(f.delivery.backoff.max_retries, Some(3));
            assert_eq!(
                f.delivery.backoff.base,
                std::time::Duration::from_millis(50)
            );
            assert!(f.features, "defaults fill the rest");
            Ok(())
        });
    }

    #[test]
    fn aws_environment_configs_push_to_cloudwatch_in_their_namespace() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/environments");
        for env in ["dev", "staging", "prod"] {
            let cfg = Config::load(Some(&dir.join(format!("{env}.toml")))).unwrap();
            assert!(cfg.cloudwatch.enabled, "{env}");
            assert_eq!(cfg.cloudwatch.namespace, format!("bikeshare/{env}"));
            assert_eq!(cfg.cloudwatch.dimensions["environment"], env);
            assert!(cfg.alerts.enabled);
            cfg.alerts.effective_rules().unwrap();
            assert_eq!(cfg.stream.backend, StreamBackend::Kinesis);
            assert_eq!(cfg.firehose.prefix, format!("bikeshare-{env}-"));
        }
    }

    #[test]
    fn unknown_backend_is_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BIKESHARE_STREAM__BACKEND", "carrier-pigeon");
            let err = Config::load(None).unwrap_err();
            assert!(format!("{err:#}").contains("carrier-pigeon"), "{err:#}");
            Ok(())
        });
    }
}
