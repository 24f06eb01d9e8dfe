//! The Firehose client: built from the process's shared `SdkConfig` (the endpoint comes from
//! configuration — `AWS_ENDPOINT_URL_FIREHOSE`, `AWS_ENDPOINT_URL`, or
//! [`crate::FirehoseConfig::endpoint_url`] — never from a code branch), with the SDK's own
//! retries off: [`crate::DeliveryStream`] owns retries on this path, because only it knows
//! which records of a call failed and must be sent again.

use aws_config::SdkConfig;
use aws_sdk_firehose::config::retry::RetryConfig;

/// How long one PutRecordBatch attempt may take before it counts as failed (and is retried
/// by [`crate::DeliveryStream`]): a hung connection must not hold the checkpoint forever.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A Firehose client from the shared configuration, `endpoint_url` overriding its endpoint.
pub fn firehose_client(sdk: &SdkConfig, endpoint_url: Option<&str>) -> aws_sdk_firehose::Client {
    let mut config = aws_sdk_firehose::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            aws_sdk_firehose::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        config = config.endpoint_url(url);
    }
    aws_sdk_firehose::Client::from_conf(config.build())
}
