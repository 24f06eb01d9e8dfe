//! Training the two binary models with XGBoost (`xgboost-rs`, XGBoost 1.6.2 built from
//! source), round by round with early stopping on the validation rows.
//!
//! The traps of `xgboost-rs` (../shared/TESTING.md) and what this module does about them:
//!
//! - `Booster::train` runs a fixed 16 rounds: the booster is created from its parameters and
//!   updated once per round ([`crate::external::RawBooster`]); after each round the new tree
//!   alone is added to the validation rows' margins by the native evaluator, whose log loss
//!   (XGBoost's `logloss`, the same numbers) decides early stopping: no validation matrix.
//! - `DMatrix::from_dense` treats 0.0 as missing: matrices are built from dense arrays with
//!   `NaN` as the missing value ([`TrainingMatrix`]).
//! - The training rows reach XGBoost a block at a time: in its memory while its copy stays
//!   under [`IN_MEMORY_MAX_BYTES`], else in external memory (cache files under `$TMPDIR`,
//!   removed after; missing values sent left, see [`MISSING_IN_EXTERNAL_MEMORY`]), so
//!   XGBoost's memory is bounded whatever the number of rows (decision 096).
//! - Parameters set from JSON are not checked: after the first round the configuration the
//!   booster reports back is compared with every parameter set.
//! - Models are saved as XGBoost JSON (never the legacy binary).
//! - `nthread` is always explicit.
//!
//! After early stopping the model keeps the trees up to the best round: the JSON's tree list
//! is cut there, loaded back into XGBoost, and its validation log loss checked against the
//! best one before it is accepted.
//!
//! [`train_models`] describes what it trained in a [`ModelCard`] (the `card.json` of the
//! model directory, which [`crate::model_dir`] writes and reads), and gives the drift
//! baseline of its training rows ([`TrainingData::drift_baseline`]) to be saved beside it.

use std::ops::Range;

use bikeshare_stream_processor::{FeatureSchema, Scorer as _, Scores};
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xgboost_rs::{Booster, DMatrix};

use crate::external::{RawBooster, RowBlocks, XgbMatrix};

use crate::calibration::{Calibrator, Isotonic};
use crate::dataset::{DataError, Split, SplitBoundaries, SplitConfig, Target, TrainingData};
use crate::eval::{Evaluation, compare_with_baselines};
use crate::scorer::XgbScorer;
use crate::xgboost::{ModelError, XgbModel};

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("XGBoost: {0}")]
    Xgboost(String),
    #[error("XGBoost did not take parameter {key}={wanted} (its configuration says {got})")]
    Parameter {
        key: String,
        wanted: String,
        got: String,
    },
    #[error("the trained model cannot be evaluated natively: {0}")]
    Model(#[from] ModelError),
    #[error("invalid parameters: {0}")]
    Params(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl bikeshare_types::error::Classify for TrainError {
    fn class(&self) -> bikeshare_types::error::ErrorClass {
        use bikeshare_types::error::ErrorClass;
        match self {
            Self::Data(e) => e.class(),
            Self::Params(_) => ErrorClass::User,
            _ => ErrorClass::Internal,
        }
    }
    fn retryable(&self) -> bool {
        false
    }
}

fn xgb(e: xgboost_rs::XGBError) -> TrainError {
    TrainError::Xgboost(e.to_string())
}

/// Booster parameters and the round budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainParams {
    /// Upper bound on boosting rounds (trees).
    pub max_rounds: u32,
    /// Stop when the validation log loss has not improved for this many rounds; 0 = never.
    pub early_stopping_rounds: u32,
    pub max_depth: u32,
    pub eta: f64,
    pub min_child_weight: f64,
    pub lambda: f64,
    pub subsample: f64,
    pub colsample_bytree: f64,
    /// Histogram bins per feature (`tree_method = hist`).
    pub max_bin: u32,
    /// XGBoost threads. Always explicit: OpenMP's default on busy cores is very slow.
    pub nthread: u32,
    pub seed: u64,
    /// Share of the **easy negatives** among the training rows to keep (1 keeps all): rows
    /// whose target did not happen and whose station was not in that state at `as_of`.
    /// Each kept one weighs `1 / easy_negative_keep`, so the weighted rate of the outcome,
    /// and the probabilities, stay those of all rows; XGBoost's copy of the training rows
    /// shrinks by about that share. Validation rows are never sampled. Rows a sampled load
    /// already weighted ([`crate::dataset::LoadSample`]) keep their weight times this one.
    pub easy_negative_keep: f64,
    /// Hyper-parameter search: train this many parameter sets (the first is these
    /// parameters, the others drawn from [`crate::search::SearchSpace`] with `seed`) and
    /// keep the best on the validation rows ([`crate::search`]). 0 or 1 trains these
    /// parameters only.
    pub search_trials: u32,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            max_rounds: 300,
            early_stopping_rounds: 20,
            max_depth: 6,
            eta: 0.1,
            min_child_weight: 1.0,
            lambda: 1.0,
            subsample: 1.0,
            colsample_bytree: 1.0,
            max_bin: 256,
            nthread: 2,
            seed: 0,
            easy_negative_keep: 1.0,
            search_trials: 0,
        }
    }
}

impl TrainParams {
    /// Whether the parameters are usable (a [`TrainError::Params`] says which is not).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Params(m.into()));
        if self.max_rounds == 0 {
            return bad("max_rounds must be at least 1");
        }
        if self.nthread == 0 {
            return bad("nthread must be at least 1 (explicit, never OpenMP's default)");
        }
        if !(self.eta > 0.0 && self.eta <= 1.0) {
            return bad("eta must be in (0, 1]");
        }
        let fraction = |x: f64| x > 0.0 && x <= 1.0;
        if !fraction(self.subsample) || !fraction(self.colsample_bytree) {
            return bad("subsample and colsample_bytree must be in (0, 1]");
        }
        if self.max_depth == 0 || self.max_depth > 16 {
            return bad("max_depth must be 1 to 16");
        }
        if !fraction(self.easy_negative_keep) {
            return bad("easy_negative_keep must be in (0, 1]");
        }
        if !(self.min_child_weight >= 0.0 && self.min_child_weight.is_finite()) {
            return bad("min_child_weight must be a finite number ≥ 0");
        }
        Ok(())
    }

    /// XGBoost's parameters, as strings.
    fn booster_config(&self, base_score: f64) -> Vec<(&'static str, String)> {
        vec![
            ("objective", "binary:logistic".into()),
            ("eval_metric", "logloss".into()),
            ("tree_method", "hist".into()),
            ("booster", "gbtree".into()),
            ("max_depth", self.max_depth.to_string()),
            ("eta", self.eta.to_string()),
            ("min_child_weight", self.min_child_weight.to_string()),
            ("lambda", self.lambda.to_string()),
            ("subsample", self.subsample.to_string()),
            ("colsample_bytree", self.colsample_bytree.to_string()),
            ("max_bin", self.max_bin.to_string()),
            ("nthread", self.nthread.to_string()),
            ("seed", self.seed.to_string()),
            ("base_score", format!("{base_score:.3}")),
            ("verbosity", "0".into()),
        ]
    }
}

