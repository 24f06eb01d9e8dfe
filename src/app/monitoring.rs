//! What `up`, `process` and `ingest` run beside their work to be watched: the alert loop
//! (`[alerts]`, on by default; with no notifier it only logs) and the CloudWatch exporter
//! (`[cloudwatch]`, off by default). Both read the process's own Prometheus recorder.

use anyhow::Context;
use bikeshare_monitor::alerts::{AlertLoop, recorder_source};
use bikeshare_monitor::cloudwatch::CloudWatchExporter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::stopped;
use crate::config::Config;
use bikeshare_types::SharedClock;

/// Starts the alert loop and the CloudWatch exporter as configured; they stop when `stop`
/// turns true (the exporter pushes once more then). A bad `[alerts]` section is an error at
/// start, not a silent lack of alerts.
pub async fn start(
    config: &Config,
    clock: SharedClock,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let alerts = &config.alerts;
    let cw = &config.cloudwatch;
    let sdk = if (alerts.enabled && alerts.wants_sns()) || cw.enabled {
        Some(crate::app::aws::sdk_config(config, None).await)
    } else {
        None
    };
    let mut tasks = Vec::new();
    if alerts.enabled {
        let alert_loop = AlertLoop::from_config(alerts, sdk.as_ref(), clock.clone())
            .context("starting alerts ([alerts] in the configuration)")?;
        let channels = alert_loop.channels();
        eprintln!(
            "alerts:      {} rules every {} ms -> {}",
            alert_loop.rules().len(),
            alerts.interval_ms,
            if channels.is_empty() {
                "log only".to_owned()
            } else {
                format!("log, {}", channels.join(", "))
            }
        );
        tasks.push(tokio::spawn(alert_loop.run(stopped(stop.clone()))));
    }
    if let (true, Some(sdk)) = (cw.enabled, sdk.as_ref()) {
        let exporter = CloudWatchExporter::new(sdk, cw.clone());
        eprintln!(
            "cloudwatch:  namespace {} every {} ms",
            cw.namespace, cw.interval_ms
        );
        let source = recorder_source().context("installing the metrics recorder")?;
        tasks.push(tokio::spawn(exporter.run(
            source,
            clock,
            stopped(stop.clone()),
        )));
    }
    Ok(tasks)
}

/// Serves `/metrics` (unless disabled) until `stop` resolves, printing its URL.
pub async fn start_metrics(
    config: &Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Option<bikeshare_monitor::exporter::RunningExporter>> {
    if !config.metrics.enabled {
        return Ok(None);
    }
    match bikeshare_monitor::exporter::serve(&config.metrics, stop).await {
        Ok(running) => {
            eprintln!("metrics:     {}", running.url());
            Ok(Some(running))
        }
        // Two commands on one machine with the default port: the job matters more than
        // its endpoint; say so loudly and run on.
        Err(
            e @ bikeshare_monitor::exporter::ExporterError::Listen(
                bikeshare_runtime::http::ListenError::Bind { .. },
            ),
        ) => {
            tracing::warn!(error = %e, "no /metrics endpoint: set BIKESHARE_METRICS__BIND to a free address");
            Ok(None)
        }
        Err(e) => Err(e).context("starting the /metrics endpoint"),
    }
}
