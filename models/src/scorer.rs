//! The processor's [`Scorer`] backed by two XGBoost models, and their calibrators when the
//! model directory has them ([`crate::calibration`]).

use bikeshare_stream_processor::{FeatureSchema, Scorer, Scores};
use bikeshare_types::contracts::{FeatureSchemaId, ModelRef};

use crate::calibration::Calibrator;
use crate::xgboost::{ModelError, XgbModel};

/// Two binary models over the same feature schema: went empty, went full.
#[derive(Debug, Clone)]
pub struct XgbScorer {
    model: ModelRef,
    schema_id: FeatureSchemaId,
    empty: XgbModel,
    full: XgbModel,
    calibrator: Option<Calibrator>,
}

impl XgbScorer {
    /// The same models with their probabilities mapped by `calibrator` (`None`: raw).
    pub fn with_calibrator(mut self, calibrator: Option<Calibrator>) -> Self {
        self.calibrator = calibrator.filter(|c| !c.is_empty());
        self
    }

    pub fn calibrator(&self) -> Option<&Calibrator> {
        self.calibrator.as_ref()
    }

    /// The same models under another name: a registry version names what it serves.
    pub fn with_model(mut self, model: ModelRef) -> Self {
        self.model = model;
        self
    }

    /// Refuses models trained on another feature schema, or on another number of features.
    pub fn new(
        model: ModelRef,
        trained_on: &FeatureSchemaId,
        schema: &FeatureSchema,
        empty: XgbModel,
        full: XgbModel,
    ) -> Result<Self, ModelError> {
        if trained_on != schema.id() {
            return Err(ModelError::Unsupported(format!(
                "model {} was trained on feature schema {}, the processor computes {}",
                model.name,
                trained_on.0,
                schema.id().0
            )));
        }
        for (what, m) in [("empty", &empty), ("full", &full)] {
            if m.num_feature() != 0 && m.num_feature() != schema.len() {
                return Err(ModelError::Unsupported(format!(
                    "the {what} model has {} features, the schema {}",
                    m.num_feature(),
                    schema.len()
                )));
            }
        }
        Ok(Self {
            model,
            schema_id: schema.id().clone(),
            empty,
            full,
            calibrator: None,
        })
    }
}

impl Scorer for XgbScorer {
    fn model(&self) -> &ModelRef {
        &self.model
    }
    fn schema_id(&self) -> &FeatureSchemaId {
        &self.schema_id
    }
    fn score(&self, values: &[Option<f32>]) -> Scores {
        let mut row = [f32::NAN; 128];
        let dense: Vec<f32>;
        let row: &[f32] = if values.len() <= row.len() {
            for (slot, v) in row.iter_mut().zip(values) {
                *slot = v.unwrap_or(f32::NAN);
            }
            &row[..values.len()]
        } else {
            dense = values.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
            &dense
        };
        let raw = Scores {
            p_empty: self.empty.predict(row),
            p_full: self.full.predict(row),
        };
        match &self.calibrator {
            Some(c) => c.apply(raw),
            None => raw,
        }
    }
}
