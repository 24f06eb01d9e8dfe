//! Feed freshness: each feed judged against its own period.
//!
//! A feed is stale once it has brought no news for [`STALE_AFTER_PERIODS`] of its periods.
//! The period travels with the data: `station_status` and the information feeds say theirs in
//! their [`FeedHeartbeat`]s (the producer's read interval, from the feed's GBFS `ttl`), and
//! weather observations are hourly ([`WEATHER_PERIOD_SECS`]). News is a newer event time:
//! `station_status`'s `last_updated`, an information feed's read (it sends a heartbeat per
//! read, `304` included, since its content rarely changes), weather's next hour; it counts
//! from when it was read (the event's ingest time). So a feed that is catching up (a city
//! replaying its morning, a backlog) is not stale while its news keeps coming, however old
//! its data: that is the watermark lag's to show. Its data age is shown beside.

use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{
    Envelope, Event, FeedHeartbeat, STATION_STATUS_FEED, WEATHER_FEED, WEATHER_PERIOD_SECS,
};
use serde::Serialize;

/// A feed is stale after this many of its periods without news (the `feed_stale` alert's
/// threshold too).
pub const STALE_AFTER_PERIODS: i64 = 2;

/// The period of a feed that never said one (replays, records from before heartbeats carried
/// it): 5 minutes, so stale after 10 as before per-feed periods.
pub const DEFAULT_PERIOD_S: u32 = 300;

/// The feed an event belongs to.
pub fn feed_name(event: &Event) -> &str {
    match event {
        Event::FeedHeartbeat(FeedHeartbeat { feed, .. }) => feed,
        Event::StationStatus(_) => STATION_STATUS_FEED,
        Event::StationInfo(_) => "station_information",
        Event::SystemInfo(_) => "system_information",
        Event::Weather(_) => WEATHER_FEED,
    }
}

/// The period an event says its feed has, if it says one.
fn period_of(event: &Event) -> Option<u32> {
    match event {
        Event::FeedHeartbeat(h) => h.period_s,
        Event::Weather(_) => Some(WEATHER_PERIOD_SECS),
        _ => None,
    }
}

/// What the dashboard knows of one feed of one system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FeedSeen {
    /// The newest event time of the feed (its newest news).
    pub newest: Timestamp,
    /// When that news was read (its ingest time).
    pub news_read: Timestamp,
    pub events: u64,
    /// The newest period the feed said; `None`: it never said one.
    pub period_s: Option<u32>,
}

impl FeedSeen {
    /// The feed as first seen in `env`.
    pub fn new(env: &Envelope) -> Self {
        let mut seen = Self {
            newest: env.event_time,
            news_read: env.ingest_time,
            events: 0,
            period_s: None,
        };
        seen.note(env);
        seen
    }

    /// Takes one more event of the feed.
    pub fn note(&mut self, env: &Envelope) {
        self.events += 1;
        if env.event_time > self.newest {
            (self.newest, self.news_read) = (env.event_time, env.ingest_time);
        }
        if let Some(p) = period_of(&env.event) {
            self.period_s = Some(p);
        }
    }

    /// The period the feed is judged against.
    pub fn period_s(&self) -> u32 {
        self.period_s.unwrap_or(DEFAULT_PERIOD_S)
    }

    /// Milliseconds since the time of the feed's newest news (how old its data is).
    pub fn age_ms(&self, now: Timestamp) -> i64 {
        now.millis() - self.newest.millis()
    }

    /// Milliseconds since the feed's newest news was read.
    pub fn silence_ms(&self, now: Timestamp) -> i64 {
        now.millis() - self.news_read.millis()
    }

    /// Whether the feed has brought no news for more than [`STALE_AFTER_PERIODS`] periods.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        self.silence_ms(now) > STALE_AFTER_PERIODS * i64::from(self.period_s()) * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bikeshare_types::SystemId;
    use bikeshare_types::contracts::WeatherObs;

    fn env(t_s: i64, event: Event) -> Envelope {
        let t = Timestamp::from_secs(t_s);
        Envelope::new(SystemId::from("city"), "test", t, t, event)
    }

