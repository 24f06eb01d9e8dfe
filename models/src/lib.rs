//! # bikeshare-models
//!
//! Training, evaluation and fast inference of the two station models (went empty, went
//! full within the horizon).
//!
//! - [`xgboost`]: a pure-Rust evaluator of XGBoost JSON models (binary logistic gbtree),
//!   exact to the bit with XGBoost's own prediction, for the processor's hot path.
//! - [`scorer`]: [`scorer::XgbScorer`], the processor's `Scorer` made of two such models
//!   (went empty, went full), refusing features of another schema.
//! - [`calibration`]: isotonic maps fitted on validation rows when the model's reliability is
//!   off, shipped in the model directory and applied by every loader.
//! - [`model_dir`]: the model directory (`card.json`, `empty.json`, `full.json`): written
//!   atomically, its card read back, and loaded by the one loader.
//! - [`serve`]: `bikeshare serve-model`, the SageMaker inference-container contract
//!   (`/ping`, `/invocations`) and the runtime API path (`/endpoints/{name}/invocations`).
//! - [`endpoint`]: the processor's `Predictor` over a SageMaker endpoint: batches, timeouts,
//!   retries, a circuit breaker, a fallback. The client (`aws-sdk-sagemakerruntime`) is behind
//!   the feature `sagemaker-endpoint`; its settings and CSV codec are not.
//! - [`synthetic`]: deterministic untrained models for tests and benchmarks.
//! - [`registry`]: versions, stages (`staging`, `production`) and the decision log, in a
//!   local directory or on an MLflow server; loading a registered version.
//! - [`promote`]: the promotion gate (schema and sanity checks; beat production on held-out
//!   rows by a margin) and its recorded decisions.
//! - [`hotswap`]: follows the registry's production version and hands new scorers to the
//!   running processor.
//! - [`dataset`]: [`dataset::TrainingData`], labelled rows from any source (one loader per
//!   source), and the time-based split.
//! - [`rows_parquet`]: labelled rows as Parquet (what `backfill` writes), read column-wise
//!   into the one matrix.
//! - [`training`]: both models with XGBoost (`xgboost-rs`), round by round with early
//!   stopping, evaluated and described by a model card ([`training::ModelCard`]).
//! - [`external`]: XGBoost's external-memory `DMatrix` (rows pulled block by block, kept
//!   in cache files) and a booster over it: the one module of raw C API calls.
//! - [`search`]: a small seeded hyper-parameter search on the validation rows, every trial
//!   in the card.
//! - [`eval`]: metrics of any `Scorer` on labelled rows (the measures are
//!   `bikeshare_stream_processor::quality`'s) on all rows and on new-stockout rows, the
//!   baselines, the verdict.
//! - [`logistic`]: the logistic-regression baseline on the same features.
//! - [`bootstrap`]: a first model from a simulated history, when there is none.

pub mod bootstrap;
pub mod calibration;
pub mod dataset;
pub mod endpoint;
pub mod eval;
pub mod external;
pub mod hotswap;
pub mod logistic;
pub mod model_dir;
pub mod promote;
pub mod registry;
pub mod rows_parquet;
pub mod scorer;
pub mod search;
pub mod serve;
pub mod synthetic;
pub mod training;
pub mod xgboost;
