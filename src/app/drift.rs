//! The drift check of the lake's feature rows against a baseline, as a function
//! (`bikeshare monitor check`) and as a task inside the main job ([`DriftTask`]).

use crate::cli::FeatureRange;
use crate::config::Config;
use anyhow::Context;
use bikeshare_lake::Dataset;
use bikeshare_lake::catalog::{latest_hour, read_dataset, read_since};
use bikeshare_lake::open_store;
use bikeshare_monitor::drift::{Baseline, DriftReport, DriftWindow};
use bikeshare_stream_processor::FeatureSchema;
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::FeatureVector;
use object_store::ObjectStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The drift check inside the main job: every `every`, the last `window` of feature rows in
/// the lake against `<data_dir>/monitoring/baseline` (written by `up` from its bootstrap
/// rows), into `<data_dir>/monitoring/latest` and the drift metrics.
#[derive(Debug)]
pub struct DriftTask {
    pub store: Arc<dyn ObjectStore>,
    pub schema: FeatureSchema,
    pub dir: PathBuf,
    pub every: Duration,
    pub window_ms: i64,
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
        let task = Self {
            store: open_store(&config.lake, &config.data_dir.0)?,
            schema: FeatureSchema::v1(&config.processor.window_minutes),
            dir: config.data_dir.0.join("monitoring"),
            every: Duration::from_secs(60),
            window_ms: Timestamp::HOUR_MS,
            dashboard,
        };
        Ok(Some(tokio::spawn(task.run(stop.clone()))))
    }

    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let baseline = self.dir.join("baseline");
        let out = self.dir.join("latest");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if !baseline.join("statistics.json").is_file() {
                tracing::debug!(dir = %baseline.display(), "drift check: no baseline yet");
                continue;
            }
            // The newest partition of features sets the end of the window (event time).
            let newest = match latest_hour(&self.store, Dataset::Features).await {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "drift check: listing the lake's features");
                    continue;
                }
            };
            let start = Timestamp::parse_rfc3339(&format!(
                "{:04}-{:02}-{:02}T{:02}:00:00Z",
                newest.year, newest.month, newest.day, newest.hour
            ));
            let range = FeatureRange {
                since: start.map(|s| s.plus_millis(Timestamp::HOUR_MS - self.window_ms)),
                until: None,
            };
            match check(&self.store, &self.schema, &baseline, &range, &out).await {
                Ok(r) => {
                    tracing::info!(
                        rows = r.rows,
                        violations = r.violations.violations.len(),
                        "drift check"
                    );
                    if let (Some(d), Some(start)) = (&self.dashboard, start) {
                        let mut top: Vec<_> = r.distances.clone();
                        top.sort_by(|a, b| b.1.total_cmp(&a.1));
                        top.truncate(8);
                        let shown = serde_json::json!({
                            "rows": r.rows,
                            "window_end": start.plus_millis(Timestamp::HOUR_MS).to_rfc3339(),
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
    let rows = features(store, schema, range).await?;
    anyhow::ensure!(
        !rows.is_empty(),
        "no feature rows of schema {} in the lake for that range: nothing to check",
        schema.id().0
    );
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

pub fn widen(values: &[Option<f32>]) -> Vec<Option<f64>> {
    values.iter().map(|v| v.map(f64::from)).collect()
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
