//! [`FanOut`]: the same outputs to several sinks (streams and the lake).

use std::sync::Arc;

use async_trait::async_trait;
use bikeshare_stream::sink::{ShardOutputs, SinkError, Sinks};
use bikeshare_types::contracts::{DeadLetter, FeatureVector, Label, Prediction};

/// Hands every output to each sink in order; barriers (`flush`, `open_shard`,
/// `abandon_shard`, `commit`) resolve when every sink's has.
#[derive(Debug)]
pub struct FanOut {
    sinks: Vec<Arc<dyn Sinks>>,
}

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn Sinks>>) -> Self {
        Self { sinks }
    }
}

#[async_trait]
impl Sinks for FanOut {
    async fn features(&self, rows: Vec<FeatureVector>) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.features(rows.clone()).await?;
        }
        Ok(())
    }
    async fn predictions(&self, predictions: Vec<Prediction>) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.predictions(predictions.clone()).await?;
        }
        Ok(())
    }
    async fn labels(&self, labels: Vec<Label>) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.labels(labels.clone()).await?;
        }
        Ok(())
    }
    async fn dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.dead_letters(letters.clone()).await?;
        }
        Ok(())
    }
    async fn flush(&self) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.flush().await?;
        }
        Ok(())
    }
    async fn open_shard(&self, shard: &str, restored_epoch: u64) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.open_shard(shard, restored_epoch).await?;
        }
        Ok(())
    }
    async fn abandon_shard(&self, shard: &str, stored_epoch: u64) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.abandon_shard(shard, stored_epoch).await?;
        }
        Ok(())
    }
    async fn shard_outputs(&self, shard: &str, outputs: ShardOutputs) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.shard_outputs(shard, outputs.clone()).await?;
        }
        Ok(())
    }
    async fn commit(&self, checkpoints: &[(String, u64)]) -> Result<(), SinkError> {
        for s in &self.sinks {
            s.commit(checkpoints).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::memory::MemorySinks;

    #[tokio::test]
    async fn every_sink_gets_every_output() {
        let (a, b) = (MemorySinks::new(), MemorySinks::new());
        let fan = FanOut::new(vec![Arc::new(a.clone()), Arc::new(b.clone())]);
        let l = DeadLetter::new(
            "s".into(),
            "src",
            "r",
            "m",
            "{}",
            bikeshare_types::Timestamp(1),
        );
        fan.dead_letters(vec![l.clone()]).await.unwrap();
        fan.commit(&[("shardId-0".into(), 1)]).await.unwrap();
        assert_eq!(*a.dead_letters.lock().unwrap(), vec![l.clone()]);
        assert_eq!(*b.dead_letters.lock().unwrap(), vec![l]);
    }
}
