//! `bikeshare monitor`: data-quality monitoring of the lake's feature rows in SageMaker Model
//! Monitor's formats. `baseline` writes `statistics.json` + `constraints.json` of a range of
//! rows (Model Monitor's "suggest baseline"); `check` compares a range with a baseline and
//! writes `constraint_violations.json` (completeness, data type, baseline drift with a
//! distance per feature), records the drift metrics and prints a summary. The same check
//! runs inside `up` every few minutes over the last hour (see [`DriftTask`]).

use crate::app::drift::{baseline_of_rows, check, features, print_summary};

use anyhow::Context;
use bikeshare_lake::open_store;
use bikeshare_stream_processor::FeatureSchema;

use crate::cli::{MonitorArgs, MonitorCommand};
use crate::config::Config;

/// Exit status of `check --fail-on-violations` when something is violated.
const VIOLATIONS_EXIT: i32 = 3;

pub async fn run(args: MonitorArgs, config: Config) -> anyhow::Result<()> {
    let schema = FeatureSchema::current(&config.processor.window_minutes);
    let store = open_store(&config.lake, &config.data_dir.0)?;
    let dir = config.data_dir.0.join("monitoring");
    match args.command {
        MonitorCommand::Baseline { range, output: out } => {
            let out = out.unwrap_or_else(|| dir.join("baseline"));
            let rows = crate::app::progress::while_running(
                "monitor baseline",
                "reading feature rows from the lake",
                features(&store, &schema, &range),
            )
            .await?;
            anyhow::ensure!(
                !rows.is_empty(),
                "no feature rows of schema {} in the lake {} for that range",
                schema.id().0,
                config.lake.location(&config.data_dir.0)
            );
            baseline_of_rows(&schema, &rows)
                .write(&out)
                .with_context(|| format!("writing the baseline to {}", out.display()))?;
            eprintln!(
                "baseline of {} feature rows ({} features) written to {}",
                rows.len(),
                schema.len(),
                out.display()
            );
            Ok(())
        }
        MonitorCommand::Check {
            range,
            baseline,
            output: out,
            fail_on_violations,
        } => {
            let baseline_dir = baseline.unwrap_or_else(|| dir.join("baseline"));
            let out = out.unwrap_or_else(|| dir.join("latest"));
            let report = crate::app::progress::while_running(
                "monitor check",
                "reading feature rows and comparing them with the baseline",
                check(&store, &schema, &baseline_dir, &range, &out),
            )
            .await?;
            print_summary(&report, &out)?;
            if fail_on_violations && !report.violations.violations.is_empty() {
                std::process::exit(VIOLATIONS_EXIT);
            }
            Ok(())
        }
    }
}
