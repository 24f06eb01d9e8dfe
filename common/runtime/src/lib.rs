//! # bikeshare-runtime
//!
//! What every bikeshare process runs on, written once:
//!
//! - `aws` (feature `aws`): the one `SdkConfig` loader and the one client configuration (SDK retries off;
//!   the caller owns retries).
//! - [`http`]: the one HTTP server scaffold: the bearer-token rule every server follows
//!   (optional on loopback, required beyond it), binding and serving until shutdown, the
//!   constant-time bearer check, [`http::Secret`] for tokens in configurations and
//!   [`http::ListenError`], why a server could not start.

#[cfg(feature = "aws")]
pub mod aws;
pub mod http;
