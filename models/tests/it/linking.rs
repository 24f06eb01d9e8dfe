//! What links what (decision 098): training, evaluation, serving and the registry's local and
//! MLflow backends compile and link no AWS SDK; only the features `sagemaker-endpoint` (the
//! processor's endpoint client) and `sagemaker-registry` bring it in, and the CLI turns them on.
//! Read from `cargo tree` over the workspace's lock file, normal dependencies only.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// The packages `package` links (normal dependencies) with `features` turned on.
fn links(package: &str, features: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
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

fn aws(packages: &[String]) -> Vec<&String> {
    packages.iter().filter(|p| p.starts_with("aws-")).collect()
}

#[test]
fn models_links_no_aws_crate_without_its_features() {
    let models = links("bikeshare-models", &[]);
    assert!(
        models.iter().any(|p| p == "xgboost-rs"),
        "cargo tree did not list models' dependencies: {models:?}"
    );
    let aws = aws(&models);
    assert!(
        aws.is_empty(),
        "bikeshare-models links {aws:?} by default: a feature became a default, or a \
         dependency turned on an AWS client (bikeshare-runtime's or bikeshare-monitor's `aws`)"
    );
}

#[test]
fn the_endpoint_feature_brings_the_sagemaker_runtime_sdk_and_the_cli_turns_it_on() {
    let with = links("bikeshare-models", &["sagemaker-endpoint"]);
    for sdk in ["aws-sdk-sagemakerruntime", "aws-config"] {
        assert!(
            with.iter().any(|p| p == sdk),
            "models with `sagemaker-endpoint` does not link {sdk}: this test has lost its subject"
        );
    }
    assert!(
        !with.iter().any(|p| p == "aws-sdk-sagemaker"),
        "the endpoint client alone links the registry's SDK"
    );
    let cli = links("bikeshare", &[]);
    for sdk in ["aws-sdk-sagemakerruntime", "aws-sdk-sagemaker"] {
        assert!(cli.iter().any(|p| p == sdk), "the CLI does not link {sdk}");
    }
}
