//! The SageMaker Model Registry backend against moto server (started by scripts/test.sh;
//! skipped without `BIKESHARE_TEST_MOTO_ENDPOINT`, failing in CI), through the real SDK:
//! versions registered `PendingManualApproval`, the promotion gate approving one and leaving
//! the other pending, files back bit-identically, and typed errors for a missing group, no
//! credentials and an unreachable service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::registry_support;
use registry_support as support;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use bikeshare_models::hotswap::ProductionWatcher;
use bikeshare_models::promote::{Gate, GateConfig};
use bikeshare_models::registry::sagemaker::{SageMakerRegistry, SageMakerSettings};
use bikeshare_models::registry::{self, Registry, RegistryError, Stage};
use bikeshare_runtime::aws::{ClientSettings, Timeouts, config_loader, emulator_sdk_config};
use bikeshare_stream_processor::{Processor, ProcessorConfig, Scorer};
use bikeshare_types::Timestamp;
use bikeshare_types::error::{Classify, ErrorClass};
use bikeshare_types::time::ManualClock;

const IMAGE: &str = "387706002632.dkr.ecr.ca-central-1.amazonaws.com/bikeshare-dev:test";

/// A bucket for this test run in moto's S3.
async fn bucket(sdk: &bikeshare_runtime::aws::SdkConfig, name: &str) {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(name).send().await.unwrap();
}

fn settings(group: &str, bucket: &str) -> SageMakerSettings {
    SageMakerSettings {
        model_package_group: group.into(),
        bucket: bucket.into(),
        prefix: "models/".into(),
        image: IMAGE.into(),
        region: None,
        endpoint_url: None,
        create_group: true,
    }
}

/// What SageMaker itself says about version `v` of `group`: status, approval description,
/// metadata, model data URL, image and the model-quality statistics' S3 URI.
struct Described {
    status: Option<ModelApprovalStatus>,
    approval: Option<String>,
    metadata: HashMap<String, String>,
    data_url: String,
    image: String,
    statistics: String,
}

async fn described(sm: &aws_sdk_sagemaker::Client, group: &str, v: u64) -> Described {
    let list = sm
        .list_model_packages()
        .model_package_group_name(group)
        .send()
        .await
        .unwrap();
    let arn = list
        .model_package_summary_list()
        .iter()
        .find(|s| s.model_package_version() == Some(v as i32))
        .and_then(|s| s.model_package_arn())
        .unwrap_or_else(|| panic!("no package {v} in {group}"))
        .to_owned();
    let d = sm
        .describe_model_package()
        .model_package_name(arn)
        .send()
        .await
        .unwrap();
    let container = &d.inference_specification().unwrap().containers()[0];
    Described {
        status: d.model_approval_status().cloned(),
        approval: d.approval_description().map(str::to_owned),
        metadata: d
            .customer_metadata_properties()
            .cloned()
            .unwrap_or_default(),
        data_url: container.model_data_url().unwrap_or_default().to_owned(),
        image: container.image().unwrap_or_default().to_owned(),
        statistics: d
            .model_metrics()
            .and_then(|m| m.model_quality())
            .and_then(|q| q.statistics())
            .and_then(|s| s.s3_uri())
            .unwrap_or_default()
            .to_owned(),
    }
}

