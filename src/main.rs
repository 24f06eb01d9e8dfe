//! The `bikeshare` command line.
fn main() {}
