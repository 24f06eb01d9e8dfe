//! Structured logs through `tracing`: text for people, JSON for machines.
//!
//! No secret may reach a log at any level. The AWS SDK's wire-level trace prints whole
//! requests — headers and the SigV4 canonical request — and the SageMaker custom-attributes
//! header carries the model token (`BIKESHARE_MODEL_TOKEN`) to a `serve-model` beyond
//! loopback. So the crates that trace the wire ([`WIRE_TARGETS`]) are capped at `debug`
//! whatever `RUST_LOG` or `[log] filter` say: the cap is a second filter beside the
//! configured one, so no directive (not even `aws_sigv4=trace`) lifts it.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogConfig, LogFormat};

/// Target prefixes whose `trace` level is wire-level (request and response dumps, signing
/// input): never enabled above [`WIRE_CAP`].
pub const WIRE_TARGETS: &[&str] = &[
    "aws_smithy",
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "aws_sdk_",
    "hyper",
    "h2",
    "rustls",
    "reqwest",
];

/// The most verbose level of [`WIRE_TARGETS`].
pub const WIRE_CAP: LevelFilter = LevelFilter::DEBUG;

/// The cap: every target at any level, except the wire targets above [`WIRE_CAP`].
fn wire_cap() -> Targets {
    WIRE_TARGETS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, w| {
            t.with_target(*w, WIRE_CAP)
        })
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter; the wire
/// cap applies either way.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(wire_cap()).with(filter);
    // Colour only for a person at a terminal: logs in files and CI stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let result = match cfg.format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(target: &str, level: Level) -> bool {
        wire_cap().would_enable(target, &level)
    }

    #[test]
    fn the_wire_targets_never_trace_and_the_rest_may() {
        for t in [
            "aws_sigv4::http_request::sign",
            "aws_smithy_runtime::client::orchestrator",
            "aws_smithy_http_client::hyper_1",
            "hyper_util::client::legacy",
        ] {
            assert!(!enabled(t, Level::TRACE), "{t}");
            assert!(enabled(t, Level::DEBUG), "{t}");
        }
        assert!(enabled("bikeshare_runner", Level::TRACE));
        assert!(enabled("bikeshare_models::endpoint", Level::TRACE));
    }
}
