//! The decision log's record: what the promotion gate ([`crate::promote`]) decided about a
//! version, and every check and number it decided on. The registry stores these
//! ([`super::Registry::record_decision`]); the gate writes them.

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::ModelRef;
use serde::{Deserialize, Serialize};

use super::Stage;

/// How much better a candidate must be than production to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Margins {
    /// Minimum decrease of log loss, per target (absolute, in nats).
    pub log_loss: f64,
    /// Minimum increase of PR-AUC (average precision), per target.
    pub pr_auc: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Self {
            log_loss: 0.001,
            pr_auc: 0.001,
        }
    }
}

/// Log loss and PR-AUC of one target (all held-out rows), and the PR-AUC of its
/// new-stockout rows (not already empty / full at `as_of`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetMetrics {
    pub log_loss: f64,
    pub pr_auc: f64,
    /// `None` when the held-out rows have no new-stockout positive (or decisions from
    /// before it was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_stockout_pr_auc: Option<f64>,
}

/// A scorer's numbers on the held-out rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateMetrics {
    pub empty: TargetMetrics,
    pub full: TargetMetrics,
}

/// One named check and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub(crate) fn new(name: &str, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// The held-out rows the decision was taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutSummary {
    pub rows: usize,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub went_empty: usize,
    pub went_full: usize,
}

/// A decision of the gate, with everything it was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionDecision {
    pub decided_at: Timestamp,
    pub model: String,
    pub candidate: u64,
    pub target: Stage,
    pub promoted: bool,
    /// What the candidate was compared with (production, or the baseline); none for staging.
    pub incumbent: Option<ModelRef>,
    pub checks: Vec<Check>,
    pub candidate_metrics: Option<GateMetrics>,
    pub incumbent_metrics: Option<GateMetrics>,
    pub margins: Margins,
    pub heldout: Option<HeldOutSummary>,
    /// One sentence for people.
    pub summary: String,
}
