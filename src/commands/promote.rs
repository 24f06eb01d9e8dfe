//! `bikeshare promote`: a registered version through the promotion gate, or `--status`.

use crate::app::models::print_decision;
use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::Context;
use bikeshare_models::dataset::TrainingData;
use bikeshare_models::promote::HeldOut;
use bikeshare_models::registry::{Registry, Stage};
use bikeshare_stream_processor::FeatureSchema;

use crate::app::models::{gate, open_registry};
use crate::app::wall_clock;
use crate::cli::{PromoteArgs, PromoteStage};
use crate::config::Config;

pub async fn run(args: PromoteArgs, config: Config) -> anyhow::Result<()> {
    let clock = wall_clock();
    let registry = open_registry(&config, clock.clone())?;
    if args.status {
        return status(registry.as_ref()).await;
    }
    let target = match args.to {
        PromoteStage::Staging => Stage::Staging,
        PromoteStage::Production => Stage::Production,
    };
    let version = match (&args.model_dir, args.model_version) {
        (Some(dir), _) => {
            let v = registry.register(dir).await?;
            eprintln!(
                "registered {} as {} v{} in {}",
                dir.display(),
                v.model,
                v.version,
                registry.describe()
            );
            // For scripts (the model workflow reads them as step outputs).
            let mut out = std::io::stdout().lock();
            writeln!(out, "version={}", v.version)?;
            writeln!(out, "source={}", v.source)?;
            v.version
        }
        (None, Some(v)) => v,
        (None, None) => registry
            .current(Stage::Staging)
            .await?
            .map(|v| v.version)
            .context(
                "no version is in staging: give --model-version, or --model-dir to register one",
            )?,
    };
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let held_out = match &args.rows {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let data = TrainingData::from_backfill_csv(
                BufReader::new(file),
                &path.display().to_string(),
                config.processor.horizon_minutes,
            )?;
            let all = HeldOut::from_training_data(&data, 0..data.len());
            let recent = match config.registry.recent_hours {
                0 => all,
                h => all.recent(i64::try_from(h)?.saturating_mul(3_600_000)),
            };
            Some(recent)
        }
        None => None,
    };
    let gate = gate(&config, registry.clone(), &schema, clock);
    let decision = gate.evaluate(version, target, held_out.as_ref()).await?;
    print_decision(&decision);
    anyhow::ensure!(decision.promoted, "v{version} was not promoted");
    Ok(())
}

async fn status(registry: &dyn Registry) -> anyhow::Result<()> {
    let versions = registry.list().await?;
    let decisions = registry.decisions().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", registry.describe())?;
    if versions.is_empty() {
        writeln!(out, "  no versions registered")?;
    }
    for v in &versions {
        let stages: Vec<&str> = v.stages.iter().map(|s| s.as_str()).collect();
        writeln!(
            out,
            "  v{:<4} {:<24} {:<20} schema {}",
            v.version,
            v.registered_at.to_rfc3339(),
            stages.join(","),
            v.feature_schema_id.as_deref().unwrap_or("?")
        )?;
    }
    writeln!(out, "decisions ({}):", decisions.len())?;
    for d in decisions.iter().rev().take(10).rev() {
        writeln!(out, "  {}  {}", d.decided_at.to_rfc3339(), d.summary)?;
    }
    Ok(())
}
