//! Registry round trips on both backends: the local directory, and a real MLflow server
//! (started by scripts/test.sh; skipped without `BIKESHARE_TEST_MLFLOW_URI`, failing in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::registry_support;
use registry_support as support;

use std::sync::Arc;

use bikeshare_models::promote::{
    Check, GateMetrics, HeldOutSummary, Margins, PromotionDecision, TargetMetrics,
};
use bikeshare_models::registry::local::LocalRegistry;
use bikeshare_models::registry::mlflow::{MlflowRegistry, MlflowSettings};
use bikeshare_models::registry::{self, Registry, RegistryError, Stage};
use bikeshare_types::contracts::ModelRef;
use bikeshare_types::time::ManualClock;
use bikeshare_types::{SharedClock, Timestamp};

fn clock() -> SharedClock {
    Arc::new(ManualClock::new(Timestamp(1_790_000_000_000)))
}

fn decision(candidate: u64, promoted: bool, at: i64) -> PromotionDecision {
    let m = |ll, pr| TargetMetrics {
        log_loss: ll,
        pr_auc: pr,
        new_stockout_pr_auc: Some(pr / 2.0),
    };
    PromotionDecision {
        decided_at: Timestamp(at),
        model: "ignored-by-the-test".into(),
        candidate,
        target: Stage::Production,
        promoted,
        incumbent: Some(ModelRef {
            name: "baseline-netflow".into(),
            version: "1".into(),
        }),
        checks: vec![Check {
            name: "beats.empty.log_loss".into(),
            passed: promoted,
            detail: "0.2 vs 0.3".into(),
        }],
        candidate_metrics: Some(GateMetrics {
            empty: m(0.2, 0.6),
            full: m(0.1, 0.5),
        }),
        incumbent_metrics: Some(GateMetrics {
            empty: m(0.3, 0.4),
            full: m(0.2, 0.3),
        }),
        margins: Margins::default(),
        heldout: Some(HeldOutSummary {
            rows: 1000,
            from: Some(Timestamp(at - 86_400_000)),
            to: Some(Timestamp(at)),
            went_empty: 100,
            went_full: 50,
        }),
        summary: format!(
            "v{candidate} {}",
            if promoted { "promoted" } else { "refused" }
        ),
    }
}

/// Everything the trait promises, on any backend.
async fn round_trip(reg: &dyn Registry) {
    let tmp = tempfile::tempdir().unwrap();
    let empty = support::stumps_model(3, &[(0, 1.0, 2.0, -2.0)]);
    let full = support::stumps_model(3, &[(1, 1.0, 1.5, -1.5)]);
    let (d1, d2) = (tmp.path().join("m1"), tmp.path().join("m2"));
    support::write_model_dir(&d1, "fs1-one", &empty, &full, "first");
    support::write_model_dir(&d2, "fs1-two", &full, &empty, "second");

    assert!(reg.current(Stage::Production).await.unwrap().is_none());
    assert!(reg.list().await.unwrap().is_empty());
    assert!(reg.decisions().await.unwrap().is_empty());

    let v1 = reg.register(&d1).await.unwrap();
    let v2 = reg.register(&d2).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v1.model, reg.model_name());
    assert_eq!(v1.feature_schema_id.as_deref(), Some("fs1-one"));
    assert_eq!(v2.card["description"], "second");
    assert_eq!(v1.files, ["card.json", "empty.json", "full.json"]);
    assert!(v1.stages.is_empty());
    assert_eq!(
        v1.model_ref(),
        ModelRef {
            name: reg.model_name().into(),
            version: "1".into()
        }
    );

    // Stages: each names one version; moving one leaves the other.
    reg.set_stage(1, Stage::Production).await.unwrap();
    reg.set_stage(2, Stage::Staging).await.unwrap();
    assert_eq!(support::production_version(reg).await, 1);
    assert_eq!(reg.get(2).await.unwrap().stages, [Stage::Staging]);
    reg.set_stage(2, Stage::Production).await.unwrap();
    let listed = reg.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].stages.is_empty(), "v1 left production");
    assert_eq!(listed[1].stages, [Stage::Staging, Stage::Production]);

    // Download: the same bytes.
    let out = tmp.path().join("out");
    reg.download(1, &out).await.unwrap();
    for f in ["card.json", "empty.json", "full.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(d1.join(f)).unwrap(),
            "{f}"
        );
    }
    let cache = tmp.path().join("cache");
    let a = registry::fetch(reg, 2, &cache).await.unwrap();
    let b = registry::fetch(reg, 2, &cache).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(std::fs::read_to_string(a.join("empty.json")).unwrap(), full);

    // Decisions: recorded in order, read back whole.
    let first = decision(1, false, 1_790_000_000_000);
    let second = decision(2, true, 1_790_000_100_000);
    reg.record_decision(&first).await.unwrap();
    reg.record_decision(&second).await.unwrap();
    assert_eq!(reg.decisions().await.unwrap(), [first, second]);

    // Errors say what is wrong.
    assert!(matches!(
        reg.get(99).await,
        Err(RegistryError::NoSuchVersion { version: 99, .. })
    ));
    assert!(reg.set_stage(99, Stage::Production).await.is_err());
    assert_eq!(
        support::production_version(reg).await,
        2,
        "a refused stage change leaves the stage alone"
    );
    let no_card = tmp.path().join("no-card");
    std::fs::create_dir_all(&no_card).unwrap();
    std::fs::write(no_card.join("empty.json"), &empty).unwrap();
    let err = reg.register(&no_card).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidModel { .. }) && err.to_string().contains("card.json"),
        "{err}"
    );
    assert_eq!(
        reg.list().await.unwrap().len(),
        2,
        "nothing half-registered"
    );
}

