//! The drift check of the lake's feature rows against a baseline, as a function
//! (`bikeshare monitor check`) and as a task inside the main job ([`DriftTask`]).

use crate::cli::FeatureRange;
use crate::config::Config;
use anyhow::Context;
use bikeshare_lake::Dataset;
use bikeshare_lake::catalog::{latest_hour, read_dataset, read_since};
use bikeshare_lake::open_store;
use bikeshare_models::registry::{Registry, Stage};
use bikeshare_monitor::drift::{Baseline, DriftReport, DriftWindow};
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::FeatureVector;
use object_store::ObjectStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The drift check inside the main job: every `every`, the feature rows of the last
/// `window_ms` of event time (ending at the newest row in the lake) against the baseline of
/// the production model's training rows (saved with the model version, see
/// `bikeshare_models::model_dir`), or `<dir>/baseline` when production has none (written by
/// `bikeshare monitor baseline`), into `<dir>/latest` and the drift metrics.
///
/// A processor that starts fresh computes incomplete features until it has watched its
/// longest window: windows that start before the first row this task saw plus `warm_up_ms`
/// are not checked.
#[derive(Debug)]
pub struct DriftTask {
    pub store: Arc<dyn ObjectStore>,
    pub schema: FeatureSchema,
    pub dir: PathBuf,
    pub every: Duration,
    pub window_ms: i64,
    pub warm_up_ms: i64,
    /// The registry whose production model's baseline is used, and where versions are
    /// downloaded to.
    pub registry: Option<(Arc<dyn Registry>, PathBuf)>,
    /// The dashboard of the same job, shown each check.
    pub dashboard: Option<Arc<bikeshare_dashboard::state::DashboardState>>,
}

impl DriftTask {
    /// With the lake on: the drift check of the last hour of features every minute (an hour
    /// of simulated time at `up`'s default time scale), until `stop`.
    pub fn spawn_if_lake(
        config: &Config,
        dashboard: Option<Arc<bikeshare_dashboard::state::DashboardState>>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        if !config.lake.enabled {
            return Ok(None);
        }
        let registry = match crate::app::models::open_registry(config, crate::app::wall_clock()) {
            Ok(r) => Some((r, config.data_path(&config.registry.cache_dir))),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"),
                    "drift check: no registry, so no production model's baseline");
                None
            }
        };
        let longest = config.processor.window_minutes.iter().max().copied();
        let task = Self {
            store: open_store(&config.lake, &config.data_dir.0)?,
            schema: FeatureSchema::current(&config.processor.window_minutes),
            dir: config.data_dir.0.join("monitoring"),
            every: Duration::from_secs(60),
            window_ms: Timestamp::HOUR_MS,
            warm_up_ms: i64::from(longest.unwrap_or(0)) * 60_000,
            registry,
            dashboard,
        };
        Ok(Some(tokio::spawn(task.run(stop.clone()))))
    }

    /// The baseline to compare with: the production model's when it has one.
    async fn baseline_dir(&self) -> PathBuf {
        if let Some((registry, cache)) = &self.registry {
            match production_baseline(registry.as_ref(), cache).await {
                Ok(Some(dir)) => return dir,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"),
                    "drift check: the production model's baseline"),
            }
        }
        self.dir.join("baseline")
    }

    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let out = self.dir.join("latest");
        let mut first_seen: Option<Timestamp> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let baseline = self.baseline_dir().await;
            if !baseline.join("statistics.json").is_file() {
                tracing::debug!(dir = %baseline.display(), "drift check: no baseline yet");
                continue;
            }
            let rows = match self.last_window().await {
                Ok(Some(rows)) => rows,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "drift check: reading the lake's features");
                    continue;
                }
            };
            let Some(end) = rows.iter().map(|r| r.as_of).max() else {
                continue;
            };
            let start = end.plus_millis(-self.window_ms);
            let first = *first_seen
                .get_or_insert_with(|| rows.iter().map(|r| r.as_of).min().unwrap_or(end));
            if start < first.plus_millis(self.warm_up_ms) {
                tracing::debug!(%start, %first, "drift check: the processor is warming up");
                continue;
            }
            let rows: Vec<FeatureVector> = rows.into_iter().filter(|r| r.as_of > start).collect();
            match check_rows(&self.schema, &baseline, rows, &out) {
                Ok(r) => {
                    tracing::info!(
                        rows = r.rows,
                        violations = r.violations.violations.len(),
                        baseline = %baseline.display(),
                        "drift check"
                    );
                    if let Some(d) = &self.dashboard {
                        let mut top: Vec<_> = r.distances.clone();
                        top.sort_by(|a, b| b.1.total_cmp(&a.1));
                        top.truncate(8);
                        let shown = serde_json::json!({
                            "rows": r.rows,
                            "window_end": end.to_rfc3339(),
                            "violations": r.violations.violations,
                            "top": top,
                        });
                        if let Ok(mut slot) = d.drift.lock() {
                            *slot = Some(shown);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "drift check"),
            }
        }
    }

    /// The lake's feature rows from the start of the hour `window_ms` before the newest
    /// partition on; `None` when the lake has no features yet.
    async fn last_window(&self) -> anyhow::Result<Option<Vec<FeatureVector>>> {
        let Some(newest) = latest_hour(&self.store, Dataset::Features).await? else {
            return Ok(None);
        };
        let Some(hour) = Timestamp::parse_rfc3339(&format!(
            "{:04}-{:02}-{:02}T{:02}:00:00Z",
            newest.year, newest.month, newest.day, newest.hour
        )) else {
            return Ok(None);
        };
        let range = FeatureRange {
            since: Some(hour.plus_millis(-self.window_ms)),
            until: None,
        };
        Ok(Some(features(&self.store, &self.schema, &range).await?))
    }
}

