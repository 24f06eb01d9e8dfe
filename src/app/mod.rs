//! The wiring shared by the commands: every command module in `commands/` builds what it
//! needs from here, and no command imports another.
//!
//! - [`aws`]: the one AWS SDK configuration of the process.
//! - [`city`]: the simulated city's clock, kept with the data so that `up` resumes.
//! - [`streams`]: the configured stream backend, the producers' streams and output.
//! - [`producers`]: GBFS pollers and the weather producer as tasks; replay sources.
//! - [`progress`]: progress bars of long commands on stderr (hidden off a terminal).
//! - [`runner`]: the stream processor's runner.
//! - [`sinks`]: the lake and Firehose sinks of the processor and the archiver.
//! - [`stores`]: the checkpoint and lease stores of the runner and the archiver.
//! - [`models`]: the registry, the promotion gate, the scorer that follows production.
//! - [`monitoring`]: `/metrics`, alerts and the CloudWatch exporter; [`drift`]: the drift
//!   check over the lake.
//! - [`dashboard`]: the web dashboard fed from the streams.

pub mod aws;
pub mod city;
pub mod dashboard;
pub mod drift;
pub mod models;
pub mod monitoring;
pub mod producers;
pub mod progress;
pub mod runner;
pub mod sinks;
pub mod stores;
pub mod streams;

use bikeshare_types::{SharedClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The wall clock every command runs on.
pub fn wall_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// Resolves on Ctrl-C (or SIGTERM), or after `duration` when given.
pub async fn shutdown_signal(duration: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
        () = timer => tracing::info!("duration reached: shutting down"),
    }
}

/// Resolves when `stop` becomes true.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
