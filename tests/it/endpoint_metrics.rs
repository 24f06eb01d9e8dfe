//! An endpoint outage seen through the metrics: the processor's endpoint client scores
//! through the real model server (`bikeshare_models::serve`, reached with the real SageMaker
//! runtime client) while the Prometheus recorder is installed; the served model goes away
//! (503, `ModelNotReadyException`) and comes back. `bikeshare_endpoint_requests_total`,
//! `_errors_total` and `_fallbacks_total` move by exactly the calls and rows involved, and
//! the shipped alert rules `endpoint_error_rate` and `endpoint_fallback_rate`, fed the
//! recorder's own output through the pure alert engine, fire during the outage and resolve
//! after it. Time for the alert engine is injected (10 s per step), so the rules' 5 and 10
//! minute windows pass without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bikeshare_models::endpoint::{EndpointConfig, Fallback, SageMakerPredictor};
use bikeshare_models::serve::{ServeConfig, ServedModel, serve};
use bikeshare_monitor::alerts::rules::default_rules;
use bikeshare_monitor::alerts::{Engine, NotificationKind};
use bikeshare_monitor::samples::{Sample, parse};
use bikeshare_stream_processor::{BaselineScorer, Predictor, Processor, ProcessorConfig, Scorer};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::ScoredBy;
use bikeshare_types::metrics::{ENDPOINT_ERRORS, ENDPOINT_FALLBACKS, ENDPOINT_REQUESTS};
use bikeshare_types::retry::Backoff;

const ENDPOINT: &str = "outage-test";
/// Rows per step and per call: 4 calls per step.
const ROWS: usize = 40;
const PER_CALL: usize = 10;
/// Injected time per step.
const STEP_MS: i64 = 10_000;

