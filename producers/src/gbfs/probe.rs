//! Asking a GBFS system who it is before polling it.
//!
//! [`probe`] reads `gbfs.json` and `system_information` once, through the client's retry
//! policy, and returns the system's own `system_id`, name and version. A command that is given
//! only a URL publishes under that id, and a URL that cannot be read (after the retries) or does
//! not serve GBFS is an error the command reports at start, instead of a poller that retries
//! in the background while the command looks healthy.

use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::{SharedClock, SystemId};
use reqwest::Url;

use super::client::{CacheValidators, FetchError, Fetched, GbfsClient};
use super::model::{FeedError, FeedKind};
use super::poller::PollerConfig;
use super::validate::FeedValidator;

/// What a system says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The feed's own `system_id`.
    pub system_id: String,
    pub name: String,
    /// The GBFS version `gbfs.json` declares.
    pub version: String,
}

/// Why a system could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url:?} is not a URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot build the HTTP client")]
    Client(#[source] FetchError),
    #[error("cannot read {feed} at {url} (after {retries} retries)")]
    Fetch {
        feed: FeedKind,
        url: Url,
        retries: u32,
        #[source]
        source: FetchError,
    },
    #[error("{feed} at {url} is not a usable GBFS feed")]
    Feed {
        feed: FeedKind,
        url: Url,
        #[source]
        source: FeedError,
    },
    #[error("{url} lists no system_information feed, so the system's id is unknown: give one")]
    NoSystemInformation { url: Url },
    #[error("system_information at {url} has no system_id")]
    NoSystemId { url: Url },
}

impl Classify for ProbeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Client(_) => ErrorClass::Internal,
            Self::Fetch { source, .. } => source.class(),
            _ => ErrorClass::User,
        }
    }
    fn retryable(&self) -> bool {
        matches!(self, Self::Fetch { source, .. } if source.retryable())
    }
}

/// Reads `gbfs.json` at `discovery_url` and its `system_information`.
pub async fn probe(
    discovery_url: &str,
    config: &PollerConfig,
    clock: &SharedClock,
) -> Result<Probe, ProbeError> {
    let url = Url::parse(discovery_url).map_err(|e| ProbeError::Url {
        url: discovery_url.to_owned(),
        reason: e.to_string(),
    })?;
    let client = GbfsClient::new(config.client.clone()).map_err(ProbeError::Client)?;
    let validator = FeedValidator::new(config.rules).with_language(config.language.clone());
    let retries = config.client.retry.max_retries.unwrap_or(u32::MAX);
    let get = async |feed: FeedKind, url: &Url| match client
        .fetch(url, &CacheValidators::default())
        .await
    {
        Ok(Fetched::Body { body, .. }) => Ok(body),
        // Unconditional requests are never answered 304 by a correct server.
        Ok(Fetched::NotModified) => Ok(bytes::Bytes::new()),
        Err(source) => Err(ProbeError::Fetch {
            feed,
            url: url.clone(),
            retries,
            source,
        }),
    };
    let body = get(FeedKind::Discovery, &url).await?;
    let discovery = validator
        .discovery(&body, clock.now())
        .map_err(|source| ProbeError::Feed {
            feed: FeedKind::Discovery,
            url: url.clone(),
            source,
        })?;
    let version = discovery.header.declared_version.clone();
    let info_url = discovery
        .url(FeedKind::SystemInformation)
        .and_then(|raw| url.join(raw).ok())
        .ok_or_else(|| ProbeError::NoSystemInformation { url: url.clone() })?;
    let body = get(FeedKind::SystemInformation, &info_url).await?;
    let feed_failed = |source| ProbeError::Feed {
        feed: FeedKind::SystemInformation,
        url: info_url.clone(),
        source,
    };
    let parsed = validator
        .system_information(&body, &SystemId::new("probe"), clock.now())
        .map_err(feed_failed)?;
    let own_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|doc| doc["data"]["system_id"].as_str().map(str::to_owned))
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| ProbeError::NoSystemId {
            url: info_url.clone(),
        })?;
    Ok(Probe {
        system_id: own_id,
        name: parsed
            .records
            .into_iter()
            .next()
            .map(|i| i.name)
            .unwrap_or_default(),
        version,
    })
}
