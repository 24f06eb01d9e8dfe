//! A webhook notifier speaking Slack's incoming-webhook JSON: `{"text": ..., "blocks": [...]}`
//! (Slack, Mattermost, Teams' Slack-compatible connectors and most chat bridges read `text`).
//!
//! The URL is a secret (a Slack webhook URL is its own credential): it comes from the
//! configuration file or `BIKESHARE_ALERTS__WEBHOOK__URL`, is redacted in `Debug`, never
//! serialized, and never logged — errors are reported without it
//! (`reqwest::Error::without_url`). Each POST has a timeout; failures that can pass (connect
//! errors, timeouts, 429, 5xx) are retried with [`Backoff`] (full jitter); a 4xx is final.

use std::time::Duration;

use async_trait::async_trait;
use bikeshare_types::retry::{Backoff, Failure};
use serde::{Deserialize, Serialize};
use serde_json::json;
use smart_default::SmartDefault;

use super::engine::{Notification, NotificationKind};
use super::notify::{Notifier, NotifyError, deliver};
use super::rules::Severity;

/// `[alerts.webhook]`.
#[derive(Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct WebhookConfig {
    /// The webhook URL (a secret: keep it in a file outside the repository or in
    /// `BIKESHARE_ALERTS__WEBHOOK__URL`). No URL: no webhook.
    #[serde(skip_serializing)]
    pub url: Option<String>,
    /// Per attempt.
    #[default(5_000)]
    pub timeout_ms: u64,
    /// Retries of a failed POST (`base`, `max` in ms; `max_retries`).
    #[default(Backoff::SHORT)]
    pub retry: Backoff,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Posts notifications to one webhook URL.
pub struct WebhookNotifier {
    url: String,
    client: reqwest::Client,
    retry: Backoff,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

impl WebhookNotifier {
    /// `None` when no URL is configured.
    pub fn from_config(config: &WebhookConfig) -> Result<Option<Self>, NotifyError> {
        let Some(url) = config.url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| NotifyError::Delivery {
            channel: "webhook",
            message: "the webhook URL is not a valid URL".into(),
            retryable: false,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NotifyError::Delivery {
                channel: "webhook",
                message: "the webhook URL must be http or https".into(),
                retryable: false,
            });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| NotifyError::Delivery {
                channel: "webhook",
                message: format!("building the HTTP client: {}", e.without_url()),
                retryable: false,
            })?;
        Ok(Some(Self {
            url: parsed.to_string(),
            client,
            retry: config.retry,
        }))
    }

    async fn post_once(&self, body: &serde_json::Value) -> Result<(), (String, bool)> {
        match self.client.post(&self.url).json(body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let s = r.status();
                Err((
                    format!("the webhook answered {s}"),
                    s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS,
                ))
            }
            Err(e) => Err((e.without_url().to_string(), true)),
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = slack_payload(n);
        let post = || async {
            self.post_once(&body)
                .await
                .map_err(|(error, retryable)| Failure { error, retryable })
        };
        deliver(&self.retry, "webhook", post).await
    }
}

/// Slack's message JSON: `text` (the fallback every client shows) and `blocks` (a header line
/// and the details), plus a coloured `attachments` bar by severity.
pub fn slack_payload(n: &Notification) -> serde_json::Value {
    let emoji = match (n.kind, n.severity) {
        (NotificationKind::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":rotating_light:",
        (_, Severity::Warning) => ":warning:",
        (_, Severity::Info) => ":information_source:",
    };
    let color = match (n.kind, n.severity) {
        (NotificationKind::Resolved, _) => "#2eb886",
        (_, Severity::Critical) => "#d40e0d",
        (_, Severity::Warning) => "#daa038",
        (_, Severity::Info) => "#439fe0",
    };
    let text = format!("{emoji} {}", n.title());
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Rule*\n{}", n.rule)}),
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", n.severity)}),
        json!({"type": "mrkdwn", "text": format!("*State*\n{}", n.kind.as_str())}),
        json!({"type": "mrkdwn", "text": format!("*Since*\n{}", n.firing_since.to_rfc3339())}),
    ];
    if !n.labels.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Labels*\n{}", n.labels_text())}));
    }
    if n.value.is_finite() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Value*\n{} (threshold {})", n.value, n.threshold)}));
    }
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "fields": fields},
        ],
        "attachments": [{"color": color, "fallback": n.title()}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bikeshare_types::Timestamp;

    #[test]
    fn debug_never_shows_the_url() {
        let c = WebhookConfig {
            url: Some("https://hooks.example/services/SECRET".into()),
            ..WebhookConfig::default()
        };
        assert!(!format!("{c:?}").contains("SECRET"));
        let n = WebhookNotifier::from_config(&c).unwrap().unwrap();
        assert!(!format!("{n:?}").contains("SECRET"));
        assert!(!serde_json::to_string(&c).unwrap().contains("SECRET"));
        assert!(
            WebhookNotifier::from_config(&WebhookConfig::default())
                .unwrap()
                .is_none()
        );
        let bad = WebhookConfig {
            url: Some("ftp://x/SECRET".into()),
            ..WebhookConfig::default()
        };
        assert!(
            !WebhookNotifier::from_config(&bad)
                .unwrap_err()
                .to_string()
                .contains("SECRET")
        );
    }

    #[test]
    fn slack_shape() {
        let n = Notification {
            kind: NotificationKind::Firing,
            rule: "feed_stale".into(),
            severity: Severity::Critical,
            labels: [("system".to_owned(), "x".to_owned())].into(),
            value: 900.0,
            threshold: 600.0,
            summary: "old".into(),
            firing_since: Timestamp::from_secs(0),
            at: Timestamp::from_secs(0),
        };
        let v = slack_payload(&n);
        assert_eq!(
            v["text"],
            ":rotating_light: [FIRING] critical feed_stale: old"
        );
        assert_eq!(v["blocks"][0]["type"], "section");
        assert!(v["blocks"][1]["fields"].as_array().unwrap().len() >= 5);
    }
}
