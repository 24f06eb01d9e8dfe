//! `bikeshare-embedded`'s integration tests (durability under SIGKILL, throughput), in one
//! test binary: one link of the dependency graph instead of one per file. Each module is one former `tests/*.rs` file; shared helpers are modules too.

mod stream_durability;
mod stream_throughput;
