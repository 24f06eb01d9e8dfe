//! Model wiring shared by the commands: the configured registry, and the processor's scorer
//! (production's model, or the baseline) with the watcher that hot-swaps it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_models::bootstrap::{BootstrapConfig, train_bootstrap};
use bikeshare_models::hotswap::ProductionWatcher;
use bikeshare_models::promote::{Gate, HeldOut, PromotionDecision};
use bikeshare_models::registry::local::LocalRegistry;
use bikeshare_models::registry::mlflow::{MlflowRegistry, MlflowSettings};
use bikeshare_models::registry::sagemaker::SageMakerRegistry;
use bikeshare_models::registry::{Registry, Stage};
use bikeshare_stream_processor::{BaselineScorer, FeatureSchema, Scorer};
use bikeshare_types::SharedClock;
use tokio::sync::watch;

use crate::config::{Config, RegistryBackend};
use std::io::Write;

/// The registry `[registry]` configures.
pub fn open_registry(config: &Config, clock: SharedClock) -> anyhow::Result<Arc<dyn Registry>> {
    let r = &config.registry;
    Ok(match r.backend {
        RegistryBackend::Local => Arc::new(LocalRegistry::new(
            config.data_path(&r.path),
            &r.model_name,
            clock,
        )),
        RegistryBackend::Mlflow => {
            let uri = r.tracking_uri.clone().context(
                "[registry] backend = \"mlflow\" needs tracking_uri (or BIKESHARE_REGISTRY__TRACKING_URI)",
            )?;
            let mut settings = MlflowSettings::new(uri, &r.model_name);
            settings.experiment = r.experiment.clone();
            Arc::new(MlflowRegistry::new(settings, clock)?)
        }
        // The process's one AWS configuration, loaded when the registry is first read.
        RegistryBackend::Sagemaker => {
            let config = Arc::new(config.clone());
            Arc::new(SageMakerRegistry::lazy(
                &r.model_name,
                r.sagemaker.clone(),
                clock,
                Arc::new(move || {
                    let config = config.clone();
                    Box::pin(async move { crate::app::aws::sdk_config(&config, None).await })
                }),
            )?)
        }
    })
}

/// The promotion gate over the configured registry.
pub fn gate(
    config: &Config,
    registry: Arc<dyn Registry>,
    schema: &FeatureSchema,
    clock: SharedClock,
) -> Gate {
    Gate {
        registry,
        schema: schema.clone(),
        horizon_minutes: config.processor.horizon_minutes,
        config: config.registry.gate,
        cache: config.data_path(&config.registry.cache_dir),
        clock,
    }
}

/// The processor's scorer channel and, when polling is on, the watcher that feeds it.
pub struct ScorerFeed {
    pub rx: watch::Receiver<Arc<dyn Scorer>>,
    tx: watch::Sender<Arc<dyn Scorer>>,
    watcher: Option<ProductionWatcher>,
}

impl ScorerFeed {
    /// Starts the watcher (if any); it stops when `stop` resolves.
    pub fn spawn(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let watcher = self.watcher?;
        Some(tokio::spawn(watcher.run(self.tx, stop)))
    }

    /// The scorer now in the channel.
    pub fn current(&self) -> Arc<dyn Scorer> {
        self.rx.borrow().clone()
    }
}

/// Production's model when the registry has one that loads; otherwise the baseline, with
/// the reason logged. Registry trouble never stops the processor from starting: the
/// watcher keeps trying and swaps the model in when it can.
pub async fn scorer_feed(
    config: &Config,
    schema: &FeatureSchema,
    clock: SharedClock,
) -> anyhow::Result<ScorerFeed> {
    let registry = open_registry(config, clock)?;
    let watcher = ProductionWatcher {
        registry: registry.clone(),
        schema: schema.clone(),
        cache: config.data_path(&config.registry.cache_dir),
        interval: Duration::from_millis(config.registry.poll_interval_ms.max(100)),
    };
    let initial: Arc<dyn Scorer> = match watcher.load_current().await {
        Ok(Some((v, scorer))) => {
            tracing::info!(model = %v.model, version = v.version, registry = %registry.describe(),
                "scoring with the production model");
            Arc::new(scorer)
        }
        Ok(None) => {
            tracing::info!(registry = %registry.describe(),
                "no production model in the registry: scoring with the baseline");
            Arc::new(BaselineScorer::new(
                schema,
                config.processor.horizon_minutes,
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, registry = %registry.describe(),
                "cannot load the production model: scoring with the baseline");
            Arc::new(BaselineScorer::new(
                schema,
                config.processor.horizon_minutes,
            ))
        }
    };
    let (tx, rx) = watch::channel(initial);
    Ok(ScorerFeed {
        rx,
        tx,
        watcher: (config.registry.poll_interval_ms > 0).then_some(watcher),
    })
}

/// The data-quality baseline (Model Monitor's statistics.json + constraints.json) of the
/// rows a model was trained and validated on, in `<data_dir>/monitoring/baseline`, for the
/// drift check of `up` and `bikeshare monitor check`. A failure is logged: drift monitoring
/// then waits for `bikeshare monitor baseline`, the job goes on.
fn write_drift_baseline(
    config: &Config,
    data: &bikeshare_models::dataset::TrainingData,
    rows: std::ops::Range<usize>,
) {
    let dir = config.data_dir.0.join("monitoring").join("baseline");
    match data.drift_baseline(rows).write(&dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "drift baseline written"),
        Err(e) => tracing::warn!(error = %e, "writing the drift baseline"),
    }
}