/// Progress of one target's training, after each round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub target: Target,
    pub round: u32,
    pub max_rounds: u32,
    pub valid_log_loss: f64,
    pub best_round: u32,
    pub best_log_loss: f64,
    /// Set on the last call: training of this target stopped.
    pub done: bool,
}

/// One trained booster, as XGBoost JSON.
#[derive(Debug, Clone)]
pub struct TrainedBooster {
    pub json: Vec<u8>,
    /// Rounds run (before cutting back to the best).
    pub rounds: u32,
    /// Index of the best round: the model holds `best_round + 1` trees.
    pub best_round: u32,
    pub best_valid_log_loss: f64,
    pub base_score: f64,
    /// Training ran every allowed round without early stopping: the validation loss was
    /// still improving within the patience at the cap, so more rounds may help.
    pub hit_round_cap: bool,
}

/// A row-major, in-memory matrix of `rows` (NaN = missing) with 0/1 labels: what
/// `xgboost-rs` builds (XGBoost copies the rows, about 1.5 KB a row at 88 features).
/// Training does not use it ([`TrainingMatrix`] builds its own, in memory or external); the
/// evaluator benchmark predicts through it.
pub fn dmatrix(
    values: &[f32],
    num_features: usize,
    labels: &[f32],
    nthread: u32,
) -> Result<DMatrix, TrainError> {
    let rows = labels.len();
    if rows == 0 || num_features == 0 || values.len() != rows * num_features {
        return Err(TrainError::Internal(format!(
            "matrix of {} values for {rows} rows of {num_features} features",
            values.len()
        )));
    }
    let f = std::mem::size_of::<f32>();
    // Row-major strides; NaN (not 0.0) is the missing value.
    let mut m = DMatrix::from_col_major_f32(
        values,
        f * num_features,
        f,
        rows,
        num_features,
        i32::try_from(nthread).unwrap_or(1),
        f32::NAN,
    )
    .map_err(xgb)?;
    m.set_labels(labels).map_err(xgb)?;
    Ok(m)
}

/// Rows handed to XGBoost at a time: one page of its external-memory matrix (XGBoost
/// prefetches four pages; a page of 88 features is about 80 MB as CSR while the matrix is
/// built and 40 MB as histogram bins while it trains).
pub const BLOCK_ROWS: usize = 131_072;

/// About what XGBoost 1.6.2's in-memory matrix holds per value of the rows it is given: the
/// CSR copy (8 bytes: index and value) and the `hist` index (4 bytes a present value).
pub const XGBOOST_BYTES_PER_VALUE: u64 = 12;

/// Training rows whose in-memory XGBoost copy would take more than this
/// (rows × features × [`XGBOOST_BYTES_PER_VALUE`]) go to external memory: 3 GiB, about
/// three million rows of 88 features. Below it, re-reading every page from its cache file on
/// each of the ~20 passes a tree makes costs more time than the memory it saves (about 10×
/// a round, decision 096): Bluebikes' January–May training rows (1.98 M, sampled) train in
/// memory, the 20 M-row benchmark's 4.71 M in external memory.
pub const IN_MEMORY_MAX_BYTES: u64 = 3 << 30;

/// What a missing value becomes in the external-memory matrix: below every value, so it
/// goes left at every split (and every split of the trained model is then told so:
/// `default_left`, [`XgbModel::with_missing_left`]).
///
/// Why not `NaN`: XGBoost 1.6.2 writes each page's column index (`ColumnMatrix`) to its
/// cache file without its "missing" flags (`missing_flags_` is neither written nor read
/// back), so a page with a missing value, read back from the cache, crashes `hist` (an
/// out-of-bounds read, SIGSEGV) when it partitions rows on a dense column; storing such
/// columns sparse avoids the crash but makes the pages 13 bytes a value (4 of bin index, 1 of
/// column index, 8 of row index), which every one of a tree's ~20 passes re-reads: 19 s a
/// round for 588k rows. Without missing values the pages are dense, 1 byte of bin index and
/// 1 of column index a value. The price: the trees cannot learn where missing values go per
/// split (they go with the lowest values, and a split at the lowest cut isolates them);
/// decision 096 measures what that costs.
pub const MISSING_IN_EXTERNAL_MEMORY: f32 = f32::MIN;

/// Rows of a table, [`BLOCK_ROWS`] at a time, with the features `withheld` missing and
/// missing values written as `missing`.
struct TableBlocks<'a> {
    data: &'a TrainingData,
    rows: &'a [u32],
    withheld: &'a [usize],
    missing: f32,
    at: usize,
}

impl RowBlocks for TableBlocks<'_> {
    fn width(&self) -> usize {
        self.data.num_features()
    }
    fn reset(&mut self) {
        self.at = 0;
    }
    fn rows_hint(&self) -> usize {
        self.rows.len()
    }
    fn next_block(&mut self, out: &mut Vec<f32>) -> Result<bool, TrainError> {
        let end = (self.at + BLOCK_ROWS).min(self.rows.len());
        if self.at >= end {
            return Ok(false);
        }
        out.clear();
        for &i in &self.rows[self.at..end] {
            out.extend_from_slice(self.data.row(i as usize));
        }
        blank(out, self.data.num_features(), self.withheld);
        if !self.missing.is_nan() {
            for x in out.iter_mut().filter(|x| x.is_nan()) {
                *x = self.missing;
            }
        }
        self.at = end;
        Ok(true)
    }
}

/// The training rows of a training as XGBoost holds them: a matrix ([`crate::external`]; in
/// memory, or external memory with cache files under `$TMPDIR` removed with it) of rows of
/// the table, with the features withheld blanked and the rows' weights. Its labels are set per target
/// ([`TrainingMatrix::fit`]), so one matrix trains both targets unless the easy negatives
/// of one target were sampled for it (`easy_negative_keep` < 1).
pub struct TrainingMatrix {
    matrix: XgbMatrix,
    /// Row indices into the table, in matrix order.
    rows: Vec<u32>,
    /// Each row's weight, `None` when all are 1.
    weights: Option<Vec<f32>>,
    /// The target whose easy negatives were sampled (the matrix serves that one only).
    sampled_for: Option<Target>,
    /// The parameters that chose the rows: `easy_negative_keep` and `seed`.
    keep: f64,
    seed: u64,
}

impl std::fmt::Debug for TrainingMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingMatrix")
            .field("matrix", &self.matrix)
            .field("sampled_for", &self.sampled_for)
            .finish_non_exhaustive()
    }
}

