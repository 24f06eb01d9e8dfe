//! Fenced checkpoints in S3 (moto): a former owner that has not noticed it lost a shard
//! writes with the ETag it last saw; once the new owner has claimed the checkpoint, S3
//! refuses that write (`If-Match`), and a second creator of a missing checkpoint is refused
//! too (`If-None-Match: *`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;

use bikeshare_aws::{S3CheckpointSettings, S3CheckpointStore};
use bikeshare_stream::checkpoint::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore, Holder, Version,
};
use bikeshare_types::Timestamp;

const KEY: &str = "shardId-000000000000";

fn cp(epoch: u64) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        epoch,
        taken_at: Timestamp(1_000 + epoch as i64),
        positions: BTreeMap::from([(KEY.to_owned(), epoch.to_string())]),
        state: vec![7; 64],
    }
}

fn holder(owner: &str, lease_counter: u64) -> Holder {
    Holder {
        owner: owner.into(),
        lease_counter,
    }
}

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

    let a = holder("a", 1);
    let first = store.load(KEY).await.unwrap();
    assert_eq!(first.version, Version::ABSENT);
    let va = store
        .save_if(KEY, &cp(1), &a, &first.version)
        .await
        .unwrap();
    // A second creator (it also saw no checkpoint) is refused.
    match store
        .save_if(KEY, &cp(1), &holder("c", 2), &Version::ABSENT)
        .await
    {
        Err(CheckpointError::Fenced { holder, .. }) => assert_eq!(holder, a),
        other => panic!("a second creator was not fenced: {other:?}"),
    }
    let va = store.save_if(KEY, &cp(2), &a, &va).await.unwrap();

    // b takes the lease and claims the checkpoint: the same checkpoint, its own holder.
    let b = holder("b", 5);
    let loaded = store.load(KEY).await.unwrap();
    assert_eq!(loaded.version, va);
    assert_eq!(loaded.holder.as_ref(), Some(&a));
    let vb = store
        .save_if(
            KEY,
            loaded.checkpoint.as_ref().unwrap(),
            &b,
            &loaded.version,
        )
        .await
        .unwrap();
    assert_ne!(vb, va, "the claim changed the ETag");

    // a writes on with the ETag it last saw: refused, naming b; b's claim stays.
    match store.save_if(KEY, &cp(3), &a, &va).await {
        Err(CheckpointError::Fenced { holder, key }) => {
            assert_eq!((holder, key.as_str()), (b.clone(), KEY));
        }
        other => panic!("a former owner's write was not fenced: {other:?}"),
    }
    let now = store.load(KEY).await.unwrap();
    assert_eq!((now.checkpoint, now.holder), (Some(cp(2)), Some(b.clone())));
    let vb = store.save_if(KEY, &cp(3), &b, &vb).await.unwrap();
    assert_eq!(store.load(KEY).await.unwrap().version, vb);
    assert_eq!(store.latest(KEY).await.unwrap(), Some(cp(3)));
}
