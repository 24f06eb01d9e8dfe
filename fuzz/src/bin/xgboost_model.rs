//! The native evaluator's XGBoost JSON model loader (a model directory is outside input: a
//! registry download, a user's path). Any input loads or is refused with an error; a model
//! that loads scores any row of its width, missing values included, to a probability.
//!
//! The evaluator is one self-contained file of `bikeshare-models` (serde only); it is
//! compiled in here by path so the fuzz build does not build XGBoost's C++ library, which the
//! rest of that crate links for training.
#[allow(dead_code, unreachable_pub)]
#[path = "../../../models/src/xgboost.rs"]
mod xgboost;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(model) = xgboost::XgbModel::from_json(data) else {
            return;
        };
        let width = model.num_feature();
        if width > 4096 {
            return; // a row that wide says nothing more about the walk
        }
        for fill in [f32::NAN, 0.0, -1e30, 1e30] {
            let p = model.predict(&vec![fill; width]);
            assert!(p.is_nan() || (0.0..=1.0).contains(&p), "probability {p}");
        }
    });
}