impl TrainingMatrix {
    /// Rows `train` of `data` with the features `withheld` (indices) missing. With
    /// `params.easy_negative_keep` < 1 and a target to sample for, that target's easy
    /// negatives are sampled ([`TrainParams::easy_negative_keep`]) and weighted. XGBoost
    /// holds the rows in memory when its copy would take at most `in_memory_max_bytes`
    /// (see [`IN_MEMORY_MAX_BYTES`]), else in external memory, the cache files in a new
    /// directory under `cache_parent` (default `$TMPDIR`).
    pub fn build(
        data: &TrainingData,
        train: Range<usize>,
        params: &TrainParams,
        withheld: &[usize],
        sample_for: Option<Target>,
        cache_parent: Option<&std::path::Path>,
        in_memory_max_bytes: u64,
    ) -> Result<Self, TrainError> {
        params.validate()?;
        let keep = params.easy_negative_keep;
        let sampled_for = sample_for.filter(|_| keep < 1.0);
        let mut rows = Vec::with_capacity(if sampled_for.is_some() {
            0
        } else {
            train.len()
        });
        let mut weights = Vec::with_capacity(rows.capacity());
        for i in train {
            let m = data.meta(i);
            let mut w = m.weight;
            if let Some(t) = sampled_for
                && !t.label(m)
                && !t.state_now(m)
            {
                if !keep_row(data, i, keep, params.seed) {
                    continue;
                }
                w *= (1.0 / keep) as f32;
            }
            rows.push(
                u32::try_from(i)
                    .map_err(|_| TrainError::Internal(format!("row {i} beyond 2^32")))?,
            );
            weights.push(w);
        }
        if rows.is_empty() {
            return Err(TrainError::Internal("no training rows".into()));
        }
        let values = rows.len() as u64 * data.num_features() as u64;
        let external = values.saturating_mul(XGBOOST_BYTES_PER_VALUE) > in_memory_max_bytes;
        let mut blocks = TableBlocks {
            data,
            rows: &rows,
            withheld,
            missing: if external {
                MISSING_IN_EXTERNAL_MEMORY
            } else {
                f32::NAN
            },
            at: 0,
        };
        let mut matrix = if external {
            XgbMatrix::from_blocks(&mut blocks, cache_parent, params.nthread)?
        } else {
            XgbMatrix::in_memory(&mut blocks, params.nthread)?
        };
        let weights = weights.iter().any(|&w| w != 1.0).then_some(weights);
        if let Some(w) = &weights {
            matrix.set_float_info("weight", w)?;
        }
        Ok(Self {
            matrix,
            rows,
            weights,
            sampled_for,
            keep,
            seed: params.seed,
        })
    }

    /// Rows in the matrix.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Sets the labels of `target`; returns their weighted rate.
    fn label(&mut self, data: &TrainingData, target: Target) -> Result<f64, TrainError> {
        if self.sampled_for.is_some_and(|t| t != target) {
            return Err(TrainError::Internal(format!(
                "a matrix sampled for {:?} cannot train {target:?}",
                self.sampled_for
            )));
        }
        let labels: Vec<f32> = self
            .rows
            .iter()
            .map(|&i| f32::from(u8::from(target.label(data.meta(i as usize)))))
            .collect();
        self.matrix.set_float_info("label", &labels)?;
        Ok(weighted_rate(&labels, self.weights.as_deref()))
    }

    /// Trains `target` on these rows with `params`, round by round, early stopping on rows
    /// `valid` of `data`: after each round the new tree alone is taken from XGBoost and its
    /// leaves added to each validation row's margin by the native evaluator (the sum XGBoost
    /// itself makes, to the bit), whose log loss (XGBoost's `logloss`) decides. No
    /// validation matrix exists. Features withheld from the matrix need not be blanked in
    /// the validation rows: no tree can split on a feature that is always missing.
    pub fn fit(
        &mut self,
        data: &TrainingData,
        target: Target,
        valid: Range<usize>,
        params: &TrainParams,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<TrainedBooster, TrainError> {
        params.validate()?;
        if params.easy_negative_keep != self.keep || params.seed != self.seed {
            return Err(TrainError::Internal(
                "the matrix's rows were chosen with another easy_negative_keep or seed".into(),
            ));
        }
        if valid.is_empty() {
            return Err(TrainError::Internal("no validation rows".into()));
        }
        let prevalence = self.label(data, target)?;
        let base_score = (prevalence.clamp(0.001, 0.999) * 1000.0).round() / 1000.0;
        let config = params.booster_config(base_score);
        // External memory trains with missing values below every value: each tree sends
        // them left at every split, and is told so before it scores anything.
        let missing_left = self.matrix.is_external();
        let matrix = &self.matrix;
        let mut booster = RawBooster::new(matrix, &config)?;
        let n = data.num_features();
        let yvalid: Vec<bool> = valid.clone().map(|i| target.label(data.meta(i))).collect();
        let xvalid = data.rows(valid.clone());
        let mut margins: Vec<f32> = Vec::new();

        let patience = params.early_stopping_rounds;
        let (mut best, mut best_round, mut rounds, mut last) =
            (f64::INFINITY, 0u32, 0u32, f64::INFINITY);
        for round in 0..params.max_rounds {
            booster.update(matrix, round)?;
            if round == 0 {
                check_config(&booster.config()?, &config)?;
            }
            rounds = round + 1;
            let mut tree = XgbModel::from_json(&booster.tree_json(round)?)?;
            if missing_left {
                tree = tree.with_missing_left();
            }
            if round == 0 {
                margins = vec![tree.base_margin(); valid.len()];
            }
            tree.add_margins(xvalid, n, &mut margins);
            let ll = log_loss_of_margins(&margins, &yvalid);
            last = ll;
            if ll < best {
                best = ll;
                best_round = round;
            }
            let stop = patience > 0 && round - best_round >= patience;
            progress(Progress {
                target,
                round,
                max_rounds: params.max_rounds,
                valid_log_loss: ll,
                best_round,
                best_log_loss: best,
                done: stop || rounds == params.max_rounds,
            });
            if stop {
                break;
            }
        }
        let hit_round_cap =
            rounds == params.max_rounds && (patience == 0 || rounds - 1 - best_round < patience);
        if hit_round_cap {
            tracing::warn!(
                target_model = target.stem(),
                rounds,
                best_round,
                best_valid_log_loss = best,
                "training stopped at the round cap (max_rounds) while the validation loss was \
                 still improving: raise max_rounds or eta"
            );
        }
        let mut json = booster.json()?;
        drop(booster);
        if missing_left {
            json = missing_left_json(&json)?;
        }
        let keep = best_round + 1;
        if patience > 0 && keep < rounds {
            let cut = keep_trees(&json, keep as usize)?;
            // Loaded back into XGBoost (its own JSON again), and checked natively on the
            // validation rows: the cut model must score what the best round did.
            let reloaded = Booster::load_buffer(&cut).map_err(xgb)?;
            json = reloaded
                .save_to_buffer("json".into())
                .map_err(xgb)?
                .into_bytes();
            let model = XgbModel::from_json(&json)?;
            let mut m = vec![model.base_margin(); valid.len()];
            model.add_margins(xvalid, n, &mut m);
            let ll = log_loss_of_margins(&m, &yvalid);
            if (ll - best).abs() > 1e-4 * best.max(1e-3) {
                return Err(TrainError::Internal(format!(
                    "the model cut to {keep} trees has validation log loss {ll}, the best round had {best}"
                )));
            }
        } else {
            best_round = rounds - 1;
            best = last;
        }
        Ok(TrainedBooster {
            json,
            rounds,
            best_round,
            best_valid_log_loss: best,
            base_score,
            hit_round_cap,
        })
    }
}

/// `json`'s model with every split sending missing values left (`default_left`), as they
/// went in training when they were [`MISSING_IN_EXTERNAL_MEMORY`].
fn missing_left_json(json: &[u8]) -> Result<Vec<u8>, TrainError> {
    let bad = |m: &str| TrainError::Internal(format!("XGBoost JSON: {m}"));
    let mut doc: Value = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
    let trees = doc
        .pointer_mut("/learner/gradient_booster/model/trees")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no trees"))?;
    for t in trees {
        let flags = t
            .get_mut("default_left")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| bad("a tree without default_left"))?;
        for f in flags {
            *f = match f {
                Value::Bool(_) => Value::Bool(true),
                _ => Value::from(1),
            };
        }
    }
    serde_json::to_vec(&doc).map_err(|e| bad(&e.to_string()))
}

