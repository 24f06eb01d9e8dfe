//! Alerts end to end: metrics recorded through `bikeshare_types::metrics`, read back from
//! the installed Prometheus recorder, evaluated, and delivered — to a local webhook receiver
//! (axum on 127.0.0.1:0) and to SNS on moto server — one firing and one recovery message
//! per episode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bikeshare_monitor::alerts::{
    AlertLoop, AlertsConfig, Comparator, Dispatcher, Engine, NotificationKind, Notifier, Rule,
    Severity, SnsConfig, SnsNotifier, WebhookConfig, WebhookNotifier, recorder_source,
};
use bikeshare_monitor::samples;
use bikeshare_runtime::aws::emulator_sdk_config;
use bikeshare_testkit::emulators::moto_endpoint;
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SharedClock, Timestamp};
use serde_json::Value;

/// A Slack-like receiver: answers `fail_first` requests with 503, then 200, keeping bodies.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst);
    if n < r.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

async fn start_receiver(fail_first: usize) -> (String, Receiver) {
    let r = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let app = axum::Router::new()
        .route("/hooks/services/T000/B000/SECRET", post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hooks/services/T000/B000/SECRET"), r)
}

fn lag_rule(name: &str, system: &str) -> Rule {
    Rule {
        name: name.into(),
        metric: "bikeshare_watermark_lag_seconds".into(),
        matchers: [("system".to_owned(), system.to_owned())].into(),
        rate_secs: None,
        op: Comparator::Gt,
        threshold: 600.0,
        for_secs: 30,
        severity: Severity::Critical,
        summary: "event time of {system} is {value} behind".into(),
        guard: None,
        unless_falling_per_sec: None,
    }
}

fn fast_retry() -> bikeshare_types::retry::Backoff {
    bikeshare_types::retry::Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_retries: Some(3),
    }
}

/// A notification of `severity` (its other fields do not matter to the channel tests).
fn notification(severity: Severity) -> bikeshare_monitor::alerts::Notification {
    bikeshare_monitor::alerts::Notification {
        kind: NotificationKind::Firing,
        rule: "x".into(),
        severity,
        labels: BTreeMap::new(),
        value: 1.0,
        threshold: 0.0,
        summary: "s".into(),
        firing_since: Timestamp::from_secs(0),
        at: Timestamp::from_secs(0),
    }
}

