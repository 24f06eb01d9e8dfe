//! What links what (decision 092): `models` takes this crate for `drift` alone, so the AWS
//! clients behind this crate's `aws` feature must not reach it; only the CLI turns them on.
//! Read from `cargo tree` over the workspace's lock file, normal dependencies only.

use bikeshare_testkit::links::links;

#[test]
fn models_uses_drift_without_linking_the_sns_or_cloudwatch_sdk() {
    let models = links("bikeshare-models", &[]);
    assert!(
        models.iter().any(|p| p == "bikeshare-monitor"),
        "models no longer uses monitor: this test has lost its subject"
    );
    for sdk in ["aws-sdk-sns", "aws-sdk-cloudwatch"] {
        assert!(
            !models.iter().any(|p| p == sdk),
            "bikeshare-models links {sdk}: something turned on bikeshare-monitor's `aws` feature"
        );
    }
}

#[test]
fn monitor_links_no_aws_crate_without_its_feature_and_the_cli_turns_it_on() {
    let monitor = links("bikeshare-monitor", &[]);
    let aws: Vec<_> = monitor.iter().filter(|p| p.starts_with("aws-")).collect();
    assert!(aws.is_empty(), "bikeshare-monitor links {aws:?} by default");
    let cli = links("bikeshare", &[]);
    for sdk in ["aws-sdk-sns", "aws-sdk-cloudwatch"] {
        assert!(cli.iter().any(|p| p == sdk), "the CLI does not link {sdk}");
    }
}
