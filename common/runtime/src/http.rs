//! The one HTTP server scaffold every bikeshare server stands on (the dashboard, the
//! subscription API, `serve-model`, `/metrics`, the simulator).
//!
//! - The token rule ([`Server::token_for_bind`]): a bearer token (configured, else from the
//!   server's environment variable; empty means none) is optional on loopback and required on
//!   any other address, where the server refuses to start without one.
//! - Binding ([`Server::bind`]) and serving a router until a shutdown future resolves, on its
//!   own task ([`Server::spawn`], [`Server::start`]), logging a serve failure once.
//! - The bearer check of a request ([`bearer_matches`], [`authorised`], [`unauthorised`]),
//!   compared in constant time.
//! - [`Secret`]: a token in a configuration. It reads and writes as a plain string, and its
//!   `Debug` prints `"<redacted>"`, so configurations holding one derive `Debug`.
//! - [`ListenError`]: why a server could not start, naming the server and its variable.
//!
//! ```
//! use bikeshare_runtime::http::{Secret, Server};
//!
//! const SERVER: Server = Server::new("the dashboard", "BIKESHARE_DASHBOARD_TOKEN");
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let wildcard = "0.0.0.0:0".parse().unwrap();
//! let token = Secret::from("s3cret");
//! assert!(SERVER.token_for_bind(loopback, None).is_ok());
//! assert_eq!(SERVER.token_for_bind(wildcard, Some(&token)).unwrap(), Some(token));
//! ```

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bikeshare_types::error::{Classify, ErrorClass};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A secret in a configuration (a bearer token): serialized and deserialized as the plain
/// string, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared in constant time (only the length leaks).
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt("<redacted>", f)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The server would be reachable beyond this machine without a token.
    #[error(
        "refusing to serve {server} on {addr} without a token: set {token_env} or bind 127.0.0.1"
    )]
    TokenRequired {
        server: &'static str,
        token_env: &'static str,
        addr: SocketAddr,
    },
    /// The address is taken, not local, or not allowed.
    #[error("cannot listen on {addr} for {server}: {source}")]
    Bind {
        server: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Classify for ListenError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::TokenRequired { .. } => ErrorClass::User,
            Self::Bind { .. } => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Self::Bind { .. })
    }
}

/// One of the project's servers, as its errors and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// What it serves, as messages say it: `"the dashboard"`, `"/metrics"`.
    pub name: &'static str,
    /// The environment variable holding its token when none is configured.
    pub token_env: &'static str,
}

impl Server {
    pub const fn new(name: &'static str, token_env: &'static str) -> Self {
        Self { name, token_env }
    }

    /// The token to require on `bind`: `given`, else the server's environment variable (an
    /// empty one meaning none). Optional on loopback; beyond it, no token is an error.
    pub fn token_for_bind(
        &self,
        bind: SocketAddr,
        given: Option<&Secret>,
    ) -> Result<Option<Secret>, ListenError> {
        let token = given
            .cloned()
            .or_else(|| std::env::var(self.token_env).ok().map(Secret))
            .filter(|t| !t.0.is_empty());
        if !bind.ip().is_loopback() && token.is_none() {
            return Err(ListenError::TokenRequired {
                server: self.name,
                token_env: self.token_env,
                addr: bind,
            });
        }
        Ok(token)
    }

    /// Listens on `addr`; returns the listener and the address it got (the real port when
    /// `addr` has port 0).
    pub async fn bind(&self, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ListenError> {
        let bind_error = |source| ListenError::Bind {
            server: self.name,
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        Ok((listener, local))
    }

    /// Serves `router` on `listener` until `shutdown` resolves, then lets requests in flight
    /// finish. A failure is logged here, once.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, server = self.name, "HTTP server stopped");
        }
    }

    /// [`Server::serve`] on its own task.
    pub fn spawn(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(self.serve(listener, router, shutdown))
    }

    /// Binds `addr` and serves `router` on its own task until `shutdown` resolves. `path` is
    /// what [`Running::url`] appends to the address.
    pub async fn start(
        self,
        addr: SocketAddr,
        path: &'static str,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Running, ListenError> {
        let (listener, local) = self.bind(addr).await?;
        let task = self.spawn(listener, router, shutdown);
        Ok(Running::new(local, path, task))
    }
}

/// A running server: where it listens and the task serving it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    path: &'static str,
    task: JoinHandle<()>,
}

impl Running {
    /// The server bound to `addr` and served by `task`; its URL is `http://<addr><path>`.
    pub fn new(addr: SocketAddr, path: &'static str, task: JoinHandle<()>) -> Self {
        Self { addr, path, task }
    }

    /// The address the server is bound to (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<local_addr><path>`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Waits for the server to stop (after its shutdown future resolved).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The token of the request's `Authorization: Bearer <token>` header, if it has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_matches(token: &Secret, headers: &HeaderMap) -> bool {
    bearer_token(headers).is_some_and(|given| token.matches(given.as_bytes()))
}

/// Whether the request may proceed: there is no token, or it carries it as a bearer token.
pub fn authorised(token: Option<&Secret>, headers: &HeaderMap) -> bool {
    token.is_none_or(|t| bearer_matches(t, headers))
}

/// The answer to a request without the right bearer token: 401 with a short text.
pub fn unauthorised() -> Response {
    (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Server = Server::new("the test server", "BIKESHARE_TEST_TOKEN_NEVER_SET");

    #[test]
    fn a_token_is_required_only_beyond_loopback() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(SERVER.token_for_bind(lo, None).unwrap(), None);
        let refused = SERVER.token_for_bind(any, None).unwrap_err();
        assert!(
            matches!(refused, ListenError::TokenRequired { addr, .. } if addr == any),
            "{refused}"
        );
        assert_eq!(
            refused.to_string(),
            "refusing to serve the test server on 0.0.0.0:0 without a token: set \
             BIKESHARE_TEST_TOKEN_NEVER_SET or bind 127.0.0.1"
        );
        assert!(SERVER.token_for_bind(any, Some(&"".into())).is_err());
        assert_eq!(
            SERVER.token_for_bind(any, Some(&"t".into())).unwrap(),
            Some("t".into())
        );
    }

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let token = Secret::from("abc");
        let headers = |v: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(header::AUTHORIZATION, v.parse().unwrap());
            }
            h
        };
        assert!(bearer_matches(&token, &headers(Some("Bearer abc"))));
        assert!(authorised(None, &headers(None)));
        for bad in [
            None,
            Some("abc"),
            Some("Bearer abd"),
            Some("Bearer abcd"),
            Some("bearer abc"),
            Some("Bearer "),
        ] {
            assert!(!authorised(Some(&token), &headers(bad)), "{bad:?}");
        }
    }

    #[test]
    fn secrets_read_as_strings_and_never_print() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Config {
            token: Option<Secret>,
        }
        let c: Config = serde_json::from_str(r#"{"token": "s3cret"}"#).unwrap();
        assert_eq!(format!("{c:?}"), r#"Config { token: Some("<redacted>") }"#);
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"token":"s3cret"}"#);
    }

    #[tokio::test]
    async fn a_taken_address_names_the_server() {
        let (_held, addr) = SERVER.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let err = SERVER.bind(addr).await.unwrap_err();
        assert!(matches!(err, ListenError::Bind { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr} for the test server: ")),
            "{err}"
        );
    }
}