/// When production names no model: train a first one on a simulated backfill of `city`
/// ending at `end` (before the live simulation starts, so it never sees the live window),
/// register it, and put it through the gate — staging, then production against the
/// baseline — on its held-out test days. `None` when the registry holds any version.
pub async fn bootstrap_if_empty(
    config: &Config,
    city: &bikeshare_simulator::CityConfig,
    end: bikeshare_types::Timestamp,
    clock: SharedClock,
) -> anyhow::Result<Option<PromotionDecision>> {
    let registry = open_registry(config, clock.clone())?;
    if let Some(v) = registry.current(Stage::Production).await? {
        tracing::info!(version = v.version, "the registry has a production model");
        return Ok(None);
    }
    // A bootstrap already trained (and refused, or demoted) is not trained again at every
    // start: the registry is no longer empty, and what to promote is the gate's call.
    if let Some(v) = registry.list().await?.into_iter().max_by_key(|v| v.version) {
        eprintln!(
            "model:       {} has v{} but no production model: scoring with the baseline \
             (train one with `bikeshare train`, promote it with `bikeshare promote`)",
            registry.describe(),
            v.version
        );
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let now = clock.now();
    let bootstrap = BootstrapConfig::for_up(
        city,
        config.processor.clone(),
        end.floor_to(bikeshare_types::Timestamp::MINUTE_MS),
    );
    eprintln!(
        "model:       no production model in {}: training a first one on {} simulated days of {} stations",
        registry.describe(),
        bootstrap.days,
        bootstrap.city.stations
    );
    let dir = config
        .data_path(&config.registry.cache_dir)
        .join(format!("bootstrap-{}", now.millis()));
    let name = config.registry.model_name.clone();
    let trained = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            train_bootstrap(&bootstrap, &dir, &name, "bootstrap", now, &mut |_| {})
        })
        .await
        .context("bootstrap training task")??
    };
    let version = registry.register(&dir).await?;
    let _ = std::fs::remove_dir_all(&dir);
    write_drift_baseline(config, &trained.data, 0..trained.test.start);
    let held_out = HeldOut::from_training_data(&trained.data, trained.test.clone());
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let gate = gate(config, registry, &schema, clock);
    let staged = gate
        .evaluate(version.version, Stage::Staging, Some(&held_out))
        .await?;
    let decision = if staged.promoted {
        gate.evaluate(version.version, Stage::Production, Some(&held_out))
            .await?
    } else {
        staged
    };
    eprintln!(
        "model:       bootstrap took {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        decision.summary
    );
    if !decision.promoted {
        let baseline = BaselineScorer::new(&schema, config.processor.horizon_minutes);
        eprintln!("{}", refused_bootstrap_line(&decision, baseline.model()));
    }
    Ok(Some(decision))
}

/// What `up` says once when the gate keeps its bootstrap out of production: each failed
/// check with its numbers, and that the baseline scores.
pub fn refused_bootstrap_line(
    d: &PromotionDecision,
    baseline: &bikeshare_types::contracts::ModelRef,
) -> String {
    let failed: Vec<String> = d
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{} {}", c.name, c.detail))
        .collect();
    format!(
        "model:       the gate refused the bootstrap v{} for {} ({}): scoring with the \
         net-flow baseline ({} v{}) until a model is promoted \
         (`bikeshare promote --status` has every number)",
        d.candidate,
        d.target,
        failed.join("; "),
        baseline.name,
        baseline.version
    )
}

/// The decision, check by check, with the numbers.
pub fn print_decision(d: &PromotionDecision) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", d.summary);
    if let Some(h) = &d.heldout {
        let _ = writeln!(
            out,
            "  held-out: {} rows from {} to {} ({} went empty, {} went full)",
            h.rows,
            h.from.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
            h.to.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
            h.went_empty,
            h.went_full
        );
    }
    if let (Some(c), Some(i), Some(inc)) =
        (&d.candidate_metrics, &d.incumbent_metrics, &d.incumbent)
    {
        let _ = writeln!(
            out,
            "  {:<28} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "LL empty", "PR empty", "newPR empty", "LL full", "PR full", "newPR full"
        );
        let f = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.5}"));
        for (who, m) in [
            (format!("candidate v{}", d.candidate), c),
            (format!("{} v{}", inc.name, inc.version), i),
        ] {
            let _ = writeln!(
                out,
                "  {who:<28} {:>10.5} {:>10.5} {:>10} {:>10.5} {:>10.5} {:>10}",
                m.empty.log_loss,
                m.empty.pr_auc,
                f(m.empty.new_stockout_pr_auc),
                m.full.log_loss,
                m.full.pr_auc,
                f(m.full.new_stockout_pr_auc)
            );
        }
    }
    for c in &d.checks {
        let _ = writeln!(
            out,
            "  [{}] {:<40} {}",
            if c.passed { "pass" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}