    fn beat(feed: &str, t_s: i64, period_s: Option<u32>) -> Envelope {
        env(
            t_s,
            Event::FeedHeartbeat(FeedHeartbeat {
                feed: feed.into(),
                last_updated: Timestamp::from_secs(t_s),
                period_s,
            }),
        )
    }

    fn weather(t_s: i64) -> Envelope {
        env(
            t_s,
            Event::Weather(WeatherObs {
                weather_station: "72509".into(),
                observed_at: Timestamp::from_secs(t_s),
                temperature_c: None,
                precipitation_mm: None,
                wind_speed_kmh: None,
                humidity_pct: None,
                condition: None,
            }),
        )
    }

    /// A feed read every `period` for `reads` periods: fresh at every instant in between.
    fn healthy(feed: &str, period: u32, reads: i64) {
        let mut seen = FeedSeen::new(&beat(feed, 0, Some(period)));
        let p = i64::from(period);
        for k in 1..reads {
            // Just before the next read is due, and a little late (a slow read): still fresh.
            for now in [k * p - 1, k * p + p / 2] {
                assert!(
                    !seen.is_stale(Timestamp::from_secs(now)),
                    "{feed} stale at {now} s"
                );
            }
            seen.note(&beat(feed, k * p, Some(period)));
        }
    }

    #[test]
    fn a_healthy_feed_is_never_stale_whatever_its_period() {
        healthy("station_status", 10, 50);
        healthy("station_information", 3600, 5);
        healthy("system_information", 60, 20);
        let mut w = FeedSeen::new(&weather(0));
        for h in 1..6 {
            // The newest hour is up to an hour and a half old before the next one lands.
            assert!(!w.is_stale(Timestamp::from_secs(h * 3600 + 1800)));
            w.note(&weather(h * 3600));
        }
    }

    #[test]
    fn a_stopped_feed_is_stale_after_two_of_its_periods_and_not_before() {
        for (feed, period) in [("station_status", 30), ("station_information", 86_400)] {
            let seen = FeedSeen::new(&beat(feed, 1000, Some(period)));
            let p = i64::from(period);
            assert!(!seen.is_stale(Timestamp::from_secs(1000 + 2 * p)));
            assert!(seen.is_stale(Timestamp::from_secs(1000 + 2 * p + 1)));
        }
        let w = FeedSeen::new(&weather(0));
        assert!(!w.is_stale(Timestamp::from_secs(7200)));
        assert!(w.is_stale(Timestamp::from_secs(7201)));
    }

    #[test]
    fn a_feed_catching_up_is_not_stale_while_its_news_keeps_coming() {
        // A city replaying its morning at 60x: each read 10 s apart brings a last_updated ten
        // minutes newer, all of them hours behind the clock.
        let at = |data_s: i64, read_s: i64| {
            let mut e = beat("station_status", data_s, Some(10));
            e.ingest_time = Timestamp::from_secs(read_s);
            e
        };
        let mut seen = FeedSeen::new(&at(0, 6 * 3600));
        for k in 1..30 {
            let now = 6 * 3600 + 10 * k;
            assert!(
                !seen.is_stale(Timestamp::from_secs(now)),
                "stale at read {k}"
            );
            assert!(
                seen.age_ms(Timestamp::from_secs(now)) > 3_600_000,
                "data over an hour old"
            );
            seen.note(&at(600 * k, now));
        }
        // Then the feed stops: stale after two periods of silence, whatever its data age.
        let last = 6 * 3600 + 10 * 29;
        assert!(!seen.is_stale(Timestamp::from_secs(last + 20)));
        assert!(seen.is_stale(Timestamp::from_secs(last + 21)));
    }

    #[test]
    fn the_newest_period_wins_and_a_feed_that_never_said_one_gets_the_default() {
        let mut seen = FeedSeen::new(&beat("station_status", 0, None));
        assert_eq!(seen.period_s(), DEFAULT_PERIOD_S);
        seen.note(&beat("station_status", 10, Some(60)));
        seen.note(&beat("station_status", 5, None)); // older, no period: changes neither
        assert_eq!(
            (seen.period_s(), seen.newest, seen.events),
            (60, Timestamp::from_secs(10), 3)
        );
    }
}
