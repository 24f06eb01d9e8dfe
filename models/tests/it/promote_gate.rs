//! The promotion gate over a real (local) registry: a better model is promoted, a worse one
//! refused, and every decision is in the log with its numbers.
//!
//! The models are XGBoost JSON written by hand (stumps): the held-out outcomes depend on one
//! feature the baseline does not read, with 10% of labels flipped, so which model is better
//! is known by construction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::registry_support;
use registry_support as support;

use std::sync::Arc;

use bikeshare_models::promote::{Gate, GateConfig, HeldOut, PromotionDecision};
use bikeshare_models::registry::local::LocalRegistry;
use bikeshare_models::registry::{Registry, Stage};
use bikeshare_stream_processor::{Processor, ProcessorConfig};
use bikeshare_types::Timestamp;
use bikeshare_types::time::ManualClock;

/// One tree on the signal feature: `(threshold, left, right)`.
type Stump = (f32, f32, f32);

/// The decision's summary names the check `check`.
#[track_caller]
fn assert_names(d: &PromotionDecision, check: &str) {
    assert!(d.summary.contains(check), "{}", d.summary);
}

/// The gate's decision on `version` for `stage`, on `data`.
async fn decide(gate: &Gate, version: u64, stage: Stage, data: &HeldOut) -> PromotionDecision {
    gate.evaluate(version, stage, Some(data)).await.unwrap()
}

