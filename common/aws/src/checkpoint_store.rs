//! The processor's per-shard checkpoints in Amazon S3: one object per shard,
//! `<prefix><shard id>/checkpoint.bin` (MessagePack, the format of
//! [`bikeshare_stream::checkpoint::Checkpoint`]).
//!
//! - A `PutObject` replaces the object atomically and S3 reads are strongly consistent, so
//!   a reader gets the previous checkpoint or the new one, never a torn one.
//! - Fenced writes ([`CheckpointStore::save_if`]): a `PutObject` with `If-Match` on the ETag
//!   of the checkpoint its writer last loaded or wrote (`If-None-Match: *` when there was
//!   none); S3 answers `412 Precondition Failed` (or `404` when the object is gone) to a
//!   writer that another instance has overtaken, which becomes
//!   [`CheckpointError::Fenced`]. Each stored checkpoint carries its writer and a revision,
//!   so writes of two holders never have the same bytes, hence never the same ETag.
//! - Path-style addressing (`force_path_style`), so the same code talks to S3 and to
//!   emulators (moto); the endpoint comes from configuration only
//!   ([`S3CheckpointSettings::endpoint_url`], or `AWS_ENDPOINT_URL_S3`).
//! - Retries: the SDK's standard retry policy owns them on this path (checkpoint calls are
//!   few, and a failed checkpoint fails the runner, which then restarts from the previous
//!   one).
//!
//! DynamoDB is not offered for checkpoints: an item holds at most 400 KB, and a shard's
//! processor state (every station's retained history) outgrows that; the Kinesis Client
//! Library keeps only sequence numbers there. Leases stay in DynamoDB ([`crate::DynamoLeaseStore`]).

use std::path::PathBuf;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bikeshare_stream::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, Holder, Loaded, Version, check_key,
};
use bikeshare_types::error::chain;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

/// `[runner.checkpoints.s3]`: where checkpoints live in S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct S3CheckpointSettings {
    pub bucket: String,
    /// Key prefix, e.g. `checkpoints/processor/` (a trailing `/` is added when missing).
    #[default("checkpoints/processor/")]
    pub prefix: String,
    /// AWS region; from the standard AWS configuration when absent.
    pub region: Option<String>,
    /// Endpoint override for S3 only (an emulator); `AWS_ENDPOINT_URL_S3` works as well.
    pub endpoint_url: Option<String>,
    /// Create the bucket if it is missing (development, emulators; in AWS the
    /// infrastructure templates create it).
    pub create_bucket: bool,
}

/// Checkpoints in one S3 bucket under one prefix.
#[derive(Debug, Clone)]
pub struct S3CheckpointStore {
    client: Client,
    bucket: String,
    prefix: String,
}

fn remote<E>(store: &S3CheckpointStore, operation: &str, err: &SdkError<E>) -> CheckpointError
where
    E: std::error::Error + Send + Sync + 'static,
{
    CheckpointError::Remote {
        store: format!("s3://{}/{}", store.bucket, store.prefix),
        message: format!("{operation}: {}", chain(err)),
    }
}

impl S3CheckpointStore {
    /// A store from the shared AWS configuration; refuses an empty bucket name.
    pub fn new(sdk: &SdkConfig, settings: &S3CheckpointSettings) -> Result<Self, CheckpointError> {
        if settings.bucket.is_empty() {
            return Err(CheckpointError::Remote {
                store: "s3".into(),
                message: "no bucket configured ([runner.checkpoints.s3] bucket)".into(),
            });
        }
        let mut config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(true);
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        if let Some(region) = &settings.region {
            config = config.region(aws_config::Region::new(region.clone()));
        }
        let mut prefix = settings.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            prefix,
        })
    }

    /// Creates the bucket unless it exists (and is ours).
    pub async fn ensure_bucket(&self) -> Result<(), CheckpointError> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(remote(self, "CreateBucket", &e)),
        }
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}/checkpoint.bin", self.prefix)
    }
}

#[async_trait]
impl CheckpointStore for S3CheckpointStore {
    async fn load(&self, key: &str) -> Result<Loaded, CheckpointError> {
        check_key(key)?;
        let object = self.object_key(key);
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(Loaded::default()),
            Err(e) => return Err(remote(self, "GetObject", &e)),
        };
        let path = PathBuf::from(format!("s3://{}/{object}", self.bucket));
        let etag = out.e_tag.clone();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| CheckpointError::Remote {
                store: path.display().to_string(),
                message: format!("reading the object: {}", chain(&e)),
            })?
            .into_bytes();
        let (checkpoint, holder, _) = Checkpoint::decode_stored(&bytes, &path)?;
        Ok(Loaded {
            checkpoint: Some(checkpoint),
            holder,
            version: Version(etag),
        })
    }

    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        check_key(key)?;
        let bytes = checkpoint.encode()?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| remote(self, "PutObject", &e))?;
        Ok(())
    }

    async fn save_if(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        holder: &Holder,
        expected: &Version,
    ) -> Result<Version, CheckpointError> {
        check_key(key)?;
        // Writes of two holders differ by the holder, so their ETags differ; the revision
        // is the local store's and unused here.
        let bytes = checkpoint.encode_stored(Some(holder), 0)?;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .body(ByteStream::from(bytes));
        let put = match &expected.0 {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(Version(out.e_tag)),
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "NoSuchKey" | "ConditionalRequestConflict")
                ) || e
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409)) =>
            {
                let holder = self.load(key).await?.holder.unwrap_or_default();
                Err(CheckpointError::Fenced {
                    key: key.to_owned(),
                    holder,
                })
            }
            Err(e) => Err(remote(self, "PutObject", &e)),
        }
    }
}
