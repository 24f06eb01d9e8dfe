//! Identifier newtypes and deterministic ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The methods and traits every string id has, whatever holds its text.
macro_rules! id_text {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }
    };
}

/// A string id shared, not copied: a clone is a reference count (decision 102). What names a
/// system or a station is cloned into every feature vector, prediction and label made for it,
/// and held by the processor's state; the text is allocated once per decoded record.
macro_rules! shared_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub Arc<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(s.as_ref().into())
            }
        }
        id_text!($name);
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(SharedStr::default()).map(Self)
            }
        }
    };
}

shared_id!(
    /// Hash of the ordered feature names and their definitions: a model refuses features whose
    /// schema id differs from the one it was trained on. Every feature vector carries it.
    FeatureSchemaId
);
shared_id!(
    /// A vehicle type of a system's (GBFS `vehicle_type_id`), e.g. `ebike`.
    VehicleTypeId
);
shared_id!(
    /// Where an event came from: a feed's URL, `replay:<file>`, `meteostat:api`.
    SourceName
);

/// Reads a string straight into a `T` made from `&str`: for an `Arc<str>` one allocation, as
/// a `String` would take (serde's own `Arc<str>` goes through a `Box<str>` first), for an
/// [`EventId`] none.
#[derive(Debug, Default)]
struct TextOf<T>(std::marker::PhantomData<T>);

/// [`TextOf`] an `Arc<str>`: what the shared ids read.
type SharedStr = TextOf<Arc<str>>;

impl<T: for<'a> From<&'a str>> serde::de::Visitor<'_> for TextOf<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::from(v))
    }

    /// UTF-8 bytes, as `String`'s visitor takes them (a MessagePack `bin`, say).
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        std::str::from_utf8(v)
            .map(T::from)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
    }
}

shared_id!(
    /// A bikeshare system (a city's network), e.g. `bluebikes`. The stream's partition key.
    SystemId
);
shared_id!(
    /// A station, unique within its system.
    StationId
);
/// A deterministic record id: 32 hex digits of XXH3-128 over the record's identifying content.
///
/// Held inline (every id this system makes is 32 bytes), so making, moving and dropping one
/// allocates nothing: each event, feature row and label has one (decision 102). An id longer
/// than [`EventId::INLINE`] bytes, which only another writer could send, is held on the heap.
/// Compared, ordered and hashed as its text.
#[derive(Clone)]
pub struct EventId(IdText);

#[derive(Clone)]
enum IdText {
    Inline {
        len: u8,
        bytes: [u8; EventId::INLINE],
    },
    Heap(Box<str>),
}

impl EventId {
    /// The longest id held inline.
    pub const INLINE: usize = 32;

    pub fn new(s: impl AsRef<str>) -> Self {
        let s = s.as_ref();
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= Self::INLINE => {
                let mut bytes = [0; Self::INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Self(IdText::Inline { len, bytes })
            }
            _ => Self(IdText::Heap(s.into())),
        }
    }

    /// The id whose text is `v` as 32 lowercase hex digits.
    pub fn from_hex128(v: u128) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0; Self::INLINE];
        // Two 64-bit halves (shifts of a u128 cost several instructions each), high first.
        for (half, out) in [(v >> 64) as u64, v as u64]
            .into_iter()
            .zip(bytes.chunks_exact_mut(16))
        {
            for (i, h) in out.iter_mut().enumerate() {
                *h = HEX[((half >> ((15 - i) * 4)) & 0xf) as usize];
            }
        }
        Self(IdText::Inline { len: 32, bytes })
    }

    /// The text's bytes (what [`EventId::as_str`] reads, without checking them again).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            IdText::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            IdText::Heap(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always the bytes of a `&str` cut at its end (or hex digits): the check is a
            // formality this crate's `forbid(unsafe_code)` asks for.
            IdText::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            IdText::Heap(s) => s,
        }
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new("")
    }
}

impl PartialEq for EventId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for EventId {}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    /// The text's order (a `str`'s order is its bytes').
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for EventId {
    /// As the text hashes (`str`'s `Hash`: its bytes, then `0xff`).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for EventId {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextOf::<EventId>::default())
    }
}

/// XXH3-128 of `parts`, each length-prefixed so that `("ab","c")` and `("a","bc")` differ.
pub fn deterministic_id(parts: &[&[u8]]) -> EventId {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    EventId::from_hex128(h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inline or on the heap, an id is its text: equality, order, hash, display and JSON are
    /// the `String`'s it replaced.
    #[test]
    fn an_event_id_behaves_as_its_text() {
        use std::hash::{BuildHasher, RandomState};
        let texts: Vec<String> = [
            "",
            "a",
            "b",
            "ab",
            "é",
            "aé",
            "zz",
            "\u{10ffff}",
            "q\"uote\\d",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(
            [31, 32, 33, 40]
                .into_iter()
                .flat_map(|n| ["0", "f", "é"].map(|c| c.repeat(n / c.len()))),
        )
        .chain([1u128, u128::MAX, 0xdead_beef << 64].map(|v| format!("{v:032x}")))
        .collect();
        let hasher = RandomState::new();
        for a in &texts {
            let id = EventId::new(a);
            assert_eq!(id.as_str(), a);
            assert_eq!(id.to_string(), *a);
            assert_eq!(format!("{id:?}"), format!("{a:?}"));
            assert_eq!(hasher.hash_one(&id), hasher.hash_one(a.as_str()), "{a:?}");
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, serde_json::to_string(a).unwrap());
            assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
            // An owned string reads the same.
            let owned = serde_json::Value::String(a.clone());
            assert_eq!(serde_json::from_value::<EventId>(owned).unwrap(), id);
            for b in &texts {
                let other = EventId::new(b);
                assert_eq!(id == other, a == b, "{a:?} {b:?}");
                assert_eq!(id.cmp(&other), a.cmp(b), "{a:?} {b:?}");
            }
        }
        for v in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ] {
            assert_eq!(EventId::from_hex128(v), EventId::new(format!("{v:032x}")));
        }
    }

    /// Bytes (a MessagePack `bin`, say) read as `String` read them: UTF-8 or an error.
    #[test]
    fn ids_read_from_utf8_bytes_and_refuse_others() {
        use serde::de::value::{BytesDeserializer, Error};
        let bytes = |b: &'static [u8]| BytesDeserializer::<Error>::new(b);
        assert_eq!(StationId::deserialize(bytes(b"s1")).unwrap(), "s1");
        assert_eq!(
            EventId::deserialize(bytes(b"e1")).unwrap(),
            EventId::new("e1")
        );
        assert!(String::deserialize(bytes(b"\xff")).is_err());
        assert!(StationId::deserialize(bytes(b"\xff")).is_err());
        assert!(EventId::deserialize(bytes(b"\xff")).is_err());
    }

    #[test]
    fn ids_are_deterministic_and_length_prefixed() {
        let a = deterministic_id(&[b"ab", b"c"]);
        assert_eq!(a, deterministic_id(&[b"ab", b"c"]));
        assert_ne!(a, deterministic_id(&[b"a", b"bc"]));
        assert_eq!(a.as_str().len(), 32);
    }
}