#[tokio::test]
async fn gate_promotes_better_models_and_refuses_worse_ones() {
    let schema = Processor::new(ProcessorConfig::default()).schema().clone();
    let signal = schema.len() - 1;
    let name = schema.names().nth(signal).unwrap().to_owned();
    for used in ["bikes", "docks", "arrivals_60m", "departures_60m"] {
        assert_ne!(
            name, used,
            "the signal must be a feature the baseline ignores"
        );
    }
    let data = support::heldout(&schema, signal);
    let n = schema.len();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_790_100_000_000)));
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(
        dir.path().join("registry"),
        "stockout",
        clock.clone(),
    ));
    let gate = Gate {
        registry: registry.clone(),
        schema: schema.clone(),
        horizon_minutes: 30,
        config: GateConfig::default(),
        cache: dir.path().join("cache"),
        clock: clock.clone(),
    };
    let id = schema.id().0.clone();
    // A version is one stump per target on the signal.
    let register = |label: &str, schema_id: &str, empty: Stump, full: Stump| {
        let d = dir.path().join(label);
        let model = |(t, l, r): Stump| support::stumps_model(n, &[(signal, t, l, r)]);
        support::write_model_dir(&d, schema_id, &model(empty), &model(full), label);
        let registry = registry.clone();
        async move { registry.register(&d).await.unwrap().version }
    };

    // v1: right direction, threshold a little off. No production yet: against the baseline.
    let v1 = register("weak", &id, (0.7, -1.0, 1.0), (0.2, 1.0, -1.0)).await;
    let staged = decide(&gate, v1, Stage::Staging, &data).await;
    assert!(staged.promoted, "{staged:#?}");
    let d1 = decide(&gate, v1, Stage::Production, &data).await;
    assert!(d1.promoted, "{}", d1.summary);
    assert_eq!(d1.incumbent.as_ref().unwrap().name, "baseline-netflow");
    let (c, i) = (d1.candidate_metrics.unwrap(), d1.incumbent_metrics.unwrap());
    assert!(c.empty.log_loss < i.empty.log_loss && c.empty.pr_auc > i.empty.pr_auc);
    assert_eq!(c.empty.new_stockout_pr_auc, Some(c.empty.pr_auc));

    // v2: "went empty" reversed — worse than v1: refused, production stays v1.
    let v2 = register("reversed", &id, (0.8, 1.0, -1.0), (0.15, 1.0, -1.0)).await;
    let d2 = decide(&gate, v2, Stage::Production, &data).await;
    assert!(!d2.promoted);
    assert_names(&d2, "beats.empty.log_loss");
    // Every held-out row is a new-stockout row here: that PR-AUC decides.
    assert_names(&d2, "beats.empty.new_stockout_pr_auc");
    assert_eq!(d2.incumbent.as_ref().unwrap().version, "1");
    assert_eq!(support::production_version(registry.as_ref()).await, v1);

    // v3: the right thresholds, more confident: better on both metrics, both targets.
    let v3 = register("strong", &id, (0.8, -2.0, 2.0), (0.15, 2.0, -2.0)).await;
    let d3 = decide(&gate, v3, Stage::Production, &data).await;
    assert!(d3.promoted, "{d3:#?}");
    assert_eq!(support::production_version(registry.as_ref()).await, v3);

    // Trained on another feature schema: refused before any comparison counts.
    let v4 = register(
        "other-schema",
        "fs1-someone-else",
        (0.8, -3.0, 3.0),
        (0.15, 3.0, -3.0),
    )
    .await;
    let d4 = decide(&gate, v4, Stage::Staging, &data).await;
    assert!(!d4.promoted);
    assert_names(&d4, "schema.feature_schema_id");
    assert_names(&d4, "model.loads");

    // A constant model is not sane.
    let v5 = register("constant", &id, (0.5, 1.0, 1.0), (0.5, -1.0, 1.0)).await;
    let d5 = decide(&gate, v5, Stage::Production, &data).await;
    assert!(!d5.promoted);
    assert_names(&d5, "probabilities.empty.not_constant");

    // Too little evidence: refused whatever the model.
    let few = HeldOut {
        values: data.values[..50].to_vec(),
        as_of: data.as_of[..50].to_vec(),
        went_empty: data.went_empty[..50].to_vec(),
        went_full: data.went_full[..50].to_vec(),
        empty_now: data.empty_now[..50].to_vec(),
        full_now: data.full_now[..50].to_vec(),
    };
    let d6 = decide(&gate, v3, Stage::Production, &few).await;
    assert!(!d6.promoted);
    assert_names(&d6, "heldout.rows");

    // The log holds every decision, in order, with its numbers.
    let log = registry.decisions().await.unwrap();
    let outcomes: Vec<(u64, Stage, bool)> = log
        .iter()
        .map(|d| (d.candidate, d.target, d.promoted))
        .collect();
    assert_eq!(
        outcomes,
        [
            (v1, Stage::Staging, true),
            (v1, Stage::Production, true),
            (v2, Stage::Production, false),
            (v3, Stage::Production, true),
            (v4, Stage::Staging, false),
            (v5, Stage::Production, false),
            (v3, Stage::Production, false),
        ]
    );
    assert_eq!((&log[2].summary, &log[2].checks), (&d2.summary, &d2.checks));
    let (logged, decided) = (
        log[2].candidate_metrics.unwrap(),
        d2.candidate_metrics.unwrap(),
    );
    assert!((logged.empty.log_loss - decided.empty.log_loss).abs() < 1e-12);
    assert!(log[2].incumbent_metrics.is_some());
    assert_eq!(log[3].heldout.as_ref().unwrap().rows, 2000);
}

#[tokio::test]
async fn production_needs_heldout_data() {
    let schema = Processor::new(ProcessorConfig::default()).schema().clone();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(1_790_100_000_000)));
    let registry: Arc<dyn Registry> = Arc::new(LocalRegistry::new(dir.path(), "m", clock.clone()));
    let m = support::stumps_model(schema.len(), &[(0, 1.0, -1.0, 1.0)]);
    support::write_model_dir(&dir.path().join("m1"), &schema.id().0, &m, &m, "x");
    let v = registry
        .register(&dir.path().join("m1"))
        .await
        .unwrap()
        .version;
    let gate = Gate {
        registry: registry.clone(),
        schema,
        horizon_minutes: 30,
        config: GateConfig::default(),
        cache: dir.path().join("cache"),
        clock,
    };
    let d = gate.evaluate(v, Stage::Production, None).await.unwrap();
    assert!(!d.promoted);
    assert_names(&d, "heldout.present");
    // Staging without data checks what it can: schema and loading.
    assert!(
        gate.evaluate(v, Stage::Staging, None)
            .await
            .unwrap()
            .promoted
    );
    assert!(registry.current(Stage::Production).await.unwrap().is_none());
}
