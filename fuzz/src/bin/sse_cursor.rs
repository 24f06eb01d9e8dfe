//! The subscription API's resume cursor (`Last-Event-ID` or `?after=`, sent by any client).
//! Any input is a cursor or refused; a cursor encodes to one that decodes to itself.
use bikeshare_sinks::subscribe::Cursor;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Some(cursor) = Cursor::decode(text) {
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
    });
}
