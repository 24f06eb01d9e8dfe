//! The `bikeshare-monitor`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod alerts_notify;
mod cloudwatch_moto;
mod infra_monitoring;
mod linking;
