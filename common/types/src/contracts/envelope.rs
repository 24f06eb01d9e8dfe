//! The input-stream envelope: one event with a deterministic id.

use serde::{Deserialize, Serialize};

use super::{FeedHeartbeat, StationInfo, StationStatus, SystemInfo, WeatherObs};
use crate::ids::{EventId, SystemId, deterministic_id};
use crate::time::Timestamp;

/// The envelope version this code writes and reads.
pub const ENVELOPE_SCHEMA_VERSION: u16 = 1;

/// One event on the input stream.
///
/// `event_id` depends only on the kind, the system and the payload, so the same report read
/// twice (a re-poll, a producer restart, a replay) has the same id and duplicates are
/// detectable downstream. `ingest_time` is when the producer saw it and is not part of the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u16,
    pub event_id: EventId,
    pub system_id: SystemId,
    /// Where it came from: a feed URL, `simulator`, `replay:<file>`.
    pub source: String,
    pub event_time: Timestamp,
    pub ingest_time: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

/// The payload, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Event {
    SystemInfo(SystemInfo),
    StationInfo(StationInfo),
    StationStatus(StationStatus),
    Weather(WeatherObs),
    FeedHeartbeat(FeedHeartbeat),
}

/// The kind of an [`Event`], as a plain value (for metrics labels and routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SystemInfo,
    StationInfo,
    StationStatus,
    Weather,
    FeedHeartbeat,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemInfo => "system_info",
            Self::StationInfo => "station_info",
            Self::StationStatus => "station_status",
            Self::Weather => "weather",
            Self::FeedHeartbeat => "feed_heartbeat",
        }
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::SystemInfo(_) => EventKind::SystemInfo,
            Self::StationInfo(_) => EventKind::StationInfo,
            Self::StationStatus(_) => EventKind::StationStatus,
            Self::Weather(_) => EventKind::Weather,
            Self::FeedHeartbeat(_) => EventKind::FeedHeartbeat,
        }
    }
}

/// Why bytes from the stream are not an [`Envelope`] this code can use.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown envelope schema_version {found} (this build reads {ENVELOPE_SCHEMA_VERSION})")]
    UnknownVersion { found: u64 },
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl Envelope {
    /// Wraps `event` with its deterministic id. `event_time` is the time the event is about
    /// (a status's `last_reported`, an observation's hour), chosen by the caller.
    pub fn new(
        system_id: SystemId,
        source: impl Into<String>,
        event_time: Timestamp,
        ingest_time: Timestamp,
        event: Event,
    ) -> Self {
        let event_id = Self::id_for(&system_id, &event);
        Self {
            schema_version: ENVELOPE_SCHEMA_VERSION,
            event_id,
            system_id,
            source: source.into(),
            event_time,
            ingest_time,
            event,
        }
    }

    /// The id of `event` in `system_id`: XXH3-128 over the kind, the system and the payload's
    /// canonical JSON (field order is fixed by the types, floats print deterministically).
    pub fn id_for(system_id: &SystemId, event: &Event) -> EventId {
        let payload = match event {
            Event::SystemInfo(p) => serde_json::to_vec(p),
            Event::StationInfo(p) => serde_json::to_vec(p),
            Event::StationStatus(p) => serde_json::to_vec(p),
            Event::Weather(p) => serde_json::to_vec(p),
            Event::FeedHeartbeat(p) => serde_json::to_vec(p),
        }
        .unwrap_or_default();
        deterministic_id(&[
            event.kind().as_str().as_bytes(),
            system_id.as_str().as_bytes(),
            &payload,
        ])
    }

    pub fn kind(&self) -> EventKind {
        self.event.kind()
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain types cannot fail (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes bytes from the stream, refusing versions this build does not know.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            schema_version: Option<u64>,
        }
        match serde_json::from_slice::<Self>(bytes) {
            Ok(env) if u64::from(env.schema_version) == u64::from(ENVELOPE_SCHEMA_VERSION) => {
                Ok(env)
            }
            Ok(env) => Err(DecodeError::UnknownVersion {
                found: env.schema_version.into(),
            }),
            Err(e) => match serde_json::from_slice::<VersionOnly>(bytes) {
                Ok(VersionOnly {
                    schema_version: Some(v),
                }) if v != u64::from(ENVELOPE_SCHEMA_VERSION) => {
                    Err(DecodeError::UnknownVersion { found: v })
                }
                _ => Err(DecodeError::Malformed(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::StationId;

    fn status(bikes: u32) -> Event {
        Event::StationStatus(StationStatus {
            station_id: StationId::new("s1"),
            num_bikes_available: bikes,
            num_ebikes_available: None,
            num_bikes_disabled: Some(0),
            num_docks_available: Some(10 - bikes),
            num_docks_disabled: None,
            is_installed: true,
            is_renting: true,
            is_returning: true,
            last_reported: Timestamp::from_secs(1_600_000_000),
            vehicle_types_available: vec![],
        })
    }

    #[test]
    fn id_ignores_ingest_time_but_not_content() {
        let sys = SystemId::new("demo");
        let t = Timestamp::from_secs(1_600_000_000);
        let a = Envelope::new(sys.clone(), "x", t, t, status(3));
        let b = Envelope::new(sys.clone(), "y", t, t.plus_minutes(5), status(3));
        let c = Envelope::new(sys, "x", t, t, status(4));
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
    }

    #[test]
    fn round_trip_and_kind_tag() {
        let t = Timestamp::from_secs(1_600_000_000);
        let env = Envelope::new(SystemId::new("demo"), "x", t, t, status(3));
        let bytes = env.encode();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["kind"], "station_status");
        assert_eq!(v["payload"]["num_bikes_available"], 3);
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn unknown_version_and_garbage_are_clear_errors() {
        let t = Timestamp::from_secs(1_600_000_000);
        let env = Envelope::new(SystemId::new("demo"), "x", t, t, status(3));
        let mut v: serde_json::Value = serde_json::from_slice(&env.encode()).unwrap();
        v["schema_version"] = 9.into();
        let err = Envelope::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnknownVersion { found: 9 }),
            "{err}"
        );
        v["schema_version"] = 1.into();
        v["payload"]["num_bikes_available"] = "three".into();
        let err = Envelope::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
        assert!(Envelope::decode(b"\xff\x00").is_err());
    }
}
