//! The web dashboard, fed from the streams of the configured backend and from this process's
//! own metrics (per-shard lag, checkpoint age, alerts firing).

use std::io::Write;
use std::path::Path;

use crate::config::Config;
use anyhow::Context;
use bikeshare_dashboard::server::{self, RunningDashboard};
use bikeshare_dashboard::state::{
    self as dash, AlertRuleInfo, DashboardState, JobInfo, MetricSample, MetricsReader, Sources,
};
use bikeshare_stream::names;
use bikeshare_types::SharedClock;
use serde::{Deserialize, Serialize};

/// Starts following the streams and serving the dashboard; the state is returned so that a
/// processor running in the same process can attach its live counters.
pub async fn start(
    config: &Config,
    clock: SharedClock,
    stop_follow: impl std::future::Future<Output = ()> + Send + 'static,
    stop_server: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(RunningDashboard, std::sync::Arc<DashboardState>)> {
    let backend = crate::app::streams::Backend::from_config(config).await?;
    let open = |name: &'static str| {
        let backend = backend.clone();
        async move { backend.reader(name).await }
    };
    let sources = Sources {
        events: open(names::EVENTS).await?,
        predictions: open(names::PREDICTIONS).await?,
        labels: open(bikeshare_sinks::stream::names::LABELS).await?,
        dead_letters: open(names::DEAD_LETTERS).await?,
    };
    let state = DashboardState::with_settings(
        clock.clone(),
        config.processor.quality.clone(),
        config.dashboard.settings(),
    );
    attach_process(&state, config, &clock);
    // Both tasks stop with the streams' follower.
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(dash::sample(state.clone(), crate::app::stopped(rx)));
    let follow = dash::follow(state.clone(), sources, stop_follow);
    tokio::spawn(async move {
        follow.await;
        let _ = tx.send(true);
    });
    let running = server::serve(config.dashboard.clone(), state.clone(), stop_server)
        .await
        .context("starting the dashboard")?;
    Ok((running, state))
}

/// Gives the state what this process knows about itself: its metrics, its alert rules,
/// where `/metrics` is, and the earlier starts of the same command on this data directory.
fn attach_process(state: &DashboardState, config: &Config, clock: &SharedClock) {
    match bikeshare_monitor::alerts::recorder_source() {
        Ok(source) => {
            let _ = state
                .metrics
                .set(MetricsReader(std::sync::Arc::new(move || {
                    source()
                        .into_iter()
                        .map(|s| MetricSample {
                            name: s.name,
                            labels: s.labels,
                            value: s.value,
                        })
                        .collect()
                })));
        }
        Err(e) => tracing::warn!(error = %e, "dashboard: no metrics recorder"),
    }
    if config.alerts.enabled
        && let Ok(rules) = config.alerts.effective_rules()
    {
        let _ = state.alert_rules.set(
            rules
                .into_iter()
                .map(|r| AlertRuleInfo {
                    condition: format!(
                        "{} {} {} for {} s",
                        r.metric,
                        r.op.as_str(),
                        r.threshold,
                        r.for_secs
                    ),
                    name: r.name,
                    severity: r.severity.as_str().to_owned(),
                    summary: r.summary,
                })
                .collect(),
        );
    }
    if config.metrics.enabled && config.metrics.bind.port() != 0 {
        let _ = state
            .metrics_url
            .set(format!("http://{}/metrics", config.metrics.bind));
    }
    let command = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && matches!(a.as_str(), "up" | "dashboard" | "process"))
        .unwrap_or_else(|| "dashboard".to_owned());
    let path = config.data_dir.0.join("monitoring").join("starts.jsonl");
    match record_start(&path, &command, clock.now().millis()) {
        Ok(job) => {
            let _ = state.job.set(job);
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), path = %path.display(), "dashboard: cannot record this start")
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Start {
    command: String,
    at_ms: i64,
    pid: u32,
}

/// Appends this start to `path` (JSON lines; `up --fresh` removes it with the rest of
/// `monitoring/`) and counts the earlier starts of `command`.
fn record_start(path: &Path, command: &str, at_ms: i64) -> anyhow::Result<JobInfo> {
    let earlier: Vec<Start> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter_map(|l| serde_json::from_str::<Start>(l).ok())
            .filter(|s| s.command == command)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context("reading the starts"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context("creating the monitoring directory")?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context("opening the starts")?;
    let line = serde_json::to_string(&Start {
        command: command.to_owned(),
        at_ms,
        pid: std::process::id(),
    })?;
    writeln!(f, "{line}").context("recording this start")?;
    Ok(JobInfo {
        command: command.to_owned(),
        restarts: earlier.len() as u64,
        previous_start_ms: earlier.iter().map(|s| s.at_ms).max(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_counted_per_command() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("monitoring").join("starts.jsonl");
        let first = record_start(&path, "up", 1_000)?;
        assert_eq!((first.restarts, first.previous_start_ms), (0, None));
        record_start(&path, "dashboard", 2_000)?;
        let again = record_start(&path, "up", 3_000)?;
        assert_eq!((again.restarts, again.previous_start_ms), (1, Some(1_000)));
        std::fs::write(&path, "not json\n")?;
        assert_eq!(record_start(&path, "up", 4_000)?.restarts, 0);
        Ok(())
    }
}