fn scraped(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = bikeshare_monitor::exporter::install().unwrap().render();
    samples::parse(&text)
        .into_iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

/// One episode: pending for 30 s, firing for a while (many evaluations), then resolved.
/// Returns the kinds the loop dispatched.
async fn one_episode(
    alerts: &mut AlertLoop,
    clock: &ManualClock,
    system: &str,
) -> Vec<NotificationKind> {
    let mut kinds = Vec::new();
    bikeshare_types::metrics::watermark_lag(system, 900_000);
    for _ in 0..10 {
        kinds.extend(alerts.tick().await.into_iter().map(|n| n.kind));
        clock.advance_millis(10_000);
    }
    bikeshare_types::metrics::watermark_lag(system, 2_000);
    for _ in 0..5 {
        kinds.extend(alerts.tick().await.into_iter().map(|n| n.kind));
        clock.advance_millis(10_000);
    }
    kinds
}

#[tokio::test]
async fn webhook_gets_one_firing_and_one_recovery_message_in_slack_json() {
    let (url, receiver) = start_receiver(1).await;
    let config = WebhookConfig {
        url: Some(url.clone()),
        timeout_ms: 2_000,
        retry: fast_retry(),
    };
    let webhook = WebhookNotifier::from_config(&config).unwrap().unwrap();
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let shared: SharedClock = Arc::new(clock.clone());
    let mut alerts = AlertLoop::new(
        Engine::new(vec![lag_rule("webhook_lag", "webhook-sys")], None),
        Dispatcher::new(vec![Arc::new(webhook)]),
        recorder_source().unwrap(),
        shared,
        Duration::from_millis(10),
    );
    let kinds = one_episode(&mut alerts, &clock, "webhook-sys").await;
    assert_eq!(
        kinds,
        [NotificationKind::Firing, NotificationKind::Resolved]
    );

    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        2,
        "exactly one firing and one recovery: {bodies:#?}"
    );
    assert_eq!(
        receiver.attempts.load(Ordering::SeqCst),
        3,
        "the first POST got a 503 and was retried"
    );
    let text0 = bodies[0]["text"].as_str().unwrap();
    let text1 = bodies[1]["text"].as_str().unwrap();
    assert!(text0.contains("[FIRING] critical webhook_lag"), "{text0}");
    assert!(
        text0.contains("event time of webhook-sys is 15 min behind"),
        "{text0}"
    );
    assert!(text1.contains("[RESOLVED] critical webhook_lag"), "{text1}");
    for b in &bodies {
        let blocks = b["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert!(blocks[1]["fields"].as_array().unwrap().len() >= 4);
        assert!(b["attachments"][0]["color"].is_string());
    }

    assert_eq!(
        scraped("bikeshare_alerts_firing", &[("rule", "webhook_lag")]),
        Some(0.0)
    );
    assert_eq!(
        scraped(
            "bikeshare_alert_notifications_total",
            &[("channel", "webhook"), ("outcome", "sent")]
        ),
        Some(2.0)
    );

    // A second episode is a second pair of messages; a receiver that keeps failing is
    // counted and logged, never a panic or a stopped loop.
    let kinds = one_episode(&mut alerts, &clock, "webhook-sys").await;
    assert_eq!(
        kinds,
        [NotificationKind::Firing, NotificationKind::Resolved]
    );
    assert_eq!(receiver.bodies.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn an_unreachable_webhook_is_counted_not_fatal_and_its_url_not_logged() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let webhook = WebhookNotifier::from_config(&WebhookConfig {
        url: Some(format!("http://127.0.0.1:{port}/SECRET-PATH")),
        timeout_ms: 500,
        retry: fast_retry(),
    })
    .unwrap()
    .unwrap();
    let n = notification(Severity::Warning);
    let err = webhook.send(&n).await.unwrap_err().to_string();
    assert!(!err.contains("SECRET"), "{err}");
    assert!(err.contains("after 4 attempts"), "{err}");
    let before = scraped(
        "bikeshare_alert_notifications_total",
        &[("channel", "webhook"), ("outcome", "failed")],
    )
    .unwrap_or(0.0);
    let failed = Dispatcher::new(vec![Arc::new(webhook)]).dispatch(&n).await;
    assert_eq!(failed, 1);
    assert_eq!(
        scraped(
            "bikeshare_alert_notifications_total",
            &[("channel", "webhook"), ("outcome", "failed")],
        ),
        Some(before + 1.0)
    );
}

/// What moto recorded as published to `topic_arn`: (subject, message, attributes).
async fn published(moto: &str, topic_arn: &str) -> Vec<(String, String, Value)> {
    let data: Value = reqwest::get(format!("{moto}/moto-api/data.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let topics = data["sns"]["Topic"].as_array().cloned().unwrap_or_default();
    let topic = topics
        .iter()
        .find(|t| t["arn"] == topic_arn)
        .unwrap_or_else(|| panic!("topic {topic_arn} not in moto's data"));
    topic["sent_notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n[2].as_str().unwrap_or_default().to_owned(),
                n[1].as_str().unwrap().to_owned(),
                n[3].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sns_on_moto_gets_one_firing_and_one_recovery_message() {
    let Some(moto) = moto_endpoint("sns_on_moto_gets_one_firing_and_one_recovery_message") else {
        return;
    };
    let sdk = emulator_sdk_config(&moto).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let topic_arn = sns
        .create_topic()
        .name(format!("bikeshare-alerts-{}", std::process::id()))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();

    // Through the configuration, as `up` builds it: SNS only, a long summary to cut.
    let mut rule = lag_rule("sns_lag", "sns-sys");
    rule.summary = format!(
        "event time of {{system}} is {{value}} behind {}",
        "x".repeat(200)
    );
    let config = AlertsConfig {
        disabled: bikeshare_monitor::alerts::default_rules()
            .into_iter()
            .map(|r| r.name)
            .collect(),
        rules: vec![rule],
        sns: SnsConfig {
            topic_arn: Some(topic_arn.clone()),
            retry: fast_retry(),
            ..SnsConfig::default()
        },
        ..AlertsConfig::default()
    };
    assert!(config.wants_sns());
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let mut alerts = AlertLoop::from_config(&config, Some(&sdk), Arc::new(clock.clone())).unwrap();
    assert_eq!(alerts.channels(), ["sns"]);
    let kinds = one_episode(&mut alerts, &clock, "sns-sys").await;
    assert_eq!(
        kinds,
        [NotificationKind::Firing, NotificationKind::Resolved]
    );

    let sent = published(&moto, &topic_arn).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let (subject, message, attrs) = &sent[0];
    assert!(
        subject.starts_with("[FIRING] critical sns_lag: event time of sns-sys"),
        "{subject}"
    );
    assert_eq!(subject.chars().count(), 100, "cut to SNS's limit");
    assert!(message.contains("state: firing"), "{message}");
    assert!(message.contains("labels: system=sns-sys"), "{message}");
    let attr = |a: &Value, k: &str| {
        a[k]["Value"]
            .as_str()
            .or_else(|| a[k]["StringValue"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        attr(attrs, "severity").as_deref(),
        Some("critical"),
        "{attrs}"
    );
    assert_eq!(attr(attrs, "rule").as_deref(), Some("sns_lag"), "{attrs}");
    let (subject, message, attrs) = &sent[1];
    assert!(
        subject.starts_with("[RESOLVED] critical sns_lag"),
        "{subject}"
    );
    assert!(message.contains("state: resolved"), "{message}");
    assert_eq!(attr(attrs, "state").as_deref(), Some("resolved"), "{attrs}");

    // A topic that does not exist: counted as failed, not retried (a client error).
    let missing = SnsNotifier::from_config(
        &sdk,
        &SnsConfig {
            topic_arn: Some("arn:aws:sns:us-east-1:123456789012:no-such-topic".into()),
            retry: fast_retry(),
            ..SnsConfig::default()
        },
    )
    .unwrap();
    let n = notification(Severity::Info);
    let err = missing.send(&n).await.unwrap_err().to_string();
    assert!(
        err.contains("NotFound") || err.contains("not exist"),
        "{err}"
    );
}
