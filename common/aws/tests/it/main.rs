//! The `bikeshare-aws`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod support;

mod checkpoint_fencing;
mod fan_out;
mod kinesis_mock;
mod leases;
mod resharding;
mod throughput;
