//! Identifier newtypes and deterministic ids.

use std::fmt;

use serde::{Deserialize, Serialize};

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
                Self(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A bikeshare system (a city's network), e.g. `bluebikes`. The stream's partition key.
    SystemId
);
string_id!(
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