#[tokio::test]
async fn the_gate_approves_a_package_and_leaves_the_worse_one_pending() {
    let Some(endpoint) = bikeshare_testkit::emulators::moto_endpoint(
        "the_gate_approves_a_package_and_leaves_the_worse_one_pending",
    ) else {
        return;
    };
    let sdk = emulator_sdk_config(&endpoint).await;
    let group = support::unique_name("stockout");
    let bucket_name = support::unique_name("registry");
    bucket(&sdk, &bucket_name).await;
    let clock = Arc::new(ManualClock::new(Timestamp(1_790_100_000_000)));
    let sm = aws_sdk_sagemaker::Client::new(&sdk);
    let reg: Arc<dyn Registry> = Arc::new(
        SageMakerRegistry::new(
            &sdk,
            "stockout",
            settings(&group, &bucket_name),
            clock.clone(),
        )
        .unwrap(),
    );
    assert!(reg.current(Stage::Production).await.unwrap().is_none());
    assert!(reg.current(Stage::Staging).await.unwrap().is_none());
    assert!(reg.list().await.unwrap().is_empty());
    assert!(reg.decisions().await.unwrap().is_empty());

    // Two versions: one stump per target on the signal, right way round and reversed.
    let schema = Processor::new(ProcessorConfig::default()).schema().clone();
    let signal = schema.len() - 1;
    let n = schema.len();
    let id = schema.id().0.to_string();
    let tmp = tempfile::tempdir().unwrap();
    let stump = |t: f32, l: f32, r: f32| support::stumps_model(n, &[(signal, t, l, r)]);
    let (good, bad) = (tmp.path().join("good"), tmp.path().join("bad"));
    support::write_model_dir(
        &good,
        &id,
        &stump(0.8, -2.0, 2.0),
        &stump(0.15, 2.0, -2.0),
        "good",
    );
    support::write_model_dir(
        &bad,
        &id,
        &stump(0.8, 2.0, -2.0),
        &stump(0.15, -2.0, 2.0),
        "bad",
    );
    let v1 = reg.register(&good).await.unwrap();
    clock.advance_millis(1_000);
    let v2 = reg.register(&bad).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v1.model, "stockout");
    assert_eq!(v1.feature_schema_id.as_deref(), Some(id.as_str()));
    assert_eq!(v1.files, ["card.json", "empty.json", "full.json"]);
    assert_eq!(v2.card["description"], "bad");
    assert_eq!(v1.registered_at, Timestamp(1_790_100_000_000));
    assert!(v1.stages.is_empty() && v2.stages.is_empty());

    // What SageMaker holds: pending packages naming the image, the archive and the card.
    let p1 = described(&sm, &group, 1).await;
    assert_eq!(p1.status, Some(ModelApprovalStatus::PendingManualApproval));
    assert_eq!(p1.image, IMAGE);
    assert_eq!(p1.data_url, v1.source);
    let artifact = p1
        .data_url
        .strip_prefix(&format!("s3://{bucket_name}/models/"))
        .and_then(|r| r.strip_suffix("/model.tar.gz"))
        .unwrap_or_else(|| panic!("{}", p1.data_url));
    assert!(
        !artifact.contains('/'),
        "{artifact}: the serving stack's ModelVersion"
    );
    assert_eq!(
        p1.statistics,
        format!("s3://{bucket_name}/models/{artifact}/card.json")
    );
    assert_eq!(p1.metadata["bikeshare.feature_schema_id"], id);
    assert_eq!(p1.metadata["metric.empty.test.log_loss"], "0.2");
    assert_ne!(described(&sm, &group, 2).await.data_url, p1.data_url);

    // The gate: v1 to staging, then production against the baseline; v2 refused against v1.
    let data = support::heldout(&schema, signal);
    let gate = Gate {
        registry: reg.clone(),
        schema: schema.clone(),
        horizon_minutes: 30,
        config: GateConfig::default(),
        cache: tmp.path().join("cache"),
        clock: clock.clone(),
    };
    let staged = gate.evaluate(1, Stage::Staging, Some(&data)).await.unwrap();
    assert!(staged.promoted, "{}", staged.summary);
    clock.advance_millis(1_000);
    let promoted = gate
        .evaluate(1, Stage::Production, Some(&data))
        .await
        .unwrap();
    assert!(promoted.promoted, "{}", promoted.summary);
    clock.advance_millis(1_000);
    let refused = gate
        .evaluate(2, Stage::Production, Some(&data))
        .await
        .unwrap();
    assert!(!refused.promoted, "{}", refused.summary);

    let p1 = described(&sm, &group, 1).await;
    assert_eq!(p1.status, Some(ModelApprovalStatus::Approved));
    let approval = p1.approval.unwrap_or_default();
    assert!(
        approval.contains("v1 promoted to production against baseline-netflow"),
        "{approval}"
    );
    let p2 = described(&sm, &group, 2).await;
    assert_eq!(
        p2.status,
        Some(ModelApprovalStatus::PendingManualApproval),
        "a refused candidate stays pending"
    );
    assert!(
        p2.metadata["bikeshare.decision.production"].contains("v2 refused for production"),
        "{:?}",
        p2.metadata
    );
    let production = reg.current(Stage::Production).await.unwrap().unwrap();
    assert_eq!(production.version, 1);
    assert_eq!(production.stages, [Stage::Staging, Stage::Production]);
    assert_eq!(
        reg.current(Stage::Staging).await.unwrap().unwrap().version,
        1
    );
    let log = reg.decisions().await.unwrap();
    assert_eq!(log, [staged, promoted, refused.clone()]);

    // The files come back bit for bit, and load as the processor's scorer.
    let out = tmp.path().join("out");
    reg.download(1, &out).await.unwrap();
    for f in ["card.json", "empty.json", "full.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(good.join(f)).unwrap(),
            "{f}"
        );
    }
    let cache = tmp.path().join("load-cache");
    let scorer = registry::load_version(reg.as_ref(), &production, &cache, &schema)
        .await
        .unwrap();
    assert_eq!(
        (
            scorer.model().name.as_str(),
            scorer.model().version.as_str()
        ),
        ("stockout", "1"),
        "predictions name the registry's model and version"
    );
    let fetched = registry::fetch(reg.as_ref(), 2, &cache).await.unwrap();
    assert_eq!(
        std::fs::read(fetched.join("empty.json")).unwrap(),
        std::fs::read(bad.join("empty.json")).unwrap()
    );

    // Moving production: v2 approved, v1 rejected saying by what; one approved package.
    clock.advance_millis(1_000);
    reg.set_stage(2, Stage::Production).await.unwrap();
    let (p1, p2) = (
        described(&sm, &group, 1).await,
        described(&sm, &group, 2).await,
    );
    assert_eq!(p2.status, Some(ModelApprovalStatus::Approved));
    assert_eq!(p1.status, Some(ModelApprovalStatus::Rejected));
    assert!(
        p1.approval
            .unwrap_or_default()
            .contains("left production: version 2"),
        "the rejection says why"
    );
    let listed = reg.list().await.unwrap();
    assert_eq!(listed[0].stages, [Stage::Staging], "v1 left production");
    assert_eq!(listed[1].stages, [Stage::Production]);
    // The processor's watcher follows: it loads v2 from the registry.
    let watcher = ProductionWatcher {
        registry: reg.clone(),
        schema: schema.clone(),
        cache: tmp.path().join("watcher-cache"),
        interval: std::time::Duration::from_secs(1),
    };
    let (followed, scorer) = watcher.load_current().await.unwrap().unwrap();
    assert_eq!(
        (followed.version, scorer.model().version.as_str()),
        (2, "2")
    );
    // A new instance reads the same state from SageMaker and S3, here through the registry's
    // own endpoint setting (the shared configuration points nowhere).
    let elsewhere = emulator_sdk_config("http://127.0.0.1:9").await;
    let again = SageMakerRegistry::new(
        &elsewhere,
        "stockout",
        SageMakerSettings {
            endpoint_url: Some(endpoint.clone()),
            ..settings(&group, &bucket_name)
        },
        clock,
    )
    .unwrap();
    assert_eq!(support::production_version(&again).await, 2);
    assert_eq!(again.decisions().await.unwrap().len(), 3);

    // Errors say what is wrong and leave the stages alone.
    assert!(matches!(
        reg.get(99).await,
        Err(RegistryError::NoSuchVersion { version: 99, .. })
    ));
    assert!(reg.set_stage(99, Stage::Production).await.is_err());
    assert_eq!(support::production_version(reg.as_ref()).await, 2);
    let no_card = tmp.path().join("no-card");
    std::fs::create_dir_all(&no_card).unwrap();
    std::fs::write(no_card.join("empty.json"), "{}").unwrap();
    let err = reg.register(&no_card).await.unwrap_err();
    assert!(matches!(err, RegistryError::InvalidModel { .. }), "{err}");
    assert_eq!(
        reg.list().await.unwrap().len(),
        2,
        "nothing half-registered"
    );
}

