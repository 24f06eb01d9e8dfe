//! The simulator's errors: whose fault, and whether trying again can help.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// The server would be reachable beyond this machine without a token.
    #[error(
        "refusing to serve on {bind} (beyond loopback) without a bearer token: set `token` or {TOKEN_ENV}"
    )]
    TokenRequired { bind: SocketAddr },
    #[error("cannot bind {bind}")]
    Bind {
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("http server failed")]
    Serve(#[source] std::io::Error),
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
            Self::Config { .. } | Self::TokenRequired { .. } => ErrorClass::User,
            Self::Bind { .. } | Self::Io { .. } | Self::Serve(_) => ErrorClass::External,
            Self::Render { .. } | Self::Internal(_) => ErrorClass::Internal,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::Bind { .. } | Self::Serve(_))
    }
}
