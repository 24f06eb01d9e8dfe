//! The HTTP client for GBFS feeds: timeouts, a size cap, conditional requests and retries.
//!
//! - **Timeouts**: connect, read (between two reads of the socket) and a whole-request bound,
//!   so one hanging feed costs at most that long.
//! - **Size cap**: a body larger than [`ClientConfig::max_body_bytes`] (10 MiB by default) is
//!   refused with `gbfs.too_large` — up front when `Content-Length` says so, otherwise while
//!   streaming, as soon as the decoded bytes pass the cap (a gzip bomb is cut the same way);
//!   the body is never buffered whole first.
//! - **Conditional requests**: [`CacheValidators`] from the last response (`ETag`,
//!   `Last-Modified`) are sent as `If-None-Match` / `If-Modified-Since`; a `304` is
//!   [`Fetched::NotModified`].
//! - **Retries** follow [`Backoff`] (exponential, full jitter), the workspace's one policy, for
//!   5xx, 408, 429, timeouts and connection or body errors. Other 4xx are not retried: asking
//!   again will not change the answer. This client is the only retry owner on the fetch path;
//!   the poller simply tries again at its next poll.
//! - gzip is negotiated (`Accept-Encoding`) and decoded by reqwest; TLS is rustls.
//! - **Credentials**: a [`Bearer`] token is sent as `Authorization: Bearer` only to URLs of
//!   its one origin (the built-in simulator's, when it runs with `BIKESHARE_SIM_TOKEN`), so a
//!   feed on another host never sees it. It is never configuration and never printed.

use std::time::Duration;

use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::retry::{Backoff, Failure};
use bikeshare_types::time::millis;
use bytes::{Bytes, BytesMut};
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::rules::rule;

/// The default cap on a decoded response body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Reasons of fetch failures, as the `reason` label of feed-error metrics.
pub mod reason {
    pub const STATUS: &str = "http.status";
    pub const TIMEOUT: &str = "http.timeout";
    pub const CONNECT: &str = "http.connect";
    pub const BODY: &str = "http.body";
    pub const REQUEST: &str = "http.request";
    pub const CLIENT: &str = "http.client";
}

/// HTTP settings. Durations are written in milliseconds (`connect_timeout_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct ClientConfig {
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    #[default(Duration::from_secs(5))]
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (headers or body).
    #[serde(rename = "read_timeout_ms", with = "millis")]
    #[default(Duration::from_secs(15))]
    pub read_timeout: Duration,
    /// Longest time for one whole request, body included (bounds slow drips).
    #[serde(rename = "request_timeout_ms", with = "millis")]
    #[default(Duration::from_secs(60))]
    pub request_timeout: Duration,
    /// Longest time for one fetch, retries included: a feed that drips slowly enough to
    /// pass every read timeout, and is retried, cannot hold its system's poller longer.
    #[serde(rename = "fetch_deadline_ms", with = "millis")]
    #[default(Duration::from_secs(90))]
    pub fetch_deadline: Duration,
    #[default(DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    #[default(Backoff {
        base: Duration::from_millis(250),
        max: Duration::from_secs(5),
        max_retries: Some(3),
    })]
    pub retry: Backoff,
    #[default(concat!("bikeshare-producers/", env!("CARGO_PKG_VERSION")).to_owned())]
    pub user_agent: String,
    /// A token for one origin's feeds; set by code, never read from or written to a file.
    #[serde(skip)]
    pub bearer: Option<Bearer>,
}

/// A bearer token and the one origin (scheme, host, port) it may be sent to.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer {
    origin: reqwest::Url,
    token: String,
}

impl Bearer {
    /// `token` for the origin of `url`; `None` when `url` cannot be parsed.
    pub fn for_origin_of(url: &str, token: impl Into<String>) -> Option<Self> {
        let origin = Url::parse(url).ok()?;
        Some(Self {
            origin,
            token: token.into(),
        })
    }

    /// Whether `url` is on the token's origin.
    pub fn applies_to(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// The `Authorization` header value, marked sensitive (never logged by the HTTP stack).
    pub fn header_value(&self) -> Option<reqwest::header::HeaderValue> {
        let mut v =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("origin", &self.origin.origin().ascii_serialization())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What a server said about a representation, to ask "has it changed?" next time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheValidators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl CacheValidators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The result of a successful fetch.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// `304`: the representation has not changed since the validators were issued.
    NotModified,
    Body {
        body: Bytes,
        validators: CacheValidators,
    },
}

/// Why a fetch failed (after any retries).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("GET {url}: HTTP {status}")]
    Status { url: Url, status: StatusCode },
    #[error("GET {url}: no complete answer within the fetch deadline of {}s, retries included",
        deadline.as_secs_f64())]
    Deadline { url: Url, deadline: Duration },
    #[error("GET {url}: timed out")]
    Timeout {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: could not connect")]
    Connect {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: reading the response body failed")]
    Body {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: request failed")]
    Request {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: response refused, larger than the {limit}-byte cap{}",
        declared.map(|d| format!(" (Content-Length {d})")).unwrap_or_default())]
    TooLarge {
        url: Url,
        limit: usize,
        declared: Option<u64>,
    },
}

impl FetchError {
    fn from_reqwest(url: &Url, source: reqwest::Error) -> Self {
        let url = url.clone();
        if source.is_timeout() {
            Self::Timeout { url, source }
        } else if source.is_connect() {
            Self::Connect { url, source }
        } else if source.is_body() || source.is_decode() {
            Self::Body { url, source }
        } else {
            Self::Request { url, source }
        }
    }

    /// The `reason` label for metrics; `gbfs.too_large` for an oversized body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Build(_) => reason::CLIENT,
            Self::Status { .. } => reason::STATUS,
            Self::Timeout { .. } | Self::Deadline { .. } => reason::TIMEOUT,
            Self::Connect { .. } => reason::CONNECT,
            Self::Body { .. } => reason::BODY,
            Self::Request { .. } => reason::REQUEST,
            Self::TooLarge { .. } => rule::TOO_LARGE,
        }
    }

    /// The HTTP status, for a status error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Classify for FetchError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Build(_) => ErrorClass::Internal,
            Self::Status { status, .. }
                if status.is_client_error()
                    && *status != StatusCode::REQUEST_TIMEOUT
                    && *status != StatusCode::TOO_MANY_REQUESTS =>
            {
                // A wrong URL or missing access: the configuration's to fix.
                ErrorClass::User
            }
            _ => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Timeout { .. }
            | Self::Connect { .. }
            | Self::Body { .. }
            | Self::Request { .. } => true,
            // The deadline already spans the retries; the next poll tries again.
            Self::Build(_) | Self::TooLarge { .. } | Self::Deadline { .. } => false,
        }
    }
}

