//! Model wiring shared by the commands: the configured registry, and the processor's scorer
//! (production's model, or the baseline) with the watcher that hot-swaps it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bikeshare_common::SharedClock;
use bikeshare_models::hotswap::ProductionWatcher;
use bikeshare_models::registry::Registry;
use bikeshare_models::registry::local::LocalRegistry;
use bikeshare_models::registry::mlflow::{MlflowRegistry, MlflowSettings};
use bikeshare_stream_processor::{BaselineScorer, FeatureSchema, Scorer};
use tokio::sync::watch;

use crate::config::{Config, RegistryBackend};

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
    })
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
