//! Fenced checkpoints in S3 (moto): a former owner that has not noticed it lost a shard
//! writes with the ETag it last saw; once the new owner has claimed the checkpoint, S3
//! refuses that write (`If-Match`), and a second creator of a missing checkpoint is refused
//! too (`If-None-Match: *`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use bikeshare_aws::{S3CheckpointSettings, S3CheckpointStore};
use bikeshare_stream::checkpoint::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owners_checkpoint_write_is_refused_by_s3() {
    let Some(moto) = support::moto_endpoint("checkpoint_fencing") else {
        return;
    };
    let sdk = support::sdk_config(&moto).await;
    let store = S3CheckpointStore::new(
        &sdk,
        &S3CheckpointSettings {
            bucket: format!("fencing-{}", std::process::id()),
            endpoint_url: Some(moto.clone()),
            create_bucket: true,
            ..S3CheckpointSettings::default()
        },
    )
    .unwrap();
    store.ensure_bucket().await.unwrap();

    conformance::former_owners_are_fenced(&store).await;
}
