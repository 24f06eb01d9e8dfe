//! # bikeshare-monitor
//!
//! What operators, the business and data scientists watch:
//!
//! - [`exporter`]: the Prometheus recorder behind the `metrics` facade and the `/metrics`
//!   endpoint (names, units and labels are in [`bikeshare_common::metrics`]).
//! - [`drift`]: data-quality baselines and drift checks in SageMaker Model Monitor's formats.
//! - [`samples`]: a reader of the exposition format, for in-process consumers of it.
//! - [`alerts`]: rules over the documented metrics, the pending/firing/resolved state
//!   machine, and notifications to a Slack-compatible webhook and SNS.
//! - [`cloudwatch`]: the same snapshot pushed to CloudWatch with `PutMetricData`.

pub mod alerts;
pub mod cloudwatch;

/// The shared SDK configuration for a client whose caller owns retries (SNS, CloudWatch):
/// the SDK's retries off, each attempt bounded by `attempt_timeout`, the endpoint and the
/// region overridden when given.
pub(crate) fn caller_retries_config(
    sdk: &aws_config::SdkConfig,
    endpoint_url: Option<&str>,
    region: Option<&str>,
    attempt_timeout: std::time::Duration,
) -> aws_config::SdkConfig {
    let mut b = sdk
        .to_builder()
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        );
    if let Some(url) = endpoint_url {
        b = b.endpoint_url(url);
    }
    if let Some(region) = region {
        b = b.region(aws_config::Region::new(region.to_owned()));
    }
    b.build()
}
pub mod drift;
pub mod exporter;
pub mod samples;