/// The drift baseline saved with the production model (downloaded into `cache` once per
/// version); `None` when production names no model or its model has no baseline.
pub async fn production_baseline(
    registry: &dyn Registry,
    cache: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(v) = registry.current(Stage::Production).await? else {
        return Ok(None);
    };
    let dir = bikeshare_models::registry::fetch(registry, v.version, cache).await?;
    Ok(bikeshare_models::model_dir::read_drift_baseline(&dir)
        .with_context(|| format!("the drift baseline of version {}", v.version))?
        .map(|_| dir))
}

/// Compares the range's rows with the baseline in `baseline_dir`, writes
/// `constraint_violations.json` into `out` and records the drift metrics.
pub async fn check(
    store: &Arc<dyn ObjectStore>,
    schema: &FeatureSchema,
    baseline_dir: &Path,
    range: &FeatureRange,
    out: &Path,
) -> anyhow::Result<DriftReport> {
    read_baseline(schema, baseline_dir)?;
    let rows = features(store, schema, range).await?;
    anyhow::ensure!(
        !rows.is_empty(),
        "no feature rows of schema {} in the lake for that range: nothing to check",
        schema.id().0
    );
    check_rows(schema, baseline_dir, rows, out)
}

/// The baseline in `baseline_dir`, if it is of `schema`.
fn read_baseline(schema: &FeatureSchema, baseline_dir: &Path) -> anyhow::Result<Baseline> {
    let baseline = Baseline::read(baseline_dir).with_context(|| {
        format!(
            "reading the baseline in {} (write one with `bikeshare monitor baseline`)",
            baseline_dir.display()
        )
    })?;
    anyhow::ensure!(
        baseline.feature_names().eq(schema.names()),
        "the baseline in {} is not of the processor's feature schema {}",
        baseline_dir.display(),
        schema.id().0
    );
    Ok(baseline)
}

/// Compares `rows` with the baseline in `baseline_dir`, writes `constraint_violations.json`
/// into `out` and records the drift metrics.
pub fn check_rows(
    schema: &FeatureSchema,
    baseline_dir: &Path,
    rows: Vec<FeatureVector>,
    out: &Path,
) -> anyhow::Result<DriftReport> {
    let baseline = read_baseline(schema, baseline_dir)?;
    let mut window = DriftWindow::new(baseline);
    for r in rows {
        window.push_f32(&r.values);
    }
    let report = window.evaluate();
    report
        .write(out)
        .with_context(|| format!("writing {}", out.display()))?;
    report.record_metrics();
    Ok(report)
}