#[tokio::test]
async fn local_registry_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let reg = LocalRegistry::new(dir.path().join("registry"), "stockout", clock());
    round_trip(&reg).await;
    // Another instance over the same directory sees the same state.
    let again = LocalRegistry::new(dir.path().join("registry"), "stockout", clock());
    assert_eq!(support::production_version(&again).await, 2);
    assert_eq!(again.decisions().await.unwrap().len(), 2);
}

#[tokio::test]
async fn local_registry_numbers_concurrent_registrations_apart() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let s = support::stumps_model(3, &[(0, 1.0, 1.0, -1.0)]);
    support::write_model_dir(&model, "fs1-x", &s, &s, "x");
    let reg = Arc::new(LocalRegistry::new(
        dir.path().join("registry"),
        "m",
        clock(),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let reg = reg.clone();
            let model = model.clone();
            tokio::spawn(async move { reg.register(&model).await.unwrap().version })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test]
async fn local_registry_ignores_a_torn_last_decision_line() {
    let dir = tempfile::tempdir().unwrap();
    let reg = LocalRegistry::new(dir.path(), "m", clock());
    reg.record_decision(&decision(1, true, 1)).await.unwrap();
    let log = dir.path().join("m").join("decisions.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"decided_at\":");
    std::fs::write(&log, text).unwrap();
    assert_eq!(reg.decisions().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_registry_round_trip() {
    let Some(uri) = support::mlflow_uri("mlflow_registry_round_trip") else {
        return;
    };
    let mut settings = MlflowSettings::new(&uri, support::unique_name("roundtrip"));
    settings.experiment = support::unique_name("bikeshare-test");
    let reg = MlflowRegistry::new(settings, clock()).unwrap();
    round_trip(&reg).await;
}

#[tokio::test]
async fn mlflow_registry_unreachable_is_an_external_error() {
    // A port nothing listens on: the error names the server and is retryable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = MlflowSettings::new(format!("http://127.0.0.1:{port}"), "m");
    settings.backoff.max_retries = Some(1);
    settings.backoff.base = std::time::Duration::from_millis(1);
    let reg = MlflowRegistry::new(settings, clock()).unwrap();
    let err = reg.current(Stage::Production).await.unwrap_err();
    use bikeshare_types::error::{Classify, ErrorClass};
    assert_eq!(err.class(), ErrorClass::External, "{err}");
    assert!(err.retryable());
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(MlflowRegistry::new(MlflowSettings::new("ftp://x", "m"), clock()).is_err());
}
