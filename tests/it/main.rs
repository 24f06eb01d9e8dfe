//! The end-to-end tests of the `bikeshare` binary, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod support;

mod alerts_wiring;
mod aws_timeouts;
mod backfill_online;
mod backfill_parquet;
mod chaos;
mod cli_truth;
mod container_entrypoint;
mod dashboard_browser;
mod dashboard_chromium;
mod dashboard_scale;
mod endpoint_metrics;
mod endpoint_outage;
mod infra_deploy;
mod infra_names;
mod lake_restart;
mod lake_s3;
mod linking;
mod metrics_catalogue;
mod metrics_compliance;
mod model_monitor_capture;
mod monitor_drift;
mod processor_restart;
mod processor_scale_out;
mod progress;
mod readme_examples;
mod secret_logs;
mod stream_retention;
mod up_bootstrap;
mod up_stall;
