//! Shared by the models crate's integration tests: XGBoost JSON models written by hand (one
//! split per tree, in XGBoost 1.6's layout), model directories, and the MLflow endpoint.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bikeshare_models::registry::{ModelVersion, Registry, Stage};

/// A binary-logistic model of stumps: each `(feature, threshold, left, right)` is one tree
/// that adds `left` when `x[feature] < threshold` (or missing) and `right` otherwise.
pub fn stumps_model(num_feature: usize, stumps: &[(usize, f32, f32, f32)]) -> String {
    let trees: Vec<String> = stumps
        .iter()
        .enumerate()
        .map(|(i, (f, t, l, r))| {
            format!(
                r#"{{"id":{i},"left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[{f},0,0],
                "split_conditions":[{t:?},{l:?},{r:?}],"default_left":[1,0,0],"split_type":[0,0,0],"categories":[],
                "base_weights":[0,0,0],"loss_changes":[0,0,0],"parents":[2147483647,0,0],"sum_hessian":[0,0,0],
                "tree_param":{{"num_deleted":"0","num_feature":"{num_feature}","num_nodes":"3","size_leaf_vector":"0"}}}}"#
            )
        })
        .collect();
    let info = vec!["0"; stumps.len()].join(",");
    format!(
        r#"{{"learner":{{"attributes":{{}},"feature_names":[],"feature_types":[],
        "gradient_booster":{{"model":{{"gbtree_model_param":{{"num_parallel_tree":"1","num_trees":"{n}"}},
          "tree_info":[{info}],"trees":[{trees}]}},"name":"gbtree"}},
        "learner_model_param":{{"base_score":"5E-1","num_class":"0","num_feature":"{num_feature}","num_target":"1"}},
        "objective":{{"name":"binary:logistic","reg_loss_param":{{"scale_pos_weight":"1"}}}}}},
        "version":[1,6,2]}}"#,
        n = stumps.len(),
        trees = trees.join(","),
    )
}

/// Writes a model directory: `card.json` (with `feature_schema_id` and `metrics`),
/// `empty.json`, `full.json`.
pub fn write_model_dir(dir: &Path, schema_id: &str, empty: &str, full: &str, note: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let card = serde_json::json!({
        "name": "trained",
        "version": note,
        "feature_schema_id": schema_id,
        "description": note,
        "metrics": {"empty": {"test": {"log_loss": 0.2, "pr_auc": 0.6}}, "full": {"test": {"log_loss": 0.1, "pr_auc": 0.5}}},
        "params": {"eta": 0.1, "max_depth": 1, "note": note},
    });
    std::fs::write(
        dir.join("card.json"),
        serde_json::to_vec_pretty(&card).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("empty.json"), empty).unwrap();
    std::fs::write(dir.join("full.json"), full).unwrap();
}

/// Registers the model directory `dir` and puts the new version in production.
pub async fn register_in_production(registry: &dyn Registry, dir: &Path) -> ModelVersion {
    let v = registry.register(dir).await.unwrap();
    registry
        .set_stage(v.version, Stage::Production)
        .await
        .unwrap();
    v
}

/// The version production names (there must be one).
pub async fn production_version(registry: &dyn Registry) -> u64 {
    registry
        .current(Stage::Production)
        .await
        .unwrap()
        .expect("production names a version")
        .version
}

/// The MLflow server of the test command (`BIKESHARE_TEST_MLFLOW_URI`): skip when unset,
/// fail when unset under CI.
pub fn mlflow_uri(test: &str) -> Option<String> {
    const VAR: &str = "BIKESHARE_TEST_MLFLOW_URI";
    match std::env::var(VAR) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: {VAR} is not set in CI; run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: {VAR} is not set (run scripts/test.sh, or \
                 scripts/emulators.sh cargo test -p bikeshare-models)"
            );
            None
        }
    }
}

/// A model name no other test run uses on a shared server.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// 2,000 held-out rows: `x` (feature `signal`, which the baseline ignores) uniform in [0, 1)
/// drives both outcomes, 10% of labels flipped; everything the baseline reads is a steady
/// station with 5 bikes and 5 docks. A stump on `x` in the right direction beats the
/// baseline, the reversed one does not.
pub fn heldout(
    schema: &bikeshare_stream_processor::FeatureSchema,
    signal: usize,
) -> bikeshare_models::promote::HeldOut {
    let mut rng = bikeshare_types::xorshift::XorShift64::new(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.unit_f64();
    let mut h = bikeshare_models::promote::HeldOut::default();
    for i in 0..2000 {
        let x = next() as f32;
        let mut v = vec![None; schema.len()];
        for (name, value) in [
            ("bikes", 5.0),
            ("docks", 5.0),
            ("is_renting", 1.0),
            ("is_returning", 1.0),
        ] {
            v[schema.index(name).unwrap()] = Some(value);
        }
        v[signal] = Some(x);
        let flip = |b: bool, r: f64| if r < 0.1 { !b } else { b };
        h.values.push(v);
        h.as_of
            .push(bikeshare_types::Timestamp(1_790_000_000_000 + i * 60_000));
        h.went_empty.push(flip(x > 0.8, next()));
        h.went_full.push(flip(x < 0.15, next()));
        // Steady stations: none is empty or full at as_of, every row a new-stockout row.
        h.empty_now.push(false);
        h.full_now.push(false);
    }
    h
}
