//! A native evaluator of XGBoost JSON models.
//!
//! XGBoost's JSON model (`save_model("m.json")`, format of 1.x to 3.x) is a list of trees in
//! flat arrays. Prediction, as XGBoost computes it on the CPU:
//!
//! - the margin starts at the base score, which the model stores as a *probability* for
//!   `binary:logistic` (`"5E-1"` in 1.x, `"[4.0892E-1]"` in 3.x): margin = −ln(1/p − 1), in f32;
//! - each tree adds the value of the leaf the row reaches, tree by tree, in f32;
//! - at an inner node a missing value (NaN) follows `default_left`; otherwise
//!   `x < split_condition` goes left;
//! - a leaf's value is `split_conditions[leaf]`;
//! - the probability is `1 / (1 + exp(−margin))` in f32.
//!
//! Anything else (categorical splits, multi-class, `dart`, other objectives, vector leaves) is
//! refused when the model is loaded, with an error that says what.
//!
//! Nodes of all trees live in one array of 12-byte nodes, laid out breadth first so that a
//! split's children are adjacent and a leaf loops on itself. A row walks eight trees at a
//! time, without a branch per split (see [`Node::next`]): the walks overlap in the CPU
//! instead of waiting on each other and on mispredicted branches.

use serde::Deserialize;
use serde_json::Value;

/// Why a model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not an XGBoost JSON model: {0}")]
    Format(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("malformed tree {tree}: {message}")]
    Tree { tree: usize, message: String },
}

impl bikeshare_types::error::Classify for ModelError {
    fn class(&self) -> bikeshare_types::error::ErrorClass {
        bikeshare_types::error::ErrorClass::User
    }
    fn retryable(&self) -> bool {
        false
    }
}

const DEFAULT_LEFT: u32 = 1 << 31;
/// The widest row a model may read (features, plus the padding slot).
const MAX_FEATURES: u32 = 1 << 20;
/// Trees walked together by one row: their walks are independent, so the CPU overlaps them.
const LANES: usize = 8;

/// One node, 12 bytes. Children are adjacent (`left`, `left + 1`), so the step to the next
/// node is arithmetic, not a branch. A leaf loops on itself: it reads the padding slot of
/// the row (always 0.0) against +inf and "goes left" to its own index, so a walk can take
/// more steps than the tree is deep and still end on the right leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    /// Feature index into the padded row, with [`DEFAULT_LEFT`] set when missing values go
    /// left.
    feature: u32,
    /// Split condition (+inf at a leaf).
    threshold: f32,
    /// Index of the left child (the right one is next to it); a leaf's own index.
    left: u32,
}

impl Node {
    /// The next node for `row` (NaN = missing): `x < threshold` goes left, a missing value
    /// follows `default_left`. Written without branches: a split's direction is random from
    /// the CPU's point of view, and a mispredicted branch costs more than the whole step.
    #[inline(always)]
    fn next(self, row: &[f32]) -> usize {
        let x = row[(self.feature & !DEFAULT_LEFT) as usize];
        let default_left = self.feature & DEFAULT_LEFT != 0;
        let left = (x < self.threshold) | (x.is_nan() & default_left);
        self.left as usize + usize::from(!left)
    }
}

/// A loaded binary-logistic tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct XgbModel {
    nodes: Vec<Node>,
    /// Leaf values by node index (0 at inner nodes).
    leaf_values: Vec<f32>,
    roots: Vec<u32>,
    /// Depth of the deepest tree of each group of [`LANES`] trees.
    group_depths: Vec<u32>,
    /// Length of a padded row: every feature a split reads, then the padding slot (0.0).
    width: usize,
    base_margin: f32,
    num_feature: usize,
    feature_names: Vec<String>,
}

#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f32>,
    default_left: Vec<Value>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    categories: Vec<Value>,
    #[serde(default)]
    tree_param: Option<Value>,
}

