//! [`SnsNotifier`]: `Publish` through `aws-sdk-sns` (the `aws` feature).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use bikeshare_types::retry::{Backoff, Failure};

use super::{SnsConfig, message, subject};
use crate::alerts::engine::Notification;
use crate::alerts::notify::{Notifier, NotifyError, deliver};

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
        deliver(&self.retry, "sns", publish).await
    }
}
