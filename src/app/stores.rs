//! The shard checkpoint and lease stores as configured: the processor's (`[runner.checkpoints]`,
//! `[runner.leases]`) and the lake archiver's (`[archiver.checkpoints]`). The runner, the
//! archiver and the consumer positions behind stream retention (`streams`) build their stores
//! here, so none of them imports another.

use crate::config::{CheckpointSettings, CheckpointStoreKind, Config};
use anyhow::Context;
use bikeshare_aws::{DynamoLeaseStore, LeaseStoreKind, S3CheckpointStore};
use bikeshare_stream::checkpoint::{CheckpointStore, LocalCheckpointStore};
use bikeshare_stream::lease::{LeaseStore, MemoryLeaseStore};
use std::sync::Arc;

/// The configured checkpoint store (`[runner.checkpoints]`).
pub async fn checkpoint_store(config: &Config) -> anyhow::Result<Arc<dyn CheckpointStore>> {
    checkpoint_store_of(
        config,
        &config.runner.checkpoints,
        &config.runner.checkpoint_dir,
    )
    .await
}

/// The checkpoint store `settings` name: files under `local_dir` (relative to the data
/// directory) or objects in S3 (the processor's `[runner.checkpoints]`, the lake archiver's
/// `[archiver.checkpoints]`).
pub async fn checkpoint_store_of(
    config: &Config,
    settings: &CheckpointSettings,
    local_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn CheckpointStore>> {
    Ok(match settings.store {
        CheckpointStoreKind::Local => {
            Arc::new(LocalCheckpointStore::new(config.data_path(local_dir)))
        }
        CheckpointStoreKind::S3 => {
            let sdk = crate::app::aws::sdk_config(config, settings.s3.region.as_ref()).await;
            let store = S3CheckpointStore::new(&sdk, &settings.s3)?;
            if settings.s3.create_bucket {
                store
                    .ensure_bucket()
                    .await
                    .context("creating the checkpoint bucket")?;
            }
            Arc::new(store)
        }
    })
}

/// The configured lease store (`[runner.leases]`).
pub async fn lease_store(config: &Config) -> anyhow::Result<Arc<dyn LeaseStore>> {
    let settings = &config.runner.leases;
    Ok(match settings.store {
        LeaseStoreKind::Memory => Arc::new(MemoryLeaseStore::default()),
        LeaseStoreKind::Dynamodb => {
            let sdk = crate::app::aws::sdk_config(config, settings.region.as_ref()).await;
            let store =
                DynamoLeaseStore::new(&sdk, &settings.table, settings.endpoint_url.as_deref());
            if settings.create_table {
                store
                    .ensure_table()
                    .await
                    .context("creating the lease table")?;
            }
            Arc::new(store)
        }
    })
}

/// The lake archiver's checkpoint store (`[archiver.checkpoints]`: local files under
/// `lake.checkpoint_dir`, or S3).
pub async fn archiver_checkpoint_store(
    config: &Config,
) -> anyhow::Result<Arc<dyn CheckpointStore>> {
    checkpoint_store_of(
        config,
        &config.archiver.checkpoints,
        &config.lake.checkpoint_dir,
    )
    .await
}
