//! # bikeshare-monitor
//!
//! What operators, the business and data scientists watch:
//!
//! - [`exporter`]: the Prometheus recorder behind the `metrics` facade and the `/metrics`
//!   endpoint (names, units and labels are in [`bikeshare_types::metrics`]).
//! - [`drift`]: data-quality baselines and drift checks in SageMaker Model Monitor's formats.
//! - [`samples`]: a reader of the exposition format, for in-process consumers of it.
//! - [`alerts`]: rules over the documented metrics, the pending/firing/resolved state
//!   machine, and notifications to a Slack-compatible webhook and SNS.
//! - [`cloudwatch`]: the same snapshot pushed to CloudWatch with `PutMetricData`.
//!
//! The SNS notifier and the CloudWatch exporter hold AWS SDK clients: they are behind the
//! `aws` feature (off by default; the CLI turns it on), so a crate that uses [`drift`] or the
//! alert engine alone links no AWS SDK through this one.

pub mod alerts;
pub mod cloudwatch;

pub mod drift;
pub mod exporter;
pub mod samples;
