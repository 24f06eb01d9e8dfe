//! Building the Kinesis client: one shared [`SdkConfig`], the endpoint from configuration
//! only, and the SDK's own retries switched off.
//!
//! - HTTPS goes through `aws-smithy-http-client` with rustls on *ring*: the SDK crates are
//!   built without default features, so nothing compiles aws-lc (and cmake).
//! - The endpoint is [`ClientSettings::endpoint_url`] when set, else whatever the standard
//!   AWS configuration says (`AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL`, profile files),
//!   else the regional AWS endpoint. That is how tests point the code at kinesis-mock; there
//!   is no code branch for emulators.
//! - Retries: [`kinesis_client`] disables the SDK's retry layer. On the write path the
//!   [`bikeshare_common::stream::publisher::Publisher`] owns retries (it re-sends only failed
//!   records); on the read path the [`crate::KinesisCursor`] does (it backs off per shard
//!   within the read limits). Two retry owners on one path would multiply delays and calls.

use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use serde::{Deserialize, Serialize};

/// Where and how to reach Kinesis. Every field is optional: absent ones come from the
/// standard AWS configuration chain (environment, profile, instance metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    /// AWS region, e.g. `eu-west-1`.
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
    .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
        "test", "test", None, None, "emulator",
    ))
    .load()
    .await
}

/// A Kinesis client from the shared configuration, with the SDK's retries disabled (see the
/// module docs for who retries instead).
pub fn kinesis_client(sdk: &SdkConfig) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}
