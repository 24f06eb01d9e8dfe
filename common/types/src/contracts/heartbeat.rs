//! Source progress markers.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// "This feed was read completely as of `last_updated`": published by a producer after each
/// successful read of `station_status`, whether or not any station changed.
///
/// Real feeds report on change, and a whole city can go quiet at night; the heartbeat lets
/// the processor's event-time watermark advance anyway, so quiet stations still get their
/// regular predictions and due labels are still emitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHeartbeat {
    /// The feed name, e.g. `station_status`.
    pub feed: String,
    pub last_updated: Timestamp,
}
