//! The input-stream envelope: one event with a deterministic id.

use serde::{Deserialize, Serialize};

use super::{FeedHeartbeat, StationInfo, StationStatus, SystemInfo, WeatherObs};
use crate::ids::{EventId, SourceName, SystemId, VehicleTypeId, deterministic_id};
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
    pub source: SourceName,
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
        source: impl AsRef<str>,
        event_time: Timestamp,
        ingest_time: Timestamp,
        event: Event,
    ) -> Self {
        let event_id = Self::id_for(&system_id, &event);
        Self {
            schema_version: ENVELOPE_SCHEMA_VERSION,
            event_id,
            system_id,
            source: SourceName::new(source),
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
    ///
    /// An envelope as [`Envelope::encode`] writes it (every field once, `kind` before
    /// `payload`, nothing else) is read in one pass straight into its types
    /// ([`InOrder`]); anything else (another key order, unknown or repeated keys, an error)
    /// goes the general way, whose answer, value or error, is the one returned. The fast
    /// way accepts only what the general way accepts, with the same value (a unit test
    /// compares both on many inputs): it skips the buffering of the whole envelope that
    /// serde's `flatten` needs to find `kind` and `payload` among the other keys (decision
    /// 097). The bytes are checked as UTF-8 once and read as text ([`Envelope::decode_str`]:
    /// the stream's records get the station-report scanner too); bytes that are not UTF-8
    /// are the general decoder's to refuse, as JSON must be UTF-8.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::decode_str(text),
            Err(_) => Self::decode_general(bytes),
        }
    }

    /// [`Envelope::decode`] of text: the same answer, without checking again that each
    /// string in it is UTF-8 (a `&str` is; reading JSON lines, the line was checked once).
    ///
    /// A station report written by [`Envelope::encode`] (the bulk of every history) is read
    /// by [`status_as_written`], a scanner of exactly that layout, without serde; anything
    /// else, or any doubt (an escape in a string, a number written another way, whitespace,
    /// a key moved or unknown), goes the way [`Envelope::decode`] goes.
    pub fn decode_str(text: &str) -> Result<Self, DecodeError> {
        if let Some(env) = status_as_written(text) {
            return Ok(env);
        }
        match serde_json::from_str::<InOrder>(text) {
            Ok(InOrder(env)) if env.schema_version == ENVELOPE_SCHEMA_VERSION => Ok(env),
            _ => Self::decode_general(text.as_bytes()),
        }
    }

    /// [`Envelope::decode`] through the derived (`flatten`) deserializer only: any key order,
    /// no fast path. What `decode` and `decode_str` must answer; public for the fuzz target
    /// that holds them to it (slower: use `decode`).
    pub fn decode_general(bytes: &[u8]) -> Result<Self, DecodeError> {
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

/// A `station_status` envelope exactly as [`Envelope::encode`] writes it (keys in its order,
/// no whitespace, strings without escapes, integers as plain digits, times as strings), or
/// `None` for anything else, so that serde decides (decision 100). What it reads, serde reads
/// to the same value: a unit test and the `envelope` fuzz target compare them.
fn status_as_written(text: &str) -> Option<Envelope> {
    let mut c = Scan { text, at: 0 };
    // The version as a literal: `1` is the only one this reads (a new version must change it).
    const _: () = assert!(ENVELOPE_SCHEMA_VERSION == 1);
    c.lit("{\"schema_version\":1,\"event_id\":")?;
    let event_id = EventId::new(c.string()?);
    c.lit(",\"system_id\":")?;
    let system_id = c.string()?;
    c.lit(",\"source\":")?;
    let source = c.string()?;
    c.lit(",\"event_time\":")?;
    let event_time = c.time()?;
    c.lit(",\"ingest_time\":")?;
    let ingest_time = c.time()?;
    c.lit(",\"kind\":\"station_status\",\"payload\":{\"station_id\":")?;
    let station_id = crate::ids::StationId::new(c.string()?);
    c.lit(",\"num_bikes_available\":")?;
    let num_bikes_available = c.u32()?;
    let num_ebikes_available = c.optional_u32(",\"num_ebikes_available\":")?;
    let num_bikes_disabled = c.optional_u32(",\"num_bikes_disabled\":")?;
    let num_docks_available = c.optional_u32(",\"num_docks_available\":")?;
    let num_docks_disabled = c.optional_u32(",\"num_docks_disabled\":")?;
    c.lit(",\"is_installed\":")?;
    let is_installed = c.bool()?;
    c.lit(",\"is_renting\":")?;
    let is_renting = c.bool()?;
    c.lit(",\"is_returning\":")?;
    let is_returning = c.bool()?;
    c.lit(",\"last_reported\":")?;
    let last_reported = c.time()?;
    let mut vehicle_types_available = Vec::new();
    if c.eat(",\"vehicle_types_available\":[") {
        loop {
            c.lit("{\"vehicle_type_id\":")?;
            // Past the kind: only a station report's payload reaches this.
            let text = c.string()?;
            let vehicle_type_id = RECENT.with_borrow_mut(|r| shared(&mut r.vehicle_types, text));
            c.lit(",\"count\":")?;
            let count = c.u32()?;
            c.lit("}")?;
            vehicle_types_available.push(super::VehicleTypeCount {
                vehicle_type_id,
                count,
            });
            if !c.eat(",") {
                break;
            }
        }
        c.lit("]")?;
    }
    c.lit("}}")?;
    if c.at != text.len() {
        return None;
    }
    // Shared only now: what is not a station report as written does not touch what is kept.
    let (system_id, source) = RECENT.with_borrow_mut(|r| {
        (
            shared(&mut r.systems, system_id),
            shared(&mut r.sources, source),
        )
    });
    Some(Envelope {
        schema_version: ENVELOPE_SCHEMA_VERSION,
        event_id,
        system_id,
        source,
        event_time,
        ingest_time,
        event: Event::StationStatus(StationStatus {
            station_id,
            num_bikes_available,
            num_ebikes_available,
            num_bikes_disabled,
            num_docks_available,
            num_docks_disabled,
            is_installed,
            is_renting,
            is_returning,
            last_reported,
            vehicle_types_available,
        }),
    })
}

/// The ids and names the scanner read last on this thread, shared with the next equal ones
/// (a history, a stream's records, name one system, a few sources and vehicle types: a few
/// allocations a run, not one an event). At most [`RECENT_KEPT`] of each, so the memory
/// stays bounded whatever the input.
#[derive(Default)]
struct Recent {
    systems: Vec<SystemId>,
    sources: Vec<SourceName>,
    vehicle_types: Vec<VehicleTypeId>,
}

const RECENT_KEPT: usize = 8;

thread_local! {
    static RECENT: std::cell::RefCell<Recent> = std::cell::RefCell::default();
}

/// `text` as an id, shared with an equal one of `kept` (the last found moves to the front);
/// a new one replaces the oldest when `kept` is full.
fn shared<T: Clone + for<'a> From<&'a str> + AsRef<str>>(kept: &mut Vec<T>, text: &str) -> T {
    let id = match kept.iter().position(|k| k.as_ref() == text) {
        Some(0) => return kept[0].clone(),
        Some(i) => kept.remove(i),
        None => {
            kept.truncate(RECENT_KEPT - 1);
            T::from(text)
        }
    };
    kept.insert(0, id.clone());
    id
}

/// A position in an envelope's text, for [`status_as_written`]; every step answers `None`
/// when the text is not what it expects.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn rest(&self) -> &'a [u8] {
        self.text.as_bytes().get(self.at..).unwrap_or_default()
    }

    /// Moves past `s` when the text continues with it.
    fn eat(&mut self, s: &str) -> bool {
        let found = self.rest().starts_with(s.as_bytes());
        if found {
            self.at += s.len();
        }
        found
    }

    fn lit(&mut self, s: &str) -> Option<()> {
        self.eat(s).then_some(())
    }

    /// A string without escapes or control characters (JSON allows neither unescaped).
    fn string(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        if rest.first() != Some(&b'"') {
            return None;
        }
        let len = rest[1..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[1 + len] != b'"' {
            return None;
        }
        // The quotes are ASCII, so both ends are on character boundaries.
        let s = self.text.get(self.at + 1..self.at + 1 + len)?;
        self.at += len + 2;
        Some(s)
    }

    /// `0`, or digits without a leading zero, within `u32`.
    fn u32(&mut self) -> Option<u32> {
        let rest = self.rest();
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 10 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        let n = rest[..len]
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        self.at += len;
        u32::try_from(n).ok()
    }

    /// The value of `key` (which starts with its comma) when the text continues with it.
    fn optional_u32(&mut self, key: &str) -> Option<Option<u32>> {
        if self.eat(key) {
            self.u32().map(Some)
        } else {
            Some(None)
        }
    }

    fn bool(&mut self) -> Option<bool> {
        if self.eat("true") {
            Some(true)
        } else if self.eat("false") {
            Some(false)
        } else {
            None
        }
    }

    fn time(&mut self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(self.string()?)
    }
}

