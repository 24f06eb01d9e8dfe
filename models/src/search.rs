//! A small, seeded hyper-parameter search on the validation rows (issue 15 item 4;
//! decision 089).
//!
//! `train --search N` (`TrainParams::search_trials`) trains both models with `N` parameter
//! sets: the first is the configured one, the others are drawn without repetition from
//! [`SearchSpace`] (tree depth, eta, minimum child weight, row subsampling) by a generator
//! seeded with `TrainParams::seed`, so the same seed gives the same trials. Each trial trains
//! round by round with early stopping on the validation log loss, as a single training does
//! (the number of rounds is early stopping's). A trial is scored on the validation rows by
//! the **mean over both targets of the new-stockout PR-AUC** (rows whose station is not
//! already in that state at `as_of`; a target without a new-stockout positive falls back to
//! its PR-AUC on all rows) — the measure the project's targets are set on — ties broken by
//! the lower sum of validation log losses, then by the earlier trial. The chosen trial's
//! models are the ones trained, so the search costs `N` trainings and no more. Every trial
//! and the chosen one are recorded in the card ([`SearchReport`]); the test rows are never
//! looked at.

use serde::{Deserialize, Serialize};

use crate::dataset::{Split, Target, TrainingData};
use crate::training::{Progress, TrainError, TrainParams, TrainedBooster, TrainingMatrices};
use crate::xgboost::XgbModel;

/// The values a trial draws from, one of each list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    pub max_depth: Vec<u32>,
    pub eta: Vec<f64>,
    pub min_child_weight: Vec<f64>,
    pub subsample: Vec<f64>,
}

impl Default for SearchSpace {
    fn default() -> Self {
        Self {
            max_depth: vec![4, 6, 8, 10],
            eta: vec![0.05, 0.1, 0.2, 0.3],
            min_child_weight: vec![1.0, 5.0, 20.0, 100.0],
            subsample: vec![0.6, 0.8, 1.0],
        }
    }
}

impl SearchSpace {
    fn size(&self) -> usize {
        self.max_depth.len() * self.eta.len() * self.min_child_weight.len() * self.subsample.len()
    }
}

/// One target's validation measures in a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialTarget {
    /// Trees kept (early stopping's best round + 1) and rounds run.
    pub trees: u32,
    pub rounds: u32,
    pub valid_log_loss: f64,
    /// PR-AUC on the target's new-stockout validation rows (`None`: no positive there).
    pub valid_new_stockout_pr_auc: Option<f64>,
    /// PR-AUC on all validation rows.
    pub valid_pr_auc: Option<f64>,
}

impl TrialTarget {
    fn ranking(&self) -> f64 {
        self.valid_new_stockout_pr_auc
            .or(self.valid_pr_auc)
            .unwrap_or(0.0)
    }
}

/// One parameter set and how both models trained with it did on the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub max_depth: u32,
    pub eta: f64,
    pub min_child_weight: f64,
    pub subsample: f64,
    pub empty: TrialTarget,
    pub full: TrialTarget,
    /// The criterion: the mean of both targets' new-stockout PR-AUC (higher is better).
    pub score: f64,
    /// Wall time of the trial, seconds.
    pub seconds: f64,
}

/// The search recorded in the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    pub seed: u64,
    /// What `score` is, in words.
    pub criterion: String,
    pub space: SearchSpace,
    pub trials: Vec<Trial>,
    /// Index of the chosen trial in `trials`.
    pub chosen: usize,
}

pub const CRITERION: &str = "mean over went-empty and went-full of the validation PR-AUC on \
     new-stockout rows (all rows when a target has no new-stockout positive); ties: lower \
     summed validation log loss, then the earlier trial";

