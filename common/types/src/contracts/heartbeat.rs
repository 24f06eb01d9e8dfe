//! Source progress markers.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The feed name of `station_status` heartbeats, the only ones that move the processor's
/// event-time watermark.
pub const STATION_STATUS_FEED: &str = "station_status";

/// The feed name under which weather observations are judged for freshness.
pub const WEATHER_FEED: &str = "weather";

/// Weather observations are hourly (Meteostat's step): the weather feed's period.
pub const WEATHER_PERIOD_SECS: u32 = 3600;

/// "This feed was read completely as of `last_updated`".
///
/// - `station_status`: published after each read whose `last_updated` is newer, whether or not
///   any station changed. Real feeds report on change, and a whole city can go quiet at night;
///   the heartbeat lets the processor's event-time watermark advance anyway, so quiet stations
///   still get their regular predictions and due labels are still emitted. A feed that keeps
///   serving the same `last_updated` publishes no heartbeat and turns stale.
/// - `system_information`, `station_information`: published after every successful read,
///   `304 Not Modified` included, with `last_updated` the time of the read. These feeds publish
///   events only when their content changes, so without the heartbeat a healthy but unchanged
///   feed would look stopped. The processor ignores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHeartbeat {
    /// The feed name, e.g. `station_status`.
    pub feed: String,
    pub last_updated: Timestamp,
    /// How often the producer reads this feed (its GBFS `ttl`, within the poller's bounds):
    /// the feed's clock for freshness, which is stale after two periods without news.
    /// Absent in records written before it existed, and in replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_s: Option<u32>,
}

impl FeedHeartbeat {
    /// Whether this heartbeat moves the event-time watermark (`station_status` only).
    pub fn is_station_status(&self) -> bool {
        self.feed == STATION_STATUS_FEED
    }
}
