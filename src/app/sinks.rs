//! The processor's and the archiver's sinks beyond the streams: the Parquet lake and Firehose.

use crate::app::stores::archiver_checkpoint_store;
use crate::app::streams::Backend;
use crate::app::wall_clock;
use crate::config::Config;
use bikeshare_lake::archive::{Archiver, ArchiverConfig};
use bikeshare_lake::sinks::{LakeOutputs, LakeSinks};
use bikeshare_lake::{EpochWriter, open_store};
use bikeshare_stream::names;
use std::sync::Arc;
use std::time::Duration;

/// Which outputs a Firehose sink carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirehoseRole {
    /// The processor's: features (unless `[firehose] features = false`), predictions, labels.
    /// Its dead letters reach Firehose through the `dead-letters` stream and the archiver.
    Processor,
    /// The lake archiver's tap: raw events, station status, dead letters.
    Archiver,
}

/// The Firehose sink of `role`, or `None` when `[firehose] enabled` is false.
pub async fn firehose_sinks(
    config: &Config,
    role: FirehoseRole,
) -> Option<Arc<bikeshare_firehose::FirehoseSinks>> {
    let fh = &config.firehose;
    if !fh.enabled {
        return None;
    }
    let sdk = crate::app::aws::sdk_config(config, fh.region.as_ref()).await;
    let client = bikeshare_firehose::client::firehose_client(&sdk, fh.endpoint_url.as_deref());
    tracing::info!(prefix = %fh.prefix, ?role, "delivering to Firehose");
    Some(Arc::new(bikeshare_firehose::FirehoseSinks::new(
        bikeshare_firehose::DeliveryStreams::new(&client, &fh.prefix, &fh.delivery),
        bikeshare_firehose::FirehoseOutputs {
            features: fh.features && role == FirehoseRole::Processor,
            dead_letters: false,
        },
    )))
}

/// The archiver of the configured streams into the configured lake.
pub async fn archiver(config: &Config, until_caught_up: bool) -> anyhow::Result<Archiver> {
    let backend = Backend::from_config(config).await?;
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let firehose = firehose_sinks(config, FirehoseRole::Archiver).await;
    let archiver = Archiver::new(
        backend.reader(names::EVENTS).await?,
        backend.reader(names::DEAD_LETTERS).await?,
        archiver_checkpoint_store(config).await?,
        EpochWriter::new(store, config.lake.writer_id("archive")?),
        wall_clock(),
        ArchiverConfig {
            batch: config.runner.batch,
            checkpoint_interval: Duration::from_millis(config.lake.checkpoint_interval_ms),
            stop_when_caught_up: until_caught_up,
            ..ArchiverConfig::default()
        },
    );
    Ok(match firehose {
        Some(tap) => archiver.with_tap(tap),
        None => archiver,
    })
}

/// The processor's lake sinks (features, predictions, labels; dead letters reach the lake
/// through the `dead-letters` stream and the archiver), or `None` when the lake is off.
pub fn processor_sinks(config: &Config) -> anyhow::Result<Option<LakeSinks>> {
    if !config.lake.enabled {
        return Ok(None);
    }
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let sinks = LakeSinks::new(
        store,
        config.lake.writer_id("processor")?,
        LakeOutputs {
            features: true,
            dead_letters: false,
        },
    );
    let monitor = &config.lake.model_monitor;
    monitor.validate()?;
    Ok(Some(if monitor.enabled {
        sinks.with_model_monitor(monitor.clone())
    } else {
        sinks
    }))
}
