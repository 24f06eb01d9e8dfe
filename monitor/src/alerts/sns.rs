//! An SNS notifier: `Publish` to one topic through `aws-sdk-sns`.
//!
//! The subject is the notification's title cut to SNS's limit ([`MAX_SUBJECT`] characters,
//! ASCII without control characters, as SNS demands); the message is the title, the labels
//! and the value; the message attributes `severity`, `rule` and `state` let subscriptions
//! filter (e.g. only `critical` to a pager). The SDK's own retries are off: this notifier owns
//! them ([`Backoff`], full jitter), and only errors the SDK marks as transient or throttling
//! are retried.
//!
//! The notifier holds an SNS client, so it is behind this crate's `aws` feature; the
//! configuration and the subject and message rules are not.

use bikeshare_types::retry::Backoff;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;

use super::engine::Notification;

#[cfg(feature = "aws")]
mod publish;
#[cfg(feature = "aws")]
pub use publish::SnsNotifier;

/// SNS: at most 100 characters of subject.
pub const MAX_SUBJECT: usize = 100;
/// SNS: at most 256 KiB of message.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// `[alerts.sns]`.
#[derive(Debug, Clone, Serialize, Deserialize, SmartDefault)]
#[serde(default)]
pub struct SnsConfig {
    /// The topic (`arn:aws:sns:region:account:name`); none: no SNS notifications.
    pub topic_arn: Option<String>,
    /// Default: the standard AWS configuration's region.
    pub region: Option<String>,
    /// An emulator or VPC endpoint (or `AWS_ENDPOINT_URL_SNS`).
    pub endpoint_url: Option<String>,
    /// Per attempt.
    #[default(5_000)]
    pub timeout_ms: u64,
    #[default(Backoff::SHORT)]
    pub retry: Backoff,
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
