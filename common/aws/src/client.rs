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
