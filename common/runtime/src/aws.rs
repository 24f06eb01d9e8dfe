//! The one AWS SDK configuration of a process, and the one way to build a client from it.
//!
//! - HTTPS goes through `aws-smithy-http-client` with rustls on *ring*: the SDK crates are
//!   built without default features, so nothing compiles aws-lc (and cmake).
//! - The endpoint is [`ClientSettings::endpoint_url`] when set, else whatever the standard
//!   AWS configuration says (`AWS_ENDPOINT_URL_<SERVICE>`, `AWS_ENDPOINT_URL`, profile files),
//!   else the regional AWS endpoint. That is how tests point the code at kinesis-mock and
//!   moto; there is no code branch for emulators.
//! - Every client of the workspace is built from [`caller_retries`]: the SDK's own retries
//!   are off, because on every call path exactly one owner retries (the stream publisher
//!   re-sends only failed records, the Kinesis cursor backs off per shard, Firehose delivery
//!   re-sends only failed rows, the endpoint client falls back). Two retry owners on one path
//!   would multiply delays and calls.
//!
//! ```no_run
//! # async fn run() {
//! use bikeshare_runtime::aws::{ClientSettings, caller_retries, load_sdk_config};
//! let sdk = load_sdk_config(&ClientSettings::default()).await;
//! let for_a_client = caller_retries(&sdk, None, None, None);
//! # let _ = for_a_client;
//! # }
//! ```

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use serde::{Deserialize, Serialize};

pub use aws_config::SdkConfig;

/// Where and how to reach AWS. Every field is optional: absent ones come from the standard
/// AWS configuration chain (environment, profile, instance metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    /// AWS region, e.g. `ca-central-1`.
    pub region: Option<String>,
    /// An endpoint URL override (an emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// The standard AWS configuration loader with our HTTPS client, region and endpoint applied.
/// Add credentials or other settings before [`ConfigLoader::load`] if need be.
pub fn config_loader(settings: &ClientSettings) -> ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader
}

/// Loads the shared [`SdkConfig`] (one per process; every client is built from it).
pub async fn load_sdk_config(settings: &ClientSettings) -> SdkConfig {
    config_loader(settings).load().await
}

/// The shared configuration for an emulator at `endpoint` (kinesis-mock, moto): our HTTPS
/// client, region `us-east-1` and fixed test credentials. For tests and local runs.
pub async fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    config_loader(&ClientSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
    })
    .credentials_provider(aws_credential_types::Credentials::new(
        "test", "test", None, None, "emulator",
    ))
    .load()
    .await
}

/// The shared configuration for one client whose caller owns retries: the SDK's retries
/// off, each attempt bounded by `attempt_timeout` when given, and the endpoint and region
/// overridden when given (an empty endpoint counts as none). Build the client with
/// `aws_sdk_x::Client::new(&caller_retries(..))`.
pub fn caller_retries(
    sdk: &SdkConfig,
    endpoint_url: Option<&str>,
    region: Option<&str>,
    attempt_timeout: Option<Duration>,
) -> SdkConfig {
    let mut b = sdk.to_builder().retry_config(RetryConfig::disabled());
    if let Some(timeout) = attempt_timeout {
        b = b.timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .build(),
        );
    }
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        b = b.endpoint_url(url);
    }
    if let Some(region) = region {
        b = b.region(Region::new(region.to_owned()));
    }
    b.build()
}
