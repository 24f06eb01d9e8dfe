//! The MLflow registry: a tracking server over its REST API (`/api/2.0/mlflow/...`).
//!
//! | registry | MLflow |
//! | --- | --- |
//! | version | a run in the experiment (card params and metrics, tag `feature_schema_id`, the files as artifacts under `model/`) registered as a model version whose source is that artifact folder |
//! | stage | a registered-model alias (`staging`, `production`) |
//! | decision | a run tagged `bikeshare.kind=promotion-decision` with the numbers as metrics and `decision.json` as an artifact; the candidate version gets a tag `bikeshare.decision.<stage>` |
//!
//! Artifacts go through the server's artifact proxy (`mlflow server --serve-artifacts`,
//! `/api/2.0/mlflow-artifacts/artifacts/...`), so the registry needs no object-store
//! credentials. Auth: `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD` (basic) from the environment, never from configuration.
//! Network errors, 429 and 5xx are retried with backoff and jitter.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bikeshare_types::retry::Backoff;
use bikeshare_types::{SharedClock, Timestamp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::decision::PromotionDecision;
use super::{
    CARD_FILE, ModelVersion, Registry, RegistryError, Stage, card, parse_stored_card,
    read_model_dir, stages_naming, valid_file_name,
};

/// Tag that marks decision runs.
pub const KIND_TAG: &str = "bikeshare.kind";
pub const DECISION_KIND: &str = "promotion-decision";
const MODEL_TAG: &str = "bikeshare.model";
const ARTIFACT_FOLDER: &str = "model";
const DECISION_FILE: &str = "decision.json";
/// MLflow's limits per `runs/log-batch` call.
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_METRICS_PER_BATCH: usize = 1000;
/// MLflow refuses longer parameter values.
const MAX_PARAM_VALUE: usize = 6000;

/// Where the server is and what to call things.
#[derive(Debug, Clone)]
pub struct MlflowSettings {
    /// e.g. `http://127.0.0.1:5000`.
    pub tracking_uri: String,
    /// The experiment that holds training and decision runs.
    pub experiment: String,
    /// The registered model's name.
    pub model: String,
    pub timeout: Duration,
    pub backoff: Backoff,
}

impl MlflowSettings {
    pub fn new(tracking_uri: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            tracking_uri: tracking_uri.into(),
            experiment: "bikeshare".into(),
            model: model.into(),
            timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
        }
    }
}

/// A registry on an MLflow tracking server.
#[derive(Debug)]
pub struct MlflowRegistry {
    settings: MlflowSettings,
    base: String,
    http: reqwest::Client,
    auth: Auth,
    clock: SharedClock,
    experiment_id: OnceCell<String>,
}

#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Bearer(_) => "bearer token",
            Auth::Basic(..) => "basic",
        })
    }
}

