//! Finding the emulators the integration tests run against: kinesis-mock, moto server and
//! MLflow, whose endpoints `scripts/test.sh` (or `scripts/emulators.sh <command>`) exports.
//!
//! Without the variable a test is skipped with a message saying how to run it, except in CI
//! (`CI=true` or `CI=1`), where a missing emulator is a failure.
//!
//! ```no_run
//! // A test starts with:
//! let Some(endpoint) = bikeshare_testkit::emulators::kinesis_endpoint("doc_example") else {
//!     return;
//! };
//! # let _ = endpoint;
//! ```

/// kinesis-mock's endpoint (plain HTTP/1.1).
pub const KINESIS_ENDPOINT: &str = "BIKESHARE_TEST_KINESIS_ENDPOINT";
/// moto server's endpoint (S3, DynamoDB, Firehose, SNS, CloudWatch, SageMaker runtime).
pub const MOTO_ENDPOINT: &str = "BIKESHARE_TEST_MOTO_ENDPOINT";
/// The MLflow tracking server's URI.
pub const MLFLOW_URI: &str = "BIKESHARE_TEST_MLFLOW_URI";

/// kinesis-mock's endpoint ([`KINESIS_ENDPOINT`]), or `None` when `test` is skipped.
pub fn kinesis_endpoint(test: &str) -> Option<String> {
    env_or_skip(KINESIS_ENDPOINT, test)
}

/// moto server's endpoint ([`MOTO_ENDPOINT`]), or `None` when `test` is skipped.
pub fn moto_endpoint(test: &str) -> Option<String> {
    env_or_skip(MOTO_ENDPOINT, test)
}

/// The MLflow server's URI ([`MLFLOW_URI`]), or `None` when `test` is skipped.
pub fn mlflow_uri(test: &str) -> Option<String> {
    env_or_skip(MLFLOW_URI, test)
}

/// The value of `var` (set by `scripts/test.sh`), or `None` after printing why `test` is
/// skipped.
///
/// # Panics
///
/// In CI (`CI=true` or `CI=1`) when `var` is unset or empty: there a missing emulator is a
/// failure, not a skip.
pub fn env_or_skip(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: {var} is not set in CI; run the tests with scripts/test.sh")
        }
        _ => {
            // Cargo sets the package of the test binary it runs.
            let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "<crate>".into());
            eprintln!(
                "SKIPPED {test}: {var} is not set (run scripts/test.sh, or \
                 scripts/emulators.sh cargo test -p {package})"
            );
            None
        }
    }
}
