//! An SNS notifier: `Publish` to one topic through `aws-sdk-sns`.
//!
//! The subject is the notification's title cut to SNS's limit ([`MAX_SUBJECT`] characters,
//! ASCII without control characters, as SNS demands); the message is the title, the labels
//! and the value; the message attributes `severity`, `rule` and `state` let subscriptions
//! filter (e.g. only `critical` to a pager). The SDK's own retries are off: this notifier owns
//! them ([`Backoff`], full jitter), and only errors the SDK marks as transient or throttling
//! are retried.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use bikeshare_types::retry::{Backoff, Failure};
use serde::{Deserialize, Serialize};

use super::engine::Notification;
use super::notify::{Notifier, NotifyError};

/// SNS: at most 100 characters of subject.
pub const MAX_SUBJECT: usize = 100;
/// SNS: at most 256 KiB of message.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// `[alerts.sns]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SnsConfig {
    /// The topic (`arn:aws:sns:region:account:name`); none: no SNS notifications.
    pub topic_arn: Option<String>,
    /// Default: the standard AWS configuration's region.
    pub region: Option<String>,
    /// An emulator or VPC endpoint (or `AWS_ENDPOINT_URL_SNS`).
    pub endpoint_url: Option<String>,
    /// Per attempt.
    pub timeout_ms: u64,
    pub retry: Backoff,
}

impl Default for SnsConfig {
    fn default() -> Self {
        Self {
            topic_arn: None,
            region: None,
            endpoint_url: None,
            timeout_ms: 5_000,
            retry: Backoff::SHORT,
        }
    }
}

/// Publishes notifications to one SNS topic.
#[derive(Debug)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    retry: Backoff,
}

impl SnsNotifier {
    /// A notifier from the shared SDK configuration with `config`'s endpoint and region;
    /// `None` when no topic is configured.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &SnsConfig) -> Option<Self> {
        let topic_arn = config.topic_arn.clone().filter(|t| !t.is_empty())?;
        let sdk = bikeshare_runtime::aws::caller_retries(
            sdk,
            config.endpoint_url.as_deref(),
            config.region.as_deref(),
            Some(Duration::from_millis(config.timeout_ms.max(1))),
        );
        Some(Self {
            client: aws_sdk_sns::Client::new(&sdk),
            topic_arn,
            retry: config.retry,
        })
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

#[async_trait]
impl Notifier for SnsNotifier {
    fn channel(&self) -> &'static str {
        "sns"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let subject = subject(&n.title());
        let message = message(n);
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
        };
        let mut attrs = Vec::new();
        for (k, v) in [
            ("severity", attr(n.severity.as_str())),
            ("rule", attr(&n.rule)),
            ("state", attr(n.kind.as_str())),
        ] {
            let v = v.map_err(|e| NotifyError::Delivery {
                channel: "sns",
                message: format!("message attribute {k}: {e}"),
                retryable: false,
            })?;
            attrs.push((k, v));
        }
        let publish = || async {
            let mut req = self
                .client
                .publish()
                .topic_arn(&self.topic_arn)
                .subject(&subject)
                .message(&message);
            for (k, v) in &attrs {
                req = req.message_attributes(*k, v.clone());
            }
            let err = match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let retryable = match &err {
                SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
                SdkError::ResponseError(_) => true,
                SdkError::ServiceError(s) => {
                    let code = s.err().code().unwrap_or_default();
                    s.raw().status().is_server_error()
                        || code.contains("Throttl")
                        || code == "InternalError"
                }
                _ => false,
            };
            let error = match &err {
                SdkError::ServiceError(s) => format!(
                    "Publish: {}: {}",
                    s.err().code().unwrap_or("error"),
                    s.err().message().unwrap_or_default()
                ),
                other => format!("Publish: {}", bikeshare_types::error::chain(other)),
            };
            Err(Failure { error, retryable })
        };
        self.retry
            .retry(publish, tokio::time::sleep, |attempt, _, error| {
                tracing::debug!(attempt, %error, "SNS publish failed; retrying");
            })
            .await
            .map_err(|g| NotifyError::Delivery {
                channel: "sns",
                message: format!("{} (after {} attempts)", g.error, g.attempts),
                retryable: g.retryable,
            })
    }
}

/// SNS subjects: printable ASCII, no line breaks, at most [`MAX_SUBJECT`] characters.
pub fn subject(title: &str) -> String {
    let clean: String = title
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else if c.is_whitespace() {
                ' '
            } else {
                '?'
            }
        })
        .collect();
    if clean.len() <= MAX_SUBJECT {
        clean
    } else {
        format!("{}...", &clean[..MAX_SUBJECT - 3])
    }
}

/// The message body: title, labels, value and time, within SNS's size limit.
pub fn message(n: &Notification) -> String {
    let mut m = format!(
        "{}\n\nrule: {}\nseverity: {}\nstate: {}\nlabels: {}\nfiring since: {}\nat: {}\n",
        n.title(),
        n.rule,
        n.severity,
        n.kind.as_str(),
        n.labels_text(),
        n.firing_since.to_rfc3339(),
        n.at.to_rfc3339(),
    );
    if n.value.is_finite() {
        m.push_str(&format!("value: {} (threshold {})\n", n.value, n.threshold));
    }
    if m.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_fit_sns_rules() {
        let long = format!("[FIRING] critical x: ü\nnext {}", "a".repeat(300));
        let s = subject(&long);
        assert_eq!(s.chars().count(), MAX_SUBJECT);
        assert!(s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()));
        assert!(s.ends_with("..."));
        assert_eq!(subject("short"), "short");
    }
}