/// The matrices both targets train on: one when no sampling depends on the target, else
/// one per target (built when first asked for). Reused across trainings with the same rows
/// (both targets, every trial of a search).
#[derive(Debug)]
pub struct TrainingMatrices<'a> {
    data: &'a TrainingData,
    train: Range<usize>,
    withheld: Vec<usize>,
    build_params: TrainParams,
    cache_parent: Option<std::path::PathBuf>,
    in_memory_max_bytes: u64,
    shared: Option<TrainingMatrix>,
    per_target: [Option<TrainingMatrix>; 2],
}

impl<'a> TrainingMatrices<'a> {
    /// For rows `train` of `data` without the features `withheld`, chosen as `params` say
    /// (`easy_negative_keep`, `seed`); nothing is built yet.
    pub fn new(
        data: &'a TrainingData,
        train: Range<usize>,
        params: &TrainParams,
        withheld: &[usize],
    ) -> Self {
        Self {
            data,
            train,
            withheld: withheld.to_vec(),
            build_params: params.clone(),
            cache_parent: None,
            in_memory_max_bytes: IN_MEMORY_MAX_BYTES,
            shared: None,
            per_target: [None, None],
        }
    }

    /// Puts the matrices' cache directories under `dir` instead of `$TMPDIR`.
    pub fn cache_in(mut self, dir: &std::path::Path) -> Self {
        self.cache_parent = Some(dir.to_owned());
        self
    }

    /// Keeps the rows in XGBoost's memory only while its copy takes at most `bytes`
    /// (default [`IN_MEMORY_MAX_BYTES`]); 0 always uses external memory.
    pub fn in_memory_up_to(mut self, bytes: u64) -> Self {
        self.in_memory_max_bytes = bytes;
        self
    }

    /// Trains `target` with `params` (whose `easy_negative_keep` and `seed` must be those
    /// the matrices were made for), early stopping on rows `valid`.
    pub fn train(
        &mut self,
        target: Target,
        valid: Range<usize>,
        params: &TrainParams,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<TrainedBooster, TrainError> {
        let per_target = self.build_params.easy_negative_keep < 1.0;
        let slot = if per_target {
            &mut self.per_target[usize::from(target == Target::WentFull)]
        } else {
            &mut self.shared
        };
        if slot.is_none() {
            *slot = Some(TrainingMatrix::build(
                self.data,
                self.train.clone(),
                &self.build_params,
                &self.withheld,
                per_target.then_some(target),
                self.cache_parent.as_deref(),
                self.in_memory_max_bytes,
            )?);
        }
        let m = slot
            .as_mut()
            .ok_or_else(|| TrainError::Internal("no matrix".into()))?;
        m.fit(self.data, target, valid, params, progress)
    }
}

/// XGBoost's `logloss` of `margins` against `labels`: the mean of −ln p (positive) or
/// −ln(1 − p) (negative) with p the f32 sigmoid of the margin clamped at 1e-16, in f32 per
/// row and summed in f64, as XGBoost 1.6's metric computes it.
fn log_loss_of_margins(margins: &[f32], labels: &[bool]) -> f64 {
    const EPS: f32 = 1e-16;
    let sum: f64 = margins
        .iter()
        .zip(labels)
        .map(|(&m, &y)| {
            let p = crate::xgboost::sigmoid(m);
            let q = if y { p } else { 1.0 - p };
            f64::from(-q.max(EPS).ln())
        })
        .sum();
    sum / margins.len().max(1) as f64
}

/// Trains one target on rows `train`, early stopping on rows `valid`.
pub fn train_booster(
    data: &TrainingData,
    target: Target,
    train: Range<usize>,
    valid: Range<usize>,
    params: &TrainParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainedBooster, TrainError> {
    train_booster_without(data, target, train, valid, params, &[], progress)
}

/// Sets the columns `withheld` of row-major `values` (`width` wide) to missing.
fn blank(values: &mut [f32], width: usize, withheld: &[usize]) {
    if withheld.is_empty() {
        return;
    }
    for row in values.chunks_exact_mut(width) {
        for &j in withheld {
            if let Some(x) = row.get_mut(j) {
                *x = f32::NAN;
            }
        }
    }
}

/// [`train_booster`] as if the features `withheld` (indices) were always missing: no tree
/// can split on them, so the model is the one trained without them (an ablation).
pub fn train_booster_without(
    data: &TrainingData,
    target: Target,
    train: Range<usize>,
    valid: Range<usize>,
    params: &TrainParams,
    withheld: &[usize],
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainedBooster, TrainError> {
    TrainingMatrices::new(data, train, params, withheld).train(target, valid, params, progress)
}

/// Both targets (went empty, went full) trained with `params` on rows `train` without the
/// features `withheld`, early stopping on rows `valid`: on one matrix when the rows do not
/// depend on the target.
pub fn train_both(
    data: &TrainingData,
    train: Range<usize>,
    valid: Range<usize>,
    params: &TrainParams,
    withheld: &[usize],
    progress: &mut dyn FnMut(Progress),
) -> Result<[TrainedBooster; 2], TrainError> {
    let mut matrices = TrainingMatrices::new(data, train, params, withheld);
    let empty = matrices.train(Target::WentEmpty, valid.clone(), params, progress)?;
    // A matrix of went-empty's own sample is not needed again: free it (or its cache files)
    // before went-full's is built, so that only one is alive at a time.
    matrices.per_target[0] = None;
    let full = matrices.train(Target::WentFull, valid, params, progress)?;
    Ok([empty, full])
}

/// Whether training row `i` is kept when easy negatives are kept at `keep`: a hash of the
/// row's station and time, so the choice is deterministic and independent of row order.
fn keep_row(data: &TrainingData, i: usize, keep: f64, seed: u64) -> bool {
    let m = data.meta(i);
    let mut h = (u64::from(m.station) << 32) ^ (m.as_of.millis() as u64) ^ seed;
    // SplitMix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64 <= keep
}

/// The share of positives among `labels`, each row weighing its weight (1 without weights).
fn weighted_rate(labels: &[f32], weights: Option<&[f32]>) -> f64 {
    let (mut total, mut positive) = (0.0f64, 0.0f64);
    for (k, &y) in labels.iter().enumerate() {
        let w = weights
            .and_then(|w| w.get(k))
            .map_or(1.0, |&w| f64::from(w));
        total += w;
        positive += w * f64::from(y);
    }
    if total > 0.0 { positive / total } else { 0.0 }
}

/// Keeps the first `keep` trees of an XGBoost JSON model.
fn keep_trees(json: &[u8], keep: usize) -> Result<Vec<u8>, TrainError> {
    let bad = |m: &str| TrainError::Internal(format!("XGBoost JSON: {m}"));
    let mut doc: Value = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
    let model = doc
        .pointer_mut("/learner/gradient_booster/model")
        .ok_or_else(|| bad("no gradient_booster.model"))?;
    for key in ["trees", "tree_info"] {
        model
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .ok_or_else(|| bad(key))?
            .truncate(keep);
    }
    let param = model
        .get_mut("gbtree_model_param")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no gbtree_model_param"))?;
    param.insert("num_trees".into(), Value::String(keep.to_string()));
    serde_json::to_vec(&doc).map_err(|e| bad(&e.to_string()))
}

/// Every parameter set must appear, with the same value, in the configuration XGBoost
/// reports (it ignores unknown or malformed ones silently).
fn check_config(reported: &str, wanted: &[(&'static str, String)]) -> Result<(), TrainError> {
    let doc: Value = serde_json::from_str(reported)
        .map_err(|e| TrainError::Xgboost(format!("unreadable configuration: {e}")))?;
    for (key, value) in wanted {
        if *key == "verbosity" || *key == "booster" {
            continue;
        }
        let mut found = Vec::new();
        // The configuration lists metrics as `"metrics": [{"name": "logloss"}]`.
        let reported_as = if *key == "eval_metric" {
            "metrics"
        } else {
            key
        };
        collect_key(&doc, reported_as, &mut found);
        let same = |got: &str| {
            let (a, b) = (got.trim_matches(['[', ']']), value.as_str());
            a == b
                || matches!((a.parse::<f64>(), b.parse::<f64>()),
                    (Ok(x), Ok(y)) if (x - y).abs() <= 1e-6 * y.abs().max(1.0))
        };
        if !found.iter().any(|g| same(g)) {
            return Err(TrainError::Parameter {
                key: (*key).into(),
                wanted: value.clone(),
                got: if found.is_empty() {
                    "nothing".into()
                } else {
                    found.join(", ")
                },
            });
        }
    }
    Ok(())
}

fn collect_key(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    match x {
                        Value::String(s) => out.push(s.clone()),
                        Value::Object(o) => {
                            // `"objective": {"name": "binary:logistic", ...}`
                            if let Some(Value::String(s)) = o.get("name") {
                                out.push(s.clone());
                            }
                        }
                        Value::Array(a) => out.extend(
                            a.iter()
                                .filter_map(|o| o.get("name").and_then(Value::as_str))
                                .map(str::to_owned),
                        ),
                        other => out.push(other.to_string()),
                    }
                }
                collect_key(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_key(x, key, out)),
        _ => {}
    }
}

// --- the model card ---------------------------------------------------------------------

/// The first and last `as_of` of the labelled rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Row counts of the split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSizes {
    pub rows: usize,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    /// Rows left out because their label window crosses a split boundary.
    pub purged: usize,
    /// How the rows were sampled while loading (the counts above are of the kept rows;
    /// their weights stand for the rest): `None` when every row was loaded.
    #[serde(default)]
    pub load_sample: Option<crate::dataset::LoadSample>,
}

/// How one target's model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTraining {
    /// Rounds run before early stopping.
    pub rounds: u32,
    /// Trees kept (up to the best validation round).
    pub trees: u32,
    pub best_valid_log_loss: f64,
    pub base_score: f64,
    /// Every allowed round ran and the validation loss was still improving at the cap:
    /// early stopping never stopped it, more rounds may help.
    #[serde(default)]
    pub hit_round_cap: bool,
    /// Total gain of each feature's splits over the kept trees, as a share of all gain,
    /// largest first; features never split on are left out (`unused_features` names them).
    #[serde(default)]
    pub feature_importance: Vec<(String, f64)>,
    /// Features no kept tree splits on.
    #[serde(default)]
    pub unused_features: Vec<String>,
    /// The raw model's reliability on the validation rows: off by more than two points in
    /// a bin of at least 100 rows, and a calibrator is fitted (`calibrator`).
    #[serde(default)]
    pub calibration: Option<crate::eval::CalibrationCheck>,
    /// The calibrator fitted on the validation rows and shipped in `calibrator.json`, with
    /// the test rows' reliability before and after it; `None` when the raw model was
    /// calibrated already (the test metrics are then the raw model's).
    #[serde(default)]
    pub calibrator: Option<CalibratorSummary>,
    pub train_positives: usize,
    pub valid_positives: usize,
    pub test_positives: usize,
}

/// What calibrating a target did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratorSummary {
    /// `"isotonic"`.
    pub method: String,
    pub knots: usize,
    /// Validation rows it was fitted on.
    pub fitted_rows: u64,
    /// The test rows' reliability (bins of 100+ rows) of the raw and the calibrated model.
    pub test_before: crate::eval::CalibrationCheck,
    pub test_after: crate::eval::CalibrationCheck,
}