/// The parameter sets of a search of `trials` trials: `base` first, then distinct draws
/// from `space` (other than `base`'s own values) by a generator seeded with `base.seed`;
/// fewer when the space has fewer distinct sets.
pub fn trial_params(base: &TrainParams, space: &SearchSpace, trials: u32) -> Vec<TrainParams> {
    let key = |p: &TrainParams| {
        (
            p.max_depth,
            p.eta.to_bits(),
            p.min_child_weight.to_bits(),
            p.subsample.to_bits(),
        )
    };
    let mut out = vec![base.clone()];
    let mut seen = vec![key(base)];
    let mut state = base.seed ^ 0x5eed_5eed_5eed_5eed;
    let mut next = |n: usize| -> usize {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    };
    let want = (trials as usize).min(space.size() + 1);
    // Draws until `want` distinct sets (bounded: the space is small and finite).
    let mut attempts = 0;
    while out.len() < want && attempts < 100 * want.max(1) {
        attempts += 1;
        let p = TrainParams {
            max_depth: space.max_depth[next(space.max_depth.len())],
            eta: space.eta[next(space.eta.len())],
            min_child_weight: space.min_child_weight[next(space.min_child_weight.len())],
            subsample: space.subsample[next(space.subsample.len())],
            ..base.clone()
        };
        if !seen.contains(&key(&p)) {
            seen.push(key(&p));
            out.push(p);
        }
    }
    out
}

/// The validation measures of one trained target.
fn measure(
    data: &TrainingData,
    split: &Split,
    target: Target,
    b: &TrainedBooster,
) -> Result<TrialTarget, TrainError> {
    let model = XgbModel::from_json(&b.json)?;
    let (mut p, mut y, mut p_new, mut y_new) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in split.valid.clone() {
        let m = data.meta(i);
        let (pi, yi) = (model.predict(data.row(i)), target.label(m));
        if !target.state_now(m) {
            p_new.push(pi);
            y_new.push(yi);
        }
        p.push(pi);
        y.push(yi);
    }
    let all = crate::eval::metrics(&p, &y, &[], 0.5);
    let new = crate::eval::metrics(&p_new, &y_new, &[], 0.5);
    Ok(TrialTarget {
        trees: b.best_round + 1,
        rounds: b.rounds,
        valid_log_loss: b.best_valid_log_loss,
        valid_new_stockout_pr_auc: if new.positives > 0 { new.pr_auc } else { None },
        valid_pr_auc: all.pr_auc,
    })
}

/// Whether trial `a` is better than trial `b` by [`CRITERION`] (`a` comes later).
fn better(a: &Trial, b: &Trial) -> bool {
    if a.score != b.score {
        return a.score > b.score;
    }
    a.empty.valid_log_loss + a.full.valid_log_loss < b.empty.valid_log_loss + b.full.valid_log_loss
}

