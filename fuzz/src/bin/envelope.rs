//! The envelope decoder every consumer of the event stream runs on each record. Any input
//! decodes or is refused; what decodes encodes to bytes that decode again; text decodes
//! the same way from `&str` (what the JSON-lines replay uses) as from bytes.
use bikeshare_types::contracts::Envelope;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let decoded = Envelope::decode(data);
        if let Ok(text) = std::str::from_utf8(data) {
            match (&decoded, Envelope::decode_str(text)) {
                (Ok(a), Ok(b)) => assert_eq!(*a, b, "decode and decode_str differ"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("decode and decode_str disagree on whether it decodes"),
            }
        }
        if let Ok(env) = decoded {
            assert!(
                Envelope::decode(&env.encode()).is_ok(),
                "an envelope that decoded does not decode after encoding"
            );
        }
    });
}
