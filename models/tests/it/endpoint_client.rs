//! The processor's SageMaker `Predictor` against `serve-model`: scores equal the in-process
//! model's, an outage falls back (in-process or unavailable) within the time budget, the
//! circuit opens and stops calling, and a returning endpoint is used again after the probe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bikeshare_models::endpoint::{Circuit, EndpointConfig, Fallback, SageMakerPredictor};
use bikeshare_models::serve::ServeConfig;
use bikeshare_stream_processor::{BaselineScorer, Predictor, Scorer};
use bikeshare_types::contracts::ScoredBy;
use bikeshare_types::retry::Backoff;

fn config(url: &str, fallback: Fallback) -> EndpointConfig {
    EndpointConfig {
        endpoint_url: Some(url.into()),
        region: Some("us-east-1".into()),
        max_batch_rows: 250,
        timeout_ms: 500,
        retry: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_retries: Some(2),
        },
        breaker_failures: 2,
        breaker_open_ms: 300,
        fallback,
        ..EndpointConfig::default()
    }
}

#[tokio::test]
async fn outage_falls_back_opens_the_circuit_and_recovers_when_the_endpoint_returns() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::model(dir.path());
    let schema = support::schema();
    let server = support::start(support::local_config(), model.clone()).await;
    let addr = server.local_addr();
    let predictor = SageMakerPredictor::new(
        &support::sdk(&server.url()).await,
        config(&server.url(), Fallback::InProcess),
        schema.id().clone(),
    );
    let stats = predictor.stats();
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let rows = support::rows(600, schema.len(), 9);
    let refs: Vec<&[Option<f32>]> = rows.iter().map(Vec::as_slice).collect();

    // Up: three calls of at most 250 rows, every score the model's own.
    let scored = predictor.predict(&refs, &baseline).await;
    assert_eq!(scored.len(), 600);
    for (s, r) in scored.iter().zip(&rows) {
        assert_eq!(s.scored_by, ScoredBy::Endpoint);
        assert_eq!(s.model.name, "synthetic");
        assert_eq!(s.scores, model.score(r));
    }
    assert_eq!(stats.calls.load(Ordering::Relaxed), 3);

    // Down: the fallback scores, marked as such, and the circuit opens after two calls.
    server.stop().await;
    let t = Instant::now();
    let scored = predictor.predict(&refs, &baseline).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(scored.len(), 600);
    for (s, r) in scored.iter().zip(&rows) {
        assert_eq!(s.scored_by, ScoredBy::Fallback);
        assert_eq!(s.model.name, BaselineScorer::NAME);
        assert_eq!(s.scores, baseline.score(r));
    }
    assert_eq!(predictor.circuit(), Circuit::Open);
    assert_eq!(stats.circuit_opened.load(Ordering::Relaxed), 1);
    let calls = stats.calls.load(Ordering::Relaxed);
    assert_eq!(
        calls,
        3 + 2 * 3,
        "2 calls of 3 attempts, then the circuit is open"
    );
    // Open: no calls at all.
    predictor.predict(&refs, &baseline).await;
    assert_eq!(stats.calls.load(Ordering::Relaxed), calls);

    // Half-open while still down: one probe, no retries, open again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(predictor.circuit(), Circuit::HalfOpen);
    predictor.predict(&refs, &baseline).await;
    assert_eq!(stats.calls.load(Ordering::Relaxed), calls + 1);
    assert_eq!(predictor.circuit(), Circuit::Open);

    // Back on the same address: after the open period the probe succeeds.
    let again = support::start(
        ServeConfig {
            bind: addr,
            ..ServeConfig::default()
        },
        model.clone(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let scored = predictor.predict(&refs, &baseline).await;
    assert!(scored.iter().all(|s| s.scored_by == ScoredBy::Endpoint));
    assert_eq!(predictor.circuit(), Circuit::Closed);
    assert_eq!(scored[0].scores, model.score(&rows[0]));
    again.stop().await;
}

#[tokio::test]
async fn unavailable_fallback_and_a_hanging_endpoint_cost_at_most_the_time_budget() {
    let schema = support::schema();
    // Accepts connections, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            held.push(s);
        }
    });
    let mut cfg = config(&url, Fallback::Unavailable);
    cfg.timeout_ms = 200;
    cfg.retry.max_retries = Some(1);
    let predictor = SageMakerPredictor::new(&support::sdk(&url).await, cfg, schema.id().clone());
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let rows = support::rows(10, schema.len(), 5);
    let refs: Vec<&[Option<f32>]> = rows.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let scored = predictor.predict(&refs, &baseline).await;
    let took = t.elapsed();
    // 2 attempts × 200 ms + at most 50 ms of backoff, plus scheduling slack.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(scored.len(), 10);
    assert!(scored.iter().all(|s| s.scored_by == ScoredBy::Unavailable
        && s.scores.p_empty.is_nan()
        && s.scores.p_full.is_nan()));
    assert_eq!(
        predictor.stats().rows_unavailable.load(Ordering::Relaxed),
        10
    );
    hold.abort();
}

#[tokio::test]
async fn an_endpoint_serving_another_feature_schema_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let model = support::model(dir.path());
    let server = support::start(support::local_config(), model).await;
    let schema = support::schema();
    let predictor = SageMakerPredictor::new(
        &support::sdk(&server.url()).await,
        config(&server.url(), Fallback::InProcess),
        bikeshare_types::contracts::FeatureSchemaId("fs1-not-this-one".into()),
    );
    let baseline: Arc<dyn Scorer> = Arc::new(BaselineScorer::new(&schema, 30));
    let rows = support::rows(3, schema.len(), 6);
    let refs: Vec<&[Option<f32>]> = rows.iter().map(Vec::as_slice).collect();
    let scored = predictor.predict(&refs, &baseline).await;
    assert!(scored.iter().all(|s| s.scored_by == ScoredBy::Fallback));
    // Refused by the server (400): not retried.
    assert_eq!(predictor.stats().calls.load(Ordering::Relaxed), 1);
}
