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
//! - **Every call is bounded** ([`Timeouts`], `[aws]` in the configuration): connecting,
//!   each attempt and the whole operation have a timeout, so a stalled dependency (an
//!   endpoint that accepts and never answers) becomes an error within one timeout instead
//!   of a silent hang. [`caller_retries`] keeps them (a client may only tighten its attempt).
//! - **Every call is watched**: the HTTP client is wrapped so that a call that gets no
//!   answer — abandoned at a timeout, or failing to connect — is logged (`warn`, naming the
//!   service and how long it waited) and counted in `bikeshare_aws_call_failures_total`
//!   (`service`: the SigV4 signing name, `reason`: `timeout` or `connection`), whichever
//!   client and caller it came from.
//!
//! ```no_run
//! # async fn run() {
//! use bikeshare_runtime::aws::{ClientSettings, caller_retries, load_sdk_config};
//! let sdk = load_sdk_config(&ClientSettings::default()).await;
//! let for_a_client = caller_retries(&sdk, None, None, None);
//! # let _ = for_a_client;
//! # }
//! ```

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::config_bag::ConfigBag;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

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
    /// Timeouts of every call.
    pub timeouts: Timeouts,
}

/// How long an AWS call may take (`[aws]`: `connect_timeout_ms`, `attempt_timeout_ms`,
/// `operation_timeout_ms`). Zero is refused by the SDK's logic as "no timeout", so zero
/// values are raised to 1 ms: a call is always bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct Timeouts {
    /// Establishing a connection (TCP and TLS), ms.
    #[default(3_000)]
    pub connect_timeout_ms: u64,
    /// One attempt, from sending the request to the whole response (a streaming body such
    /// as `SubscribeToShard`'s events excepted), ms.
    #[default(10_000)]
    pub attempt_timeout_ms: u64,
    /// One operation, every attempt and delay included, ms. At least the attempt timeout.
    #[default(30_000)]
    pub operation_timeout_ms: u64,
}

impl Timeouts {
    /// The SDK's form.
    pub fn config(&self) -> TimeoutConfig {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        TimeoutConfig::builder()
            .connect_timeout(ms(self.connect_timeout_ms))
            .operation_attempt_timeout(ms(self.attempt_timeout_ms))
            .operation_timeout(ms(self.operation_timeout_ms.max(self.attempt_timeout_ms)))
            .build()
    }
}

/// A new HTTPS client for the SDK (a connection pool of its own: rustls with ring),
/// [`watched`]. Every configuration [`config_loader`] makes uses one; a client that must not
/// share connections with it (the lease renewer's) takes another.
pub fn https_client() -> SharedHttpClient {
    watched(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https(),
    )
}

/// The standard AWS configuration loader with our HTTPS client, region and endpoint applied.
/// Add credentials or other settings before [`ConfigLoader::load`] if need be.
pub fn config_loader(settings: &ClientSettings) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(settings.timeouts.config());
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
/// client, region `us-east-1`, fixed test credentials and the default [`Timeouts`]. For
/// tests and local runs.
pub async fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    emulator_loader(endpoint, Timeouts::default()).load().await
}

/// The loader behind [`emulator_sdk_config`], with `timeouts`.
pub fn emulator_loader(endpoint: &str, timeouts: Timeouts) -> ConfigLoader {
    config_loader(&ClientSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        timeouts,
    })
    .credentials_provider(aws_credential_types::Credentials::new(
        "test", "test", None, None, "emulator",
    ))
}

/// The shared configuration for one client whose caller owns retries: the SDK's retries
/// off, the shared [`Timeouts`] kept, each attempt bounded by `attempt_timeout` instead
/// when given (the operation timeout grows to it if need be), and the endpoint and region
/// overridden when given (an empty endpoint counts as none). Build the client with
/// `aws_sdk_x::Client::new(&caller_retries(..))`.
pub fn caller_retries(
    sdk: &SdkConfig,
    endpoint_url: Option<&str>,
    region: Option<&str>,
    attempt_timeout: Option<Duration>,
) -> SdkConfig {
    let mut b = sdk.to_builder().retry_config(RetryConfig::disabled());
    let shared = sdk
        .timeout_config()
        .cloned()
        .unwrap_or_else(|| Timeouts::default().config());
    let mut timeouts = shared.to_builder();
    if let Some(timeout) = attempt_timeout {
        let operation = shared.operation_timeout().unwrap_or(timeout).max(timeout);
        timeouts = timeouts
            .operation_attempt_timeout(timeout)
            .operation_timeout(operation);
    }
    b = b.timeout_config(timeouts.build());
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        b = b.endpoint_url(url);
    }
    if let Some(region) = region {
        b = b.region(Region::new(region.to_owned()));
    }
    b.build()
}

