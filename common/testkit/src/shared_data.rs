//! Finding the shared test data (`../shared/data` beside the clone) from tests.
//!
//! Tests that need it call [`shared_data_dir`] and skip with a clear message when it is
//! absent, so the test command still passes on a user's own clone.

use std::path::{Path, PathBuf};

/// `$BIKESHARE_SHARED_DIR/data`, or the first `shared/data` found beside an ancestor of
/// `start` (a crate's `CARGO_MANIFEST_DIR`).
pub fn shared_data_dir_from(start: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BIKESHARE_SHARED_DIR") {
        let p = PathBuf::from(dir).join("data");
        return p.is_dir().then_some(p);
    }
    start
        .ancestors()
        .map(|a| a.join("shared").join("data"))
        .find(|p| p.is_dir())
}

/// Like [`shared_data_dir_from`] from this crate's manifest directory.
pub fn shared_data_dir() -> Option<PathBuf> {
    shared_data_dir_from(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Returns the shared data dir, or prints why a test is skipped and returns `None`.
///
/// ```
/// let Some(data) = bikeshare_testkit::shared_data::shared_data_or_skip("doc example") else {
///     return;
/// };
/// assert!(data.is_dir());
/// ```
pub fn shared_data_or_skip(test: &str) -> Option<PathBuf> {
    let dir = shared_data_dir();
    if dir.is_none() {
        eprintln!(
            "SKIPPED {test}: ../shared/data not found beside the clone (set BIKESHARE_SHARED_DIR)"
        );
    }
    dir
}