/// Fits a calibrator for each target of `scorer` (raw) whose reliability on rows `valid`
/// is off ([`crate::eval::calibration_check`]); returns it (empty when none was due) and
/// each target's check.
pub fn fit_calibrator(
    scorer: &XgbScorer,
    data: &TrainingData,
    valid: Range<usize>,
) -> (Calibrator, [crate::eval::CalibrationCheck; 2]) {
    let scores = crate::eval::score_rows(scorer, data, valid.clone());
    fit_calibrator_to_scores(&scores, data, valid)
}

/// The probabilities of target `t` in `scores`.
fn probabilities(scores: &[Scores], t: Target) -> Vec<f32> {
    scores
        .iter()
        .map(|s| match t {
            Target::WentEmpty => s.p_empty,
            Target::WentFull => s.p_full,
        })
        .collect()
}

/// [`fit_calibrator`] of the raw scores of rows `valid` (`scores[k]` is row `valid.start + k`).
pub fn fit_calibrator_to_scores(
    scores: &[Scores],
    data: &TrainingData,
    valid: Range<usize>,
) -> (Calibrator, [crate::eval::CalibrationCheck; 2]) {
    let mut c = Calibrator {
        method: Calibrator::METHOD.into(),
        empty: None,
        full: None,
    };
    let checks = Target::BOTH.map(|t| {
        let p = probabilities(scores, t);
        let y: Vec<bool> = valid.clone().map(|i| t.label(data.meta(i))).collect();
        let check = crate::eval::calibration_check(
            &crate::eval::reliability(&p, &y),
            crate::eval::CALIBRATION_MIN_ROWS,
        );
        if check.off {
            c.set_map(t, Isotonic::fit(&p, &y));
        }
        check
    });
    (c, checks)
}

/// Everything known about a trained pair of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Version of this card's layout.
    pub format: u32,
    pub name: String,
    pub version: String,
    pub created_at: Timestamp,
    /// Where the training rows came from, in words.
    pub source: String,
    pub feature_schema_id: FeatureSchemaId,
    pub feature_names: Vec<String>,
    pub horizon_minutes: u32,
    pub training_window: TrainingWindow,
    pub split: SplitBoundaries,
    pub params: TrainParams,
    pub data: DataSizes,
    pub empty: TargetTraining,
    pub full: TargetTraining,
    /// Metrics of the model, the baseline predictor and persistence on the test rows, with
    /// the verdict of each target.
    pub evaluation: Evaluation,
    /// The models retrained without groups of features, on the same rows ([`ablate`]):
    /// which features moved the test metrics. Empty unless asked for.
    #[serde(default)]
    pub ablation: Vec<AblationRow>,
    /// The hyper-parameter search that chose `params` ([`crate::search`]): every trial
    /// and its validation measures. `None` unless `params.search_trials` asked for one.
    #[serde(default)]
    pub search: Option<crate::search::SearchReport>,
}