/// `inner`, with every call watched: see the module's documentation.
pub fn watched(inner: SharedHttpClient) -> SharedHttpClient {
    WatchedClient(inner).into_shared()
}

#[derive(Debug)]
struct WatchedClient(SharedHttpClient);

impl HttpClient for WatchedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        WatchedConnector(self.0.http_connector(settings, components)).into_shared()
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.0.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[derive(Debug)]
struct WatchedConnector(SharedHttpConnector);

impl HttpConnector for WatchedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut watch = CallWatch {
            service: signing_service(&request),
            started: Instant::now(),
            answered: false,
        };
        let call = self.0.call(request);
        HttpConnectorFuture::new(async move {
            let result = call.await;
            watch.answered(&result);
            result
        })
    }
}

/// One call in flight; dropped before an answer means it was abandoned (a timeout).
struct CallWatch {
    service: String,
    started: Instant,
    answered: bool,
}

impl CallWatch {
    fn answered(&mut self, result: &Result<HttpResponse, ConnectorError>) {
        self.answered = true;
        if let Err(e) = result {
            let reason = if e.is_timeout() {
                "timeout"
            } else {
                "connection"
            };
            bikeshare_types::metrics::aws_call_failure(&self.service, reason);
            tracing::warn!(
                service = %self.service,
                waited = ?self.started.elapsed(),
                reason,
                error = %e,
                "AWS call failed without an answer"
            );
        }
    }
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        if !self.answered {
            bikeshare_types::metrics::aws_call_failure(&self.service, "timeout");
            tracing::warn!(
                service = %self.service,
                waited = ?self.started.elapsed(),
                "AWS call abandoned unanswered: the dependency stalled past its timeout \
                 (or the caller stopped waiting)"
            );
        }
    }
}

/// The service a request is signed for (SigV4's credential scope:
/// `Credential=<key>/<date>/<region>/<service>/aws4_request`), else `unknown`. Bounded,
/// unlike hosts: it names the AWS service whatever the endpoint.
fn signing_service(request: &HttpRequest) -> String {
    request
        .headers()
        .get("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(3))
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_service_comes_from_the_credential_scope() {
        let req = |auth: Option<&str>| {
            let mut r = HttpRequest::empty();
            if let Some(a) = auth {
                r.headers_mut().insert("authorization", a.to_owned());
            }
            signing_service(&r)
        };
        assert_eq!(
            req(Some(
                "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=host, Signature=abc"
            )),
            "kinesis"
        );
        assert_eq!(req(None), "unknown");
        assert_eq!(req(Some("Bearer x")), "unknown");
    }

    #[test]
    fn caller_retries_keeps_the_shared_timeouts_and_tightens_the_attempt() {
        let sdk = SdkConfig::builder()
            .timeout_config(
                Timeouts {
                    connect_timeout_ms: 100,
                    attempt_timeout_ms: 2_000,
                    operation_timeout_ms: 5_000,
                }
                .config(),
            )
            .build();
        let kept = caller_retries(&sdk, None, None, None);
        let t = kept.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(100)));
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(5)));
        let tight = caller_retries(&sdk, None, None, Some(Duration::from_millis(300)));
        let t = tight.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(100)));
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(5)));
        let long = caller_retries(&sdk, None, None, Some(Duration::from_secs(30)));
        let t = long.timeout_config().unwrap();
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(30)));
        // Without a shared configuration's timeouts, the defaults bound the call anyway.
        let bare = caller_retries(&SdkConfig::builder().build(), None, None, None);
        assert_eq!(
            bare.timeout_config().unwrap().operation_timeout(),
            Some(Duration::from_millis(
                Timeouts::default().operation_timeout_ms
            ))
        );
    }
}
