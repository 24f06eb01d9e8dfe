//! Error classification shared by every component.
//!
//! Each crate has its own `thiserror` enum; each variant says whose fault it is and whether
//! trying again can help, so retry loops and metrics treat every error the same way.

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Bad input or configuration: fix the input, retrying will not help.
    User,
    /// A remote service or the network: often transient.
    External,
    /// A bug or a broken local resource.
    Internal,
}

/// Implemented by every error enum in the workspace.
pub trait Classify {
    fn class(&self) -> ErrorClass;
    /// Whether the same call may succeed if tried again.
    fn retryable(&self) -> bool;
}

/// Formats an error with its whole cause chain: `outer: middle: root`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = e.source();
    }
    s
}
