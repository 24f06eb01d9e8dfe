//! Dead letters: records that could not be used, with the reason.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, SystemId, deterministic_id};
use crate::time::Timestamp;

/// The largest raw payload kept in a dead letter; longer ones are cut and marked.
pub const DEAD_LETTER_RAW_LIMIT: usize = 256 * 1024;

/// A record that failed a rule. `rule` is a stable dotted name (`gbfs.counts.negative`,
/// `gbfs.schema`, `stream.record_too_large`), so dead letters can be counted by reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub schema_version: u16,
    pub dead_letter_id: EventId,
    pub system_id: SystemId,
    pub source: String,
    pub rule: String,
    pub message: String,
    /// The raw record (JSON text for GBFS records), cut at [`DEAD_LETTER_RAW_LIMIT`].
    pub raw: String,
    #[serde(default)]
    pub raw_truncated: bool,
    pub at: Timestamp,
}

impl DeadLetter {
    pub fn new(
        system_id: SystemId,
        source: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
        raw: &str,
        at: Timestamp,
    ) -> Self {
        let source = source.into();
        let rule = rule.into();
        let (raw, raw_truncated) = truncate(raw, DEAD_LETTER_RAW_LIMIT);
        let dead_letter_id = deterministic_id(&[
            system_id.as_str().as_bytes(),
            source.as_bytes(),
            rule.as_bytes(),
            raw.as_bytes(),
        ]);
        Self {
            schema_version: 1,
            dead_letter_id,
            system_id,
            source,
            rule,
            message: message.into(),
            raw,
            raw_truncated,
            at,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn truncate(s: &str, limit: usize) -> (String, bool) {
    if s.len() <= limit {
        return (s.to_owned(), false);
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_raw_is_cut_on_a_char_boundary() {
        let raw = "é".repeat(DEAD_LETTER_RAW_LIMIT);
        let dl = DeadLetter::new("s".into(), "src", "r", "m", &raw, Timestamp(0));
        assert!(dl.raw_truncated);
        assert!(dl.raw.len() <= DEAD_LETTER_RAW_LIMIT);
    }
}
