//! The simulator's errors: whose fault, and whether trying again can help.

use std::path::PathBuf;

use bikeshare_runtime::http::ListenError;
use bikeshare_types::error::{Classify, ErrorClass};

/// The environment variable that holds the bearer token when `token` is not configured.
pub const TOKEN_ENV: &str = "BIKESHARE_SIM_TOKEN";

/// Why the simulator could not start, serve or write.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// A configuration value is out of range or malformed.
    #[error("invalid simulator configuration: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// The server would be reachable beyond this machine without a token, or cannot bind.
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot render {what}")]
    Render {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A bug or a background task that died.
    #[error("simulator internal error: {0}")]
    Internal(String),
}

impl Classify for SimulatorError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Listen(e) => e.class(),
            Self::Config { .. } => ErrorClass::User,
            Self::Io { .. } => ErrorClass::External,
            Self::Render { .. } | Self::Internal(_) => ErrorClass::Internal,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::Listen(e) if e.retryable())
    }
}
