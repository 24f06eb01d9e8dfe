//! The Firehose client: built from the process's shared `SdkConfig` (the endpoint comes from
//! configuration — `AWS_ENDPOINT_URL_FIREHOSE`, `AWS_ENDPOINT_URL`, or
//! [`crate::FirehoseConfig::endpoint_url`] — never from a code branch), with the SDK's own
//! retries off: [`crate::DeliveryStream`] owns retries on this path, because only it knows
//! which records of a call failed and must be sent again.

use bikeshare_runtime::aws::{SdkConfig, caller_retries};

/// How long one PutRecordBatch attempt may take before it counts as failed (and is retried
/// by [`crate::DeliveryStream`]): a hung connection must not hold the checkpoint forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A Firehose client from the shared configuration, `endpoint_url` overriding its endpoint.
pub fn firehose_client(sdk: &SdkConfig, endpoint_url: Option<&str>) -> aws_sdk_firehose::Client {
    aws_sdk_firehose::Client::new(&caller_retries(
        sdk,
        endpoint_url,
        None,
        Some(ATTEMPT_TIMEOUT),
    ))
}
