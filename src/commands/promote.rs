//! `bikeshare promote`: a registered version through the promotion gate, or `--status`.

use std::fs::File;
use std::io::{BufReader, Write};

use anyhow::Context;
use bikeshare_models::dataset::TrainingData;
use bikeshare_models::promote::{HeldOut, PromotionDecision};
use bikeshare_models::registry::{Registry, Stage};
use bikeshare_stream_processor::FeatureSchema;

use super::models::{gate, open_registry};
use super::wall_clock;
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
    let version = match args.model_version {
        Some(v) => v,
        None => registry
            .current(Stage::Staging)
            .await?
            .map(|v| v.version)
            .context("no version is in staging: give --version")?,
    };
    let schema = FeatureSchema::v1(&config.processor.window_minutes);
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

/// The decision, check by check, with the numbers.
pub fn print_decision(d: &PromotionDecision) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", d.summary);
    if let Some(h) = &d.heldout {
        let _ = writeln!(
            out,
            "  held-out: {} rows from {} to {} ({} went empty, {} went full)",
            h.rows,
            h.from.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
            h.to.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
            h.went_empty,
            h.went_full
        );
    }
    if let (Some(c), Some(i), Some(inc)) =
        (&d.candidate_metrics, &d.incumbent_metrics, &d.incumbent)
    {
        let _ = writeln!(
            out,
            "  {:<28} {:>10} {:>10} {:>10} {:>10}",
            "", "LL empty", "PR empty", "LL full", "PR full"
        );
        for (who, m) in [
            (format!("candidate v{}", d.candidate), c),
            (format!("{} v{}", inc.name, inc.version), i),
        ] {
            let _ = writeln!(
                out,
                "  {who:<28} {:>10.5} {:>10.5} {:>10.5} {:>10.5}",
                m.empty.log_loss, m.empty.pr_auc, m.full.log_loss, m.full.pr_auc
            );
        }
    }
    for c in &d.checks {
        let _ = writeln!(
            out,
            "  [{}] {:<40} {}",
            if c.passed { "pass" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
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
