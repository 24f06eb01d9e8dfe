//! Where notifications go: the [`Notifier`] trait, and [`Dispatcher`], which sends each
//! notification to every notifier, logs it, and counts the outcome in
//! `bikeshare_alert_notifications_total{channel, outcome}`. A failed channel is logged and
//! counted, never propagated: alerting must not stop the pipeline.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bikeshare_types::retry::{Backoff, Failure};

use super::engine::{Notification, NotificationKind};

/// Why a notification was not delivered (after the notifier's own retries).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The receiver refused it or could not be reached; `retryable` says whether a later
    /// attempt might succeed.
    #[error("{channel}: {message}")]
    Delivery {
        channel: &'static str,
        message: String,
        retryable: bool,
    },
}

/// One delivery of `channel` under `retry`: `attempt` is tried again while it fails in a
/// way that may pass (each retry logged at debug); giving up is a
/// [`NotifyError::Delivery`] that says how many attempts were made.
pub async fn deliver<Op, Fut>(
    retry: &Backoff,
    channel: &'static str,
    attempt: Op,
) -> Result<(), NotifyError>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure<String>>>,
{
    retry
        .retry(attempt, tokio::time::sleep, |attempt, _, error| {
            tracing::debug!(attempt, %error, "{channel} delivery failed; retrying");
        })
        .await
        .map_err(|g| NotifyError::Delivery {
            channel,
            message: format!("{} (after {} attempts)", g.error, g.attempts),
            retryable: g.retryable,
        })
}

/// A notification channel.
#[async_trait]
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// The `channel` label: `webhook`, `sns`, ...
    fn channel(&self) -> &'static str;
    /// Delivers one notification, retrying as the channel's settings say.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError>;
}

/// Every configured notifier; with none, notifications are only logged.
#[derive(Debug, Clone, Default)]
pub struct Dispatcher {
    notifiers: Vec<Arc<dyn Notifier>>,
}

impl Dispatcher {
    pub fn new(notifiers: Vec<Arc<dyn Notifier>>) -> Self {
        Self { notifiers }
    }

    pub fn channels(&self) -> Vec<&'static str> {
        self.notifiers.iter().map(|n| n.channel()).collect()
    }

    /// Logs `n` and sends it to every notifier; returns how many deliveries failed.
    pub async fn dispatch(&self, n: &Notification) -> usize {
        match n.kind {
            NotificationKind::Resolved => tracing::info!(
                rule = %n.rule, severity = %n.severity, labels = %n.labels_text(),
                "alert resolved: {}", n.summary
            ),
            NotificationKind::Firing | NotificationKind::Repeat => tracing::warn!(
                rule = %n.rule, severity = %n.severity, labels = %n.labels_text(),
                state = n.kind.as_str(), "alert: {}", n.summary
            ),
        }
        let sends = self.notifiers.iter().map(|notifier| async move {
            let r = notifier.send(n).await;
            (notifier.channel(), r)
        });
        let mut failed = 0;
        for (channel, r) in futures::future::join_all(sends).await {
            match r {
                Ok(()) => bikeshare_types::metrics::alert_notification(channel, "sent"),
                Err(e) => {
                    failed += 1;
                    bikeshare_types::metrics::alert_notification(channel, "failed");
                    tracing::error!(channel, rule = %n.rule, error = %e, "alert notification failed");
                }
            }
        }
        failed
    }
}