/// Runs the search of `base.search_trials` trials over the default [`SearchSpace`] on
/// `split`'s training and validation rows; returns the report, the chosen trial's two
/// boosters (went empty, went full) and its parameters.
pub fn search(
    data: &TrainingData,
    split: &Split,
    base: &TrainParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<(SearchReport, [TrainedBooster; 2], TrainParams), TrainError> {
    search_in(data, split, base, &SearchSpace::default(), progress)
}

/// [`search`] over `space`.
pub fn search_in(
    data: &TrainingData,
    split: &Split,
    base: &TrainParams,
    space: &SearchSpace,
    progress: &mut dyn FnMut(Progress),
) -> Result<(SearchReport, [TrainedBooster; 2], TrainParams), TrainError> {
    let sets = trial_params(base, space, base.search_trials.max(1));
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<([TrainedBooster; 2], TrainParams)> = None;
    let mut chosen: Option<usize> = None;
    // The trials differ in booster parameters only, not in rows: XGBoost's matrices are
    // built once for all of them.
    let mut matrices = TrainingMatrices::new(data, split.train.clone(), base, &[]);
    for (k, p) in sets.into_iter().enumerate() {
        let started = std::time::Instant::now();
        tracing::info!(
            trial = k + 1,
            max_depth = p.max_depth,
            eta = p.eta,
            min_child_weight = p.min_child_weight,
            subsample = p.subsample,
            "hyper-parameter search: training"
        );
        let empty = matrices.train(Target::WentEmpty, split.valid.clone(), &p, progress)?;
        let full = matrices.train(Target::WentFull, split.valid.clone(), &p, progress)?;
        let (me, mf) = (
            measure(data, split, Target::WentEmpty, &empty)?,
            measure(data, split, Target::WentFull, &full)?,
        );
        let trial = Trial {
            max_depth: p.max_depth,
            eta: p.eta,
            min_child_weight: p.min_child_weight,
            subsample: p.subsample,
            score: (me.ranking() + mf.ranking()) / 2.0,
            empty: me,
            full: mf,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            trial = k + 1,
            score = trial.score,
            "hyper-parameter search: trial done"
        );
        let is_best = chosen.is_none_or(|b| better(&trial, &trials[b]));
        trials.push(trial);
        if is_best {
            chosen = Some(k);
            best = Some(([empty, full], p));
        }
    }
    let (chosen, (boosters, params)) = chosen
        .zip(best)
        .ok_or_else(|| TrainError::Internal("a search of no trial".into()))?;
    Ok((
        SearchReport {
            seed: base.seed,
            criterion: CRITERION.into(),
            space: space.clone(),
            trials,
            chosen,
        },
        boosters,
        params,
    ))
}

#[cfg(test)]
mod tests {
    use bikeshare_stream_processor::FeatureSchema;
    use bikeshare_types::Timestamp;

    use super::*;
    use crate::dataset::{RowLabel, SplitConfig};
    use crate::training::train_booster;

    /// Both targets driven by one feature each through a different curve, with noise: depth
    /// and eta matter.
    fn rows(n: usize) -> TrainingData {
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let mut d = TrainingData::new(&schema, 30);
        let mut state = bikeshare_types::lcg::Lcg64::new(5);
        let mut u = || state.unit_f32();
        for i in 0..n {
            let (a, b, c) = (u(), u(), u());
            let label = RowLabel {
                went_empty: u() < 0.3 * a * b + 0.02,
                went_full: u() < 0.25 * (c - 0.5).abs() + 0.01,
                empty_now: u() < 0.05,
                full_now: u() < 0.05,
            };
            d.push(
                &format!("s{}", i % 30),
                Timestamp(1_717_200_000_000 + i as i64 * 10_000),
                label,
                [Some(a), Some(b), Some(c)],
            );
        }
        d.finish();
        d
    }

    fn base() -> TrainParams {
        TrainParams {
            max_rounds: 40,
            early_stopping_rounds: 5,
            nthread: 1,
            seed: 3,
            search_trials: 4,
            ..TrainParams::default()
        }
    }

    #[test]
    fn trials_start_with_the_configured_parameters_and_differ_by_seed() {
        let space = SearchSpace::default();
        let a = trial_params(&base(), &space, 6);
        assert_eq!(a.len(), 6);
        assert_eq!(a[0], base());
        assert_eq!(
            a,
            trial_params(&base(), &space, 6),
            "the same seed, the same trials"
        );
        for (i, p) in a.iter().enumerate() {
            for q in &a[..i] {
                assert!(
                    (p.max_depth, p.eta, p.min_child_weight, p.subsample)
                        != (q.max_depth, q.eta, q.min_child_weight, q.subsample),
                    "trial {i} repeats one"
                );
            }
            assert!(p.validate().is_ok());
        }
        let other = trial_params(&TrainParams { seed: 4, ..base() }, &space, 6);
        assert_ne!(a[1..], other[1..]);
        // A space smaller than the trials asked for: each set once.
        let tiny = SearchSpace {
            max_depth: vec![2, 3],
            eta: vec![0.1],
            min_child_weight: vec![1.0],
            subsample: vec![1.0],
        };
        assert_eq!(trial_params(&base(), &tiny, 10).len(), 3);
    }

    #[test]
    fn the_search_is_deterministic_and_keeps_the_best_trial_on_validation() {
        let d = rows(6000);
        let split = d
            .split(&SplitConfig {
                min_rows: 10,
                ..SplitConfig::default()
            })
            .unwrap();
        let space = SearchSpace {
            max_depth: vec![1, 2, 4],
            eta: vec![0.05, 0.3],
            min_child_weight: vec![1.0, 50.0],
            subsample: vec![0.7, 1.0],
        };
        let run = || search_in(&d, &split, &base(), &space, &mut |_| {}).unwrap();
        let (report, boosters, chosen) = run();
        let (again, boosters_again, _) = run();
        assert_eq!(report.trials.len(), 4);
        let strip = |r: &SearchReport| -> Vec<Trial> {
            r.trials
                .iter()
                .map(|t| Trial {
                    seconds: 0.0,
                    ..t.clone()
                })
                .collect()
        };
        assert_eq!(
            strip(&report),
            strip(&again),
            "the same seed, the same trials"
        );
        assert_eq!(report.chosen, again.chosen);
        assert_eq!(boosters[0].json, boosters_again[0].json);
        // The chosen trial has the highest criterion; each trial's score is the mean of its
        // targets' validation new-stockout PR-AUC, recomputed here from its own models.
        let best = &report.trials[report.chosen];
        assert!(report.trials.iter().all(|t| t.score <= best.score));
        assert!(
            report.trials.iter().any(|t| t.score < best.score),
            "the trials differ: {:?}",
            report.trials
        );
        for (t, b) in Target::BOTH.into_iter().zip(&boosters) {
            let m = measure(&d, &split, t, b).unwrap();
            let reported = match t {
                Target::WentEmpty => &best.empty,
                Target::WentFull => &best.full,
            };
            assert_eq!(&m, reported);
        }
        assert!(
            (best.score
                - (best.empty.valid_new_stockout_pr_auc.unwrap()
                    + best.full.valid_new_stockout_pr_auc.unwrap())
                    / 2.0)
                .abs()
                < 1e-12
        );
        // The chosen models are those of the chosen parameters.
        assert_eq!(
            (
                chosen.max_depth,
                chosen.eta,
                chosen.min_child_weight,
                chosen.subsample
            ),
            (
                best.max_depth,
                best.eta,
                best.min_child_weight,
                best.subsample
            )
        );
        let retrained = train_booster(
            &d,
            Target::WentEmpty,
            split.train.clone(),
            split.valid.clone(),
            &chosen,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(retrained.json, boosters[0].json);
    }

    #[test]
    fn the_card_records_every_trial_and_the_chosen_parameters() {
        let d = rows(6000);
        let schema = FeatureSchema::current(&[5, 15, 30, 60]);
        let split = SplitConfig {
            min_rows: 10,
            ..SplitConfig::default()
        };
        let run = crate::training::RunInfo {
            name: "m".into(),
            version: "1".into(),
            created_at: Timestamp(0),
            source: "test".into(),
        };
        let trained =
            crate::training::train_models(&d, &schema, &split, &base(), &run, &mut |_| {}).unwrap();
        let card = &trained.card;
        let search = card.search.as_ref().unwrap();
        assert_eq!(search.trials.len(), 4);
        let best = &search.trials[search.chosen];
        assert_eq!(
            (
                card.params.max_depth,
                card.params.eta,
                card.params.min_child_weight,
                card.params.subsample
            ),
            (
                best.max_depth,
                best.eta,
                best.min_child_weight,
                best.subsample
            )
        );
        assert_eq!(card.empty.trees, best.empty.trees);
        assert_eq!(card.full.trees, best.full.trees);
        // Without a search the card has none and the parameters are the configured ones.
        let plain = TrainParams {
            search_trials: 0,
            ..base()
        };
        let trained =
            crate::training::train_models(&d, &schema, &split, &plain, &run, &mut |_| {}).unwrap();
        assert!(trained.card.search.is_none());
        assert_eq!(trained.card.params, plain);
    }
}
