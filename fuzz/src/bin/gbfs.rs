//! GBFS feeds of every version (1.0 to 3.0): `gbfs.json`, `system_information`,
//! `station_information` and `station_status` (alone, and against the stations of the same
//! input read as `station_information`). Any input gives records, dead letters or an error.
use bikeshare_producers::gbfs::{FeedValidator, KnownStations, RuleConfig};
use bikeshare_types::{SystemId, Timestamp};

fn main() {
    let validator = FeedValidator::new(RuleConfig::default());
    let system = SystemId::new("fuzz");
    let now = Timestamp::from_secs(1_700_000_000);
    afl::fuzz!(|data: &[u8]| {
        let _ = validator.discovery(data, now);
        let _ = validator.system_information(data, &system, now);
        let _ = validator.station_status(data, now, None);
        if let Ok(info) = validator.station_information(data, now) {
            let known = KnownStations::from_feed(&info);
            let _ = validator.station_status(data, now, Some(&known));
        }
    });
}
