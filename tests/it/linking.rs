//! Issue 12's rule on what links what, for every crate of the workspace (decisions 070, 092
//! and 098; `cargo tree`, normal dependencies, default features): SQLite only where the
//! embedded stream is built in, the AWS SDK only in the AWS crates and the CLI, and the pure
//! cores (contracts, the processor's core) without tokio, SQLite or the AWS SDK.

use std::path::Path;
use std::process::Command;

use bikeshare_testkit::links::links;

/// The workspace's packages, from `cargo metadata`.
#[allow(clippy::expect_used)]
fn workspace_packages() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    meta["packages"]
        .as_array()
        .expect("a package list")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Where each may be linked.
const SQLITE: &[&str] = &["bikeshare", "bikeshare-embedded", "bikeshare-benches"];
const AWS_SDK: &[&str] = &["bikeshare", "bikeshare-aws", "bikeshare-firehose"];
const PURE: &[&str] = &["bikeshare-types", "bikeshare-stream-processor"];

#[test]
fn sqlite_and_the_aws_sdk_stay_in_their_crates_and_the_pure_cores_link_neither_nor_tokio() {
    let packages = workspace_packages();
    for must in SQLITE.iter().chain(AWS_SDK).chain(PURE) {
        assert!(
            packages.iter().any(|p| p == must),
            "{must} is not in the workspace any more"
        );
    }
    let mut broken = Vec::new();
    for package in &packages {
        let linked = links(package, &[]);
        assert!(
            linked.iter().any(|p| p == package),
            "cargo tree did not list {package}"
        );
        let sqlite = linked.iter().any(|p| p == "libsqlite3-sys");
        let aws: Vec<_> = linked
            .iter()
            .filter(|p| p.starts_with("aws-sdk-"))
            .collect();
        let tokio = linked.iter().any(|p| p == "tokio");
        if sqlite && !SQLITE.contains(&package.as_str()) {
            broken.push(format!("{package} links SQLite"));
        }
        if !aws.is_empty() && !AWS_SDK.contains(&package.as_str()) {
            broken.push(format!("{package} links {aws:?}"));
        }
        if tokio && PURE.contains(&package.as_str()) {
            broken.push(format!("{package} (a pure core) links tokio"));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
    // The rule has a subject: the crates allowed to link them do.
    assert!(
        links("bikeshare-embedded", &[])
            .iter()
            .any(|p| p == "libsqlite3-sys")
    );
    assert!(
        links("bikeshare-aws", &[])
            .iter()
            .any(|p| p == "aws-sdk-kinesis")
    );
}
