//! The envelope decoder every consumer of the event stream runs on each record. Any input
//! decodes or is refused; what decodes encodes to bytes that decode again.
use bikeshare_types::contracts::Envelope;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(env) = Envelope::decode(data) {
            assert!(
                Envelope::decode(&env.encode()).is_ok(),
                "an envelope that decoded does not decode after encoding"
            );
        }
    });
}
