//! The Kinesis client, from the process's shared `SdkConfig` (see
//! [`bikeshare_runtime::aws`]) with the SDK's retries off: on the write path the
//! [`bikeshare_stream::publisher::Publisher`] owns retries (it re-sends only failed
//! records); on the read path the [`crate::KinesisCursor`] does (it backs off per shard
//! within the read limits).

use bikeshare_runtime::aws::{SdkConfig, caller_retries};

/// A Kinesis client from the shared configuration, with the SDK's retries disabled.
pub fn kinesis_client(sdk: &SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&caller_retries(sdk, None, None, None))
}

/// Reshards `stream` to `target` open shards with `UpdateShardCount` (uniform scaling:
/// splits going up, merges going down), as an operator or an autoscaler would; returns once
/// the call is accepted (the stream is `UPDATING` for a while after).
pub async fn update_shard_count(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    target: i32,
) -> Result<(), aws_sdk_kinesis::Error> {
    client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(target)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .map_err(aws_sdk_kinesis::Error::from)?;
    Ok(())
}