#[tokio::test]
async fn a_missing_group_no_credentials_and_no_service_are_typed_errors() {
    let Some(endpoint) = bikeshare_testkit::emulators::moto_endpoint(
        "a_missing_group_no_credentials_and_no_service_are_typed_errors",
    ) else {
        return;
    };
    let sdk = emulator_sdk_config(&endpoint).await;
    let clock = Arc::new(ManualClock::new(Timestamp(1_790_100_000_000)));
    let group = support::unique_name("missing");
    let bucket_name = support::unique_name("registry");
    bucket(&sdk, &bucket_name).await;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let s = support::stumps_model(3, &[(0, 1.0, 1.0, -1.0)]);
    support::write_model_dir(&model, "fs1-x", &s, &s, "x");
    let registry_over = |sdk: &bikeshare_runtime::aws::SdkConfig| {
        SageMakerRegistry::new(
            sdk,
            "stockout",
            settings(&group, &bucket_name),
            clock.clone(),
        )
        .unwrap()
    };
    // The SDK's error code and HTTP status of a registry error.
    let code_and_status = |err: &RegistryError| {
        let RegistryError::SageMaker { code, status, .. } = err else {
            panic!("{err:?}")
        };
        (code.clone(), *status)
    };

    // The group is the stack's: without create_group, a missing one is the user's to fix.
    let strict = SageMakerSettings {
        create_group: false,
        ..settings(&group, &bucket_name)
    };
    let reg = SageMakerRegistry::new(&sdk, "stockout", strict, clock.clone()).unwrap();
    for err in [
        reg.list().await.unwrap_err(),
        reg.register(&model).await.unwrap_err(),
    ] {
        let RegistryError::SageMaker {
            operation, code, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(operation, "DescribeModelPackageGroup");
        assert_eq!(code.as_deref(), Some("ValidationException"), "{err}");
        assert!(err.to_string().contains(&group), "{err}");
        assert!(err.to_string().contains("create_group"), "{err}");
        assert_eq!((err.class(), err.retryable()), (ErrorClass::User, false));
    }

    // No credentials: the request cannot be signed, nothing is sent.
    let anonymous = config_loader(&ClientSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.clone()),
        timeouts: Timeouts::default(),
    })
    .no_credentials()
    .load()
    .await;
    let err = registry_over(&anonymous).list().await.unwrap_err();
    assert_eq!(
        code_and_status(&err),
        (Some("NoCredentials".into()), None),
        "{err}"
    );
    assert!(err.to_string().contains("credentials"), "{err}");
    assert_eq!((err.class(), err.retryable()), (ErrorClass::User, false));

    // Nothing listening: external and worth retrying, within the timeouts.
    let nowhere = bikeshare_runtime::aws::emulator_loader(
        "http://127.0.0.1:9",
        Timeouts {
            connect_timeout_ms: 500,
            attempt_timeout_ms: 1_000,
            operation_timeout_ms: 3_000,
        },
    )
    .load()
    .await;
    let err = registry_over(&nowhere)
        .current(Stage::Production)
        .await
        .unwrap_err();
    assert_eq!(
        code_and_status(&err),
        (Some("Unreachable".into()), None),
        "{err}"
    );
    assert_eq!(
        (err.class(), err.retryable()),
        (ErrorClass::External, true),
        "{err}"
    );

    // Configuration mistakes are refused before any call.
    let err = SageMakerRegistry::new(
        &sdk,
        "stockout",
        settings("bad_name", &bucket_name),
        clock.clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad_name"), "{err}");
    let err =
        SageMakerRegistry::new(&sdk, "stockout", settings(&group, ""), clock.clone()).unwrap_err();
    assert!(err.to_string().contains("bucket"), "{err}");
    let no_image = SageMakerSettings {
        image: String::new(),
        ..settings(&group, &bucket_name)
    };
    let err = SageMakerRegistry::new(&sdk, "stockout", no_image, clock)
        .unwrap()
        .register(&model)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("image"), "{err}");
    assert_eq!(err.class(), ErrorClass::User);
}
