//! # bikeshare-runtime
//!
//! What every bikeshare process runs on, written once:
//!
//! - [`aws`]: the one `SdkConfig` loader and the one client configuration (SDK retries off;
//!   the caller owns retries).
//! - [`security`]: the bearer-token rule every server follows (optional on loopback, required
//!   beyond it) and the constant-time token check.

pub mod aws;
pub mod security;
