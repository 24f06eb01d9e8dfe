//! What links what (decision 098): training, evaluation, serving and the registry's local and
//! MLflow backends compile and link no AWS SDK; only the features `sagemaker-endpoint` (the
//! processor's endpoint client) and `sagemaker-registry` bring it in, and the CLI turns them on.
//! Read from `cargo tree` over the workspace's lock file, normal dependencies only.

use bikeshare_testkit::links::links;

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
