//! Hot swap: the running processor follows the registry's production version.
//!
//! The processor's runner reads its scorer from a `watch` channel once per batch of outputs.
//! [`ProductionWatcher::run`] polls the registry; when `production` names a version other
//! than the one being served, it downloads and loads it *beside* the running one and only
//! then sends it. The runner picks it up at its next batch: no restart, no pause, no event
//! left unscored. A version that does not load (wrong schema, broken file) is logged and the
//! current scorer stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_stream_processor::{FeatureSchema, Scorer};
use tokio::sync::watch;

use crate::registry::{self, ModelVersion, Registry, Stage, VersionLoadError};
use crate::scorer::XgbScorer;

/// Loads production versions from a registry.
#[derive(Debug, Clone)]
pub struct ProductionWatcher {
    pub registry: Arc<dyn Registry>,
    pub schema: FeatureSchema,
    /// Where downloaded versions are kept.
    pub cache: PathBuf,
    pub interval: Duration,
}

impl ProductionWatcher {
    /// The current production version, loaded; `None` when production names nothing.
    pub async fn load_current(
        &self,
    ) -> Result<Option<(ModelVersion, XgbScorer)>, VersionLoadError> {
        let Some(v) = self.registry.current(Stage::Production).await? else {
            return Ok(None);
        };
        let scorer = self.load(&v).await?;
        Ok(Some((v, scorer)))
    }

    /// Downloads (once) and loads a version.
    pub async fn load(&self, v: &ModelVersion) -> Result<XgbScorer, VersionLoadError> {
        registry::load_version(self.registry.as_ref(), v, &self.cache, &self.schema).await
    }

    /// Polls until `stop` resolves, sending each newly promoted version's scorer.
    pub async fn run(self, tx: watch::Sender<Arc<dyn Scorer>>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed: Option<u64> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => {}
            }
            if let Some(version) = self.poll_once(&tx, &mut failed).await {
                tracing::info!(
                    model = self.registry.model_name(),
                    version,
                    "hot-swapped to the new production model"
                );
            }
        }
    }

    /// One poll: `Some(version)` when a new scorer was sent.
    pub async fn poll_once(
        &self,
        tx: &watch::Sender<Arc<dyn Scorer>>,
        failed: &mut Option<u64>,
    ) -> Option<u64> {
        let current = match self.registry.current(Stage::Production).await {
            Ok(Some(v)) => v,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the production version");
                return None;
            }
        };
        let serving = tx.borrow().model().clone();
        if serving == current.model_ref() {
            return None;
        }
        match self.load(&current).await {
            Ok(scorer) => {
                *failed = None;
                tx.send_replace(Arc::new(scorer));
                Some(current.version)
            }
            Err(e) => {
                if *failed != Some(current.version) {
                    tracing::error!(version = current.version, error = %e,
                        "the new production model does not load; still serving the previous one");
                    *failed = Some(current.version);
                }
                None
            }
        }
    }
}