/// The lake's feature rows of `schema` with `as_of` in the range.
pub async fn features(
    store: &Arc<dyn ObjectStore>,
    schema: &FeatureSchema,
    range: &FeatureRange,
) -> anyhow::Result<Vec<FeatureVector>> {
    let rows: Vec<FeatureVector> = match range.since {
        Some(since) => read_since(store, since).await?,
        None => read_dataset(store).await?,
    };
    Ok(rows
        .into_iter()
        .filter(|r| {
            &r.schema_id == schema.id()
                && range.since.is_none_or(|s| r.as_of >= s)
                && range.until.is_none_or(|u| r.as_of < u)
        })
        .collect())
}

/// The drift baseline of lake feature rows, with the same exclusions and threshold as the
/// baseline training saves with a model (`bikeshare_models::dataset::drift_baseline_builder`).
pub fn baseline_of_rows(schema: &FeatureSchema, rows: &[FeatureVector]) -> Baseline {
    let names: Vec<String> = schema.names().map(str::to_owned).collect();
    let stations: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.station_id.as_str()).collect();
    let mut b = bikeshare_models::dataset::drift_baseline_builder(&names, stations.len());
    for r in rows {
        let row: Vec<Option<f64>> = r.values.iter().map(|v| v.map(f64::from)).collect();
        b.push(&row);
    }
    b.finish()
}

pub fn print_summary(report: &DriftReport, out: &Path) -> anyhow::Result<()> {
    let mut w = std::io::stdout().lock();
    writeln!(
        w,
        "{} rows checked, {} violations -> {}",
        report.rows,
        report.violations.violations.len(),
        out.join("constraint_violations.json").display()
    )?;
    for v in &report.violations.violations {
        writeln!(
            w,
            "  {:<24} {:<22} {}",
            v.feature_name, v.constraint_check_type, v.description
        )?;
    }
    let mut top: Vec<_> = report.distances.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (f, d) in top.into_iter().take(5) {
        writeln!(w, "  distance {d:.3}  {f}")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bikeshare_models::registry::local::LocalRegistry;
    use bikeshare_monitor::drift::baseline_from_rows;

    /// A synthetic model `m` of `version` on `schema`, in its own folder below `root`.
    fn model_dir(root: &Path, version: &str, schema: &FeatureSchema) -> PathBuf {
        let dir = root.join(format!("v{version}"));
        bikeshare_models::synthetic::write_model_dir(
            &dir,
            "m",
            version,
            schema.id(),
            schema.len(),
            3,
            2,
        )
        .unwrap();
        dir
    }

    /// Registers the model in `dir` and puts it in production.
    async fn promote(registry: &LocalRegistry, dir: &Path) {
        let v = registry.register(dir).await.unwrap();
        registry
            .set_stage(v.version, Stage::Production)
            .await
            .unwrap();
    }

    /// The job's drift baseline is the one saved with the production model: none before a
    /// model is in production, none for a model without one, that model's once promoted.
    #[tokio::test]
    async fn the_drift_baseline_is_the_production_models() {
        let dir = tempfile::tempdir().unwrap();
        let schema = FeatureSchema::current(&[5, 60]);
        let registry =
            LocalRegistry::new(dir.path().join("registry"), "m", crate::app::wall_clock());
        let cache = dir.path().join("cache");
        let baseline = || production_baseline(&registry, &cache);
        assert!(baseline().await.unwrap().is_none());

        // v1 without a baseline, in production: nothing to compare with.
        let plain = model_dir(dir.path(), "1", &schema);
        promote(&registry, &plain).await;
        assert!(baseline().await.unwrap().is_none());

        // v2 with the baseline of its training rows, promoted: that one.
        let with = model_dir(dir.path(), "2", &schema);
        let rows = (0..50).map(|i| vec![Some(f64::from(i)); schema.len()]);
        let saved = baseline_from_rows(schema.names(), rows);
        saved.write(&with).unwrap();
        promote(&registry, &with).await;
        let found = baseline().await.unwrap().unwrap();
        let read = read_baseline(&schema, &found).unwrap();
        assert_eq!(read.constraints, saved.constraints);
        assert_eq!(read.statistics.dataset, saved.statistics.dataset);
    }
}
