//! The `bikeshare-producers`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod gbfs_conformance;
mod gbfs_http;
mod gbfs_probe;
mod replay_bluebikes;
mod replay_gbfs_snapshots;
mod replay_snapshots;
mod replay_support;
mod weather_meteostat;