/// Fetches GBFS files. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct GbfsClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl GbfsClient {
    pub fn new(config: ClientConfig) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .timeout(config.request_timeout)
            .gzip(true)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(FetchError::Build)?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// GET `url`, conditional on `validators`, retrying transient failures.
    pub async fn fetch(
        &self,
        url: &Url,
        validators: &CacheValidators,
    ) -> Result<Fetched, FetchError> {
        let attempt = move || async move {
            self.fetch_once(url, validators)
                .await
                .map_err(|error| Failure {
                    retryable: error.retryable(),
                    error,
                })
        };
        let on_retry = |attempt, delay: std::time::Duration, e: &FetchError| {
            tracing::debug!(
                %url,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %bikeshare_types::error::chain(e),
                "GBFS fetch failed; retrying"
            );
        };
        let deadline = self.config.fetch_deadline;
        let fetched = self
            .config
            .retry
            .retry(attempt, tokio::time::sleep, on_retry);
        match tokio::time::timeout(deadline, fetched).await {
            Ok(result) => result.map_err(|gave_up| gave_up.error),
            Err(_) => Err(FetchError::Deadline {
                url: url.clone(),
                deadline,
            }),
        }
    }

    /// One GET, no retries.
    pub async fn fetch_once(
        &self,
        url: &Url,
        validators: &CacheValidators,
    ) -> Result<Fetched, FetchError> {
        let mut request = self.http.get(url.clone());
        if let Some(bearer) = &self.config.bearer
            && bearer.applies_to(url)
            && let Some(value) = bearer.header_value()
        {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| FetchError::from_reqwest(url, e))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status,
            });
        }
        let limit = self.config.max_body_bytes;
        let declared = response.content_length();
        if let Some(len) = declared
            && len > u64::try_from(limit).unwrap_or(u64::MAX)
        {
            return Err(FetchError::TooLarge {
                url: url.clone(),
                limit,
                declared,
            });
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok().map(str::to_owned))
        };
        let validators = CacheValidators {
            etag: header(ETAG),
            last_modified: header(LAST_MODIFIED),
        };
        let initial = declared
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(16 * 1024);
        let mut body = BytesMut::with_capacity(initial.min(limit));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::from_reqwest(url, e))?
        {
            if body.len() + chunk.len() > limit {
                // Dropping the response closes the connection: the rest is never read.
                return Err(FetchError::TooLarge {
                    url: url.clone(),
                    limit,
                    declared: None,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body {
            body: body.freeze(),
            validators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1/x").unwrap()
    }

    #[test]
    fn retry_classification() {
        let status = |s: u16| FetchError::Status {
            url: url(),
            status: StatusCode::from_u16(s).unwrap(),
        };
        assert!(status(500).retryable());
        assert!(status(503).retryable());
        assert!(status(429).retryable());
        assert!(!status(404).retryable());
        assert!(!status(403).retryable());
        assert_eq!(status(404).class(), ErrorClass::User);
        assert_eq!(status(502).class(), ErrorClass::External);
        let big = FetchError::TooLarge {
            url: url(),
            limit: 10,
            declared: Some(50),
        };
        assert!(!big.retryable());
        assert_eq!(big.reason(), rule::TOO_LARGE);
        assert!(big.to_string().contains("Content-Length 50"), "{big}");
    }

    #[test]
    fn a_bearer_goes_only_to_its_origin_and_never_into_debug_or_config() {
        let b =
            Bearer::for_origin_of("http://127.0.0.1:8081/gbfs/3.0/gbfs.json", "s3cret").unwrap();
        assert!(b.applies_to(
            &Url::parse("http://127.0.0.1:8081/gbfs/3.0/station_status.json").unwrap()
        ));
        assert!(!b.applies_to(&Url::parse("http://127.0.0.1:9999/gbfs.json").unwrap()));
        assert!(!b.applies_to(&Url::parse("https://gbfs.example.com/gbfs.json").unwrap()));
        let config = ClientConfig {
            bearer: Some(b),
            ..ClientConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!serde_json::to_string(&config).unwrap().contains("s3cret"));
    }

    #[test]
    fn config_reads_milliseconds_and_defaults_the_rest() {
        let c: ClientConfig =
            serde_json::from_str(r#"{"read_timeout_ms": 250, "max_body_bytes": 1024}"#).unwrap();
        assert_eq!(c.read_timeout, Duration::from_millis(250));
        assert_eq!(c.max_body_bytes, 1024);
        assert_eq!(c.connect_timeout, ClientConfig::default().connect_timeout);
        let round: ClientConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}
