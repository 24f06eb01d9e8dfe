//! From SDK errors to [`StreamError`]: whose fault, and whether a retry can help.
//!
//! The Kinesis error *code* decides: throttling codes become [`StreamError::Throttled`],
//! missing resources [`StreamError::NoSuchStream`], other client errors
//! [`StreamError::InvalidRequest`] (no retry), and server errors, timeouts and connection
//! failures [`StreamError::Service`] (retryable). The message keeps the whole cause chain.

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use bikeshare_stream::StreamError;
use bikeshare_types::error::chain;

/// Kinesis' per-shard throughput error, per record (`PutRecords`) or per call.
pub const THROTTLED_CODE: &str = "ProvisionedThroughputExceededException";
/// An iterator older than five minutes.
pub const EXPIRED_ITERATOR_CODE: &str = "ExpiredIteratorException";

const THROTTLING_CODES: &[&str] = &[
    THROTTLED_CODE,
    "LimitExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
];

/// An SDK failure: the service's error code when it answered, and the classified error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: Option<String>,
    pub error: StreamError,
}

impl Failure {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Classifies a failed call of `operation` on `stream`.
pub(crate) fn classify<E>(operation: &str, stream: &str, err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = format!("{operation} on {stream}: {}", chain(&err));
    match &err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().map(str::to_owned);
            let status = ctx.raw().status().as_u16();
            let error = match code.as_deref() {
                Some(c) if THROTTLING_CODES.contains(&c) => StreamError::Throttled(message),
                Some("ResourceNotFoundException") => StreamError::NoSuchStream(message),
                _ if status >= 500 => StreamError::Service(message),
                Some("InternalFailure" | "ServiceUnavailable" | "ServiceUnavailableException") => {
                    StreamError::Service(message)
                }
                _ => StreamError::InvalidRequest(message),
            };
            Failure { code, error }
        }
        SdkError::ConstructionFailure(_) => Failure {
            code: None,
            error: StreamError::InvalidRequest(message),
        },
        // Timeouts, connection failures, unparseable answers: the service or the network.
        _ => Failure {
            code: None,
            error: StreamError::Service(message),
        },
    }
}