/// An [`Envelope`] read in one pass, in the order [`Envelope::encode`] writes its keys; it
/// refuses everything else (see [`Envelope::decode`]).
struct InOrder(Envelope);

/// The keys of an encoded envelope.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Key {
    SchemaVersion,
    EventId,
    SystemId,
    Source,
    EventTime,
    IngestTime,
    Kind,
    Payload,
    #[serde(other)]
    Other,
}

/// `kind`'s value: one of [`EventKind`]'s names, as a string and nothing else (the way the
/// general decoder reads the tag).
#[derive(Clone, Copy)]
struct KindName(EventKind);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = KindName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event kind")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KindName, E> {
                Ok(KindName(match v {
                    "system_info" => EventKind::SystemInfo,
                    "station_info" => EventKind::StationInfo,
                    "station_status" => EventKind::StationStatus,
                    "weather" => EventKind::Weather,
                    "feed_heartbeat" => EventKind::FeedHeartbeat,
                    _ => return Err(E::custom("unknown event kind")),
                }))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InOrderVisitor)
    }
}

/// A payload of which every key was read into `T`. A key `T` does not know is skipped by
/// serde without checking its value (bytes that are not UTF-8, a number beyond `f64`), which
/// the general decoder, buffering the whole envelope, refuses: so such a payload is an error
/// here, and the general decoder answers (found by the `envelope` fuzz target).
struct All<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for All<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut skipped = false;
        let value = serde_ignored::deserialize(d, |_| skipped = true)?;
        if skipped {
            return Err(D::Error::custom("a payload key its type does not read"));
        }
        Ok(Self(value))
    }
}

