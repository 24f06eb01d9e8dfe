//! Deterministic, untrained XGBoost JSON models for tests and benchmarks: full binary trees
//! of a given depth with pseudo-random splits, default directions and leaf values, in
//! XGBoost 1.6's JSON layout (what `save_model("m.json")` writes), and model directories
//! (`card.json`, `empty.json`, `full.json`) around them.
//!
//! They exercise the evaluator and the serving path exactly like trained models do (same
//! format, same walk); they predict nothing useful.

use std::path::Path;

use bikeshare_types::contracts::FeatureSchemaId;
use bikeshare_types::xorshift::XorShift64;

use crate::model_dir::{CARD_FILE, EMPTY_FILE, FULL_FILE};

/// A binary-logistic model of `trees` full trees of `depth` over `num_feature` features.
/// Split thresholds are drawn in [0, 20) (the range of counts and minutes in our features),
/// leaf values in [-0.3, 0.3).
pub fn model_json(num_feature: usize, trees: usize, depth: u32, seed: u64) -> String {
    // The same seed gives the same model everywhere.
    let mut rng = XorShift64::from_seed(seed);
    let inner = (1usize << depth) - 1;
    let nodes = (1usize << (depth + 1)) - 1;
    let mut out = Vec::with_capacity(trees);
    for id in 0..trees {
        let (mut left, mut right, mut index, mut cond, mut dl) =
            (vec![], vec![], vec![], vec![], vec![]);
        for i in 0..nodes {
            if i < inner {
                left.push((2 * i + 1) as i64);
                right.push((2 * i + 2) as i64);
                index.push((rng.next_u64() % num_feature.max(1) as u64) as i64);
                // Whole numbers make exact ties with integer features common.
                let c = rng.unit_f32() * 20.0;
                cond.push(if rng.next_u64().is_multiple_of(2) {
                    c.floor()
                } else {
                    c
                });
                dl.push(rng.next_u64() % 2);
            } else {
                left.push(-1);
                right.push(-1);
                index.push(0);
                cond.push(rng.unit_f32() * 0.6 - 0.3);
                dl.push(0);
            }
        }
        out.push(serde_json::json!({
            "id": id,
            "left_children": left,
            "right_children": right,
            "split_indices": index,
            "split_conditions": cond,
            "default_left": dl,
            "split_type": vec![0; nodes],
            "categories": [],
            "tree_param": {"num_nodes": nodes.to_string(), "size_leaf_vector": "0"},
        }));
    }
    serde_json::json!({
        "learner": {
            "attributes": {},
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {"num_trees": trees.to_string()},
                    "tree_info": vec![0; trees],
                    "trees": out,
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": "2E-1",
                "num_class": "0",
                "num_feature": num_feature.to_string(),
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [1, 6, 2],
    })
    .to_string()
}

/// Writes a model directory: `card.json` (name, version, feature schema id), `empty.json`
/// and `full.json` (two different synthetic models).
pub fn write_model_dir(
    dir: &Path,
    name: &str,
    version: &str,
    schema_id: &FeatureSchemaId,
    num_feature: usize,
    trees: usize,
    depth: u32,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let card = serde_json::json!({
        "name": name,
        "version": version,
        "feature_schema_id": schema_id.as_str(),
        "synthetic": true,
    });
    std::fs::write(dir.join(CARD_FILE), card.to_string())?;
    std::fs::write(
        dir.join(EMPTY_FILE),
        model_json(num_feature, trees, depth, 1),
    )?;
    std::fs::write(
        dir.join(FULL_FILE),
        model_json(num_feature, trees, depth, 2),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xgboost::XgbModel;

    #[test]
    fn synthetic_models_load_and_depend_on_their_inputs() {
        let m = XgbModel::from_json(model_json(10, 20, 4, 7).as_bytes()).unwrap();
        assert_eq!(m.num_trees(), 20);
        assert_eq!(m.num_feature(), 10);
        let a = m.predict(&[0.0; 10]);
        let b = m.predict(&[15.0; 10]);
        let c = m.predict(&[f32::NAN; 10]);
        assert!(a != b || b != c, "{a} {b} {c}");
        assert_eq!(model_json(10, 20, 4, 7), model_json(10, 20, 4, 7));
        assert_ne!(model_json(10, 20, 4, 7), model_json(10, 20, 4, 8));
    }
}