fn num_str(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim()
            .parse()
            .ok(),
        Value::Number(n) => n.as_f64(),
        Value::Array(a) if a.len() == 1 => num_str(&a[0]),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

impl XgbModel {
    /// Loads a model from XGBoost's JSON, refusing what this evaluator does not implement.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Format(e.to_string()))?;
        let learner = doc
            .get("learner")
            .ok_or_else(|| ModelError::Format("no `learner`".into()))?;
        let objective = learner
            .pointer("/objective/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if objective != "binary:logistic" {
            return Err(ModelError::Unsupported(format!(
                "objective {objective:?} (only binary:logistic)"
            )));
        }
        let params = learner
            .get("learner_model_param")
            .ok_or_else(|| ModelError::Format("no learner_model_param".into()))?;
        let num_class = params.get("num_class").and_then(num_str).unwrap_or(0.0);
        if num_class > 1.0 {
            return Err(ModelError::Unsupported(format!(
                "{num_class} classes (only binary)"
            )));
        }
        if params.get("num_target").and_then(num_str).unwrap_or(1.0) > 1.0 {
            return Err(ModelError::Unsupported("multiple targets".into()));
        }
        let base_score = params
            .get("base_score")
            .and_then(num_str)
            .ok_or_else(|| ModelError::Format("no base_score".into()))?
            as f32;
        if !(base_score > 0.0 && base_score < 1.0) {
            return Err(ModelError::Unsupported(format!(
                "base_score {base_score} is not a probability"
            )));
        }
        let base_margin = -(1.0f32 / base_score - 1.0).ln();
        let num_feature = params.get("num_feature").and_then(num_str).unwrap_or(0.0);
        // Every row is padded to this width: a model file must not make that absurd.
        if !(0.0..=f64::from(MAX_FEATURES)).contains(&num_feature) {
            return Err(ModelError::Format(format!(
                "num_feature {num_feature} (at most {MAX_FEATURES})"
            )));
        }
        let num_feature = num_feature as usize;
        let booster = learner
            .get("gradient_booster")
            .ok_or_else(|| ModelError::Format("no gradient_booster".into()))?;
        let name = booster.get("name").and_then(Value::as_str).unwrap_or("");
        if name != "gbtree" {
            return Err(ModelError::Unsupported(format!(
                "booster {name:?} (only gbtree; not dart or gblinear)"
            )));
        }
        let model = booster
            .get("model")
            .ok_or_else(|| ModelError::Format("no gradient_booster.model".into()))?;
        if let Some(info) = model.get("tree_info").and_then(Value::as_array)
            && info.iter().any(|g| g.as_i64() != Some(0))
        {
            return Err(ModelError::Unsupported(
                "trees for several output groups".into(),
            ));
        }
        let trees: Vec<Tree> =
            serde_json::from_value(model.get("trees").cloned().unwrap_or(Value::Null))
                .map_err(|e| ModelError::Format(format!("trees: {e}")))?;
        let feature_names = learner
            .get("feature_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();

        // Check every tree first, so the padding slot can be placed after the last feature.
        let mut max_feature = 0usize;
        for (ti, t) in trees.iter().enumerate() {
            let err = |message: String| ModelError::Tree { tree: ti, message };
            let n = t.left_children.len();
            if n == 0
                || [
                    t.right_children.len(),
                    t.split_indices.len(),
                    t.split_conditions.len(),
                    t.default_left.len(),
                ]
                .iter()
                .any(|&l| l != n)
            {
                return Err(err("arrays of different lengths".into()));
            }
            if t.split_type.iter().any(|&s| s != 0) || !t.categories.is_empty() {
                return Err(ModelError::Unsupported(format!(
                    "categorical splits in tree {ti}"
                )));
            }
            if let Some(size) = t
                .tree_param
                .as_ref()
                .and_then(|p| p.get("size_leaf_vector"))
                .and_then(num_str)
                && size > 1.0
            {
                return Err(ModelError::Unsupported(format!(
                    "vector leaves in tree {ti}"
                )));
            }
            for i in 0..n {
                let (l, r) = (t.left_children[i], t.right_children[i]);
                if l == -1 {
                    continue;
                }
                // Children point forward in XGBoost's layout: every path ends at a leaf.
                let forward = |c: i64| usize::try_from(c).is_ok_and(|c| c < n && c > i);
                if !forward(l) || !forward(r) || l == r {
                    return Err(err(format!("node {i} has children {l}, {r}: not a tree")));
                }
                let f = usize::try_from(t.split_indices[i])
                    .ok()
                    .filter(|&f| f < MAX_FEATURES as usize && (num_feature == 0 || f < num_feature))
                    .ok_or_else(|| {
                        err(format!("node {i} splits on feature {}", t.split_indices[i]))
                    })?;
                max_feature = max_feature.max(f);
            }
        }
        let pad = if num_feature > 0 {
            num_feature
        } else {
            max_feature + 1
        };

        // Node 0: a leaf of value 0 that lanes without a tree (in the last group) sit on.
        let mut nodes = vec![Node {
            feature: pad as u32,
            threshold: f32::INFINITY,
            left: 0,
        }];
        let mut leaf_values = vec![0.0];
        let mut roots = Vec::with_capacity(trees.len());
        let mut depths = Vec::with_capacity(trees.len());
        for (ti, t) in trees.iter().enumerate() {
            let err = |message: String| ModelError::Tree { tree: ti, message };
            // Breadth first from XGBoost's node 0, giving each split's children two
            // adjacent slots.
            let root = u32::try_from(nodes.len()).map_err(|_| err("too many nodes".into()))?;
            roots.push(root);
            let mut queue = std::collections::VecDeque::from([(0usize, root, 0u32)]);
            let mut seen = vec![false; t.left_children.len()];
            let mut depth = 0;
            nodes.push(Node {
                feature: 0,
                threshold: 0.0,
                left: 0,
            });
            leaf_values.push(0.0);
            while let Some((old, new, level)) = queue.pop_front() {
                if std::mem::replace(&mut seen[old], true) {
                    return Err(err(format!("node {old} is reached twice: not a tree")));
                }
                depth = depth.max(level);
                let (l, r) = (t.left_children[old], t.right_children[old]);
                let slot = new as usize;
                if l == -1 {
                    nodes[slot] = Node {
                        feature: pad as u32,
                        threshold: f32::INFINITY,
                        left: new,
                    };
                    leaf_values[slot] = t.split_conditions[old];
                    continue;
                }
                let left = u32::try_from(nodes.len()).map_err(|_| err("too many nodes".into()))?;
                let default_left = if truthy(&t.default_left[old]) {
                    DEFAULT_LEFT
                } else {
                    0
                };
                // Checked above: a feature index below `pad`, children forward and distinct.
                nodes[slot] = Node {
                    feature: t.split_indices[old] as u32 | default_left,
                    threshold: t.split_conditions[old],
                    left,
                };
                for _ in 0..2 {
                    nodes.push(Node {
                        feature: 0,
                        threshold: 0.0,
                        left: 0,
                    });
                    leaf_values.push(0.0);
                }
                queue.push_back((l as usize, left, level + 1));
                queue.push_back((r as usize, left + 1, level + 1));
            }
            depths.push(depth);
        }
        let group_depths = depths
            .chunks(LANES)
            .map(|g| g.iter().copied().max().unwrap_or(0))
            .collect();
        Ok(Self {
            nodes,
            leaf_values,
            roots,
            group_depths,
            width: pad + 1,
            base_margin,
            num_feature,
            feature_names,
        })
    }

    pub fn num_trees(&self) -> usize {
        self.roots.len()
    }
    /// Features the model was trained with (0 if it does not say).
    pub fn num_feature(&self) -> usize {
        self.num_feature
    }
    /// Feature names stored in the model, if any.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The raw margin for one row (NaN = missing). Features beyond the row are missing.
    pub fn margin(&self, row: &[f32]) -> f32 {
        let mut padded = Vec::new();
        self.pad(row, &mut padded);
        self.margin_padded(&padded)
    }

    /// The probability for one row.
    pub fn predict(&self, row: &[f32]) -> f32 {
        sigmoid(self.margin(row))
    }

    /// Probabilities for consecutive rows of `cols` values each, appended to `out`; the
    /// same numbers as [`Self::predict`] row by row, without its allocation per row.
    pub fn predict_rows(&self, values: &[f32], cols: usize, out: &mut Vec<f32>) {
        if cols == 0 {
            return;
        }
        let mut padded = Vec::with_capacity(self.width);
        out.extend(values.chunks_exact(cols).map(|row| {
            self.pad(row, &mut padded);
            sigmoid(self.margin_padded(&padded))
        }));
    }

    /// The same model with every split sending a missing value left (what a model trained
    /// with missing values below every value does; see
    /// `training::MISSING_IN_EXTERNAL_MEMORY`).
    pub fn with_missing_left(mut self) -> Self {
        for n in &mut self.nodes {
            n.feature |= DEFAULT_LEFT;
        }
        self
    }

    /// The margin every row starts from (the base score as a margin, in f32).
    pub fn base_margin(&self) -> f32 {
        self.base_margin
    }

    /// Adds, to each `margins[k]`, the leaf values of the trees for row `k` of `values`
    /// (consecutive rows of `cols` values), tree by tree in f32: the model's trees appended
    /// to margins kept from earlier trees, in the order XGBoost adds them. Starting from
    /// [`Self::base_margin`] and adding a model's trees one model at a time gives the margins
    /// of all of them together, to the bit (training validates this way, a tree per round).
    pub fn add_margins(&self, values: &[f32], cols: usize, margins: &mut [f32]) {
        if cols == 0 {
            return;
        }
        if cols + 1 == self.width {
            // The rows hold every feature the model reads: walked in place, each tree until
            // its leaf (a leaf is the node that loops on itself; no split reads the padding
            // slot), without copying the row.
            for (row, m) in values.chunks_exact(cols).zip(margins.iter_mut()) {
                let mut sum = *m;
                for &r in &self.roots {
                    let mut k = r as usize;
                    loop {
                        let node = self.nodes[k];
                        if node.left as usize == k {
                            break;
                        }
                        k = node.next(row);
                    }
                    sum += self.leaf_values[k];
                }
                *m = sum;
            }
            return;
        }
        let mut padded = Vec::with_capacity(self.width);
        for (row, m) in values.chunks_exact(cols).zip(margins.iter_mut()) {
            self.pad(row, &mut padded);
            *m = self.sum_from(*m, &padded);
        }
    }

    /// `row` into `padded`: missing features NaN, the padding slot 0.0.
    fn pad(&self, row: &[f32], padded: &mut Vec<f32>) {
        let n = self.width - 1;
        padded.clear();
        padded.extend_from_slice(&row[..row.len().min(n)]);
        padded.resize(n, f32::NAN);
        padded.push(0.0);
    }

    /// Walks the trees [`LANES`] at a time, then adds their leaves tree by tree in f32, in
    /// XGBoost's order, so the sum is bit-identical to its own.
    fn margin_padded(&self, row: &[f32]) -> f32 {
        self.sum_from(self.base_margin, row)
    }

    /// `start` plus the trees' leaves for the padded `row`, tree by tree in f32.
    fn sum_from(&self, start: f32, row: &[f32]) -> f32 {
        let mut sum = start;
        for (roots, &depth) in self.roots.chunks(LANES).zip(&self.group_depths) {
            let mut at = [0usize; LANES];
            for (a, &r) in at.iter_mut().zip(roots) {
                *a = r as usize;
            }
            for _ in 0..depth {
                for a in &mut at {
                    *a = self.nodes[*a].next(row);
                }
            }
            for &a in &at[..roots.len()] {
                sum += self.leaf_values[a];
            }
        }
        sum
    }
}

/// XGBoost's logistic transformation, in f32.
pub fn sigmoid(margin: f32) -> f32 {
    1.0f32 / (1.0f32 + (-margin).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stumps and one depth-2 tree over 3 features, in XGBoost 1.6's JSON layout.
    pub(crate) fn model_json(base_score: &str, default_left_as_bool: bool) -> String {
        let dl = |v: &[u8]| -> String {
            let items: Vec<String> = v
                .iter()
                .map(|&b| {
                    if default_left_as_bool {
                        (b == 1).to_string()
                    } else {
                        b.to_string()
                    }
                })
                .collect();
            format!("[{}]", items.join(","))
        };
        format!(
            r#"{{"learner":{{"attributes":{{}},"feature_names":["a","b","c"],"feature_types":[],
            "gradient_booster":{{"model":{{"gbtree_model_param":{{"num_trees":"3"}},
              "tree_info":[0,0,0],
              "trees":[
                {{"id":0,"left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[0,0,0],
                  "split_conditions":[0.5,-0.25,0.75],"default_left":{d0},"split_type":[0,0,0],"categories":[],
                  "tree_param":{{"num_nodes":"3","size_leaf_vector":"0"}}}},
                {{"id":1,"left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[1,0,0],
                  "split_conditions":[10.0,0.125,-0.5],"default_left":{d1},"split_type":[0,0,0],"categories":[]}},
                {{"id":2,"left_children":[1,3,-1,-1,-1],"right_children":[2,4,-1,-1,-1],"split_indices":[2,0,0,0,0],
                  "split_conditions":[1.0,2.0,0.3,-0.1,0.2],"default_left":{d2},"split_type":[0,0,0,0,0],"categories":[]}}
              ]}},"name":"gbtree"}},
            "learner_model_param":{{"base_score":"{base_score}","num_class":"0","num_feature":"3"}},
            "objective":{{"name":"binary:logistic","reg_loss_param":{{"scale_pos_weight":"1"}}}}}},
            "version":[1,6,2]}}"#,
            d0 = dl(&[1, 0, 0]),
            d1 = dl(&[0, 0, 0]),
            d2 = dl(&[0, 1, 0, 0, 0]),
        )
    }

    fn by_hand(row: [f32; 3]) -> f32 {
        let [a, b, c] = row;
        let t0 = if a.is_nan() || a < 0.5 { -0.25 } else { 0.75 };
        let t1 = if !b.is_nan() && b < 10.0 { 0.125 } else { -0.5 };
        let t2 = if !c.is_nan() && c < 1.0 {
            if a.is_nan() || a < 2.0 { -0.1 } else { 0.2 }
        } else {
            0.3
        };
        let mut m = -(1.0f32 / 0.5 - 1.0).ln();
        m += t0;
        m += t1;
        m += t2;
        m
    }

    #[test]
    fn margins_follow_splits_missing_values_and_ties() {
        let m = XgbModel::from_json(model_json("5E-1", false).as_bytes()).unwrap();
        assert_eq!(m.num_trees(), 3);
        assert_eq!(m.feature_names(), ["a", "b", "c"]);
        let rows = [
            [0.0, 0.0, 0.0],
            [0.5, 10.0, 1.0], // exact ties go right
            [f32::NAN, f32::NAN, f32::NAN],
            [3.0, 9.999, 0.999],
            [f32::NAN, 11.0, 0.5],
            [0.49999997, f32::NAN, 2.0],
        ];
        for r in rows {
            assert_eq!(m.margin(&r).to_bits(), by_hand(r).to_bits(), "{r:?}");
            assert_eq!(m.predict(&r), sigmoid(by_hand(r)));
        }
        // Features missing from a short row are missing values.
        assert_eq!(m.margin(&[0.0]), by_hand([0.0, f32::NAN, f32::NAN]));
        // Added to margins that start at the base margin, whole rows (walked in place) and
        // short rows (padded) give the margins to the bit.
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let mut whole = vec![m.base_margin(); rows.len()];
        m.add_margins(&flat, 3, &mut whole);
        let firsts: Vec<f32> = rows.iter().map(|r| r[0]).collect();
        let mut short = vec![m.base_margin(); rows.len()];
        m.add_margins(&firsts, 1, &mut short);
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(whole[k].to_bits(), by_hand(*r).to_bits(), "{r:?}");
            assert_eq!(short[k].to_bits(), m.margin(&r[..1]).to_bits(), "{r:?}");
        }
        // Told that missing values go left, a missing value goes where the lowest value does.
        let left = m.clone().with_missing_left();
        for r in rows {
            let lowest = r.map(|x| if x.is_nan() { f32::MIN } else { x });
            assert_eq!(
                left.margin(&r).to_bits(),
                m.margin(&lowest).to_bits(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn base_score_forms_of_1x_and_3x_and_boolean_default_left() {
        let a = XgbModel::from_json(model_json("5E-1", false).as_bytes()).unwrap();
        let b = XgbModel::from_json(model_json("[5E-1]", true).as_bytes()).unwrap();
        assert_eq!(a, b);
        let c = XgbModel::from_json(model_json("4.0892E-1", false).as_bytes()).unwrap();
        let expected = -(1.0f32 / 0.40892 - 1.0).ln() - 0.25 + 0.125 - 0.1;
        assert_eq!(c.margin(&[0.0, 0.0, 0.0]), expected);
    }

    #[test]
    fn unsupported_models_are_refused_with_a_reason() {
        let base = model_json("5E-1", false);
        let cases = [
            (
                base.replace("binary:logistic", "multi:softprob"),
                "objective",
            ),
            (
                base.replace(r#""num_class":"0""#, r#""num_class":"3""#),
                "objective",
            ),
            (
                base.replace(r#""name":"gbtree""#, r#""name":"dart""#),
                "dart",
            ),
            (
                base.replacen(r#""split_type":[0,0,0]"#, r#""split_type":[1,0,0]"#, 1),
                "categorical",
            ),
            (
                base.replace(r#""tree_info":[0,0,0]"#, r#""tree_info":[0,1,0]"#),
                "groups",
            ),
            (
                base.replace(r#""base_score":"5E-1""#, r#""base_score":"1.5""#),
                "probability",
            ),
        ];
        for (json, what) in cases {
            let err = XgbModel::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(what) || err.contains("unsupported"),
                "{what}: {err}"
            );
            assert!(
                matches!(
                    XgbModel::from_json(json.as_bytes()),
                    Err(ModelError::Unsupported(_))
                ),
                "{what}"
            );
        }
        let cyclic = base.replacen(
            r#""left_children":[1,-1,-1]"#,
            r#""left_children":[0,-1,-1]"#,
            1,
        );
        assert!(matches!(
            XgbModel::from_json(cyclic.as_bytes()),
            Err(ModelError::Tree { .. })
        ));
        let bad_feature = base.replacen(
            r#""split_indices":[0,0,0]"#,
            r#""split_indices":[7,0,0]"#,
            1,
        );
        assert!(matches!(
            XgbModel::from_json(bad_feature.as_bytes()),
            Err(ModelError::Tree { .. })
        ));
        assert!(matches!(
            XgbModel::from_json(b"{}"),
            Err(ModelError::Format(_))
        ));
        assert!(matches!(
            XgbModel::from_json(b"not json"),
            Err(ModelError::Format(_))
        ));
    }
}
