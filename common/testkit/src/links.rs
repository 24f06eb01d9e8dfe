//! What a workspace crate links: `cargo tree` over the workspace's lock file, normal
//! dependencies only (decisions 070, 092 and 098 state the rules these tests check).

use std::path::Path;
use std::process::Command;

/// The packages `package` links (normal dependencies, its default features plus
/// `features`), by name, as `cargo tree --locked --offline` lists them.
///
/// # Panics
/// When `cargo tree` cannot run or fails: the test that asked cannot check anything.
#[allow(clippy::expect_used)]
pub fn links(package: &str, features: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "tree",
        "--locked",
        "--offline",
        "-e",
        "normal",
        "--prefix",
        "none",
    ])
    .args(["--format", "{p}", "-p", package, "--manifest-path"])
    .arg(&manifest);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let out = cmd.output().expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} --features {features:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}
