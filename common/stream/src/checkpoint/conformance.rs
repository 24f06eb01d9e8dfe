//! The fencing every [`CheckpointStore`] must give, written once and run against each
//! implementation: in memory and on disk by this crate's tests, S3 (moto) by
//! `bikeshare-aws`'s, through the feature `conformance`.
//!
//! Test support: the check panics, naming what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bikeshare_types::Timestamp;

use super::{CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointStore, Holder, Version};

/// The key [`former_owners_are_fenced`] writes under.
pub const KEY: &str = "shardId-000000000000";

/// Checkpoint `epoch` of [`KEY`]: its position is the epoch.
pub fn checkpoint(epoch: u64) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        epoch,
        taken_at: Timestamp(1_000 + epoch as i64),
        positions: BTreeMap::from([(KEY.to_owned(), epoch.to_string())]),
        state: vec![7; 64],
    }
}

pub fn holder(owner: &str, lease_counter: u64) -> Holder {
    Holder {
        owner: owner.into(),
        lease_counter,
    }
}

/// A second creator of a missing checkpoint is refused, naming the first. A former owner
/// that did not notice it lost the shard writes with the version it last saw: once the new
/// owner has claimed the checkpoint, that write is refused and names the new owner, and so
/// is a write that expects no checkpoint; the new owner's writes go on.
pub async fn former_owners_are_fenced(store: &dyn CheckpointStore) {
    let a = holder("a", 1);
    let first = store.load(KEY).await.unwrap();
    assert_eq!(first.version, Version::ABSENT);
    let va = store
        .save_if(KEY, &checkpoint(1), &a, &first.version)
        .await
        .unwrap();
    // A second creator (it also saw no checkpoint) is refused.
    match store
        .save_if(KEY, &checkpoint(1), &holder("c", 2), &Version::ABSENT)
        .await
    {
        Err(CheckpointError::Fenced { holder, .. }) => assert_eq!(holder, a),
        other => panic!("a second creator was not fenced: {other:?}"),
    }
    let va = store.save_if(KEY, &checkpoint(2), &a, &va).await.unwrap();

    // b takes the lease and claims the checkpoint: the same checkpoint, its own holder.
    let b = holder("b", 5);
    let loaded = store.load(KEY).await.unwrap();
    assert_eq!(loaded.version, va);
    assert_eq!(loaded.checkpoint, Some(checkpoint(2)));
    assert_eq!(loaded.holder.as_ref(), Some(&a));
    let claimed = loaded.checkpoint.unwrap();
    let vb = store
        .save_if(KEY, &claimed, &b, &loaded.version)
        .await
        .unwrap();
    assert_ne!(vb, va, "the claim changed the version");

    // a writes on with the version it last saw: refused, naming b; b's claim stays.
    match store.save_if(KEY, &checkpoint(3), &a, &va).await {
        Err(CheckpointError::Fenced { holder, key }) => {
            assert_eq!((holder, key.as_str()), (b.clone(), KEY));
        }
        other => panic!("a former owner's write was not fenced: {other:?}"),
    }
    // A creator of a key that exists is refused too.
    assert!(matches!(
        store
            .save_if(KEY, &checkpoint(3), &a, &Version::ABSENT)
            .await,
        Err(CheckpointError::Fenced { .. })
    ));
    let now = store.load(KEY).await.unwrap();
    assert_eq!(
        (now.checkpoint, now.holder),
        (Some(checkpoint(2)), Some(b.clone()))
    );
    let vb = store.save_if(KEY, &checkpoint(3), &b, &vb).await.unwrap();
    assert_eq!(store.load(KEY).await.unwrap().version, vb);
    assert_eq!(store.latest(KEY).await.unwrap(), Some(checkpoint(3)));
}
