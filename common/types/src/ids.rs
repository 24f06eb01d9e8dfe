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
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(SharedStr).map(Self)
            }
        }
    };
}

/// An owned string id.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
        }
        id_text!($name);
    };
}

/// Reads a string straight into an `Arc<str>`: one allocation, as a `String` would take
/// (serde's own `Arc<str>` goes through a `Box<str>` first).
#[derive(Debug)]
pub struct SharedStr;

impl serde::de::Visitor<'_> for SharedStr {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(v.into())
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
string_id!(
    /// A deterministic record id: 32 hex digits of XXH3-128 over the record's identifying content.
    EventId
);

/// XXH3-128 of `parts`, each length-prefixed so that `("ab","c")` and `("a","bc")` differ.
pub fn deterministic_id(parts: &[&[u8]]) -> EventId {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    EventId(format!("{:032x}", h.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_length_prefixed() {
        let a = deterministic_id(&[b"ab", b"c"]);
        assert_eq!(a, deterministic_id(&[b"ab", b"c"]));
        assert_ne!(a, deterministic_id(&[b"a", b"bc"]));
        assert_eq!(a.as_str().len(), 32);
    }
}
