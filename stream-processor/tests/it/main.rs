//! The `bikeshare-stream-processor`'s integration tests, in one test binary: one link of the dependency graph instead of one per
//! file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod golden_backfill;
mod golden_features;
mod processor_semantics;
mod profile_features;
