//! The envelope decoder every consumer of the event stream runs on each record. Any input
//! decodes or is refused; the fast paths (097's in-order visitor, 100's layout scanner, the
//! canonical timestamp parser) answer what the general decoder and chrono answer; text
//! decodes the same way from `&str` (what the JSON-lines replay uses) as from bytes; what
//! decodes encodes to bytes that decode again.
use bikeshare_types::Timestamp;
use bikeshare_types::contracts::{DecodeError, Envelope};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let decoded = Envelope::decode(data);
        let same = |a: &Result<Envelope, DecodeError>,
                    b: &Result<Envelope, DecodeError>,
                    what: &str| match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{what} differ"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}: errors"),
            _ => panic!("{what} disagree on whether it decodes"),
        };
        same(
            &decoded,
            &Envelope::decode_general(data),
            "decode and decode_general",
        );
        if let Ok(text) = std::str::from_utf8(data) {
            same(
                &decoded,
                &Envelope::decode_str(text),
                "decode and decode_str",
            );
            // The input as a timestamp: the canonical parser declines or agrees with chrono.
            let by_chrono = chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|d| Timestamp(d.timestamp_millis()));
            assert_eq!(
                Timestamp::parse_rfc3339(text),
                by_chrono,
                "timestamp {text:?}"
            );
        }
        if let Ok(env) = decoded {
            assert!(
                Envelope::decode(&env.encode()).is_ok(),
                "an envelope that decoded does not decode after encoding"
            );
        }
    });
}