struct InOrderVisitor;

impl<'de> serde::de::Visitor<'de> for InOrderVisitor {
    type Value = InOrder;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an envelope with its keys in the order it is written")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<InOrder, A::Error> {
        use serde::de::Error as _;
        fn once<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(A::Error::custom("repeated key"));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let (mut schema_version, mut event_id, mut system_id, mut source) =
            (None, None, None, None);
        let (mut event_time, mut ingest_time) = (None, None);
        let (mut kind, mut event) = (None::<KindName>, None::<Event>);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::SchemaVersion => once(&mut map, &mut schema_version)?,
                Key::EventId => once(&mut map, &mut event_id)?,
                Key::SystemId => once(&mut map, &mut system_id)?,
                Key::Source => once(&mut map, &mut source)?,
                Key::EventTime => once(&mut map, &mut event_time)?,
                Key::IngestTime => once(&mut map, &mut ingest_time)?,
                Key::Kind => once(&mut map, &mut kind)?,
                Key::Payload => {
                    let Some(KindName(kind)) = kind.filter(|_| event.is_none()) else {
                        return Err(A::Error::custom("payload before its kind, or repeated"));
                    };
                    event = Some(match kind {
                        EventKind::SystemInfo => Event::SystemInfo(map.next_value::<All<_>>()?.0),
                        EventKind::StationInfo => Event::StationInfo(map.next_value::<All<_>>()?.0),
                        EventKind::StationStatus => {
                            Event::StationStatus(map.next_value::<All<_>>()?.0)
                        }
                        EventKind::Weather => Event::Weather(map.next_value::<All<_>>()?.0),
                        EventKind::FeedHeartbeat => {
                            Event::FeedHeartbeat(map.next_value::<All<_>>()?.0)
                        }
                    });
                }
                Key::Other => return Err(A::Error::custom("a key an envelope does not write")),
            }
        }
        let missing = || A::Error::custom("a key is missing");
        Ok(InOrder(Envelope {
            schema_version: schema_version.ok_or_else(missing)?,
            event_id: event_id.ok_or_else(missing)?,
            system_id: system_id.ok_or_else(missing)?,
            source: source.ok_or_else(missing)?,
            event_time: event_time.ok_or_else(missing)?,
            ingest_time: ingest_time.ok_or_else(missing)?,
            event: event.ok_or_else(missing)?,
        }))
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
    fn the_scanner_shares_recent_ids_and_keeps_a_bounded_number() {
        let t = Timestamp::from_secs(1_600_000_000);
        let decoded = |system: &str| {
            let env = Envelope::new(SystemId::new(system), "src", t, t, status(3));
            Envelope::decode(&env.encode()).unwrap()
        };
        let first = decoded("a");
        let again = decoded("a");
        assert_eq!(
            (first.system_id.as_str(), first.source.as_str()),
            ("a", "src")
        );
        assert!(std::sync::Arc::ptr_eq(
            &first.system_id.0,
            &again.system_id.0
        ));
        assert!(std::sync::Arc::ptr_eq(&first.source.0, &again.source.0));
        // Fewer than RECENT_KEPT others in between: still shared, and each its own text.
        let others: Vec<String> = (0..RECENT_KEPT - 1).map(|i| format!("s{i}")).collect();
        for o in &others {
            assert_eq!(decoded(o).system_id.as_str(), o);
        }
        assert!(std::sync::Arc::ptr_eq(
            &first.system_id.0,
            &decoded("a").system_id.0
        ));
        // RECENT_KEPT others: `a` is no longer kept, and is read again.
        for o in others.iter().chain(["one more".to_owned()].iter()) {
            decoded(o);
        }
        let later = decoded("a");
        assert_eq!(later.system_id.as_str(), "a");
        assert!(!std::sync::Arc::ptr_eq(
            &first.system_id.0,
            &later.system_id.0
        ));
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

    /// Envelopes of every kind, as written.
    fn one_of_each() -> Vec<Envelope> {
        use crate::contracts::{
            FeedHeartbeat, StationInfo, SystemInfo, VehicleTypeCount, WeatherObs,
        };
        let t = Timestamp::from_secs(1_600_000_000);
        let sys = SystemId::new("demo");
        let mut with_types = match status(0) {
            Event::StationStatus(s) => s,
            _ => unreachable!(),
        };
        with_types.vehicle_types_available = vec![VehicleTypeCount {
            vehicle_type_id: "e\"bike".into(),
            count: 2,
        }];
        with_types.num_ebikes_available = Some(2);
        let mut plain_types = with_types.clone();
        plain_types.vehicle_types_available = ["classic", "ebike"]
            .into_iter()
            .map(|id| VehicleTypeCount {
                vehicle_type_id: id.into(),
                count: 4_294_967_295,
            })
            .collect();
        plain_types.num_docks_disabled = Some(1);
        [
            status(3),
            Event::StationStatus(with_types),
            Event::StationStatus(plain_types),
            Event::SystemInfo(SystemInfo {
                system_id: sys.clone(),
                name: "Démo \u{1F6B2}".into(),
                timezone: "America/New_York".into(),
                language: Some("en".into()),
                gbfs_version: "2.3".into(),
            }),
            Event::StationInfo(StationInfo {
                station_id: StationId::new("s1"),
                name: "A, \"B\"".into(),
                short_name: None,
                lat: 42.351_234_567_8,
                lon: -71.1,
                capacity: Some(19),
                region_id: None,
                is_virtual_station: false,
            }),
            Event::Weather(WeatherObs {
                weather_station: "72509".into(),
                observed_at: t,
                temperature_c: Some(-3.300_000_000_000_000_3),
                precipitation_mm: Some(0.0),
                wind_speed_kmh: None,
                humidity_pct: Some(1e-7),
                condition: Some(3),
            }),
            Event::FeedHeartbeat(FeedHeartbeat {
                feed: "station_status".into(),
                last_updated: t,
                period_s: Some(60),
            }),
        ]
        .into_iter()
        .map(|e| Envelope::new(sys.clone(), "replay:x.jsonl", t, t.plus_minutes(1), e))
        .collect()
    }

    /// The decoder's two ways agree: on what [`Envelope::encode`] writes (the fast way) and on
    /// every variation of it that the fast way refuses or might get wrong (keys moved, left
    /// out, repeated or unknown; other types; other versions): the same envelope, or the same
    /// error message.
    /// `entries` (key, JSON value) with each key moved to the front, left out, repeated, and
    /// with an unknown key `note` (value `unknown`) inserted before it.
    fn rearranged(entries: &[(String, String)], unknown: &str) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        for i in 0..entries.len() {
            let mut moved = entries.to_vec();
            let e = moved.remove(i);
            moved.insert(0, e.clone());
            out.push(moved);
            let mut dropped = entries.to_vec();
            dropped.remove(i);
            out.push(dropped);
            let mut repeated = entries.to_vec();
            repeated.insert(i, e);
            out.push(repeated);
            let mut extra = entries.to_vec();
            extra.insert(i, ("note".into(), unknown.into()));
            out.push(extra);
        }
        out
    }

    /// Found by the `envelope` fuzz target: a payload key no type reads was skipped by the
    /// in-order decoder without a look at its value, which the general decoder refuses.
    #[test]
    fn a_payload_key_no_type_reads_is_judged_by_the_general_decoder() {
        for env in one_of_each() {
            let text = env.encode();
            let at = text
                .windows(11)
                .position(|w| w == b"\"payload\":{")
                .unwrap()
                + 11;
            let with = |value: &[u8]| -> Vec<u8> {
                [&text[..at], b"\"note\":", value, b",", &text[at..]].concat()
            };
            for (value, decodes) in [
                (&b"1e999"[..], false),
                (b"\"\xff\xfe\"", false),
                (b"[1,{\"a\":\"\xc3\"}]", false),
                (b"\"fine\"", true),
            ] {
                let bytes = with(value);
                let (fast, general) = (Envelope::decode(&bytes), Envelope::decode_general(&bytes));
                match (&fast, &general) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    _ => panic!(
                        "{}: {fast:?} / {general:?}",
                        String::from_utf8_lossy(&bytes)
                    ),
                }
                assert_eq!(fast.is_ok(), decodes, "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn the_in_order_decoder_answers_what_the_general_one_does() {
        fn same(bytes: &[u8]) {
            let (fast, general) = (Envelope::decode(bytes), Envelope::decode_general(bytes));
            if let Ok(text) = std::str::from_utf8(bytes) {
                match (Envelope::decode_str(text), &general) {
                    (Ok(a), Ok(b)) => assert_eq!(&a, b, "{text}"),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => panic!("{text}: from text {a:?}, general {b:?}"),
                }
            }
            match (&fast, &general) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(bytes)),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!(
                    "{}: fast {fast:?}, general {general:?}",
                    String::from_utf8_lossy(bytes)
                ),
            }
        }
        let (mut fast_ones, mut scanned) = (0, 0);
        for env in one_of_each() {
            let bytes = env.encode();
            assert!(serde_json::from_slice::<InOrder>(&bytes).is_ok());
            assert_eq!(Envelope::decode(&bytes).unwrap(), env);
            same(&bytes);
            fast_ones += 1;
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let serde_json::Value::Object(fields) = v else {
                panic!("not an object")
            };
            let keys: Vec<String> = fields.keys().cloned().collect();
            let entries: Vec<(String, String)> = keys
                .iter()
                .map(|k| (k.clone(), serde_json::to_string(&fields[k]).unwrap()))
                .collect();
            let write = |entries: &[(String, String)]| -> Vec<u8> {
                let inner: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", inner.join(",")).into_bytes()
            };
            // Every key moved to the front, left out, repeated; an unknown key anywhere.
            for keys in rearranged(&entries, "[1,{\"a\":null}]") {
                same(&write(&keys));
            }
            // Other values of each key.
            for (i, (k, _)) in entries.iter().enumerate() {
                for other in [
                    "null",
                    "2",
                    "-1",
                    "1.5",
                    "\"x\"",
                    "true",
                    "[]",
                    "{}",
                    "\"station_status\"",
                    "{\"station_status\":null}",
                    "\"2021-01-01T00:00:00Z\"",
                    "70000",
                ] {
                    let mut changed = entries.clone();
                    changed[i] = (k.clone(), other.to_string());
                    same(&write(&changed));
                }
            }
            // Inside a station report's payload (what the scanner reads without serde): each
            // key moved, dropped, repeated or beside an unknown one, each value changed.
            if env.kind() == EventKind::StationStatus {
                let text = std::str::from_utf8(&bytes).unwrap();
                // (The one with an escaped vehicle type id is serde's.)
                scanned += usize::from(status_as_written(text).is_some());
                let serde_json::Value::Object(payload) = &fields["payload"] else {
                    panic!("no payload")
                };
                // In the order `encode` writes them (a `Value`'s keys are sorted).
                let in_order = |fields: &serde_json::Map<String, serde_json::Value>,
                                order: &[&str]| {
                    order
                        .iter()
                        .filter(|k| fields.contains_key(**k))
                        .map(|k| ((*k).to_owned(), serde_json::to_string(&fields[*k]).unwrap()))
                        .collect::<Vec<(String, String)>>()
                };
                let outer = in_order(
                    &fields,
                    &[
                        "schema_version",
                        "event_id",
                        "system_id",
                        "source",
                        "event_time",
                        "ingest_time",
                        "kind",
                        "payload",
                    ],
                );
                let inner = in_order(
                    payload,
                    &[
                        "station_id",
                        "num_bikes_available",
                        "num_ebikes_available",
                        "num_bikes_disabled",
                        "num_docks_available",
                        "num_docks_disabled",
                        "is_installed",
                        "is_renting",
                        "is_returning",
                        "last_reported",
                        "vehicle_types_available",
                    ],
                );
                let with_payload = |inner: &[(String, String)]| -> Vec<u8> {
                    let body: Vec<String> =
                        inner.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    let mut outer = outer.clone();
                    outer[7].1 = format!("{{{}}}", body.join(","));
                    write(&outer)
                };
                let mut inner = inner;
                if let (Event::StationStatus(st), Some(types)) = (
                    &env.event,
                    inner
                        .iter_mut()
                        .find(|(k, _)| k == "vehicle_types_available"),
                ) {
                    types.1 = serde_json::to_string(&st.vehicle_types_available).unwrap();
                }
                assert_eq!(with_payload(&inner), bytes, "rewritten as encoded");
                same(&with_payload(&inner));
                for keys in rearranged(&inner, "1") {
                    same(&with_payload(&keys));
                }
                for i in 0..inner.len() {
                    for other in [
                        "0",
                        "01",
                        "-0",
                        "-1",
                        "3.0",
                        "3e0",
                        "4294967295",
                        "4294967296",
                        "99999999999",
                        "true",
                        "false",
                        "null",
                        "\"x\"",
                        "\"a\\\"b\"",
                        "\"\\u0041\"",
                        "\"2021-01-01T00:00:00Z\"",
                        "\"2021-02-30T00:00:00Z\"",
                        "1609459200000",
                        "[]",
                        "[{\"vehicle_type_id\":\"a\",\"count\":1}]",
                        "[{\"count\":1,\"vehicle_type_id\":\"a\"}]",
                        "[{\"vehicle_type_id\":\"a\",\"count\":1},]",
                        " 1",
                    ] {
                        let mut changed = inner.clone();
                        changed[i].1 = other.to_string();
                        same(&with_payload(&changed));
                    }
                }
                // Whitespace and escapes anywhere the scanner could meet them.
                for (from, to) in [
                    (",", ", "),
                    (":", " :"),
                    ("\"bench", "\"ben\\u0063h"),
                    ("\"s1\"", "\"s\\u0031\""),
                    ("}}", "} }"),
                    ("}}", "}}\n"),
                ] {
                    same(text.replacen(from, to, 1).as_bytes());
                }
                for after in [" ", "x", "{}", ",\"note\":1}"] {
                    same(format!("{text}{after}").as_bytes());
                }
                // Each envelope value (in the order written, so the scanner reads up to it)
                // changed: ids, times and the version as serde would or would not take them.
                for i in 0..outer.len() - 1 {
                    for other in [
                        "0",
                        "1",
                        "2",
                        "-1",
                        "1.0",
                        "null",
                        "\"\"",
                        "\"x\"",
                        "\"a\\\"b\"",
                        "\"\\u0041\"",
                        "\"2021-01-01T00:00:00Z\"",
                        "\"2021-01-01T00:00:00.123Z\"",
                        "\"2021-01-01T00:00:00+01:00\"",
                        "\"2021-02-30T00:00:00Z\"",
                        "\"2021-01-01T24:00:00Z\"",
                        "\"2021-01-01t00:00:00z\"",
                        "1609459200000",
                        "\"station_status\"",
                        "\"weather\"",
                        "[]",
                    ] {
                        let mut changed = outer.clone();
                        changed[i].1 = other.to_string();
                        same(&write(&changed));
                    }
                }
            }
            // Payload as an array, as the types also accept.
            let mut reversed = entries.clone();
            reversed.reverse();
            same(&write(&reversed));
        }
        assert_eq!(fast_ones, 7);
        assert_eq!(
            scanned, 2,
            "the station reports without escapes are scanned"
        );
        for garbage in [
            &b""[..],
            b"{}",
            b"[]",
            b"null",
            b"\xff\x00",
            b"{\"schema_version\":1,\"oops\"",
        ] {
            same(garbage);
        }
    }
}
