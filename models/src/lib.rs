//! # bikeshare-models
//!
//! - [`xgboost`]: a pure-Rust evaluator of XGBoost JSON models (binary logistic gbtree),
//!   exact to the bit with XGBoost's own prediction, for the processor's hot path.
//! - [`scorer`]: [`scorer::XgbScorer`], the processor's `Scorer` made of two such models
//!   (went empty, went full), refusing features of another schema.

pub mod scorer;
pub mod xgboost;