/// One target's test measures in an ablation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationScore {
    pub trees: u32,
    /// PR-AUC on the target's new-stockout test rows.
    pub new_stockout_pr_auc: Option<f64>,
    /// PR-AUC and log loss on all test rows.
    pub pr_auc: Option<f64>,
    pub log_loss: f64,
}

/// The models trained without a group of features, measured on the test rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AblationRow {
    /// The group's name.
    pub without: String,
    /// The features withheld.
    pub features: Vec<String>,
    pub empty: AblationScore,
    pub full: AblationScore,
}

/// The indices of the features matching `patterns`: a name, or a pattern with one `*`
/// (`pf_*`, `minutes_to_*_profile`). A pattern that matches nothing is an error.
pub fn feature_group(names: &[String], patterns: &[&str]) -> Result<Vec<usize>, TrainError> {
    let mut out = Vec::new();
    for p in patterns {
        let matches = |n: &str| match p.split_once('*') {
            Some((pre, post)) => {
                n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
            }
            None => n == *p,
        };
        let hits: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| matches(n))
            .map(|(i, _)| i)
            .collect();
        if hits.is_empty() {
            return Err(TrainError::Params(format!(
                "the feature pattern {p:?} matches no feature of the schema"
            )));
        }
        for i in hits {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// An ablation: for each named group of features (indices), both models trained again on the
/// same split and parameters without them, and measured on the test rows. Slow: one full
/// training per group.
pub fn ablate(
    data: &TrainingData,
    schema: &FeatureSchema,
    split_config: &SplitConfig,
    params: &TrainParams,
    groups: &[(String, Vec<usize>)],
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<AblationRow>, TrainError> {
    let split: Split = data.split(split_config)?;
    let mut rows = Vec::new();
    for (name, withheld) in groups {
        let [e, f] = train_both(
            data,
            split.train.clone(),
            split.valid.clone(),
            params,
            withheld,
            progress,
        )?;
        let (empty_trees, empty) = (e.best_round + 1, XgbModel::from_json(&e.json)?);
        let (full_trees, full) = (f.best_round + 1, XgbModel::from_json(&f.json)?);
        let scorer = XgbScorer::new(
            ModelRef {
                name: format!("without {name}"),
                version: "ablation".into(),
            },
            schema.id(),
            schema,
            empty,
            full,
        )?;
        // Calibrated as the reference model is, so their log losses compare.
        let (calibrator, _) = fit_calibrator(&scorer, data, split.valid.clone());
        let scorer = scorer.with_calibrator(Some(calibrator));
        let report = crate::eval::evaluate(
            &scorer,
            data,
            split.test.clone(),
            crate::eval::Thresholds::default(),
        );
        let score = |t: Target, trees: u32| AblationScore {
            trees,
            new_stockout_pr_auc: report.new_stockout(t).and_then(|m| m.pr_auc),
            pr_auc: report.target(t).pr_auc,
            log_loss: report.target(t).log_loss,
        };
        rows.push(AblationRow {
            without: name.clone(),
            features: withheld
                .iter()
                .filter_map(|&j| data.feature_names().get(j).cloned())
                .collect(),
            empty: score(Target::WentEmpty, empty_trees),
            full: score(Target::WentFull, full_trees),
        });
    }
    Ok(rows)
}

impl ModelCard {
    pub const FORMAT: u32 = 1;

    pub fn model_ref(&self) -> ModelRef {
        ModelRef {
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }
}

/// Names, version and provenance of a training run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub name: String,
    pub version: String,
    pub created_at: Timestamp,
    /// Where the rows came from, in words (e.g. "simulated city sim-city, 40 stations, 4 days").
    pub source: String,
}

/// Two trained models, their card and their evaluation.
#[derive(Debug, Clone)]
pub struct TrainedModels {
    pub card: ModelCard,
    pub empty_json: Vec<u8>,
    pub full_json: Vec<u8>,
    /// The calibrator fitted on the validation rows (`None`: none was due); `scorer`
    /// applies it, and the model directory ships it.
    pub calibrator: Option<Calibrator>,
    pub scorer: XgbScorer,
    /// The data-quality baseline of the training rows, saved with the model (what the
    /// drift check of the job that serves it compares live features with).
    pub baseline: bikeshare_monitor::drift::Baseline,
}

impl TrainedModels {
    pub fn evaluation(&self) -> &Evaluation {
        &self.card.evaluation
    }
}

/// Splits `data` by time, trains both targets, evaluates them on the test days against the
/// baseline and persistence, and writes the card.
pub fn train_models(
    data: &TrainingData,
    schema: &FeatureSchema,
    split_config: &SplitConfig,
    params: &TrainParams,
    run: &RunInfo,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainedModels, TrainError> {
    if data.schema_id() != schema.id() || data.num_features() != schema.len() {
        return Err(DataError::Schema {
            expected: schema.id().0.to_string(),
            found: data.schema_id().0.to_string(),
        }
        .into());
    }
    let split: Split = data.split(split_config)?;
    let (boosters, params, search) = if params.search_trials > 1 {
        let (report, boosters, chosen) = crate::search::search(data, &split, params, progress)?;
        (boosters, chosen, Some(report))
    } else {
        let boosters = train_both(
            data,
            split.train.clone(),
            split.valid.clone(),
            params,
            &[],
            progress,
        )?;
        (boosters, params.clone(), None)
    };
    let params = &params;
    let [empty, full] = boosters;
    let empty = with_feature_names(empty, data.feature_names())?;
    let full = with_feature_names(full, data.feature_names())?;
    let model_ref = ModelRef {
        name: run.name.clone(),
        version: run.version.clone(),
    };
    let scorer = XgbScorer::new(
        model_ref,
        schema.id(),
        schema,
        XgbModel::from_json(&empty.json)?,
        XgbModel::from_json(&full.json)?,
    )?;
    // The validation and test rows are scored once, raw; the calibrated scores are the
    // calibrator applied to them.
    let raw_valid = crate::eval::score_rows(&scorer, data, split.valid.clone());
    let raw_test = crate::eval::score_rows(&scorer, data, split.test.clone());
    let (calibrator, valid_checks) =
        fit_calibrator_to_scores(&raw_valid, data, split.valid.clone());
    let calibrated =
        |raw: &[Scores]| -> Vec<Scores> { raw.iter().map(|&s| calibrator.apply(s)).collect() };
    let thresholds =
        crate::eval::thresholds_of_scores(&calibrated(&raw_valid), data, split.valid.clone());
    let model_report = crate::eval::evaluate_scores(
        scorer.model(),
        &calibrated(&raw_test),
        data,
        split.test.clone(),
        thresholds,
    );
    let scorer = scorer.with_calibrator(Some(calibrator.clone()));
    let evaluation = compare_with_baselines(model_report, schema, data, &split);
    let summary = |t: Target| -> Option<CalibratorSummary> {
        let iso = calibrator.map(t)?;
        let y: Vec<bool> = split.test.clone().map(|i| t.label(data.meta(i))).collect();
        let before = crate::eval::reliability(&probabilities(&raw_test, t), &y);
        Some(CalibratorSummary {
            method: calibrator.method.clone(),
            knots: iso.x.len(),
            fitted_rows: iso.rows,
            test_before: crate::eval::calibration_check(&before, crate::eval::CALIBRATION_MIN_ROWS),
            test_after: crate::eval::calibration_check(
                &evaluation.model.target(t).reliability,
                crate::eval::CALIBRATION_MIN_ROWS,
            ),
        })
    };
    let positives = |t: Target, r: Range<usize>| r.filter(|&i| t.label(data.meta(i))).count();
    let (first, last) = data
        .window()
        .ok_or_else(|| TrainError::Internal("no rows".into()))?;
    let per_target = |t: Target, b: &TrainedBooster| TargetTraining {
        rounds: b.rounds,
        trees: b.best_round + 1,
        best_valid_log_loss: b.best_valid_log_loss,
        base_score: b.base_score,
        hit_round_cap: b.hit_round_cap,
        feature_importance: importance(&b.json, data.feature_names()).unwrap_or_default(),
        unused_features: unused(&b.json, data.feature_names()).unwrap_or_default(),
        calibration: Some(valid_checks[usize::from(t == Target::WentFull)].clone()),
        calibrator: summary(t),
        train_positives: positives(t, split.train.clone()),
        valid_positives: positives(t, split.valid.clone()),
        test_positives: positives(t, split.test.clone()),
    };
    let card = ModelCard {
        format: ModelCard::FORMAT,
        name: run.name.clone(),
        version: run.version.clone(),
        created_at: run.created_at,
        source: run.source.clone(),
        feature_schema_id: schema.id().clone(),
        feature_names: data.feature_names().to_vec(),
        horizon_minutes: data.horizon_minutes(),
        training_window: TrainingWindow {
            from: first,
            to: last,
        },
        split: split.boundaries.clone(),
        params: params.clone(),
        data: DataSizes {
            rows: data.len(),
            train: split.train.len(),
            valid: split.valid.len(),
            test: split.test.len(),
            purged: split.boundaries.purged_rows,
            load_sample: data.load_sample().cloned(),
        },
        empty: per_target(Target::WentEmpty, &empty),
        full: per_target(Target::WentFull, &full),
        evaluation,
        ablation: Vec::new(),
        search,
    };
    Ok(TrainedModels {
        card,
        empty_json: empty.json,
        full_json: full.json,
        calibrator: (!calibrator.is_empty()).then_some(calibrator),
        scorer,
        baseline: data.drift_baseline(split.train.clone()),
    })
}

/// Total split gain per feature index of an XGBoost JSON model (`loss_changes` of the
/// internal nodes, by `split_indices`).
fn gains(json: &[u8], n: usize) -> Option<Vec<f64>> {
    let doc: Value = serde_json::from_slice(json).ok()?;
    let trees = doc
        .pointer("/learner/gradient_booster/model/trees")?
        .as_array()?;
    let mut gain = vec![0.0f64; n];
    for t in trees {
        let split = t.get("split_indices")?.as_array()?;
        let loss = t.get("loss_changes")?.as_array()?;
        let left = t.get("left_children")?.as_array()?;
        for ((f, l), c) in split.iter().zip(loss).zip(left) {
            // Leaves have left child -1 and no split.
            if c.as_i64() == Some(-1) {
                continue;
            }
            if let (Some(f), Some(l)) = (f.as_u64(), l.as_f64())
                && let Some(g) = gain.get_mut(f as usize)
            {
                *g += l;
            }
        }
    }
    Some(gain)
}

/// Each feature's share of the total split gain, largest first, unused features left out.
fn importance(json: &[u8], names: &[String]) -> Option<Vec<(String, f64)>> {
    let gain = gains(json, names.len())?;
    let total: f64 = gain.iter().sum();
    let mut out: Vec<(String, f64)> = names
        .iter()
        .zip(&gain)
        .filter(|(_, g)| **g > 0.0)
        .map(|(n, g)| (n.clone(), if total > 0.0 { g / total } else { 0.0 }))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(out)
}

/// The features no tree splits on.
fn unused(json: &[u8], names: &[String]) -> Option<Vec<String>> {
    let gain = gains(json, names.len())?;
    Some(
        names
            .iter()
            .zip(&gain)
            .filter(|(_, g)| **g <= 0.0)
            .map(|(n, _)| n.clone())
            .collect(),
    )
}

/// Stores the feature names (and types) in the model JSON, checked by loading it back.
fn with_feature_names(
    mut b: TrainedBooster,
    names: &[String],
) -> Result<TrainedBooster, TrainError> {
    let bad = |m: String| TrainError::Internal(format!("XGBoost JSON: {m}"));
    let mut doc: Value = serde_json::from_slice(&b.json).map_err(|e| bad(e.to_string()))?;
    let learner = doc
        .get_mut("learner")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("no learner".into()))?;
    learner.insert(
        "feature_names".into(),
        Value::Array(names.iter().cloned().map(Value::String).collect()),
    );
    learner.insert(
        "feature_types".into(),
        Value::Array(
            names
                .iter()
                .map(|_| Value::String("float".into()))
                .collect(),
        ),
    );
    let json = serde_json::to_vec(&doc).map_err(|e| bad(e.to_string()))?;
    let booster = Booster::load_buffer(&json).map_err(xgb)?;
    b.json = booster
        .save_to_buffer("json".into())
        .map_err(xgb)?
        .into_bytes();
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_trees() {
        let json =
            br#"{"learner":{"gradient_booster":{"model":{"gbtree_model_param":{"num_trees":"3"},
            "tree_info":[0,0,0],"trees":[{"id":0},{"id":1},{"id":2}]}}}}"#;
        let cut: Value = serde_json::from_slice(&keep_trees(json, 2).unwrap()).unwrap();
        let m = cut.pointer("/learner/gradient_booster/model").unwrap();
        assert_eq!(m["trees"].as_array().unwrap().len(), 2);
        assert_eq!(m["tree_info"].as_array().unwrap().len(), 2);
        assert_eq!(m["gbtree_model_param"]["num_trees"], "2");
    }

    #[test]
    fn a_parameter_xgboost_did_not_take_is_an_error() {
        let reported = r#"{"learner":{"generic_param":{"nthread":"2","seed":"0"},
            "objective":{"name":"binary:logistic"},"metrics":[{"name":"logloss"}],
            "gradient_booster":{"updater":{"grow_quantile_histmaker":{"train_param":{"eta":"0.100000001","max_depth":"6"}}}}}}"#;
        let ok = [
            ("nthread", "2".to_string()),
            ("eta", "0.1".to_string()),
            ("objective", "binary:logistic".to_string()),
            ("eval_metric", "logloss".to_string()),
        ];
        check_config(reported, &ok).unwrap();
        let err = check_config(reported, &[("nthread", "1".to_string())]).unwrap_err();
        assert!(err.to_string().contains("nthread=1"), "{err}");
        assert!(check_config(reported, &[("max_bin", "256".to_string())]).is_err());
    }

    /// Rows of one informative feature: `went_empty` with probability `x`.
    fn noisy_rows(n: usize) -> TrainingData {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        let mut state = bikeshare_types::lcg::Lcg64::new(7);
        let mut next = || state.unit_f32();
        for i in 0..n {
            let x = next();
            let label = crate::dataset::RowLabel {
                went_empty: next() < x,
                ..Default::default()
            };
            d.push("s", Timestamp(i as i64 * 60_000), label, [Some(x)]);
        }
        d
    }

    #[test]
    fn stopping_at_the_round_cap_while_improving_is_flagged() {
        let d = noisy_rows(2000);
        let params = |max_rounds, early_stopping_rounds| TrainParams {
            max_rounds,
            early_stopping_rounds,
            eta: 0.05,
            max_depth: 2,
            nthread: 1,
            ..TrainParams::default()
        };
        let train = |p: &TrainParams| {
            train_booster(&d, Target::WentEmpty, 0..1400, 1400..2000, p, &mut |_| {}).unwrap()
        };
        // Three rounds of a small eta: still improving when the budget runs out.
        let capped = train(&params(3, 5));
        assert_eq!(capped.rounds, 3);
        assert!(capped.hit_round_cap);
        // Enough rounds: early stopping ends training before the cap.
        let stopped = train(&params(1000, 5));
        assert!(stopped.rounds < 1000, "{} rounds", stopped.rounds);
        assert!(!stopped.hit_round_cap);
        // All the gain is the one informative feature's; the rest are unused.
        let names = d.feature_names();
        let imp = importance(&stopped.json, names).unwrap();
        assert_eq!(imp.len(), 1, "{imp:?}");
        assert_eq!(imp[0].0, names[0]);
        assert!((imp[0].1 - 1.0).abs() < 1e-9);
        assert_eq!(unused(&stopped.json, names).unwrap().len(), names.len() - 1);
    }

    #[test]
    fn feature_groups_by_name_and_pattern() {
        let names: Vec<String> = [
            "bikes",
            "pf_weeks",
            "pf_bikes_30m",
            "minutes_to_empty_profile",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(feature_group(&names, &["bikes"]).unwrap(), vec![0]);
        assert_eq!(
            feature_group(&names, &["pf_*", "minutes_to_*_profile", "pf_weeks"]).unwrap(),
            vec![1, 2, 3]
        );
        let err = feature_group(&names, &["nb_*"]).unwrap_err().to_string();
        assert!(err.contains("nb_*"), "{err}");
    }

    #[test]
    fn a_withheld_feature_is_never_split_on() {
        // Two copies of the one informative feature: withholding the first, the model learns
        // from the second, and no tree uses the first.
        let one = noisy_rows(2000);
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        for i in 0..one.len() {
            let x = one.row(i)[0];
            let m = one.meta(i);
            let label = crate::dataset::RowLabel {
                went_empty: m.went_empty,
                ..Default::default()
            };
            d.push("s", m.as_of, label, [Some(x), Some(x)]);
        }
        let params = TrainParams {
            max_rounds: 20,
            max_depth: 2,
            nthread: 1,
            ..TrainParams::default()
        };
        let b = train_booster_without(
            &d,
            Target::WentEmpty,
            0..1400,
            1400..2000,
            &params,
            &[0],
            &mut |_| {},
        )
        .unwrap();
        let imp = importance(&b.json, d.feature_names()).unwrap();
        assert_eq!(imp.len(), 1, "{imp:?}");
        assert_eq!(imp[0].0, d.feature_names()[1]);
    }

    #[test]
    fn the_ablation_without_the_informative_feature_ranks_worse() {
        // Feature 0 drives the outcome, feature 1 is noise.
        let one = noisy_rows(3000);
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        for i in 0..one.len() {
            let m = one.meta(i);
            let label = crate::dataset::RowLabel {
                went_empty: m.went_empty,
                ..Default::default()
            };
            let noise = ((i * 7919) % 1000) as f32 / 1000.0;
            d.push("s", m.as_of, label, [Some(one.row(i)[0]), Some(noise)]);
        }
        let params = TrainParams {
            max_rounds: 20,
            max_depth: 2,
            nthread: 1,
            ..TrainParams::default()
        };
        let groups = [
            ("informative".to_owned(), vec![0]),
            ("noise".to_owned(), vec![1]),
        ];
        let rows = ablate(
            &d,
            &schema,
            &SplitConfig::default(),
            &params,
            &groups,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].features, vec![d.feature_names()[0].clone()]);
        let pr = |r: &AblationRow| r.empty.new_stockout_pr_auc.unwrap();
        assert!(
            pr(&rows[0]) + 0.1 < pr(&rows[1]),
            "without the informative feature {} vs without the noise {}",
            pr(&rows[0]),
            pr(&rows[1])
        );
        assert!(rows[0].empty.log_loss > rows[1].empty.log_loss);
    }

    #[test]
    fn sampled_easy_negatives_weighted_keep_the_probabilities_calibrated() {
        // A rare outcome (~8 %) driven by one feature; most rows are easy negatives.
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        let mut state = bikeshare_types::lcg::Lcg64::new(11);
        let mut next = || state.unit_f32();
        for i in 0..20_000 {
            let x = next();
            let label = crate::dataset::RowLabel {
                went_empty: next() < 0.16 * x * x * 1.5,
                ..Default::default()
            };
            d.push(
                &format!("s{}", i % 50),
                Timestamp(i as i64 * 60_000),
                label,
                [Some(x)],
            );
        }
        d.finish();
        let params = |keep| TrainParams {
            max_rounds: 60,
            early_stopping_rounds: 10,
            max_depth: 3,
            nthread: 1,
            easy_negative_keep: keep,
            ..TrainParams::default()
        };
        let (train, valid) = (0..14_000, 14_000..20_000);
        let observed = d
            .labels(Target::WentEmpty, valid.clone())
            .iter()
            .map(|&y| f64::from(y))
            .sum::<f64>()
            / valid.len() as f64;
        let mean_predicted = |keep: f64| {
            let b = train_booster(
                &d,
                Target::WentEmpty,
                train.clone(),
                valid.clone(),
                &params(keep),
                &mut |_| {},
            )
            .unwrap();
            let model = XgbModel::from_json(&b.json).unwrap();
            let p: f64 = valid
                .clone()
                .map(|i| f64::from(model.predict(d.row(i))))
                .sum::<f64>()
                / valid.len() as f64;
            (p, b.best_valid_log_loss)
        };
        let (all, all_ll) = mean_predicted(1.0);
        let (sampled, sampled_ll) = mean_predicted(0.2);
        // Weighted, a fifth of the easy negatives gives the same mean probability (within
        // sampling noise) and about the same validation log loss.
        assert!(
            (all - observed).abs() < 0.1 * observed,
            "{all} vs {observed}"
        );
        assert!(
            (sampled - observed).abs() < 0.15 * observed,
            "{sampled} vs {observed}"
        );
        assert!(sampled_ll < all_ll * 1.05, "{sampled_ll} vs {all_ll}");
        assert!(matches!(params(0.0).validate(), Err(TrainError::Params(_))));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for p in [
            TrainParams {
                nthread: 0,
                ..TrainParams::default()
            },
            TrainParams {
                eta: 0.0,
                ..TrainParams::default()
            },
            TrainParams {
                max_rounds: 0,
                ..TrainParams::default()
            },
        ] {
            assert!(matches!(p.validate(), Err(TrainError::Params(_))));
        }
    }
}
