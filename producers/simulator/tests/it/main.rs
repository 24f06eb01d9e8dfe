//! The `bikeshare-simulator`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod simulator_gbfs;
mod simulator_http;
mod simulator_props;
mod stockout_rates;
