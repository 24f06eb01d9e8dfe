//! `bikeshare-runner`'s integration tests, in one test binary: one link of the dependency graph
//! instead of one per file. Each module is one former `tests/*.rs` file.

mod support;

mod fencing;
mod final_labels;
mod live_quality;
mod renewal;
mod resharding;
mod runner_bad_input;
mod shutdown;