/// The value of `family` summed over the series whose labels include `labels`.
fn total(samples: &[Sample], family: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == family)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_outage_moves_the_endpoint_metrics_and_fires_then_resolves_its_alerts() {
    let recorder = bikeshare_monitor::exporter::install().unwrap();
    let scrape = || parse(&recorder.render());

    let schema = Processor::new(ProcessorConfig::default()).schema().clone();
    let served: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let model = Arc::new(ServedModel::new(served, schema.len()));
    let server = serve(
        &ServeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        },
        Some(model.clone()),
        std::future::pending(),
    )
    .await
    .unwrap();
    let url = server.url();
    let sdk = bikeshare_runtime::aws::emulator_sdk_config(&url).await;
    let predictor = SageMakerPredictor::new(
        &sdk,
        EndpointConfig {
            endpoint_name: ENDPOINT.into(),
            endpoint_url: Some(url),
            max_batch_rows: PER_CALL,
            timeout_ms: 5_000,
            budget_ms: 30_000,
            // One attempt per call and a circuit that never opens: every call of the
            // outage reaches the endpoint and fails, so the counts are exact.
            retry: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(1),
                max_retries: Some(0),
            },
            breaker_failures: u32::MAX,
            fallback: Fallback::InProcess,
            ..EndpointConfig::default()
        },
        schema.id().clone(),
    );
    let local: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let row: Vec<Option<f32>> = (0..schema.len()).map(|i| Some(i as f32 % 7.0)).collect();
    let rows: Vec<&[Option<f32>]> = (0..ROWS).map(|_| row.as_slice()).collect();

    let mut engine = Engine::new(default_rules(), None);
    let mut now = Timestamp::from_millis(1_800_000_000_000);
    // (rule, kind) of every notification, in order.
    let mut notified: Vec<(String, NotificationKind)> = Vec::new();
    let step = |scored_by: ScoredBy| {
        let predictor = &predictor;
        let rows = &rows;
        let local = &local;
        async move {
            let out = predictor.predict(rows, local).await;
            assert_eq!(out.len(), ROWS);
            assert!(
                out.iter().all(|s| s.scored_by == scored_by),
                "{scored_by:?}"
            );
        }
    };
    let evaluate = |engine: &mut Engine, now: &mut Timestamp, notified: &mut Vec<_>| {
        *now = now.plus_millis(STEP_MS);
        let samples = scrape();
        for n in engine.evaluate(*now, &samples) {
            notified.push((n.rule.clone(), n.kind));
        }
        samples
    };
    let counts = |s: &[Sample]| {
        let e = [("endpoint", ENDPOINT)];
        (
            total(s, ENDPOINT_REQUESTS.name, &e),
            total(s, ENDPOINT_ERRORS.name, &e),
            total(s, ENDPOINT_FALLBACKS.name, &e),
        )
    };
    let calls_per_step = (ROWS / PER_CALL) as f64;

    // 1. Up: requests move, nothing fails.
    let before = counts(&scrape());
    for _ in 0..10 {
        step(ScoredBy::Endpoint).await;
        evaluate(&mut engine, &mut now, &mut notified);
    }
    let up = counts(&scrape());
    assert_eq!(up.0 - before.0, 10.0 * calls_per_step, "requests while up");
    assert_eq!(
        (up.1, up.2),
        (before.1, before.2),
        "no errors, no fallbacks"
    );
    assert!(notified.is_empty(), "{notified:?}");

    // 2. Outage for 15 injected minutes: every call fails, every row goes to the fallback;
    //    both alerts fire (after their 5 and 10 minutes).
    server.set_model(None);
    let outage_steps = 90;
    for _ in 0..outage_steps {
        step(ScoredBy::Fallback).await;
        evaluate(&mut engine, &mut now, &mut notified);
    }
    let down = scrape();
    let d = counts(&down);
    assert_eq!(d.0 - up.0, outage_steps as f64 * calls_per_step, "requests");
    assert_eq!(d.1 - up.1, outage_steps as f64 * calls_per_step, "errors");
    assert_eq!(d.2 - up.2, (outage_steps * ROWS) as f64, "fallback rows");
    assert_eq!(
        total(
            &down,
            ENDPOINT_ERRORS.name,
            &[("endpoint", ENDPOINT), ("reason", "http_5xx")]
        ),
        d.1 - up.1,
        "a 503 is counted as http_5xx"
    );
    assert_eq!(
        total(
            &down,
            ENDPOINT_FALLBACKS.name,
            &[("endpoint", ENDPOINT), ("reason", "error")]
        ),
        d.2 - up.2
    );
    let fired: BTreeMap<&str, usize> = notified
        .iter()
        .filter(|(_, k)| *k == NotificationKind::Firing)
        .fold(BTreeMap::new(), |mut m, (r, _)| {
            *m.entry(r.as_str()).or_default() += 1;
            m
        });
    assert_eq!(
        fired,
        BTreeMap::from([("endpoint_error_rate", 1), ("endpoint_fallback_rate", 1)]),
        "{notified:?}"
    );

    // 3. Back: the endpoint scores again; once the 5-minute rate windows hold no failure,
    //    both alerts resolve.
    server.set_model(Some(model));
    for _ in 0..40 {
        step(ScoredBy::Endpoint).await;
        evaluate(&mut engine, &mut now, &mut notified);
    }
    let back = counts(&scrape());
    assert_eq!(back.0 - d.0, 40.0 * calls_per_step);
    assert_eq!(
        (back.1, back.2),
        (d.1, d.2),
        "no errors, no fallbacks once back"
    );
    let resolved: Vec<&str> = notified
        .iter()
        .filter(|(_, k)| *k == NotificationKind::Resolved)
        .map(|(r, _)| r.as_str())
        .collect();
    assert_eq!(
        resolved.len(),
        2,
        "both alerts resolve once the endpoint is back: {notified:?}"
    );
    assert!(resolved.contains(&"endpoint_error_rate"));
    assert!(resolved.contains(&"endpoint_fallback_rate"));
    assert!(engine.firing_per_rule().values().all(|n| *n == 0));
}