/// An answer of the server: status and JSON body.
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.body
            .get("error_code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl MlflowRegistry {
    pub fn new(settings: MlflowSettings, clock: SharedClock) -> Result<Self, RegistryError> {
        let base = settings.tracking_uri.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RegistryError::Mlflow {
                operation: "configuration".into(),
                status: None,
                message: format!("tracking URI {base:?} is not http(s)://"),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RegistryError::Mlflow {
                operation: "client".into(),
                status: None,
                message: e.to_string(),
            })?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            env("MLFLOW_TRACKING_TOKEN"),
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(t), _, _) => Auth::Bearer(t),
            (None, Some(u), Some(p)) => Auth::Basic(u, p),
            _ => Auth::None,
        };
        Ok(Self {
            settings,
            base,
            http,
            auth,
            clock,
            experiment_id: OnceCell::new(),
        })
    }

    /// One call with retries of transient failures; any answer with a JSON body (or none)
    /// is returned, success or not.
    async fn call(
        &self,
        operation: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url).query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            req = self.authorize(req);
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(bytes) => {
                            let body = if bytes.is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                                    json!({"message": String::from_utf8_lossy(&bytes[..bytes.len().min(500)])})
                                })
                            };
                            Ok(Answer { status, body })
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(bikeshare_types::error::chain(&e)),
            };
            let retry_why = match &outcome {
                Ok(a)
                    if a.status == StatusCode::TOO_MANY_REQUESTS || a.status.is_server_error() =>
                {
                    Some(format!("status {}", a.status))
                }
                Ok(_) => None,
                Err(e) => Some(e.clone()),
            };
            match retry_why {
                None => return outcome.map_err(|m| self.err(operation, None, m)),
                Some(why) => match self.retry_delay(attempt) {
                    Some(d) => {
                        tracing::warn!(operation, attempt, error = %why, delay_ms = d.as_millis() as u64,
                            "MLflow call failed; retrying");
                        tokio::time::sleep(d).await;
                        attempt += 1;
                    }
                    None => {
                        return match outcome {
                            Ok(a) => Err(self.answer_err(operation, &a)),
                            Err(m) => Err(self.err(operation, None, m)),
                        };
                    }
                },
            }
        }
    }

    /// The backoff before retry `attempt`, or `None` when retries are spent.
    fn retry_delay(&self, attempt: u32) -> Option<Duration> {
        self.settings.backoff.delay(attempt, &mut rand::rng())
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        }
    }

    fn err(&self, operation: &str, status: Option<u16>, message: String) -> RegistryError {
        RegistryError::Mlflow {
            operation: operation.into(),
            status,
            message: format!("{message} (server {})", self.base),
        }
    }

    fn answer_err(&self, operation: &str, a: &Answer) -> RegistryError {
        let message = a
            .body
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| a.body.to_string(), str::to_owned);
        self.err(operation, Some(a.status.as_u16()), message)
    }

    /// The body of a successful answer; any other answer is the operation's error.
    fn success(&self, operation: &str, a: Answer) -> Result<Value, RegistryError> {
        if a.status.is_success() {
            Ok(a.body)
        } else {
            Err(self.answer_err(operation, &a))
        }
    }

    /// A POST to the tracking API that must succeed.
    async fn post(&self, operation: &str, api: &str, body: Value) -> Result<Value, RegistryError> {
        let a = self.post_json(operation, api, &body).await?;
        self.success(operation, a)
    }

    /// A POST to the tracking API, whatever it answers.
    async fn post_json(
        &self,
        operation: &str,
        api: &str,
        body: &Value,
    ) -> Result<Answer, RegistryError> {
        self.call(
            operation,
            Method::POST,
            &format!("/api/2.0/mlflow/{api}"),
            &[],
            Some(body),
        )
        .await
    }

    async fn get_json(
        &self,
        operation: &str,
        api: &str,
        query: &[(&str, &str)],
    ) -> Result<Answer, RegistryError> {
        self.call(
            operation,
            Method::GET,
            &format!("/api/2.0/mlflow/{api}"),
            query,
            None,
        )
        .await
    }

    async fn experiment_id(&self) -> Result<&String, RegistryError> {
        self.experiment_id
            .get_or_try_init(|| async {
                let name = self.settings.experiment.as_str();
                for _ in 0..2 {
                    let a = self
                        .get_json(
                            "get experiment",
                            "experiments/get-by-name",
                            &[("experiment_name", name)],
                        )
                        .await?;
                    if a.status.is_success() {
                        return str_at(&a.body, "/experiment/experiment_id", "get experiment");
                    }
                    if a.error_code() != "RESOURCE_DOES_NOT_EXIST" {
                        return Err(self.answer_err("get experiment", &a));
                    }
                    let c = self
                        .post_json(
                            "create experiment",
                            "experiments/create",
                            &json!({ "name": name }),
                        )
                        .await?;
                    if c.status.is_success() {
                        return str_at(&c.body, "/experiment_id", "create experiment");
                    }
                    // Created concurrently: read it again.
                    if c.error_code() != "RESOURCE_ALREADY_EXISTS" {
                        return Err(self.answer_err("create experiment", &c));
                    }
                }
                Err(self.err(
                    "get experiment",
                    None,
                    format!("experiment {name:?} neither exists nor can be created"),
                ))
            })
            .await
    }

    /// `mlflow-artifacts:/1/<run>/artifacts/model` → the proxy URL path of that folder.
    fn artifact_path(&self, uri: &str) -> Result<String, RegistryError> {
        let rest = uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
            self.err(
                "artifacts",
                None,
                format!(
                    "artifact location {uri:?} is not served by the tracking server; \
                     start it with --serve-artifacts"
                ),
            )
        })?;
        // `mlflow-artifacts://host:port/path` names a server; the path is what counts.
        let rest = match rest.strip_prefix("//") {
            Some(with_host) => with_host.find('/').map_or("", |i| &with_host[i..]),
            None => rest,
        };
        Ok(rest.trim_start_matches('/').to_owned())
    }

    async fn put_artifact(
        &self,
        folder: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(), RegistryError> {
        self.transfer("upload artifact", &format!("{folder}/{name}"), Some(bytes))
            .await
            .map(drop)
    }

    async fn get_artifact(&self, path: &str) -> Result<Vec<u8>, RegistryError> {
        self.transfer(&format!("download {path}"), path, None).await
    }

    /// One file through the artifact proxy: `upload` PUTs it (and answers nothing), `None`
    /// GETs it. Network errors, 429 and 5xx are retried; spent retries are an error without a
    /// status.
    async fn transfer(
        &self,
        operation: &str,
        path: &str,
        upload: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.base);
        let mut attempt = 0;
        loop {
            let req = self.authorize(match &upload {
                Some(bytes) => self.http.put(&url).body(bytes.clone()),
                None => self.http.get(&url),
            });
            let why = match req.send().await {
                Ok(r) if r.status().is_success() && upload.is_some() => return Ok(Vec::new()),
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => return Ok(b.to_vec()),
                    Err(e) => e.to_string(),
                },
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    format!("status {}", r.status())
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    return Err(self.err(operation, Some(status), text));
                }
                Err(e) => bikeshare_types::error::chain(&e),
            };
            match self.retry_delay(attempt) {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    attempt += 1;
                }
                None => return Err(self.err(operation, None, why)),
            }
        }
    }

    /// File names in an artifact folder.
    async fn list_artifacts(&self, folder: &str) -> Result<Vec<String>, RegistryError> {
        let a = self
            .call(
                "list artifacts",
                Method::GET,
                "/api/2.0/mlflow-artifacts/artifacts",
                &[("path", folder)],
                None,
            )
            .await?;
        let body = self.success("list artifacts", a)?;
        let mut names: Vec<String> = body
            .get("files")
            .and_then(Value::as_array)
            .map(|files| {
                files
                    .iter()
                    .filter(|f| !f.get("is_dir").and_then(Value::as_bool).unwrap_or(false))
                    .filter_map(|f| f.get("path").and_then(Value::as_str))
                    .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    async fn create_run(
        &self,
        name: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(String, String), RegistryError> {
        let experiment_id = self.experiment_id().await?.clone();
        let tags: Vec<Value> = tags
            .into_iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let body = self
            .post(
                "create run",
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": name,
                    "start_time": self.clock.now().millis(),
                    "tags": tags,
                }),
            )
            .await?;
        let run_id = str_at(&body, "/run/info/run_id", "create run")?;
        let artifact_uri = str_at(&body, "/run/info/artifact_uri", "create run")?;
        Ok((run_id, artifact_uri))
    }

    async fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
    ) -> Result<(), RegistryError> {
        let now = self.clock.now().millis();
        for chunk in params.chunks(MAX_PARAMS_PER_BATCH) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| {
                    let v: String = v.chars().take(MAX_PARAM_VALUE).collect();
                    json!({"key": k, "value": v})
                })
                .collect();
            self.post(
                "log params",
                "runs/log-batch",
                json!({"run_id": run_id, "params": params}),
            )
            .await?;
        }
        for chunk in metrics.chunks(MAX_METRICS_PER_BATCH) {
            let metrics: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
                .collect();
            self.post(
                "log metrics",
                "runs/log-batch",
                json!({"run_id": run_id, "metrics": metrics}),
            )
            .await?;
        }
        Ok(())
    }

    async fn end_run(&self, run_id: &str, status: &str) -> Result<(), RegistryError> {
        self.post(
            "end run",
            "runs/update",
            json!({"run_id": run_id, "status": status, "end_time": self.clock.now().millis()}),
        )
        .await
        .map(|_| ())
    }

    async fn ensure_registered_model(&self) -> Result<(), RegistryError> {
        let a = self
            .post_json(
                "create registered model",
                "registered-models/create",
                &json!({"name": self.settings.model}),
            )
            .await?;
        if a.status.is_success() || a.error_code() == "RESOURCE_ALREADY_EXISTS" {
            Ok(())
        } else {
            Err(self.answer_err("create registered model", &a))
        }
    }

    /// Stage → version, from the registered model's aliases; empty when it does not exist.
    async fn aliases(&self) -> Result<Vec<(Stage, u64)>, RegistryError> {
        let a = self
            .get_json(
                "get registered model",
                "registered-models/get",
                &[("name", &self.settings.model)],
            )
            .await?;
        if a.error_code() == "RESOURCE_DOES_NOT_EXIST" {
            return Ok(Vec::new());
        }
        let body = self.success("get registered model", a)?;
        let mut out = Vec::new();
        for al in body
            .pointer("/registered_model/aliases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let stage = al
                .get("alias")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let version = al
                .get("version")
                .and_then(Value::as_str)
                .and_then(|v| v.parse().ok());
            if let (Some(s), Some(v)) = (stage, version) {
                out.push((s, v));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A model version's JSON (`model_version`), or `NoSuchVersion`.
    async fn version_json(&self, version: u64) -> Result<Value, RegistryError> {
        let v = version.to_string();
        let a = self
            .get_json(
                "get model version",
                "model-versions/get",
                &[("name", &self.settings.model), ("version", &v)],
            )
            .await?;
        if a.error_code() == "RESOURCE_DOES_NOT_EXIST" {
            return Err(RegistryError::NoSuchVersion {
                model: self.settings.model.clone(),
                version,
            });
        }
        self.success("get model version", a)?
            .get("model_version")
            .cloned()
            .ok_or_else(|| self.err("get model version", None, "no model_version".into()))
    }

    async fn to_version(
        &self,
        mv: &Value,
        aliases: &[(Stage, u64)],
    ) -> Result<ModelVersion, RegistryError> {
        let version: u64 = str_at(mv, "/version", "model version")?
            .parse()
            .map_err(|_| self.err("model version", None, format!("version in {mv}")))?;
        let source = str_at(mv, "/source", "model version")?;
        let folder = self.artifact_path(&source)?;
        let files = self.list_artifacts(&folder).await?;
        let bytes = self.get_artifact(&format!("{folder}/{CARD_FILE}")).await?;
        let card = parse_stored_card(&bytes, &source)?;
        Ok(ModelVersion {
            model: self.settings.model.clone(),
            version,
            registered_at: Timestamp(
                mv.get("creation_timestamp")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            ),
            stages: stages_naming(version, aliases),
            feature_schema_id: card::feature_schema_id(&card),
            card,
            files,
            source,
            run_id: mv
                .get("run_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }

    async fn register_run(
        &self,
        run_id: &str,
        artifact_uri: &str,
        files: &[(String, std::path::PathBuf)],
        card: &Value,
    ) -> Result<ModelVersion, RegistryError> {
        self.log_batch(run_id, &card::params(card), &card::metrics(card))
            .await?;
        let folder = format!("{}/{ARTIFACT_FOLDER}", self.artifact_path(artifact_uri)?);
        for (name, path) in files {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| RegistryError::io(path, e))?;
            self.put_artifact(&folder, name, bytes).await?;
        }
        self.end_run(run_id, "FINISHED").await?;
        self.ensure_registered_model().await?;
        let mut tags = vec![json!({"key": MODEL_TAG, "value": self.settings.model})];
        if let Some(id) = card::feature_schema_id(card) {
            tags.push(json!({"key": "feature_schema_id", "value": id}));
        }
        let body = self
            .post(
                "create model version",
                "model-versions/create",
                json!({
                    "name": self.settings.model,
                    "source": format!("{artifact_uri}/{ARTIFACT_FOLDER}"),
                    "run_id": run_id,
                    "tags": tags,
                }),
            )
            .await?;
        let mut mv = body
            .get("model_version")
            .cloned()
            .ok_or_else(|| self.err("create model version", None, body.to_string()))?;
        // Registration from a run's artifacts is usually READY at once; wait if not.
        for _ in 0..50 {
            match mv.get("status").and_then(Value::as_str) {
                Some("READY") | None => break,
                Some("FAILED_REGISTRATION") => {
                    return Err(self.err(
                        "create model version",
                        None,
                        format!("registration failed: {mv}"),
                    ));
                }
                Some(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let v: u64 = str_at(&mv, "/version", "model version")?
                        .parse()
                        .map_err(|_| self.err("model version", None, mv.to_string()))?;
                    mv = self.version_json(v).await?;
                }
            }
        }
        self.to_version(&mv, &self.aliases().await?).await
    }
}

fn str_at(v: &Value, pointer: &str, operation: &str) -> Result<String, RegistryError> {
    match v.pointer(pointer) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(RegistryError::Mlflow {
            operation: operation.into(),
            status: None,
            message: format!("the answer has no {pointer}: {v}"),
        }),
    }
}

/// One page of a search answer: its `items` appended to `out`, and the token of the next
/// page (`None` on the last).
fn next_page(page: &Value, items: &str, out: &mut Vec<Value>) -> Option<String> {
    out.extend(
        page.get(items)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    page.get("next_page_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[async_trait]
impl Registry for MlflowRegistry {
    fn model_name(&self) -> &str {
        &self.settings.model
    }

    fn describe(&self) -> String {
        format!(
            "MLflow at {} (model {}, experiment {})",
            self.base, self.settings.model, self.settings.experiment
        )
    }

    async fn register(&self, dir: &Path) -> Result<ModelVersion, RegistryError> {
        let (files, card) = read_model_dir(dir).await?;
        let schema = card::feature_schema_id(&card).unwrap_or_else(|| "unknown-schema".into());
        let mut tags = vec![
            (MODEL_TAG.to_owned(), self.settings.model.clone()),
            (KIND_TAG.to_owned(), "training".to_owned()),
            ("feature_schema_id".to_owned(), schema.clone()),
        ];
        if let Some(d) = card
            .get("description")
            .or_else(|| card.get("source"))
            .and_then(Value::as_str)
        {
            tags.push(("mlflow.note.content".to_owned(), d.to_owned()));
        }
        let (run_id, artifact_uri) = self
            .create_run(&format!("{} {schema}", self.settings.model), tags)
            .await?;
        match self
            .register_run(&run_id, &artifact_uri, &files, &card)
            .await
        {
            Ok(v) => {
                tracing::info!(model = %self.settings.model, version = v.version, run_id, "registered in MLflow");
                Ok(v)
            }
            Err(e) => {
                let _ = self.end_run(&run_id, "FAILED").await;
                Err(e)
            }
        }
    }

    async fn get(&self, version: u64) -> Result<ModelVersion, RegistryError> {
        let mv = self.version_json(version).await?;
        let aliases = self.aliases().await?;
        self.to_version(&mv, &aliases).await
    }

    async fn list(&self) -> Result<Vec<ModelVersion>, RegistryError> {
        let aliases = self.aliases().await?;
        let filter = format!("name='{}'", self.settings.model.replace('\'', "\\'"));
        let mut token: Option<String> = None;
        let mut found = Vec::new();
        loop {
            let mut query: Vec<(&str, &str)> = vec![("filter", &filter), ("max_results", "200")];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let a = self
                .get_json("search model versions", "model-versions/search", &query)
                .await?;
            let page = self.success("search model versions", a)?;
            token = next_page(&page, "model_versions", &mut found);
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for mv in &found {
            out.push(self.to_version(mv, &aliases).await?);
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    async fn download(&self, version: u64, into: &Path) -> Result<(), RegistryError> {
        let mv = self.version_json(version).await?;
        let folder = self.artifact_path(&str_at(&mv, "/source", "model version")?)?;
        super::create_download_dir(into).await?;
        let names = self.list_artifacts(&folder).await?;
        if !names.iter().any(|n| n == CARD_FILE) {
            return Err(RegistryError::Corrupt(format!(
                "version {version} has no {CARD_FILE} in {folder}"
            )));
        }
        for name in names {
            if !valid_file_name(&name) {
                return Err(RegistryError::Corrupt(format!(
                    "version {version} holds a file named {name:?}"
                )));
            }
            let bytes = self.get_artifact(&format!("{folder}/{name}")).await?;
            super::write_downloaded(into, &name, bytes).await?;
        }
        Ok(())
    }

    async fn set_stage(&self, version: u64, stage: Stage) -> Result<(), RegistryError> {
        self.version_json(version).await?;
        self.post(
            "set alias",
            "registered-models/alias",
            json!({"name": self.settings.model, "alias": stage.as_str(), "version": version.to_string()}),
        )
        .await?;
        tracing::info!(model = %self.settings.model, version, %stage, "alias set in MLflow");
        Ok(())
    }

    async fn current(&self, stage: Stage) -> Result<Option<ModelVersion>, RegistryError> {
        let aliases = self.aliases().await?;
        match aliases.iter().find(|(s, _)| *s == stage) {
            Some((_, v)) => {
                let mv = self.version_json(*v).await?;
                self.to_version(&mv, &aliases).await.map(Some)
            }
            None => Ok(None),
        }
    }

    async fn record_decision(&self, d: &PromotionDecision) -> Result<(), RegistryError> {
        let outcome = if d.promoted { "promoted" } else { "refused" };
        let mut tags = vec![
            (KIND_TAG.to_owned(), DECISION_KIND.to_owned()),
            (MODEL_TAG.to_owned(), self.settings.model.clone()),
            (
                "bikeshare.candidate_version".to_owned(),
                d.candidate.to_string(),
            ),
            ("bikeshare.target".to_owned(), d.target.as_str().to_owned()),
            ("bikeshare.outcome".to_owned(), outcome.to_owned()),
            ("bikeshare.summary".to_owned(), d.summary.clone()),
        ];
        if let Some(i) = &d.incumbent {
            tags.push((
                "bikeshare.incumbent".to_owned(),
                format!("{} v{}", i.name, i.version),
            ));
        }
        for c in &d.checks {
            tags.push((
                format!("check.{}", c.name),
                format!("{}: {}", if c.passed { "pass" } else { "FAIL" }, c.detail),
            ));
        }
        let (run_id, artifact_uri) = self
            .create_run(
                &format!("{outcome}: v{} to {}", d.candidate, d.target),
                tags,
            )
            .await?;
        let mut metrics = Vec::new();
        for (who, m) in [
            ("candidate", &d.candidate_metrics),
            ("incumbent", &d.incumbent_metrics),
        ] {
            if let Some(m) = m {
                for (target, t) in [("empty", &m.empty), ("full", &m.full)] {
                    for (name, x) in [("log_loss", t.log_loss), ("pr_auc", t.pr_auc)] {
                        if x.is_finite() {
                            metrics.push((format!("{who}.{target}.{name}"), x));
                        }
                    }
                }
            }
        }
        if let Some(h) = &d.heldout {
            metrics.push(("heldout.rows".to_owned(), h.rows as f64));
        }
        let params = vec![
            ("margin.log_loss".to_owned(), d.margins.log_loss.to_string()),
            ("margin.pr_auc".to_owned(), d.margins.pr_auc.to_string()),
        ];
        self.log_batch(&run_id, &params, &metrics).await?;
        let bytes =
            serde_json::to_vec_pretty(d).map_err(|e| RegistryError::Corrupt(e.to_string()))?;
        self.put_artifact(&self.artifact_path(&artifact_uri)?, DECISION_FILE, bytes)
            .await?;
        self.end_run(&run_id, "FINISHED").await?;
        // The candidate version carries its latest decision for this stage.
        self.post(
            "tag model version",
            "model-versions/set-tag",
            json!({
                "name": self.settings.model,
                "version": d.candidate.to_string(),
                "key": format!("bikeshare.decision.{}", d.target),
                "value": d.summary,
            }),
        )
        .await?;
        Ok(())
    }

    async fn decisions(&self) -> Result<Vec<PromotionDecision>, RegistryError> {
        let experiment_id = self.experiment_id().await?.clone();
        let filter = format!(
            "tags.`{KIND_TAG}` = '{DECISION_KIND}' and tags.`{MODEL_TAG}` = '{}'",
            self.settings.model.replace('\'', "\\'")
        );
        let mut token: Option<String> = None;
        let mut runs = Vec::new();
        loop {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "filter": filter,
                "max_results": 1000,
                "order_by": ["attributes.start_time ASC"],
            });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let page = self
                .post("search decision runs", "runs/search", body)
                .await?;
            token = next_page(&page, "runs", &mut runs);
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for r in runs {
            let uri = str_at(&r, "/info/artifact_uri", "decision run")?;
            let bytes = self
                .get_artifact(&format!("{}/{DECISION_FILE}", self.artifact_path(&uri)?))
                .await?;
            let d: PromotionDecision = serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Corrupt(format!("{uri}/{DECISION_FILE}: {e}")))?;
            out.push(d);
        }
        // Start times are the decision times; equal ones keep the server's order.
        out.sort_by_key(|d| d.decided_at);
        Ok(out)
    }
}
